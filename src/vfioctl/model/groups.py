"""The ``groups`` record: an IOMMU group's members and whether VFIO can use it."""

from __future__ import annotations

from dataclasses import dataclass

from vfioctl.address import PciAddress
from vfioctl.host.base import Host
from vfioctl.model.device import Json
from vfioctl.pci.device import PciDevice, driver_is_vfio_safe
from vfioctl.pci.iommu import IommuGroup, iter_groups


@dataclass(frozen=True, slots=True)
class GroupMember:
    """A function in an IOMMU group, with the driver the viability verdict used."""

    address: PciAddress
    driver: str | None
    vfio_safe: bool


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """One IOMMU group: members in address order, judged by the kernel's DMA-ownership
    rule (docs/kernel.md "DMA ownership and group viability")."""

    number: int
    members: tuple[GroupMember, ...]

    @property
    def blockers(self) -> tuple[GroupMember, ...]:
        """Members bound to a driver that claims DMA ownership, in address order."""
        return tuple(m for m in self.members if not m.vfio_safe)

    @property
    def viable(self) -> bool:
        return all(m.vfio_safe for m in self.members)

    def to_json(self) -> Json:
        """The element of ``groups --json``."""
        blockers = [{"address": str(m.address), "driver": m.driver} for m in self.blockers]
        return {
            "group": self.number,
            "devices": [str(m.address) for m in self.members],
            "viable": not blockers,
            "blockers": blockers,
        }


def group_info(group: IommuGroup) -> GroupInfo:
    """One group's members, each with its driver read once.

    Raises:
        GroupNotFound: the group went away.
    """
    members = []
    for addr in group.members:
        dev = PciDevice(group.host, addr)
        driver = dev.driver
        members.append(GroupMember(addr, driver, driver_is_vfio_safe(dev, driver)))
    return GroupInfo(group.number, tuple(members))


def list_groups(host: Host) -> list[GroupInfo]:
    """Every IOMMU group in numeric order (``groups``; none when the IOMMU is off)."""
    return [group_info(g) for g in iter_groups(host)]


__all__ = ["GroupInfo", "GroupMember", "group_info", "list_groups"]
