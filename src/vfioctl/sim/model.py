"""Simulator: the hardware a simulated host has, as plain immutable data.

A host description (TOML, see docs/simulator.md) says what is *plugged in*: functions,
bridges, ACS and SR-IOV capabilities, drivers and the ids they claim, what the host uses.
It never says what the kernel computes (IOMMU groups, sysfs links, config bytes): those
come from :mod:`vfioctl.sim.kernel` applying the kernel's rules to this model.

:mod:`vfioctl.sim.parse` builds these types from a host file, checking every value, and
raises :class:`~vfioctl.errors.ConfigError` naming the entry at fault, so a typo in a
hand-written host file gives a message a user can act on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

from vfioctl.address import PciAddress
from vfioctl.sim.caps import DeviceModel, Layout
from vfioctl.sim.extras import HostExtras
from vfioctl.sim.net import NetIf, Route

__all__ = ["NetIf", "Route"]  # re-exported: they used to live here

# ACS capability/control bits, PCIe r6.0 sec 7.7.8 (include/uapi/linux/pci_regs.h PCI_ACS_*)
ACS_SV = 0x01   # Source Validation
ACS_TB = 0x02   # Translation Blocking
ACS_RR = 0x04   # P2P Request Redirect
ACS_CR = 0x08   # P2P Completion Redirect
ACS_UF = 0x10   # Upstream Forwarding
ACS_EC = 0x20   # P2P Egress Control
ACS_DT = 0x40   # Direct Translated P2P
ACS_BITS = {"SV": ACS_SV, "TB": ACS_TB, "RR": ACS_RR, "CR": ACS_CR, "UF": ACS_UF,
            "EC": ACS_EC, "DT": ACS_DT}
# What "acs = true" means: the five bits a typical switch/root port implements.
ACS_DEFAULT_CAP = ACS_SV | ACS_TB | ACS_RR | ACS_CR | ACS_UF


class Kind(StrEnum):
    """What a function is, which fixes its header type and PCIe device/port type."""

    ENDPOINT = "endpoint"
    HOST_BRIDGE = "host-bridge"
    ROOT_PORT = "root-port"
    UPSTREAM_PORT = "upstream-port"
    DOWNSTREAM_PORT = "downstream-port"
    PCIE_PCI_BRIDGE = "pcie-pci-bridge"
    PCI_BRIDGE = "pci-bridge"

    @property
    def is_bridge(self) -> bool:
        """Type 1 header: has a secondary bus."""
        return self not in (Kind.ENDPOINT, Kind.HOST_BRIDGE)


class PcieType(IntEnum):
    """PCI_EXP_TYPE_* (PCIe capability register bits 7:4)."""

    ENDPOINT = 0x0
    LEG_END = 0x1
    ROOT_PORT = 0x4
    UPSTREAM = 0x5
    DOWNSTREAM = 0x6
    PCI_BRIDGE = 0x7     # PCIe-to-PCI/PCI-X bridge
    PCIE_BRIDGE = 0x8    # PCI/PCI-X-to-PCIe bridge
    RC_END = 0x9         # Root Complex integrated endpoint
    RC_EC = 0xA          # Root Complex event collector


@dataclass(frozen=True)
class Partition:
    name: str
    mount: str | None = None
    fstype: str = "ext4"


@dataclass(frozen=True)
class Disk:
    """A block device a storage function carries while its kernel driver is bound.

    ``path`` is where the disk directory sits below the PCI device's directory, e.g.
    ``ata1/host0/target0:0:0/0:0:0:0/block`` (SATA) or ``nvme/nvme0`` (NVMe).
    """

    name: str
    path: str
    major_minor: str
    partitions: tuple[Partition, ...] = ()
    mount: str | None = None
    fstype: str = "ext4"


@dataclass(frozen=True)
class Sriov:
    """The SR-IOV extended capability of a PF (PCIe r6.0 sec 9.3.3)."""

    total_vfs: int
    offset: int
    stride: int
    vf_device: int


@dataclass(frozen=True)
class Function:
    """One PCI function as the hardware presents it."""

    addr: PciAddress
    kind: Kind
    vendor: int
    device: int
    class_code: int
    revision: int = 0
    subsystem_vendor: int = 0
    subsystem_device: int = 0
    parent: PciAddress | None = None
    pcie: bool | None = None               # None: PCIe unless a bridge/behind a PCI bus
    acs: int | None = None                 # ACS capability bits, None = no ACS capability
    multifunction: bool | None = None      # None: set when the slot has other functions
    sriov: Sriov | None = None
    ari: bool = False
    flr: bool = False
    pm_reset: bool = False                 # has a PM capability with No_Soft_Reset = 0
    model: DeviceModel | None = None       # measured capability layout (caps.MODELS)
    caps: Layout | None = None             # explicit capability layout (``caps = [...]``)
    config_size: int | None = None         # None: 4096 for PCIe and host bridges, else 256
    numa_node: int = -1
    boot_vga: bool = False
    secondary_bus: int | None = None       # bridges: None = taken from the children
    net: tuple[NetIf, ...] = ()
    disks: tuple[Disk, ...] = ()
    # device nodes its driver creates while bound (vfioctl.sim.extras)
    drm: tuple[str, ...] = ()              # devices/ADDR/drm/NAME -> /dev/dri/NAME
    sound_card: int | None = None          # devices/ADDR/sound/cardN -> /dev/snd/*CN*
    nvidia_minor: int | None = None        # proc/driver/nvidia/gpus/ADDR -> /dev/nvidiaN
    # boot-time state (see docs/simulator.md "state")
    driver: str | None = None              # None = probe as the kernel would at boot
    unbound: bool = False                  # driver = "" : left without a driver at boot
    driver_override: str | None = None

    @property
    def name(self) -> str:
        return str(self.addr)


@dataclass(frozen=True)
class IdMatch:
    """One entry of a driver's id table: vendor/device (None = PCI_ANY_ID) and class."""

    vendor: int | None = None
    device: int | None = None
    class_code: int | None = None
    class_mask: int = 0

    def matches(self, vendor: int, device: int, class_code: int) -> bool:
        if self.vendor is not None and self.vendor != vendor:
            return False
        if self.device is not None and self.device != device:
            return False
        return (class_code & self.class_mask) == ((self.class_code or 0) & self.class_mask)


@dataclass(frozen=True)
class DriverSpec:
    """A PCI driver the host has (built in, or as a module that may be loaded)."""

    name: str
    ids: tuple[IdMatch, ...] = ()
    module: str | None = None              # None: built into the kernel
    loaded: bool = True                    # modules only: loaded at boot
    sriov: bool = False                    # has .sriov_configure (sriov_numvfs works)
    # pci_sriov_set_totalvfs() at probe (igb: 7 of the 82576's 8); the PCI core resets it
    # when the driver unbinds (pci_iov_remove), so it holds only while this driver is bound
    max_vfs: int | None = None

    @property
    def dma_managed(self) -> bool:
        """``driver_managed_dma``: may sit in a group a VFIO user owns
        (``iommu_device_use_default_domain`` lets only these drivers probe there)."""
        return self.name in ("vfio-pci", "pci-stub", "pcieport")


@dataclass(frozen=True)
class FaultSpec:
    """An injected failure: a write (path glob) or an ioctl (name) fails with ``errno``."""

    op: str                                # "write" | "ioctl"
    target: str                            # path glob, or ioctl name (uapi.IOCTL_NAMES)
    errno: int
    times: int | None = None               # None: every time
    skip: int = 0                          # let this many matching calls succeed first


@dataclass(frozen=True)
class HostSpec:
    """A whole simulated host: hardware, drivers, firmware settings, optional state."""

    name: str
    description: str
    cmdline: str
    iommu: str                             # "intel" | "amd" | "none"
    kernel_release: str
    functions: tuple[Function, ...]
    drivers: tuple[DriverSpec, ...]
    faults: tuple[FaultSpec, ...] = ()
    crash_at_write: int | None = None
    crash_applies: bool = False
    enable_sriov: bool = False
    state: Mapping[str, Any] | None = field(default=None, compare=False)
    extras: HostExtras = field(default_factory=HostExtras)

    def function(self, name: str) -> Function | None:
        for fn in self.functions:
            if fn.name == name:
                return fn
        return None


# -- parsing (vfioctl.sim.parse) ------------------------------------------------------------

def parse_host(doc: Mapping[str, Any], name: str) -> HostSpec:
    """Build and validate a :class:`HostSpec` (see :func:`vfioctl.sim.parse.parse_host`).

    Raises:
        ConfigError: a missing, unknown, mistyped or inconsistent entry (named).
    """
    from vfioctl.sim.parse import parse_host as parse

    return parse(doc, name)
