"""Mechanics: decoding PCI configuration space (header and capability chains).

Only what vfioctl reasons about is decoded: the header type, the PCI Express
capability (port type: it decides how ACS is looked for), ACS (the reason IOMMU groups
are what they are), SR-IOV and ARI. Other capabilities are listed by id and name so
that ``show`` is complete. Offsets are from the PCI Local Bus 3.0 and PCIe 4.0 specs,
the same that pciutils' ``lib/header.h`` and the kernel's ``include/uapi/linux/pci_regs.h``
use.

Config space read by an unprivileged user is cut at 64 bytes (the kernel hides the rest);
decoding then stops where the bytes end instead of failing.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# Standard capability ids (PCI 3.0 Appendix H)
STD_CAP_NAMES: dict[int, str] = {
    0x01: "Power Management", 0x02: "AGP", 0x03: "VPD", 0x04: "Slot ID", 0x05: "MSI",
    0x06: "CompactPCI Hot Swap", 0x07: "PCI-X", 0x08: "HyperTransport",
    0x09: "Vendor Specific", 0x0A: "Debug port", 0x0B: "CompactPCI CRC",
    0x0C: "PCI Hot-plug", 0x0D: "Subsystem Vendor ID", 0x0E: "AGP 8x",
    0x0F: "Secure Device", 0x10: "PCI Express", 0x11: "MSI-X", 0x12: "SATA",
    0x13: "Advanced Features", 0x14: "Enhanced Allocation", 0x15: "Flattening Portal Bridge",
}
# Extended capability ids (PCIe 4.0 section 7.6)
EXT_CAP_NAMES: dict[int, str] = {
    0x0001: "Advanced Error Reporting", 0x0002: "Virtual Channel",
    0x0003: "Device Serial Number", 0x0004: "Power Budgeting",
    0x0005: "Root Complex Link Declaration", 0x000B: "Vendor Specific",
    0x000D: "Access Control Services", 0x000E: "Alternative Routing-ID Interpretation",
    0x000F: "Address Translation Services", 0x0010: "Single Root I/O Virtualization",
    0x0013: "Page Request", 0x0015: "Resizable BAR", 0x0017: "TPH Requester",
    0x0018: "Latency Tolerance Reporting", 0x0019: "Secondary PCI Express",
    0x001B: "Process Address Space ID", 0x001E: "L1 PM Substates",
    0x001F: "Precision Time Measurement", 0x0023: "Designated Vendor-Specific",
    0x0025: "Data Link Feature", 0x0026: "Physical Layer 16.0 GT/s",
    0x0027: "Lane Margining at the Receiver",
}

PCI_CAP_ID_EXP = 0x10
PCI_EXT_CAP_ID_ACS = 0x000D
PCI_EXT_CAP_ID_ARI = 0x000E
PCI_EXT_CAP_ID_SRIOV = 0x0010

# PCIe capability, Device/Port Type field (PCIe 4.0 7.5.3.2)
PORT_TYPES: dict[int, str] = {
    0x0: "endpoint", 0x1: "legacy_endpoint", 0x4: "root_port", 0x5: "upstream_port",
    0x6: "downstream_port", 0x7: "pcie_to_pci_bridge", 0x8: "pci_to_pcie_bridge",
    0x9: "rc_integrated_endpoint", 0xA: "rc_event_collector",
}

# ACS capability/control bits (PCIe 4.0 7.7.8.2); the kernel needs SV|RR|CR|UF on every
# bridge between a device and the root (drivers/iommu/iommu.c REQ_ACS_FLAGS).
ACS_BITS: tuple[tuple[str, int], ...] = (
    ("SV", 1 << 0), ("TB", 1 << 1), ("RR", 1 << 2), ("CR", 1 << 3), ("UF", 1 << 4),
    ("EC", 1 << 5), ("DT", 1 << 6),
)
ACS_REQUIRED = ("SV", "RR", "CR", "UF")


@dataclass(frozen=True)
class Capability:
    """One entry of a capability chain: standard (``extended=False``) or extended."""

    id: int
    offset: int
    extended: bool
    version: int | None = None

    @property
    def name(self) -> str:
        table = EXT_CAP_NAMES if self.extended else STD_CAP_NAMES
        return table.get(self.id, "Unknown")


@dataclass(frozen=True)
class AcsInfo:
    """ACS capability and control: the features present and those switched on."""

    capability: frozenset[str]
    control: frozenset[str]

    @property
    def isolates(self) -> bool:
        """True when every flag the kernel requires is enabled (or not applicable).

        A flag the hardware does not implement cannot be enabled; the kernel treats a
        missing *capability* bit as "not applicable" only for the bits a downstream
        port must not implement (pci_acs_flags_enabled masks ctrl with cap), so the
        check is: every required bit the device implements is enabled, and the rest
        are simply absent. This mirrors pci_acs_enabled()'s ``(ctrl & cap & flags) ==
        (cap & flags)`` test.
        """
        wanted = {b for b in ACS_REQUIRED if b in self.capability}
        return wanted <= self.control


@dataclass(frozen=True)
class SriovInfo:
    """The SR-IOV extended capability's registers (PCIe SR-IOV 1.1, 3.3)."""

    total_vfs: int
    initial_vfs: int
    num_vfs: int
    vf_offset: int
    vf_stride: int
    vf_device: int
    vf_enable: bool
    ari_hierarchy: bool


@dataclass(frozen=True)
class ConfigSpace:
    """Decoded view of a function's config space bytes."""

    raw: bytes
    capabilities: tuple[Capability, ...] = field(default=())

    @property
    def header_type(self) -> int | None:
        return self.raw[0x0E] & 0x7F if len(self.raw) > 0x0E else None

    @property
    def multifunction(self) -> bool:
        return len(self.raw) > 0x0E and bool(self.raw[0x0E] & 0x80)

    @property
    def is_bridge(self) -> bool:
        return self.header_type == 1

    @property
    def secondary_bus(self) -> int | None:
        return self.raw[0x19] if self.is_bridge and len(self.raw) > 0x1A else None

    @property
    def subordinate_bus(self) -> int | None:
        return self.raw[0x1A] if self.is_bridge and len(self.raw) > 0x1A else None

    def find(self, cap_id: int, *, extended: bool) -> Capability | None:
        for cap in self.capabilities:
            if cap.id == cap_id and cap.extended == extended:
                return cap
        return None

    def _u16(self, off: int) -> int | None:
        if off + 2 > len(self.raw):
            return None
        return int(struct.unpack_from("<H", self.raw, off)[0])

    def _u32(self, off: int) -> int | None:
        if off + 4 > len(self.raw):
            return None
        return int(struct.unpack_from("<I", self.raw, off)[0])

    @property
    def pcie_port_type(self) -> str | None:
        """The PCIe Device/Port Type, or None for a conventional PCI function."""
        cap = self.find(PCI_CAP_ID_EXP, extended=False)
        if cap is None:
            return None
        flags = self._u16(cap.offset + 2)
        if flags is None:
            return None
        return PORT_TYPES.get((flags >> 4) & 0xF, f"type_{(flags >> 4) & 0xF:#x}")

    @property
    def flr_capable(self) -> bool | None:
        cap = self.find(PCI_CAP_ID_EXP, extended=False)
        if cap is None:
            return None
        devcap = self._u32(cap.offset + 4)
        return None if devcap is None else bool(devcap & (1 << 28))

    @property
    def acs(self) -> AcsInfo | None:
        cap = self.find(PCI_EXT_CAP_ID_ACS, extended=True)
        if cap is None:
            return None
        capreg = self._u16(cap.offset + 4) or 0
        ctrl = self._u16(cap.offset + 6) or 0
        return AcsInfo(
            capability=frozenset(n for n, b in ACS_BITS if capreg & b),
            control=frozenset(n for n, b in ACS_BITS if ctrl & b),
        )

    @property
    def sriov(self) -> SriovInfo | None:
        cap = self.find(PCI_EXT_CAP_ID_SRIOV, extended=True)
        if cap is None or cap.offset + 0x1C > len(self.raw):
            return None
        o = cap.offset
        ctrl = self._u16(o + 0x08) or 0
        return SriovInfo(
            total_vfs=self._u16(o + 0x0E) or 0,
            initial_vfs=self._u16(o + 0x0C) or 0,
            num_vfs=self._u16(o + 0x10) or 0,
            vf_offset=self._u16(o + 0x14) or 0,
            vf_stride=self._u16(o + 0x16) or 0,
            vf_device=self._u16(o + 0x1A) or 0,
            vf_enable=bool(ctrl & 0x1),
            ari_hierarchy=bool(ctrl & 0x10),
        )

    @property
    def ari_next_function(self) -> int | None:
        cap = self.find(PCI_EXT_CAP_ID_ARI, extended=True)
        if cap is None:
            return None
        reg = self._u16(cap.offset + 4)
        return None if reg is None else reg >> 8


def parse_config(raw: bytes) -> ConfigSpace:
    """Decode ``raw`` (64, 256 or 4096 bytes) into a :class:`ConfigSpace`.

    Malformed chains (loops, pointers into the header, truncated data) end the walk
    instead of raising: config space comes from hardware and can be wrong.
    """
    caps: list[Capability] = []
    n = len(raw)
    # Standard chain: only when Status bit 4 (Capabilities List) is set.
    if n >= 0x40 and raw[0x06] & 0x10:
        ptr = raw[0x34] & 0xFC
        seen: set[int] = set()
        while 0x40 <= ptr < min(n, 0x100) - 1 and ptr not in seen and len(seen) < 48:
            seen.add(ptr)
            caps.append(Capability(id=raw[ptr], offset=ptr, extended=False))
            ptr = raw[ptr + 1] & 0xFC
    # Extended chain: only in the 4 KiB space of a PCIe function.
    if n >= 0x104:
        off = 0x100
        seen = set()
        while 0x100 <= off <= n - 4 and off not in seen and len(seen) < 512:
            seen.add(off)
            header = int(struct.unpack_from("<I", raw, off)[0])
            if header in (0, 0xFFFFFFFF):
                break
            caps.append(Capability(id=header & 0xFFFF, offset=off, extended=True,
                                   version=(header >> 16) & 0xF))
            off = (header >> 20) & 0xFFC
    return ConfigSpace(raw=raw, capabilities=tuple(caps))
