"""Policy: a domain's hostdevs checked against a host before anything is started —
VF tokens and trust — and the stored tokens resolved for the launcher.

``conf/`` never sees a host; this module looks at the devices a domain names (through
the read model) and at vfioctl's token store (through the manager). Every check runs
before any change, and each refusal is one line that names the PF and the fix.

The VF token (docs/kernel.md, "VF token"): a VF of a PF bound to vfio-pci opens only
with the PF's token; a VF of a kernel-driven PF, or a device that is not SR-IOV at all,
is refused when given one (EINVAL). So:

- a VF of a userspace-driven PF without ``<vf-token>`` would get EACCES in the guest;
- ``<vf-token/>`` (the stored token) is for such VFs only, and the stored token must
  exist and not be stale (the PF rebound since it was set);
- a ``uuid`` written in the file must be the stored token where vfioctl has one, and
  is a secret in clear: it works, with a warning.

Trust (docs/rationale.md, "Open questions: confidential guests and attestation"): a PF
driven from userspace is an unattested driver that can reset its VFs and, depending on
the device, see their traffic. A confidential guest (``<launchSecurity>``) must not get
such a VF, or such a PF while its VFs exist, unless the user says so explicitly; the
opt-in is reported as a warning, which the launcher also keeps in its launch record.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from vfioctl.address import PciAddress
from vfioctl.conf.hostdev import DomainDef, HostdevDef
from vfioctl.errors import ConfigError, NotFound, OperationInvalid
from vfioctl.host.base import Host
from vfioctl.manager import HostdevManager
from vfioctl.pci.device import VFIO_DRIVER, PciDevice, get_device
from vfioctl.secret import VfToken


@dataclass(frozen=True)
class DomainCheck:
    """What checking a domain against a host found: warnings to show (never secrets)."""

    warnings: tuple[str, ...] = ()
    untrusted: tuple[PciAddress, ...] = field(default=())  # allowed by the opt-in


def check_domain(host: Host, domain: DomainDef, *,
                 allow_untrusted_pf: bool = False) -> DomainCheck:
    """Every host-aware check of ``domain``'s hostdevs; changes nothing.

    A PF of the same domain that is ``managed='yes'`` counts as vfio-pci-bound, since it
    will be when the guest starts.

    Raises:
        DeviceNotFound: a hostdev is not on this host.
        ConfigError: a VF-token inconsistency, or an untrusted PF for a confidential
            guest without ``allow_untrusted_pf``.
    """
    managed_here = {hd.source for hd in domain.hostdevs if hd.managed}
    mgr = HostdevManager(host)
    warnings: list[str] = []
    untrusted: list[PciAddress] = []
    for hd in domain.hostdevs:
        dev = get_device(host, hd.source)
        pf = dev.physfn
        userspace_pf = pf is not None and (
            PciDevice(host, pf).driver == VFIO_DRIVER or pf in managed_here)
        _check_token(mgr, hd, dev, pf, userspace_pf, warnings)
        if _untrusted(dev, pf, userspace_pf):
            reason = _trust_refusal(domain, hd, dev, pf)
            if reason is None:
                continue
            if not allow_untrusted_pf:
                raise ConfigError(reason, hint="this cannot be made safe by vfioctl; if "
                                  "you trust the PF's driver anyway, pass "
                                  "--allow-untrusted-pf (it is logged)")
            untrusted.append(dev.addr)
            warnings.append(f"{reason}; allowed by --allow-untrusted-pf")
    return DomainCheck(tuple(warnings), tuple(untrusted))


def _where(hd: HostdevDef) -> str:
    return f"{hd.where}: " if hd.where is not None else ""


def _check_token(mgr: HostdevManager, hd: HostdevDef, dev: PciDevice,
                 pf: PciAddress | None, userspace_pf: bool, warnings: list[str]) -> None:
    where, addr = _where(hd), dev.addr
    if hd.vf_token is None:
        if userspace_pf:
            raise ConfigError(
                f"{where}VF {addr} has no <vf-token>, but its PF {pf} is driven from "
                "userspace (vfio-pci): the guest would get EACCES opening it",
                hint=f"add <vf-token/> to the hostdev's source <address> (the token "
                f"vfioctl holds for {pf}; 'vfioctl token set {pf}' sets one)")
        return
    if pf is None:
        if hd.token_from_store:
            raise ConfigError(
                f"{where}<vf-token/> on PCI device {addr}, which is not a VF: it names the "
                "token vfioctl holds for a VF's PF",
                hint="remove <vf-token/> (a PF sets its own token through "
                "'vfioctl token set')")
        if dev.sriov_totalvfs:
            return  # an SR-IOV PF: opening it with vf_token= sets the token
        raise ConfigError(
            f"{where}vf-token on PCI device {addr}, which is neither an SR-IOV PF nor a VF "
            "(the kernel would answer EINVAL)", hint="remove <vf-token> from this hostdev")
    if not userspace_pf:
        driver = PciDevice(dev.host, pf).driver
        raise ConfigError(
            f"{where}vf-token on VF {addr}, whose PF {pf} is bound to "
            f"{driver or 'no driver'} instead of vfio-pci (the kernel would answer EINVAL)",
            hint=f"bind {pf} to vfio-pci first ('vfioctl detach {pf}'), or remove "
            "<vf-token>")
    if PciDevice(dev.host, pf).driver != VFIO_DRIVER:
        return  # the PF is detached by this domain's start: its token does not exist yet
    stored = _stored(mgr, hd, pf, required=hd.token_from_store)
    if isinstance(hd.vf_token, VfToken):
        if stored is not None and stored != hd.vf_token:
            raise ConfigError(
                f"{where}the vf-token uuid of VF {addr} is not the token vfioctl holds for "
                f"its PF {pf}: the guest would get EACCES",
                hint="write <vf-token/> to use the stored token, or 'vfioctl token set "
                f"{pf} --uuid-file FILE' to make the file's the PF's")
        file = hd.where.file if hd.where is not None else "the domain XML"
        warnings.append(f"{where}the VF token of {addr} is written in {file} in clear; "
                        f"write <vf-token/> to use the one vfioctl keeps (0600) for {pf}")


def _stored(mgr: HostdevManager, hd: HostdevDef, pf: PciAddress, *,
            required: bool) -> VfToken | None:
    """The usable stored token of ``pf``; None when there is none (or a stale one) and
    the file carries its own."""
    try:
        return mgr.get_token(pf)
    except (NotFound, OperationInvalid) as err:
        if not required:
            return None
        raise ConfigError(f"{_where(hd)}<vf-token/> on VF {hd.source}: {err}",
                          hint=err.hint) from err


def _untrusted(dev: PciDevice, pf: PciAddress | None, userspace_pf: bool) -> bool:
    """A VF of a userspace-driven PF, or a PF driven from userspace whose VFs exist:
    devices whose function rests on an unattested userspace driver. (A PF with no VFs
    handed to a guest is just a device: the guest becomes its only driver.)"""
    if pf is not None:
        return userspace_pf
    return dev.driver == VFIO_DRIVER and bool(dev.sriov_numvfs)


def _trust_refusal(domain: DomainDef, hd: HostdevDef, dev: PciDevice,
                   pf: PciAddress | None) -> str | None:
    if not domain.confidential:
        return None
    who = f"domain {domain.name or '(unnamed)'}"
    kind = f"<launchSecurity type='{domain.launch_security}'>"
    if pf is not None:
        what = (f"PCI device {dev.addr} is a VF of PF {pf}, which is driven from userspace "
                "(vfio-pci): that driver is unattested and can reset the VF or, depending "
                "on the device, see its data")
    else:
        what = (f"PCI device {dev.addr} is an SR-IOV PF driven from userspace whose VFs "
                "exist: whoever drives them shares the device with this guest, unattested")
    return f"{_where(hd)}{who} is a confidential guest ({kind}) and {what}"


def resolve_vf_tokens(host: Host, domain: DomainDef) -> DomainDef:
    """``domain`` with every ``<vf-token/>`` replaced by the token vfioctl holds for the
    VF's PF — for the launcher, at the last moment (the result holds secrets; it is
    never written anywhere).

    Raises:
        ConfigError: a stored token is missing or stale (see :func:`check_domain`).
    """
    if not any(hd.token_from_store for hd in domain.hostdevs):
        return domain
    mgr = HostdevManager(host)
    hostdevs = []
    for hd in domain.hostdevs:
        if hd.token_from_store:
            pf = get_device(host, hd.source).physfn
            if pf is None:
                raise ConfigError(f"{_where(hd)}<vf-token/> on PCI device {hd.source}, "
                                  "which is not a VF")
            token = _stored(mgr, hd, pf, required=True)
            hd = dataclasses.replace(hd, vf_token=token)
        hostdevs.append(hd)
    return dataclasses.replace(domain, hostdevs=tuple(hostdevs))
