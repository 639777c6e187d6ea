"""Policy: checks of a domain's hostdevs that need a host (``validate``/``xml2argv --host``).

``conf/`` never sees a host; this module reads the few sysfs files it needs through the
:class:`~vfioctl.host.base.Host` seam (paths relative to the host's root).

A VF token only means something for an SR-IOV PF driven by vfio-pci and its VFs. The
kernel answers EINVAL when a non-SR-IOV device, or a VF whose PF is bound to a kernel
driver, is opened with ``vf_token=`` (KERNEL.md, "VF token"), so vfioctl says so before
a guest is started.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from vfioctl.address import PciAddress
from vfioctl.conf.hostdev import DomainDef, HostdevDef
from vfioctl.errors import ConfigError, DeviceNotFound, UsageError
from vfioctl.host.base import PCI_DEVICES, Host

VFIO_PCI = "vfio-pci"


def _dev(addr: PciAddress) -> PurePosixPath:
    return PCI_DEVICES / str(addr)


def _driver(host: Host, addr: PciAddress) -> str | None:
    link = _dev(addr) / "driver"
    if not host.is_link(link):
        return None
    return PurePosixPath(host.readlink(link)).name


def _sriov_totalvfs(host: Host, addr: PciAddress) -> int:
    path = _dev(addr) / "sriov_totalvfs"
    if not host.exists(path):
        return 0
    try:
        return int(host.read_text(path).strip() or "0")
    except (OSError, ValueError):
        return 0


def _physfn(host: Host, addr: PciAddress) -> PciAddress | None:
    link = _dev(addr) / "physfn"
    if not host.is_link(link):
        return None
    try:
        return PciAddress.parse(PurePosixPath(host.readlink(link)).name)
    except UsageError:
        return None


def check_vf_tokens(host: Host, domain: DomainDef) -> None:
    """Refuse a ``<vf-token>`` on a device the kernel would reject it for.

    A PF of the same domain that is ``managed='yes'`` counts as vfio-pci-bound, since it
    will be when the guest starts.

    Raises:
        DeviceNotFound: if a hostdev with a token is not on this host.
        ConfigError: if the device is neither an SR-IOV PF nor a VF of a vfio-pci PF.
    """
    managed_here = {hd.source for hd in domain.hostdevs if hd.managed}
    for hd in domain.hostdevs:
        if hd.vf_token is not None:
            _check_one(host, hd, managed_here)


def _check_one(host: Host, hd: HostdevDef, managed_here: set[PciAddress]) -> None:
    addr = hd.source
    where = f"{hd.where}: " if hd.where is not None else ""
    if not host.exists(_dev(addr)):
        raise DeviceNotFound(addr)
    pf = _physfn(host, addr)
    if pf is None:
        if _sriov_totalvfs(host, addr) > 0:
            return  # an SR-IOV PF: opening it with vf_token= sets the token
        raise ConfigError(
            f"{where}vf-token on PCI device {addr}, which is neither an SR-IOV PF nor a VF "
            "(the kernel would answer EINVAL)", hint="remove <vf-token> from this hostdev")
    driver = _driver(host, pf)
    if driver == VFIO_PCI or pf in managed_here:
        return
    raise ConfigError(
        f"{where}vf-token on VF {addr}, whose PF {pf} is bound to "
        f"{driver or 'no driver'} instead of vfio-pci (the kernel would answer EINVAL)",
        hint=f"bind {pf} to vfio-pci first, or remove <vf-token>")
