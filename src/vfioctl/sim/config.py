"""Simulator: config space bytes with real capability chains, as a device would return them.

The bytes follow the PCI Local Bus spec 3.0 (header), PCIe r6.0 (PCIe capability,
extended capabilities) and ``include/uapi/linux/pci_regs.h`` offsets, so that ``lspci
-vvv`` and vfioctl's own decoder (``vfioctl.pci.config``) read the same facts the
simulator's group logic used: the PCIe device/port type, the ACS capability and control
bits, the SR-IOV capability (TotalVFs, NumVFs, offset, stride, VF device id) and ARI.

Which capabilities sit where comes from a :class:`~vfioctl.sim.caps.Layout` (a measured
device model, an explicit ``caps`` list, or the default packing); this module fills in
their registers from the device's facts.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from vfioctl.sim.caps import CapEntry, Layout, cap_size

CFG_SIZE = 256
CFG_SIZE_EXT = 4096

CAP_ID_PM = 0x01
CAP_ID_EXP = 0x10
CAP_ID_SSVID = 0x0D
EXT_CAP_ID_ARI = 0x000E
EXT_CAP_ID_ACS = 0x000D
EXT_CAP_ID_SRIOV = 0x0010

PCI_EXP_DEVCAP_FLR = 1 << 28
PCI_EXP_FLAGS_SLOT = 0x0100
PCI_EXP_DEVCAP2_ARI = 0x0020          # ARI Forwarding Supported (ports)
PCI_PM_CTRL_NO_SOFT_RESET = 0x0008
PCI_SRIOV_CTRL_VFE = 0x0001
PCI_SRIOV_CTRL_MSE = 0x0008
PCI_SRIOV_CTRL_ARI = 0x0010


@dataclass(frozen=True)
class ConfigInputs:
    """Everything the bytes depend on; the kernel model fills it per read."""

    vendor: int
    device: int
    class_code: int
    revision: int
    subsystem_vendor: int
    subsystem_device: int
    bridge: bool
    multifunction: bool
    pcie_type: int | None                  # None: conventional PCI (no PCIe capability)
    ext_config: bool                       # 4096-byte config space
    layout: Layout = field(default_factory=Layout)
    flr: bool = False
    pm: bool = False                       # PM No_Soft_Reset = 0
    acs_cap: int | None = None
    acs_ctrl: int = 0
    sriov_total: int = 0
    sriov_num: int = 0
    sriov_offset: int = 0
    sriov_stride: int = 0
    sriov_vf_device: int = 0
    ari: bool = False
    ari_forwarding: bool = False
    primary_bus: int = 0
    secondary_bus: int = 0
    subordinate_bus: int = 0
    port_number: int = 0
    bar0: int = 0                          # 32-bit memory BAR0 address, 0 = none
    interrupt_pin: int = 1
    irq: int = 0
    enabled: bool = False
    serial: int = 0                        # Device Serial Number capability


def _w16(buf: bytearray, off: int, val: int) -> None:
    struct.pack_into("<H", buf, off, val & 0xFFFF)


def _w32(buf: bytearray, off: int, val: int) -> None:
    struct.pack_into("<I", buf, off, val & 0xFFFFFFFF)


def build_config(c: ConfigInputs) -> bytes:
    """The config space a read of sysfs ``config`` returns for these inputs."""
    buf = bytearray(CFG_SIZE_EXT if c.ext_config else CFG_SIZE)
    _w16(buf, 0x00, c.vendor)
    _w16(buf, 0x02, c.device)
    # Command: memory + bus master once a driver enabled the device; bridges always decode.
    _w16(buf, 0x04, 0x0007 if c.bridge else (0x0006 if c.enabled else 0x0000))
    status = 0x0010 if c.layout.std else 0x0000            # capabilities list
    _w16(buf, 0x06, status)
    buf[0x08] = c.revision & 0xFF
    buf[0x09] = c.class_code & 0xFF
    buf[0x0A] = (c.class_code >> 8) & 0xFF
    buf[0x0B] = (c.class_code >> 16) & 0xFF
    buf[0x0E] = (0x01 if c.bridge else 0x00) | (0x80 if c.multifunction else 0x00)
    if c.bridge:
        buf[0x18] = c.primary_bus
        buf[0x19] = c.secondary_bus
        buf[0x1A] = c.subordinate_bus
        buf[0x1C], buf[0x1D] = 0xF0, 0x00          # I/O window closed
        _w16(buf, 0x20, 0xFFF0)                    # memory window closed (base > limit)
        _w16(buf, 0x22, 0x0000)
        _w16(buf, 0x24, 0xFFF1)                    # prefetchable window closed, 64-bit
        _w16(buf, 0x26, 0x0001)
        _w16(buf, 0x3E, 0x0000)
    else:
        if c.bar0:
            _w32(buf, 0x10, c.bar0)                # 32-bit, non-prefetchable memory
        _w16(buf, 0x2C, c.subsystem_vendor)
        _w16(buf, 0x2E, c.subsystem_device)
    buf[0x3C] = c.irq & 0xFF
    buf[0x3D] = c.interrupt_pin

    layout = c.layout
    if layout.std:
        buf[0x34] = layout.std[0].at
    for i, e in enumerate(layout.std):
        body = _std_body(e, c)
        buf[e.at:e.at + len(body)] = body
        buf[e.at] = e.cap_id
        buf[e.at + 1] = layout.std[i + 1].at if i + 1 < len(layout.std) else 0
    if c.ext_config:
        for i, e in enumerate(layout.ext):
            nxt = layout.ext[i + 1].at if i + 1 < len(layout.ext) else 0
            version = e.get("version", _EXT_VERSION.get(e.name, 1))
            _w32(buf, e.at, e.cap_id | (version << 16) | (nxt << 20))
            body = _ext_body(e, c)
            buf[e.at + 4:e.at + 4 + len(body)] = body
    return bytes(buf)


_EXT_VERSION = {"aer": 2}


def _std_body(e: CapEntry, c: ConfigInputs) -> bytes:
    """The capability's bytes from its header on (id and next are filled in after)."""
    n = e.name
    body = bytearray(cap_size(e, root_port=c.pcie_type == 0x4))
    if n == "express":
        pcie = _pcie_cap(c, e.get("version", 2))
        body[:len(pcie)] = pcie[:len(body)]
    elif n == "pm":
        _w16(body, 2, e.get("pmc", 0x0003))                  # PMC: version 3
        # PMCSR No_Soft_Reset: set unless the device resets cleanly on D3hot->D0
        _w16(body, 4, 0 if c.pm else PCI_PM_CTRL_NO_SOFT_RESET)
    elif n == "msi":
        ctrl = (0x0080 if e.get("bits64", 1) else 0) | (0x0100 if e.get("maskable", 0)
                                                         else 0)
        _w16(body, 2, ctrl | (0x0001 if c.enabled else 0))
    elif n == "msix":
        ctrl = (e.get("vectors", 1) - 1) & 0x7FF
        _w16(body, 2, ctrl | (0x8000 if c.enabled else 0))
        _w32(body, 4, e.get("table", 0) | e.get("bar", 0))
        _w32(body, 8, e.get("pba", 0x800) | e.get("bar", 0))
    elif n == "ssvid":
        struct.pack_into("<HH", body, 4, c.subsystem_vendor, c.subsystem_device)
    elif n == "vendor":
        body[2] = len(body)
        if e.get("cfg_type", 0):                              # virtio_pci_cap
            body[3] = e.get("cfg_type", 0)
            body[4] = e.get("bar", 0)
            if len(body) >= 16:
                _w32(body, 8, e.get("offset", 0))
                _w32(body, 12, e.get("length", 0))
            if len(body) >= 20:
                _w32(body, 16, e.get("mult", 0))
    elif n == "sata":
        _w16(body, 2, 0x0010)                                 # SATA cap revision 1.0
        _w32(body, 4, 0x00000048)                             # BAR location
    return bytes(body)


def _ext_body(e: CapEntry, c: ConfigInputs) -> bytes:
    """The extended capability's bytes after its header."""
    n = e.name
    if n == "ari":
        # ARI Capability: Next Function Number (bits 15:8)
        return struct.pack("<HH", (e.get("next_fn", 0) & 0xFF) << 8, 0)
    if n == "sriov":
        return _sriov_cap(c)
    if n == "acs":
        return struct.pack("<HH", c.acs_cap or 0, c.acs_ctrl)
    if n == "dsn":
        return struct.pack("<Q", c.serial)
    if n == "aer":
        body = bytearray(cap_size(e, root_port=c.pcie_type == 0x4) - 4)
        _w32(body, 0x0C - 4, 0x00462030)                      # uncorrectable severity
        _w32(body, 0x14 - 4, 0x0000E000)                      # correctable mask
        _w32(body, 0x18 - 4, 0x000000A0)                      # ECRC capabilities
        return bytes(body)
    return bytes(cap_size(e) - 4)


def _pcie_cap(c: ConfigInputs, version: int) -> bytes:
    """PCIe capability, version 2 (0x3c bytes) or 1 (0x14 bytes: endpoint registers)."""
    body = bytearray(0x3C)
    assert c.pcie_type is not None
    port = c.pcie_type in (0x4, 0x6)
    flags = (version & 0xF) | (c.pcie_type << 4) | (PCI_EXP_FLAGS_SLOT if port else 0)
    _w16(body, 0x02, flags)
    devcap = 0x00008000 | 0x2 | (PCI_EXP_DEVCAP_FLR if c.flr else 0)   # RBER, 512B payload
    _w32(body, 0x04, devcap)
    _w16(body, 0x08, 0x2810)                                            # DevCtl defaults
    _w32(body, 0x0C, (c.port_number << 24) | (0x1 << 4) | 0x3)          # LnkCap x1 8GT/s
    _w16(body, 0x12, 0x1011 if c.pcie_type != 0x9 else 0x0000)         # LnkSta x1 2.5GT/s
    if port:
        _w32(body, 0x14, 0x00000060 | ((c.port_number & 0x1FFF) << 19))  # SltCap
        _w16(body, 0x1A, 0x0040)                                           # presence
    devcap2 = PCI_EXP_DEVCAP2_ARI if (port and c.ari_forwarding) else 0
    _w32(body, 0x24, devcap2)
    _w16(body, 0x28, PCI_EXP_DEVCAP2_ARI if (port and c.ari_forwarding) else 0)
    return bytes(body)


def _sriov_cap(c: ConfigInputs) -> bytes:
    """SR-IOV extended capability body (offsets relative to the capability header)."""
    body = bytearray(0x3C)
    _w32(body, 0x00, 0)                                   # SR-IOV Capabilities (at +0x04)
    ctrl = (PCI_SRIOV_CTRL_VFE | PCI_SRIOV_CTRL_MSE) if c.sriov_num else 0
    if c.ari:
        ctrl |= PCI_SRIOV_CTRL_ARI
    _w16(body, 0x04, ctrl)                                # +0x08 control
    _w16(body, 0x08, c.sriov_total)                       # +0x0c InitialVFs
    _w16(body, 0x0A, c.sriov_total)                       # +0x0e TotalVFs
    _w16(body, 0x0C, c.sriov_num)                         # +0x10 NumVFs
    _w16(body, 0x10, c.sriov_offset)                      # +0x14 First VF Offset
    _w16(body, 0x12, c.sriov_stride)                      # +0x16 VF Stride
    _w16(body, 0x16, c.sriov_vf_device)                   # +0x1a VF Device ID
    _w32(body, 0x18, 0x00000553)                          # +0x1c supported page sizes
    _w32(body, 0x1C, 0x00000001)                          # +0x20 system page size 4K
    return bytes(body)
