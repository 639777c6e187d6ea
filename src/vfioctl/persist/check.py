"""The hardware check: is a persisted entry still about the same hardware?

An entry is applied only if the device at its address has the persisted vendor:device
and subsystem ids, and its IOMMU group still consists of the same functions (addresses
and ids): a new card in the slot, a firmware that changed the subsystem ids, or a
kernel/firmware change that merged the group with another device (which would take that
device from the host too) are each reported and left alone. The group's *number* is not
part of the check: numbers follow probe order and change across kernels, so a group
whose members are unchanged is applied and reported as renumbered.

VFs are not members here: they do not exist at boot, when the check runs, and they are
recreated (if persisted) only after their PF passed it.
"""

from __future__ import annotations

from dataclasses import dataclass

from vfioctl.host.base import Host
from vfioctl.pci.device import PciDevice, find_device
from vfioctl.persist.config import Entry, Member


@dataclass(frozen=True)
class Verdict:
    """The check of one entry against the host now."""

    entry: Entry
    problems: tuple[str, ...]
    group_now: int | None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def renumbered(self) -> bool:
        return (self.ok and self.entry.iommu_group is not None
                and self.group_now != self.entry.iommu_group)

    def describe(self) -> str:
        """One line: what does not match, or that the group was renumbered."""
        addr = self.entry.address
        if self.problems:
            return f"{addr}: not applied, the hardware changed: {'; '.join(self.problems)}"
        if self.renumbered:
            return (f"{addr}: IOMMU group renumbered {self.entry.iommu_group} -> "
                    f"{self.group_now} (same members): applied")
        return f"{addr}: matches the hardware"


def member_of(dev: PciDevice) -> Member:
    """A function as an entry records it."""
    ident = dev.identity()
    sub = f"{ident.subsystem_vendor or 0:04x}:{ident.subsystem_device or 0:04x}"
    return Member(dev.addr, f"{ident.vendor:04x}:{ident.device:04x}", sub)


def group_members(dev: PciDevice) -> tuple[Member, ...]:
    """The device's IOMMU group now, VFs left out (see the module docstring)."""
    number = dev.iommu_group
    if number is None:
        return (member_of(dev),)
    from vfioctl.pci.iommu import IommuGroup

    devs = [d for d in IommuGroup(dev.host, number).devices() if d.physfn is None]
    return tuple(sorted(member_of(d) for d in devs))


def check(host: Host, entry: Entry) -> Verdict:
    """Compare ``entry`` with the device and the group at its address now."""
    dev = find_device(host, entry.address)
    if dev is None:
        return Verdict(entry, (f"no device at {entry.address} any more",), None)
    problems: list[str] = []
    me = member_of(dev)
    if me.id != entry.id:
        problems.append(f"the device is now {me.id} (persisted {entry.id})")
    if me.subsystem != entry.subsystem:
        problems.append(f"its subsystem ids are now {me.subsystem} (persisted "
                        f"{entry.subsystem})")
    # the device's own ids are reported above; here: who else is in the group
    now = tuple(m for m in group_members(dev) if m.address != entry.address)
    then = tuple(m for m in entry.members if m.address != entry.address)
    if set(now) != set(then):
        problems.append(_group_change(then, now))
    return Verdict(entry, tuple(problems), dev.iommu_group)


def _group_change(then: tuple[Member, ...], now: tuple[Member, ...]) -> str:
    before = {m.address: m for m in then}
    after = {m.address: m for m in now}
    parts: list[str] = []
    for addr in sorted(set(after) - set(before)):
        parts.append(f"{addr} ({after[addr].id}) joined")
    for addr in sorted(set(before) - set(after)):
        parts.append(f"{addr} ({before[addr].id}) left")
    for addr in sorted(set(before) & set(after)):
        if before[addr] != after[addr]:
            parts.append(f"{addr} is now {after[addr].id} subsystem "
                         f"{after[addr].subsystem} (persisted {before[addr].id} "
                         f"subsystem {before[addr].subsystem})")
    return "its IOMMU group changed: " + ", ".join(parts)


__all__ = ["Verdict", "check", "group_members", "member_of"]
