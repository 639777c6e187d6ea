"""``vfioctl libvirt check``: what the hook would do at the next ``virsh start`` of a
domain — the manager's own plan — and what deserves a warning. Changes nothing.

Warnings: a hostdev whose IOMMU group holds other devices without vfioctl's opt-in
(the start is refused), a VF of a PF driven from userspace without ``vf-token='stored'``
(QEMU would get EACCES), a confidential guest, ``managed='yes'`` hostdevs (libvirt
detaches those itself: alone, without the group rule or vfioctl's journal).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vfioctl.errors import VfioctlError
from vfioctl.libvirt.domain import LibvirtDomain
from vfioctl.libvirt.hook import check_tokens, request, with_libvirt_hint

if TYPE_CHECKING:
    from vfioctl import Session


@dataclass
class DomainReport:
    """The plan's lines, the warnings, and the error a start would end with (None: the
    hook would let it start)."""

    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: VfioctlError | None = None


def _shared_group(session: Session, dom: LibvirtDomain, rep: DomainReport) -> None:
    from vfioctl.manager import LEFT_ALONE_DRIVERS

    ours = {hd.source for hd in dom.hostdevs}
    for hd in dom.hostdevs:
        if hd.managed or hd.group_allow:
            continue
        dev = session.device(hd.source)
        others = []
        for peer in dev.group_peers:
            if peer in ours:
                continue
            driver = session.device(peer).driver
            if driver in LEFT_ALONE_DRIVERS or driver == "vfio-pci":
                continue
            others.append(f"{peer} ({driver or 'no driver'})")
        if others:
            rep.warnings.append(
                f"{hd.source} shares IOMMU group {dev.iommu_group} with "
                f"{', '.join(others)} and has no opt-in: the start is refused; add "
                f"group='allow' to <vfioctl:hostdev address='{hd.source}'/> in the "
                "domain's vfioctl <metadata> to take the whole group")


def check(session: Session, dom: LibvirtDomain) -> DomainReport:
    """The report for ``dom`` on ``session``'s host (reads only)."""
    rep = DomainReport()
    rep.lines.append(f"domain '{dom.name}' ({dom.uuid}) on host {session.name}: "
                     f"devices held for '{dom.owner}'")
    for hd in dom.hostdevs:
        if hd.managed:
            rep.warnings.append(
                f"{hd.source} is managed='yes': libvirt detaches it itself (alone, without "
                "the group rule or vfioctl's journal) and reprobes its driver at stop; set "
                "managed='no' to let vfioctl's hook take and give it back")
    if dom.domain.confidential:
        rep.warnings.append(
            f"domain '{dom.name}' is a confidential guest (<launchSecurity type="
            f"'{dom.domain.launch_security}'>): its assigned devices are outside what its "
            "attestation covers, and a VF of a PF driven from userspace is refused unless "
            "allow-untrusted-pf='yes' on <vfioctl:devices>")
    try:
        _shared_group(session, dom, rep)
        try:
            check_tokens(session, dom)
        except VfioctlError as err:
            rep.warnings.append(f"{err}; {err.hint}" if err.hint else str(err))
            raise
        addrs, group = request(session, dom)
        if addrs:
            plan = session.plan_prepare(dom.owner, addrs, group=group)
            for refusal in plan.refusals:
                with_libvirt_hint(refusal.error, addrs, group)
            rep.lines.append("prepare begin (the manager's plan):")
            rep.lines += [f"  {line}" for line in plan.describe()]
            if not plan.ok:
                raise plan.refusals[0].error
        else:
            rep.lines.append("prepare begin: no managed='no' PCI hostdev: nothing to take")
        for hd in dom.token_hostdevs:
            pf = session.device(hd.source).physfn
            rep.lines.append(f"start begin: VF {hd.source} gets the token vfioctl holds for "
                             f"PF {pf}, through the emulator wrapper "
                             f"{dom.domain.emulator} (never on a command line)")
        rep.lines.append("release end: every device held for the domain goes back to "
                         "its original driver")
    except VfioctlError as err:
        rep.error = err
    return rep


__all__ = ["DomainReport", "check"]
