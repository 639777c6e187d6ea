"""Mechanics: IOMMU groups as the kernel exposes them, and their VFIO viability.

Groups are read from ``sys/kernel/iommu_groups/N/devices`` — the kernel decides them;
vfioctl only explains them (see :mod:`vfioctl.explain`). Viability follows the kernel's
DMA-ownership rule (docs/kernel.md "DMA ownership and group viability"): a group can be
used through VFIO only when every member is driverless or bound to vfio-pci / a vfio
variant driver, pci-stub or pcieport.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

from vfioctl.address import PciAddress
from vfioctl.errors import GroupNotFound
from vfioctl.host.base import IOMMU_GROUPS, Host
from vfioctl.pci.device import PciDevice, driver_is_vfio_safe, sorted_addresses

_CLASS_IOMMU = PurePosixPath("sys/class/iommu")
_PROC_CMDLINE = PurePosixPath("proc/cmdline")


@dataclass(frozen=True)
class Blocker:
    """A group member whose driver makes the group unusable for VFIO."""

    addr: PciAddress
    driver: str


@dataclass(frozen=True)
class IommuGroup:
    """A view of one IOMMU group; members are re-read on every access."""

    host: Host
    number: int

    @property
    def members(self) -> list[PciAddress]:
        try:
            names = self.host.listdir(IOMMU_GROUPS / str(self.number) / "devices")
        except FileNotFoundError as err:
            raise GroupNotFound(self.number) from err
        return sorted_addresses(names)

    def devices(self) -> list[PciDevice]:
        return [PciDevice(self.host, a) for a in self.members]

    def blockers(self) -> list[Blocker]:
        """Members bound to a driver that claims DMA ownership, in address order."""
        found = []
        for dev in self.devices():
            driver = dev.driver
            if not driver_is_vfio_safe(dev, driver):
                found.append(Blocker(dev.addr, driver or ""))
        return found

    @property
    def viable(self) -> bool:
        return not self.blockers()


def iter_groups(host: Host) -> Iterator[IommuGroup]:
    """Every IOMMU group of the host in numeric order (none when the IOMMU is off)."""
    try:
        names = host.listdir(IOMMU_GROUPS)
    except FileNotFoundError:
        return
    for n in sorted(int(x) for x in names if x.isdigit()):
        yield IommuGroup(host, n)


def get_group(host: Host, number: int) -> IommuGroup:
    """The group ``number``.

    Raises:
        GroupNotFound: if the host has no such group.
    """
    if not host.exists(IOMMU_GROUPS / str(number)):
        raise GroupNotFound(number)
    return IommuGroup(host, number)


@dataclass(frozen=True)
class IommuStatus:
    """Whether the kernel runs with an IOMMU, and why not when it does not."""

    enabled: bool
    kind: str | None
    reason: str | None


def iommu_status(host: Host) -> IommuStatus:
    """Detect the IOMMU from sysfs, and explain its absence from the kernel command line.

    ``sys/class/iommu`` lists the hardware units the kernel drives (``dmar0`` Intel,
    ``ivhd0`` AMD, ``smmu3.…`` Arm); groups exist only when one is active.
    """
    units: list[str] = []
    try:
        units = host.listdir(_CLASS_IOMMU)
    except OSError:
        units = []
    has_groups = any(True for _ in iter_groups(host))
    kind = None
    if any(u.startswith("dmar") for u in units):
        kind = "intel"
    elif any(u.startswith("ivhd") for u in units):
        kind = "amd"
    elif units:
        kind = "other"
    if has_groups:
        return IommuStatus(True, kind, None)
    cmdline = read_cmdline(host)
    if re.search(r"\b(intel_iommu|amd_iommu)=off\b", cmdline):
        reason = "the kernel command line turns the IOMMU off (" + " ".join(
            w for w in cmdline.split() if w.endswith("iommu=off")) + ")"
    elif re.search(r"\biommu=off\b", cmdline):
        reason = "the kernel command line has iommu=off"
    elif not re.search(r"\b(intel_iommu=on|amd_iommu=on)\b", cmdline):
        reason = ("no IOMMU is active and the kernel command line lacks intel_iommu=on "
                  "(Intel) / amd_iommu=on (AMD); also check VT-d/AMD-Vi in the firmware")
    else:
        reason = ("the kernel command line asks for an IOMMU but none is active: enable "
                  "VT-d/AMD-Vi in the firmware setup")
    return IommuStatus(False, kind, reason)


def read_cmdline(host: Host) -> str:
    try:
        return host.read_text(_PROC_CMDLINE).strip()
    except OSError:
        return ""

