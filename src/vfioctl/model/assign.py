"""What handing an IOMMU group to a guest means now: the question ``groups`` answers.

The kernel's viability (:attr:`GroupInfo.viable`) says whether VFIO can use a group
*as it is bound now*; a user asks something else: "can I give this device away, and
what goes with it?". The answer follows the manager's own rules for
``vfioctl detach --group`` (:mod:`vfioctl.manager.groups`): every member moves to
vfio-pci except bridges and ports (which cannot be detached) and members on pcieport or
pci-stub (which may stay in a VFIO group); members already on vfio-pci stay where they
are and still go to the guest with the others. The group is blocked when a member that
would move is one the host uses (:func:`vfioctl.pci.usage.find_host_uses`): detach
refuses it without ``--force``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vfioctl.address import PciAddress
from vfioctl.host.base import Host
from vfioctl.model.device import Json
from vfioctl.model.groups import GroupInfo
from vfioctl.pci.device import PciDevice
from vfioctl.pci.driver import LEFT_ALONE_DRIVERS, is_bridge
from vfioctl.pci.usage import HostUse, find_host_uses


@dataclass(frozen=True, slots=True)
class MemberUse:
    """A member that would move and the host's uses of it."""

    address: PciAddress
    uses: tuple[HostUse, ...]

    def describe(self) -> str:
        return f"{self.address} ({'; '.join(u.detail for u in self.uses)})"


@dataclass(frozen=True, slots=True)
class Assignment:
    """A group judged by the manager's rules.

    ``together``: the members a guest gets when any of them is detached with
    ``--group`` (address order); ``left_alone``: bridges, ports and pcieport/pci-stub
    members, which stay on the host; ``host_uses``: members of ``together`` the host
    uses now, which block the group.
    """

    group: int
    together: tuple[PciAddress, ...]
    left_alone: tuple[PciAddress, ...]
    host_uses: tuple[MemberUse, ...]

    @property
    def assignable(self) -> bool:
        return bool(self.together) and not self.host_uses

    @property
    def verdict(self) -> str:
        """One word or phrase for the table: ``alone``, ``with N others``, ``blocked``
        or ``nothing to assign`` (bridges only)."""
        if not self.together:
            return "nothing to assign"
        if self.host_uses:
            return "blocked"
        others = len(self.together) - 1
        if not others:
            return "alone"
        return f"with {others} other" + ("s" if others > 1 else "")

    def sentence(self) -> str:
        """The verdict in full, naming the devices: for the lines below the table."""
        if not self.together:
            return (f"group {self.group}: nothing to assign (only bridges and ports, "
                    "which stay on the host)")
        if self.host_uses:
            return (f"group {self.group}: blocked: used by the host: "
                    + ", ".join(u.describe() for u in self.host_uses)
                    + "; detach refuses the group without --force")
        if len(self.together) == 1:
            return f"group {self.group}: {self.together[0]} alone"
        names = [str(a) for a in self.together]
        return (f"group {self.group}: {', '.join(names[:-1])} and {names[-1]} go to a "
                "guest together")

    def to_json(self) -> Json:
        """The keys this adds to an element of ``groups --json`` (README "JSON output")."""
        return {
            "assignable": self.assignable,
            "with": [str(a) for a in self.together],
            "left_alone": [str(a) for a in self.left_alone],
            "host_uses": [
                {"address": str(m.address), "kind": u.kind, "detail": u.detail}
                for m in self.host_uses for u in m.uses
            ],
        }


def stays(dev: PciDevice, driver: str | None) -> bool:
    """Whether ``detach --group`` leaves this member on the host."""
    return driver in LEFT_ALONE_DRIVERS or is_bridge(dev)


def assess(host: Host, group: GroupInfo) -> Assignment:
    """The group by the manager's rules, reading host uses of the moving members only."""
    together: list[PciAddress] = []
    left: list[PciAddress] = []
    used: list[MemberUse] = []
    for member in group.members:
        dev = PciDevice(host, member.address)
        if stays(dev, member.driver):
            left.append(member.address)
            continue
        together.append(member.address)
        uses = find_host_uses(dev)
        if uses:
            used.append(MemberUse(member.address, tuple(uses)))
    return Assignment(group.number, tuple(together), tuple(left), tuple(used))


def assess_all(host: Host, groups: Sequence[GroupInfo]) -> list[Assignment]:
    return [assess(host, g) for g in groups]


__all__ = ["Assignment", "MemberUse", "assess", "assess_all", "stays"]
