"""Simulator: IOMMU group formation with the Linux rules, from topology alone.

This is an independent re-statement of what the kernel does when a PCI device is added
to an IOMMU (``drivers/iommu/iommu.c: pci_device_group()`` and helpers,
``drivers/pci/search.c: pci_for_each_dma_alias()``, ``drivers/pci/pci.c:
pci_acs_enabled()/pci_acs_path_enabled()``), applied in device-add order:

1. Walk the device's DMA aliases upwards: a conventional PCI bridge or a PCIe-to-PCI
   bridge takes over the requester ID of everything below it. If an alias already has a
   group, the device joins it. The topmost alias is the device "as seen upstream".
2. From there, walk up the buses: stop at the first bridge whose path to the root bus has
   ACS with all of REQ_ACS_FLAGS (SV|RR|CR|UF) enabled; otherwise the device joins the
   group of the bridge it cannot be isolated from.
3. A multifunction device without ACS joins the group of another function in its slot
   that lacks ACS too.
4. Otherwise the device gets a new group, with the lowest free number (``ida_alloc``).

``pci_acs_enabled`` semantics kept here: conventional PCI never isolates; PCIe-to-PCI
bridges and RC event collectors never do; root and downstream ports need the ACS bits;
endpoints, upstream ports and integrated endpoints need them only when multifunction,
and otherwise count as isolated. Capability bits a port does not implement are not
required (``acs_flags &= cap | EC``). Device-specific ACS quirks and DMA-alias quirks
(``drivers/pci/quirks.c``) are not modelled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from vfioctl.sim.model import ACS_CR, ACS_EC, ACS_RR, ACS_SV, ACS_UF, PcieType

REQ_ACS_FLAGS = ACS_SV | ACS_RR | ACS_CR | ACS_UF


class GroupNode(Protocol):
    """What the algorithm needs to know about a function (a kernel model device)."""

    @property
    def name(self) -> str: ...
    @property
    def upstream(self) -> GroupNode | None:
        """The bridge whose secondary bus this function sits on (None: root bus)."""
        ...
    @property
    def slot_key(self) -> tuple[int, int, int]:
        """(domain, bus, slot)."""
        ...
    @property
    def pcie_type(self) -> int | None: ...
    @property
    def multifunction(self) -> bool: ...
    @property
    def acs_cap(self) -> int | None: ...
    @property
    def acs_ctrl(self) -> int: ...


def acs_flags_enabled(dev: GroupNode, flags: int) -> bool:
    """``pci_acs_flags_enabled``: the ACS control bits the capability implements are set."""
    cap = dev.acs_cap
    if cap is None:
        return False
    flags &= cap | ACS_EC
    return (dev.acs_ctrl & flags) == flags


def acs_enabled(dev: GroupNode, flags: int = REQ_ACS_FLAGS) -> bool:
    """``pci_acs_enabled`` without device-specific quirks."""
    t = dev.pcie_type
    if t is None:
        return False
    if t in (PcieType.PCIE_BRIDGE, PcieType.PCI_BRIDGE, PcieType.RC_EC):
        return False
    if t in (PcieType.DOWNSTREAM, PcieType.ROOT_PORT):
        return acs_flags_enabled(dev, flags)
    single_function_ok = (PcieType.ENDPOINT, PcieType.UPSTREAM, PcieType.LEG_END,
                          PcieType.RC_END)
    if t in single_function_ok and dev.multifunction:
        return acs_flags_enabled(dev, flags)
    return True


def acs_path_enabled(start: GroupNode, flags: int = REQ_ACS_FLAGS) -> bool:
    """``pci_acs_path_enabled(start, NULL, flags)``: ACS on every bridge up to the root bus."""
    dev: GroupNode | None = start
    while dev is not None:
        if not acs_enabled(dev, flags):
            return False
        dev = dev.upstream
    return True


def dma_aliases(dev: GroupNode) -> Iterator[GroupNode]:
    """``pci_for_each_dma_alias`` restricted to topology: the device, then each bridge
    that re-issues its DMA under the bridge's own requester ID."""
    yield dev
    bridge = dev.upstream
    while bridge is not None:
        t = bridge.pcie_type
        if t in (PcieType.ROOT_PORT, PcieType.UPSTREAM, PcieType.DOWNSTREAM):
            pass
        else:
            # PCIe-to-PCI (subordinate bus, devfn 0), PCI-to-PCIe and conventional PCI
            # bridges (the bridge's own id): either way the bridge is the alias.
            yield bridge
        bridge = bridge.upstream


class GroupAllocator:
    """Assigns groups to devices in add order and remembers them, like the kernel's ida."""

    def __init__(self, held: Callable[[], set[int]] = set) -> None:
        """``held``: numbers that stay taken while they have no member (a VFIO user
        holds the group open; its ``vfio_group`` keeps a reference on the IOMMU group)."""
        self.held = held
        self.group_of: dict[str, int] = {}
        self.members: dict[int, list[str]] = {}
        self._slot_funcs: dict[tuple[int, int, int], list[GroupNode]] = {}
        self._hint = 0        # every number below it is in use

    def lowest_free(self) -> int:
        n = self._hint
        held = self.held()
        while n in self.members or n in held:
            n += 1
        return n

    def add(self, dev: GroupNode, number: int | None = None) -> int:
        """Group ``dev`` (all its upstream bridges must be added already).

        ``number`` forces the id a new group gets (used when restoring saved state, where
        the kernel's earlier allocation order is no longer visible).
        """
        group = self._find(dev)
        if group is None:
            group = self.lowest_free() if number is None else number
            if group in self.members:
                raise ValueError(f"IOMMU group {group} is already in use")
            self.members[group] = []
            if group == self._hint:
                self._hint += 1
        self.group_of[dev.name] = group
        self.members[group].append(dev.name)
        self._slot_funcs.setdefault(dev.slot_key, []).append(dev)
        return group

    def remove(self, dev: GroupNode) -> None:
        group = self.group_of.pop(dev.name)
        self.members[group].remove(dev.name)
        if not self.members[group]:
            del self.members[group]
            self._hint = min(self._hint, group)
        funcs = self._slot_funcs.get(dev.slot_key, [])
        self._slot_funcs[dev.slot_key] = [f for f in funcs if f.name != dev.name]

    def _find(self, dev: GroupNode) -> int | None:
        # Step 1: DMA aliases (a PCIe-to-PCI bridge and everything below it share one).
        pdev = dev
        for alias in dma_aliases(dev):
            pdev = alias
            if alias.name in self.group_of:
                return self.group_of[alias.name]
        # Step 2: the first bridge upstream without an ACS-isolated path takes us in.
        bridge = pdev.upstream
        while bridge is not None:
            if acs_path_enabled(bridge):
                break
            pdev = bridge
            if pdev.name in self.group_of:
                return self.group_of[pdev.name]
            bridge = bridge.upstream
        if pdev.name in self.group_of:
            return self.group_of[pdev.name]
        # Step 3: multifunction without ACS: share with a same-slot function lacking ACS.
        if pdev.multifunction and not acs_enabled(pdev):
            for other in self._slot_funcs.get(pdev.slot_key, []):
                if other.name != pdev.name and not acs_enabled(other) \
                        and other.name in self.group_of:
                    return self.group_of[other.name]
        return None


def compute_groups(devices: Iterable[GroupNode]) -> dict[str, int]:
    """Groups for ``devices`` given in the kernel's add order (parents first)."""
    alloc = GroupAllocator()
    for dev in devices:
        alloc.add(dev)
    return dict(alloc.group_of)
