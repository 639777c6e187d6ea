"""Mechanics of SR-IOV: a PF's VFs, ``sriov_numvfs``, vfio-pci's ``enable_sriov``.

The kernel's rules (``Documentation/ABI/testing/sysfs-bus-pci``, ``drivers/pci/iov.c``,
``drivers/vfio/pci/vfio_pci.c``; docs/kernel.md "SR-IOV", "vfio-pci as a PF driver"):

- ``sriov_numvfs`` goes only from 0 to N or from N to 0: N to M (both non-zero) is EBUSY;
- writing it needs a PF driver with ``sriov_configure``: none gives ENOENT;
- vfio-pci answers ENOENT unless its module parameter ``enable_sriov`` is Y — for turning
  VFs on *and* off (``vfio_pci_sriov_configure`` checks it first);
- VFs of a vfio-pci PF get ``driver_override=vfio-pci`` and bind to vfio-pci, and open
  only with the PF's VF token.

The policy (who may change a PF's VFs, the journal, refusing while a VF is held or open
by a VFIO user, asking before ``enable_sriov`` is turned on) is the manager's
(:mod:`vfioctl.manager.sriov`); this module only reads and writes.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Any, Final

from vfioctl.address import PciAddress
from vfioctl.errors import (
    DeviceInUse,
    OperationInvalid,
    UsageError,
    VfsEnabled,
    wrap_oserror,
)
from vfioctl.host.base import VFIO_PCI_PARAMS, Host
from vfioctl.pci.device import VFIO_DRIVER, PciDevice, get_device
from vfioctl.pci.settle import wait_until

ENABLE_SRIOV: Final = VFIO_PCI_PARAMS / "enable_sriov"

#: What turning ``enable_sriov`` on means, for the user to read before agreeing
#: (docs/rationale.md "The VF token trust model", "A userspace PF and its VFs": a
#: userspace PF driver can see and disturb its VFs' traffic; the VF token is what keeps an
#: unrelated VF user from trusting it by accident).
ENABLE_SRIOV_NOTICE: Final = (
    "vfio-pci creates VFs on a PF only with its module parameter enable_sriov=Y. With it, "
    "VFs of a PF driven from userspace can be created on every vfio-pci PF of this host. "
    "Such VFs are not isolated from the PF: the PF's userspace driver can deny them "
    "service and, depending on the device, see or change their traffic. They bind to "
    "vfio-pci and open only with the PF's VF token ('vfioctl token set PF'), so give them "
    "only to users who trust the PF's driver."
)


class EnableSriovRequired(OperationInvalid):
    """vfio-pci's ``enable_sriov`` is N and the change needs it Y (the caller did not
    agree to turn it on). ``notice`` says what it means."""

    def __init__(self, pf: PciAddress) -> None:
        super().__init__(
            f"PF {pf} is bound to vfio-pci, which changes VFs only with enable_sriov=Y "
            "(it is N)",
            hint="read 'vfioctl sriov --help' on what that means, then rerun with --yes")
        self.pf = pf
        self.notice = ENABLE_SRIOV_NOTICE


@dataclass(frozen=True)
class VfInfo:
    addr: PciAddress
    iommu_group: int | None
    driver: str | None
    driver_override: str | None

    def to_json(self) -> dict[str, Any]:
        return {"address": str(self.addr), "iommu_group": self.iommu_group,
                "driver": self.driver, "driver_override": self.driver_override}


@dataclass(frozen=True)
class SriovInfo:
    """A PF's SR-IOV state as sysfs shows it now."""

    pf: PciAddress
    driver: str | None
    sriov_totalvfs: int
    sriov_numvfs: int
    vfs: tuple[VfInfo, ...]
    enable_sriov: bool | None     # vfio-pci's parameter; None when vfio-pci is not loaded

    @property
    def userspace_pf(self) -> bool:
        return self.driver == VFIO_DRIVER

    def to_json(self) -> dict[str, Any]:
        return {"pf": str(self.pf), "driver": self.driver,
                "sriov_totalvfs": self.sriov_totalvfs, "sriov_numvfs": self.sriov_numvfs,
                "userspace_pf": self.userspace_pf,
                "vfio_pci_enable_sriov": self.enable_sriov,
                "vfs": [vf.to_json() for vf in self.vfs]}


def read_enable_sriov(host: Host) -> bool | None:
    try:
        value = host.read_text(ENABLE_SRIOV).strip()
    except OSError:
        return None
    return value in ("Y", "y", "1")


def get_sriov(host: Host, addr: PciAddress | str) -> SriovInfo:
    """The SR-IOV state of a PF.

    Raises:
        DeviceNotFound: no such device.
        OperationInvalid: it is a VF, or has no SR-IOV capability.
    """
    dev = get_device(host, addr)
    physfn = dev.physfn
    if physfn is not None:
        raise OperationInvalid(f"{dev.name} is a VF of {physfn}, not an SR-IOV PF",
                               hint=f"'vfioctl sriov {physfn}'")
    total = dev.sriov_totalvfs
    if not total:
        raise OperationInvalid(f"{dev.name} has no SR-IOV capability (no sriov_totalvfs)",
                               hint="'vfioctl list' shows which functions are PFs")
    vfs = tuple(VfInfo(a, vf.iommu_group, vf.driver, vf.driver_override)
                for a in dev.virtfns for vf in (PciDevice(host, a),))
    return SriovInfo(dev.addr, dev.driver, total, dev.sriov_numvfs or 0, vfs,
                     read_enable_sriov(host))


def set_enable_sriov(host: Host, on: bool) -> None:
    """Write vfio-pci's ``enable_sriov`` parameter (global to the module).

    Raises:
        HostError / PermissionDenied: the kernel refused the write.
    """
    try:
        host.write(ENABLE_SRIOV, "Y" if on else "N")
    except OSError as err:
        raise wrap_oserror(err, "cannot set vfio-pci's enable_sriov",
                           path=ENABLE_SRIOV) from err


def write_numvfs(host: Host, info: SriovInfo, numvfs: int) -> None:
    """Write ``sriov_numvfs``, mapping the kernel's refusals to what they mean for the
    PF described by ``info`` (its state before the write).

    Raises:
        VfsEnabled, DeviceInUse, EnableSriovRequired, OperationInvalid, UsageError,
        HostError: see the module docstring for which errno means what.
    """
    path = PciDevice(host, info.pf).path / "sriov_numvfs"
    try:
        host.write(path, str(numvfs))
    except OSError as err:
        code = err.errno
        if code == errno.EBUSY and info.sriov_numvfs and numvfs:
            raise VfsEnabled(f"PF {info.pf} already has VFs (EBUSY)",
                             hint="set --numvfs 0 first") from err
        if code == errno.EBUSY:
            raise DeviceInUse(f"the VFs of {info.pf} are in use (EBUSY)", addr=info.pf,
                              hint="stop their users first") from err
        if code == errno.ENOENT and info.userspace_pf:
            raise EnableSriovRequired(info.pf) from err
        if code == errno.ENOENT:
            raise OperationInvalid(
                f"PF {info.pf}'s driver {info.driver} cannot change VFs (ENOENT)",
                hint="bind the PF to a driver with SR-IOV support, or detach it onto "
                f"vfio-pci ('vfioctl detach {info.pf}')") from err
        if code == errno.ERANGE:
            raise UsageError(f"PF {info.pf} supports at most {info.sriov_totalvfs} VFs") \
                from err
        raise wrap_oserror(err, f"cannot set sriov_numvfs of {info.pf} to {numvfs}",
                           path=path) from err


def settled(host: Host, pf: PciAddress, numvfs: int) -> SriovInfo:
    """The PF once its VFs exist and have their drivers (probing may lag on a real host,
    :mod:`vfioctl.pci.settle`)."""
    def ready() -> bool:
        info = get_sriov(host, pf)
        return len(info.vfs) == numvfs and all(
            vf.driver is not None or vf.driver_override is None for vf in info.vfs)

    wait_until(ready)
    return get_sriov(host, pf)


__all__ = ["ENABLE_SRIOV", "ENABLE_SRIOV_NOTICE", "EnableSriovRequired", "SriovInfo",
           "VfInfo", "get_sriov", "read_enable_sriov", "set_enable_sriov", "settled",
           "write_numvfs"]
