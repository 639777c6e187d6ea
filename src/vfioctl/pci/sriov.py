"""Mechanics and policy of SR-IOV: a PF's VFs, ``sriov_numvfs``, vfio-pci's
``enable_sriov``.

The kernel's rules (``Documentation/ABI/testing/sysfs-bus-pci``, ``drivers/pci/iov.c``,
``drivers/vfio/pci/vfio_pci.c``; KERNEL.md "SR-IOV with a vfio-pci PF"):

- ``sriov_numvfs`` goes only from 0 to N or from N to 0: N to M (both non-zero) is EBUSY;
- writing it needs a PF driver with ``sriov_configure``: none gives ENOENT;
- vfio-pci answers ENOENT unless its module parameter ``enable_sriov`` is Y — for turning
  VFs on *and* off (``vfio_pci_sriov_configure`` checks it first);
- VFs of a vfio-pci PF get ``driver_override=vfio-pci`` and bind to vfio-pci, and open
  only with the PF's VF token.

:func:`change_numvfs` runs under the host's writer lock (:mod:`vfioctl.state`, the lock
``detach``/``reattach`` take), refuses while vfioctl holds a VF for an owner or a VF's
IOMMU group is open by a VFIO user (the kernel would block a ``0`` write on it), and
turns ``enable_sriov`` on only when the caller says the user agreed to what it means.
"""

from __future__ import annotations

import errno
import time
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Final

from vfioctl.address import PciAddress
from vfioctl.errors import (
    DeviceInUse,
    OperationInvalid,
    ReadOnlyHost,
    UsageError,
    VfsEnabled,
    wrap_oserror,
)
from vfioctl.host.base import DEV_VFIO, Host
from vfioctl.pci.device import VFIO_DRIVER, PciDevice, get_device
from vfioctl.state import StateStore

ENABLE_SRIOV: Final = PurePosixPath("sys/module/vfio_pci/parameters/enable_sriov")

#: What turning ``enable_sriov`` on means, for the user to read before agreeing (seeds 001
#: and 003: a userspace PF driver can see and disturb its VFs' traffic; the VF token is
#: what keeps an unrelated VF user from trusting it by accident).
ENABLE_SRIOV_NOTICE: Final = (
    "vfio-pci creates VFs on a PF only with its module parameter enable_sriov=Y. With it, "
    "VFs of a PF driven from userspace can be created on every vfio-pci PF of this host. "
    "Such VFs are not isolated from the PF: the PF's userspace driver can deny them "
    "service and, depending on the device, see or change their traffic. They bind to "
    "vfio-pci and open only with the PF's VF token ('vfioctl token set PF'), so give them "
    "only to users who trust the PF's driver."
)

SETTLE_SECONDS: float = 2.0


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


@dataclass(frozen=True)
class SriovChange:
    """What :func:`change_numvfs` did."""

    before: SriovInfo
    after: SriovInfo
    enabled_sriov_param: bool     # turned vfio-pci's enable_sriov on


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


def change_numvfs(host: Host, addr: PciAddress | str, numvfs: int, *,
                  allow_enable_sriov: bool = False,
                  lock_timeout: float | None = None) -> SriovChange:
    """Set a PF's number of VFs, under the host's writer lock.

    Args:
        addr: the PF.
        numvfs: 0 removes the VFs; N creates N (from 0 only).
        allow_enable_sriov: the user agreed to turn on vfio-pci's ``enable_sriov`` (see
            :data:`ENABLE_SRIOV_NOTICE`) when the PF is bound to vfio-pci.

    Raises:
        UsageError: ``numvfs`` is negative or above ``sriov_totalvfs``.
        VfsEnabled: VFs are enabled and ``numvfs`` is another non-zero count.
        EnableSriovRequired: the PF is on vfio-pci, enable_sriov is N and not allowed.
        DeviceInUse: vfioctl holds a VF (for an owner), or a VF's group is open.
        OperationInvalid: no PF driver that can change VFs; not a PF.
        ReadOnlyHost, Busy: as for every host change.
        HostError: any other refusal of the kernel.
    """
    info = get_sriov(host, addr)
    if host.state_dir is None or host.readonly:
        raise ReadOnlyHost(f"host {host.name} is read-only: cannot change the VFs of "
                           f"{info.pf}", hint="use the live host or --host sim:FILE")
    with StateStore(host.state_dir, timeout=lock_timeout).writer() as w:
        # Step 1: every check before the first write.
        info = get_sriov(host, addr)
        if numvfs < 0 or numvfs > info.sriov_totalvfs:
            raise UsageError(f"PF {info.pf} supports 0 to {info.sriov_totalvfs} VFs, not "
                             f"{numvfs}")
        if numvfs == info.sriov_numvfs:
            return SriovChange(info, info, False)
        if info.sriov_numvfs and numvfs:
            raise VfsEnabled(
                f"PF {info.pf} already has {info.sriov_numvfs} VFs; the kernel changes the "
                "count only from or to 0 (EBUSY)",
                hint=f"set --numvfs 0 first, then --numvfs {numvfs}")
        if info.driver is None:
            raise OperationInvalid(f"PF {info.pf} has no driver, and only its driver can "
                                   "create VFs", hint="bind it to its driver or detach it "
                                   f"onto vfio-pci ('vfioctl detach {info.pf}')")
        if info.sriov_numvfs:
            held = {r.addr: r for r in w.records()}
            for vf in info.vfs:
                rec = held.get(vf.addr)
                if rec is not None:
                    who = f"'{rec.owner}'" if rec.owner else "vfioctl"
                    raise DeviceInUse(f"VF {vf.addr} of {info.pf} is held by {who}",
                                      addr=vf.addr, owner=rec.owner,
                                      hint=f"release it first ('vfioctl reattach {vf.addr}"
                                      + (f" --owner {rec.owner}'" if rec.owner else "'")
                                      + ")")
                _check_group_closed(host, vf)
        enabled_param = False
        if info.userspace_pf and not info.enable_sriov:
            if not allow_enable_sriov:
                raise EnableSriovRequired(info.pf)
            # Step 2: the module parameter (global to vfio-pci; left on, since vfio-pci
            # also needs it to remove the VFs again).
            try:
                host.write(ENABLE_SRIOV, "Y")
            except OSError as err:
                raise wrap_oserror(err, "cannot set vfio-pci's enable_sriov",
                                   path=ENABLE_SRIOV) from err
            enabled_param = True
        # Step 3: the count.
        _write_numvfs(host, info, numvfs)
        after = _settled(host, info.pf, numvfs)
    return SriovChange(info, after, enabled_param)


def _check_group_closed(host: Host, vf: VfInfo) -> None:
    """A VF whose group a VFIO user has open would make the kernel *block* the ``0``
    write until it is closed; refuse instead (an open+close of ``/dev/vfio/N`` probes)."""
    if vf.iommu_group is None or not host.exists(DEV_VFIO / str(vf.iommu_group)):
        return
    try:
        fd = host.open(DEV_VFIO / str(vf.iommu_group))
    except OSError as err:
        if err.errno == errno.EBUSY:
            raise DeviceInUse(f"VF {vf.addr} is open by a VFIO user (IOMMU group "
                              f"{vf.iommu_group} is busy)", addr=vf.addr,
                              hint="stop the guest or application using it first") from err
        return
    host.close(fd)


def _write_numvfs(host: Host, info: SriovInfo, numvfs: int) -> None:
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


def _settled(host: Host, pf: PciAddress, numvfs: int) -> SriovInfo:
    """The PF once its VFs exist and have their drivers (probing may lag on a real host)."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        info = get_sriov(host, pf)
        ready = len(info.vfs) == numvfs and all(
            vf.driver is not None or vf.driver_override is None for vf in info.vfs)
        if ready or time.monotonic() >= deadline:
            return info
        time.sleep(0.05)


__all__ = ["ENABLE_SRIOV_NOTICE", "EnableSriovRequired", "SriovChange",
           "SriovInfo", "VfInfo", "change_numvfs", "get_sriov", "read_enable_sriov"]
