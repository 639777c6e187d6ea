"""Policy: checks of a domain's hostdevs that need a host (``validate``/``xml2argv --host``).

``conf/`` never sees a host; this module looks at the devices a domain names through the
read model (:class:`~vfioctl.pci.device.PciDevice`).

A VF token only means something for an SR-IOV PF driven by vfio-pci and its VFs. The
kernel answers EINVAL when a non-SR-IOV device, or a VF whose PF is bound to a kernel
driver, is opened with ``vf_token=`` (docs/kernel.md, "VF token"), so vfioctl says so
before a guest is started.
"""

from __future__ import annotations

from vfioctl.address import PciAddress
from vfioctl.conf.hostdev import DomainDef, HostdevDef
from vfioctl.errors import ConfigError
from vfioctl.host.base import Host
from vfioctl.pci.device import VFIO_DRIVER, PciDevice, get_device


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
    dev = get_device(host, addr)
    pf = dev.physfn
    if pf is None:
        if dev.sriov_totalvfs:
            return  # an SR-IOV PF: opening it with vf_token= sets the token
        raise ConfigError(
            f"{where}vf-token on PCI device {addr}, which is neither an SR-IOV PF nor a VF "
            "(the kernel would answer EINVAL)", hint="remove <vf-token> from this hostdev")
    driver = PciDevice(host, pf).driver
    if driver == VFIO_DRIVER or pf in managed_here:
        return
    raise ConfigError(
        f"{where}vf-token on VF {addr}, whose PF {pf} is bound to "
        f"{driver or 'no driver'} instead of vfio-pci (the kernel would answer EINVAL)",
        hint=f"bind {pf} to vfio-pci first, or remove <vf-token>")
