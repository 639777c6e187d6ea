"""The libvirt qemu hook: libvirt's start and stop, with vfioctl's group rule, journal
and VF tokens (docs/libvirt.md).

libvirt runs ``/etc/libvirt/hooks/qemu.d/vfioctl NAME OP SUBOP EXTRA`` with the domain
XML on standard input, as root, with an almost empty environment, and waits for it
while holding the domain's lock (which is why a hook must never call back into libvirt:
it would deadlock). What vfioctl does per call:

=================  ========================================================================
``prepare begin``  take the domain's ``managed='no'`` PCI hostdevs through the manager
                   for owner ``libvirt:NAME:UUID`` (detached to vfio-pci, the group rule
                   with vfioctl's metadata opt-in, host-safety checks, journaled); check
                   the VF tokens. A refusal aborts the start: libvirt shows its line.
``start begin``    write the token handoff file for the emulator wrapper
                   (:mod:`vfioctl.libvirt.handoff`), if the domain has token VFs.
``started begin``  remove the handoff file (QEMU has read it).
``stopped end``    remove the handoff file if a start failed before ``started``.
``release end``    give the owner's devices back to their original drivers.
=================  ========================================================================

Every other operation (migrate, restore, reconnect, attach, and ones libvirt may add)
is accepted and does nothing; nothing is ever written to standard output, which
libvirt would take as a replacement XML for migrate and restore.

Bad input: for ``prepare`` and ``start`` (the calls whose failure aborts a start) an
error is raised — one line, a non-zero exit, nothing changed; for the other calls,
which cannot stop anything, it becomes a log line and the call succeeds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from vfioctl.address import PciAddress
from vfioctl.errors import ConfigError, UsageError, VfioctlError
from vfioctl.libvirt.domain import LibvirtDomain, owner, read_domain, read_identity
from vfioctl.libvirt.handoff import remove_handoff, write_handoff

if TYPE_CHECKING:
    from vfioctl import Report, Session

log = logging.getLogger(__name__)

#: operations whose failure makes libvirt abort the start
ABORTING: Final = frozenset({"prepare", "start"})
#: operations libvirt documents for the qemu hook that vfioctl accepts and ignores
IGNORED: Final = frozenset({"migrate", "restore", "reconnect", "attach"})
_SUBOPS: Final = {"prepare": "begin", "start": "begin", "started": "begin",
                  "stopped": "end", "release": "end"}


@dataclass
class HookOutcome:
    """What one hook call did: the manager's report (prepare, release) and the log
    lines to print on standard error (warnings of calls that cannot fail)."""

    op: str
    report: Report | None = None
    handoff: Path | None = None
    log_lines: list[str] = field(default_factory=list)


def run_hook(session: Callable[[], Session], name: str, op: str, subop: str,
             xml: str | bytes, *, run_dir: Path) -> HookOutcome:
    """One libvirt hook call (see the module docstring). ``session`` opens the host:
    only the calls that need it do (libvirt waits for every hook call; most have nothing
    to do and should not pay for the manager).

    Raises:
        VfioctlError: only for ``prepare``/``start`` (bad XML, a refusal of the manager,
            a VF-token problem, a hostdev that does not exist).
    """
    out = HookOutcome(op)
    expected = _SUBOPS.get(op)
    if expected is None:
        if op not in IGNORED:
            out.log_lines.append(f"unknown libvirt hook operation '{op}' for domain "
                                 f"'{name}': ignored")
        return out
    if subop != expected:
        err = UsageError(f"unexpected libvirt hook call '{op} {subop}' for domain "
                         f"'{name}' (libvirt sends '{op} {expected}')",
                         hint="check the hook script's arguments")
        if op in ABORTING:
            raise err
        out.log_lines.append(f"{err}: ignored")
        return out
    if op in ABORTING:
        dom = read_domain(xml, name=name)
        if op == "prepare":
            remove_handoff(run_dir, dom.uuid)
            if dom.hostdevs:
                out.report = prepare(session(), dom)
        elif dom.token_hostdevs:
            out.handoff = hand_off(session(), dom, run_dir)
        return out
    try:
        dom_name, uuid = read_identity(xml, name=name)
    except VfioctlError as err:
        out.log_lines.append(f"domain '{name}': {err}; nothing changed")
        return out
    try:
        remove_handoff(run_dir, uuid)
        if op == "release":
            sess, who = session(), owner(dom_name, uuid)
            # most domains hold nothing: no writer lock for them (opening the host has
            # already recovered what a dead vfioctl left half-done)
            if any(s.record.owner == who for s in sess.status()):
                out.report = sess.release(who)
    except VfioctlError as err:
        out.log_lines.append(f"domain '{name}': {err}" + (f"; {err.hint}" if err.hint else ""))
    return out


def request(session: Session, dom: LibvirtDomain
            ) -> tuple[list[PciAddress], set[PciAddress]]:
    """What the hook asks the manager for: the domain's ``managed='no'`` hostdevs
    (libvirt detaches ``managed='yes'`` ones itself), and those whose whole IOMMU
    group comes with them (``group='allow'`` in vfioctl's metadata).

    Raises:
        ConfigError: a VF of a PF driven from userspace without ``vf-token='stored'``,
            and every check of :func:`vfioctl.hostcheck.check_domain`.
        DeviceNotFound: a hostdev is not on this host.
    """
    from vfioctl.hostcheck import check_domain

    check_tokens(session, dom)
    # The trust rule's opt-in is vfioctl's metadata attribute here, not start's option.
    found = check_domain(session.host, dom.domain, allow_untrusted_pf=True)
    if found.untrusted and not dom.meta.allow_untrusted_pf:
        names = ", ".join(str(a) for a in found.untrusted)
        raise ConfigError(
            f"domain '{dom.name}' is a confidential guest (<launchSecurity type="
            f"'{dom.domain.launch_security}'>) and {names} rests on a PF driven from "
            "userspace (vfio-pci): an unattested driver that can reset it or, depending on "
            "the device, see its data", hint="this cannot be made safe by vfioctl; if you "
            "trust the PF's driver anyway, set allow-untrusted-pf='yes' on "
            "<vfioctl:devices> in the domain's <metadata>")
    addrs = [hd.source for hd in dom.hostdevs if not hd.managed]
    group = {hd.source for hd in dom.hostdevs if not hd.managed and hd.group_allow}
    return addrs, group


def check_tokens(session: Session, dom: LibvirtDomain) -> None:
    """A VF of a userspace-driven PF needs its token; libvirt gives QEMU none.

    Raises:
        DeviceNotFound: a hostdev is not on this host.
        ConfigError: such a VF without ``vf-token='stored'``, or marked with it while
            the domain's ``<emulator>`` is not the vfioctl wrapper.
    """
    from vfioctl.libvirt.install import is_wrapper

    for hd in dom.hostdevs:
        dev = session.device(hd.source)
        if dev.physfn is None:
            continue
        pf = session.device(dev.physfn)
        if pf.driver == "vfio-pci" and not hd.token_from_store:
            raise ConfigError(
                f"VF {dev.address} has no VF token, but its PF {pf.address} is driven from "
                "userspace (vfio-pci): QEMU would get EACCES opening it",
                hint=f"add <vfioctl:hostdev address='{dev.address}' vf-token='stored'/> to "
                "the domain's vfioctl <metadata> and name the vfioctl emulator wrapper "
                "as its <emulator> (docs/libvirt.md)")
    if dom.token_hostdevs and not is_wrapper(dom.domain.emulator):
        raise ConfigError(
            f"domain '{dom.name}' has VFs with vf-token='stored' but its <emulator> "
            f"{dom.domain.emulator or '(none)'} is not vfioctl's wrapper: QEMU would get "
            "no token", hint="set <emulator> to the wrapper 'vfioctl libvirt install' "
            "wrote (see 'vfioctl libvirt check')")


def prepare(session: Session, dom: LibvirtDomain) -> Report | None:
    """``prepare begin``: check, then take the devices for the domain's owner."""
    from vfioctl import GroupNotViable

    addrs, group = request(session, dom)
    if not addrs:
        return None
    try:
        return session.prepare(dom.owner, addrs, group=group)
    except GroupNotViable as err:
        raise with_libvirt_hint(err, addrs, group) from None


def with_libvirt_hint(err: VfioctlError, addrs: list[PciAddress],
                      group: set[PciAddress]) -> VfioctlError:
    """A group refusal with the opt-in a libvirt user has (the metadata attribute, not
    ``detach --group``) as its hint; any other error unchanged."""
    from vfioctl import GroupNotViable

    if isinstance(err, GroupNotViable) and addrs:
        first = next((a for a in addrs if a not in group), addrs[0])
        err.hint = (f"to give the guest the whole group, add <vfioctl:hostdev "
                    f"address='{first}' group='allow'/> to the domain's vfioctl <metadata> "
                    f"(docs/libvirt.md); 'vfioctl explain {first}' says why it is shared")
    return err


def hand_off(session: Session, dom: LibvirtDomain, run_dir: Path) -> Path | None:
    """``start begin``: write the token handoff file for the emulator wrapper."""
    from vfioctl.hostcheck import resolve_vf_tokens
    from vfioctl.secret import VfToken

    if not dom.token_hostdevs:
        return None
    resolved = resolve_vf_tokens(session.host, dom.domain)
    tokens = {hd.source: hd.vf_token for hd in resolved.hostdevs
              if hd.source in {t.source for t in dom.token_hostdevs}
              and isinstance(hd.vf_token, VfToken)}
    return write_handoff(run_dir, dom.uuid, tokens, uid=dom.qemu_uid, gid=dom.qemu_gid)


__all__ = ["ABORTING", "IGNORED", "HookOutcome", "check_tokens", "hand_off", "prepare",
           "request", "run_hook", "with_libvirt_hint"]
