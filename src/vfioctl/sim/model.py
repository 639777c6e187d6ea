"""Simulator: the hardware a simulated host has, parsed and validated from its description.

A host description (TOML, see docs/simulator.md) says what is *plugged in*: functions,
bridges, ACS and SR-IOV capabilities, drivers and the ids they claim, what the host uses.
It never says what the kernel computes (IOMMU groups, sysfs links, config bytes): those
come from :mod:`vfioctl.sim.kernel` applying the kernel's rules to this model.

The types here are plain, immutable data. Parsing raises :class:`ConfigError` naming the
entry at fault, so a typo in a hand-written host file gives a message a user can act on.
"""

from __future__ import annotations

import errno as errno_mod
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

from vfioctl.address import PciAddress
from vfioctl.errors import ConfigError, UsageError
from vfioctl.sim.caps import MODELS, DeviceModel, Layout, parse_caps

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
class Route:
    """One IPv4 route through an interface, as /proc/net/route shows it."""

    dest: str = "0.0.0.0/0"
    gateway: str = "0.0.0.0"
    metric: int = 100


@dataclass(frozen=True)
class NetIf:
    """A network interface a NIC function carries while its kernel driver is bound."""

    name: str
    up: bool = False
    routes: tuple[Route, ...] = ()
    mac: str = "52:54:00:12:34:56"


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

    @property
    def dma_managed(self) -> bool:
        """``driver_managed_dma``: may sit in a group a VFIO user owns (KERNEL.md)."""
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

    def function(self, name: str) -> Function | None:
        for fn in self.functions:
            if fn.name == name:
                return fn
        return None


# -- parsing ---------------------------------------------------------------------------------

_ID = re.compile(r"^([0-9a-fA-F]{4}|\*):([0-9a-fA-F]{4}|\*)$")
_CLASS = re.compile(r"^(?:class:)?([0-9a-fA-F]{6})(?:/([0-9a-fA-F]{6}))?$")
_PORT_ACS_KINDS = (Kind.ROOT_PORT, Kind.DOWNSTREAM_PORT)


def _err(where: str, msg: str) -> ConfigError:
    return ConfigError(f"{where}: {msg}", hint="see docs/simulator.md for the host format")


def _hex(value: object, where: str, key: str, bits: int) -> int:
    if isinstance(value, bool):
        raise _err(where, f"{key} must be a number or hex string, not {value!r}")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        try:
            n = int(value.removeprefix("0x"), 16)
        except ValueError:
            raise _err(where, f"{key} = {value!r} is not hexadecimal") from None
    else:
        raise _err(where, f"{key} must be a number or hex string")
    if not 0 <= n < (1 << bits):
        raise _err(where, f"{key} = {value!r} is out of range")
    return n


def _id_pair(value: object, where: str, key: str) -> tuple[int, int]:
    if not isinstance(value, str) or not _ID.match(value) or "*" in value:
        raise _err(where, f"{key} must look like '8086:10d3', got {value!r}")
    v, d = value.split(":")
    return int(v, 16), int(d, 16)


def _addr(value: object, where: str, key: str) -> PciAddress:
    if not isinstance(value, str):
        raise _err(where, f"{key} must be a PCI address string")
    try:
        return PciAddress.parse(value)
    except UsageError as err:
        raise _err(where, f"{key}: {err}") from None


def _acs(value: object, where: str) -> int | None:
    if value is None or value is False:
        return None
    if value is True:
        return ACS_DEFAULT_CAP
    if isinstance(value, str):
        bits = 0
        for word in value.replace(",", " ").split():
            if word.upper() not in ACS_BITS:
                raise _err(where, f"acs flag {word!r} unknown (use {' '.join(ACS_BITS)})")
            bits |= ACS_BITS[word.upper()]
        return bits
    if isinstance(value, int):
        return _hex(value, where, "acs", 16)
    raise _err(where, "acs must be true/false, flags like 'SV RR CR UF', or a number")


def _errno(value: object, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and hasattr(errno_mod, value.upper()):
        return int(getattr(errno_mod, value.upper()))
    raise _err(where, f"errno {value!r} is not an errno name like 'EBUSY' or a number")


def _table_list(doc: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    raw = doc.get(key, [])
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise _err(key, f"'{key}' must be an array of tables ([[{key}]])")
    return raw


def _known(table: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise _err(where, f"unknown key(s) {', '.join(unknown)}")


_FN_KEYS = ("addr", "kind", "id", "subsystem", "class", "revision", "parent", "pcie", "acs",
            "multifunction", "sriov", "ari", "flr", "pm_reset", "numa_node", "boot_vga",
            "secondary_bus", "net", "disk", "driver", "driver_override", "label", "model",
            "caps", "config_size")


def parse_function(t: Mapping[str, Any], index: int) -> Function:
    where = f"device #{index + 1} ({t.get('addr', '?')})"
    _known(t, _FN_KEYS, where)
    addr = _addr(t.get("addr"), where, "addr")
    model = None
    if "model" in t:
        model = MODELS.get(str(t["model"]))
        if model is None:
            raise _err(where, f"model {t['model']!r} unknown (use {', '.join(MODELS)})")
    try:
        kind = Kind(t.get("kind", model.kind if model and model.kind else "endpoint"))
    except ValueError:
        raise _err(where, f"kind {t.get('kind')!r} unknown (use {', '.join(Kind)})") from None
    if model is not None and model.kind is not None and kind != model.kind:
        raise _err(where, f"model {model.name} is a {model.kind}, not a {kind}")
    caps = None
    if "caps" in t:
        try:
            caps = parse_caps(t["caps"], where)
        except ValueError as err:
            raise _err(where, str(err)) from None
    config_size = t.get("config_size", model.config_size if model else None)
    if config_size not in (None, 256, 4096):
        raise _err(where, "config_size must be 256 or 4096")
    vendor, device = _id_pair(t.get("id"), where, "id")
    sub = t.get("subsystem")
    svendor, sdevice = _id_pair(sub, where, "subsystem") if sub is not None else (0, 0)
    default_class = {Kind.HOST_BRIDGE: 0x060000}.get(kind, 0x060400 if kind.is_bridge
                                                     else None)
    raw_class = t.get("class", default_class)
    if raw_class is None:
        raise _err(where, "class is required for an endpoint (e.g. class = '020000')")
    class_code = _hex(raw_class, where, "class", 24)
    parent = _addr(t["parent"], where, "parent") if "parent" in t else None
    sriov = None
    if "sriov" in t:
        s = t["sriov"]
        if not isinstance(s, dict):
            raise _err(where, "sriov must be a table {total_vfs, offset, stride, vf_id}")
        _known(s, ("total_vfs", "offset", "stride", "vf_id"), where + " sriov")
        vf_vendor, vf_device = _id_pair(s.get("vf_id"), where, "sriov.vf_id")
        if vf_vendor != vendor:
            raise _err(where, "sriov.vf_id must have the PF's vendor")
        total = int(s.get("total_vfs", 0))
        if not 0 < total <= 0xFFFF:
            raise _err(where, "sriov.total_vfs must be 1..65535")
        sriov = Sriov(total, int(s.get("offset", 1)), int(s.get("stride", 1)), vf_device)
        if sriov.offset < 1 or sriov.stride < 1:
            raise _err(where, "sriov.offset and sriov.stride must be >= 1")
    pcie = t.get("pcie")
    if pcie is not None and not isinstance(pcie, bool):
        raise _err(where, "pcie must be true or false")
    acs = _acs(t.get("acs"), where)
    if acs is not None and pcie is False:
        raise _err(where, "acs needs pcie = true (ACS is a PCIe extended capability)")
    ari = bool(t.get("ari", model.ari if model else False))
    if caps is not None:
        for name, present in (("acs", acs is not None), ("ari", ari),
                              ("sriov", sriov is not None)):
            if caps.has(name) and not present:
                raise _err(where, f"caps lists {name} but the device has no {name} = ...")
    if config_size == 256 and (acs is not None or sriov is not None or ari):
        raise _err(where, "acs, ari and sriov are extended capabilities: they need "
                   "config_size = 4096")
    nets = tuple(_parse_net(n, where) for n in _listify(t.get("net", []), where, "net"))
    disks = tuple(_parse_disk(d, where, i)
                  for i, d in enumerate(_listify(t.get("disk", []), where, "disk")))
    drv = t.get("driver")
    if drv is not None and not isinstance(drv, str):
        raise _err(where, "driver must be a driver name, or '' for none")
    override = t.get("driver_override")
    return Function(
        addr=addr, kind=kind, vendor=vendor, device=device, class_code=class_code,
        revision=_hex(t.get("revision", 0), where, "revision", 8),
        subsystem_vendor=svendor, subsystem_device=sdevice, parent=parent, pcie=pcie,
        acs=acs, multifunction=t.get("multifunction"), sriov=sriov,
        ari=ari, flr=bool(t.get("flr", model.flr if model else False)),
        pm_reset=bool(t.get("pm_reset", model.pm_reset if model else False)),
        model=model, caps=caps, config_size=config_size,
        numa_node=int(t.get("numa_node", -1)),
        boot_vga=bool(t.get("boot_vga", False)),
        secondary_bus=(_hex(t["secondary_bus"], where, "secondary_bus", 8)
                       if "secondary_bus" in t else None),
        net=nets, disks=disks, driver=drv or None, unbound=(drv == ""),
        driver_override=override or None,
    )


def _listify(value: object, where: str, key: str) -> list[Mapping[str, Any]]:
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
        return value
    raise _err(where, f"{key} must be a table or an array of tables")


def _parse_net(t: Mapping[str, Any], where: str) -> NetIf:
    _known(t, ("name", "up", "routes", "mac"), where + " net")
    routes = []
    for r in t.get("routes", []):
        if not isinstance(r, dict):
            raise _err(where, "net.routes entries are tables {dest, gateway, metric}")
        routes.append(Route(str(r.get("dest", "0.0.0.0/0")), str(r.get("gateway", "0.0.0.0")),
                            int(r.get("metric", 100))))
    if "name" not in t:
        raise _err(where, "net needs a name (e.g. 'enp3s0')")
    return NetIf(str(t["name"]), bool(t.get("up", False)), tuple(routes),
                 str(t.get("mac", "52:54:00:12:34:56")))


def _parse_disk(t: Mapping[str, Any], where: str, index: int) -> Disk:
    _known(t, ("name", "path", "partitions", "mount", "fstype", "dev"), where + " disk")
    name = str(t.get("name", ""))
    if not name:
        raise _err(where, "disk needs a name (e.g. 'sda' or 'nvme0n1')")
    m = re.match(r"^nvme(\d+)n\d+$", name)
    default_path = f"nvme/nvme{m.group(1)}" if m else f"ata{index + 1}/host{index}/" \
        f"target{index}:0:0/{index}:0:0:0/block"
    major_minor = str(t.get("dev", "259:0" if m else f"8:{16 * index}"))
    parts = []
    for p in t.get("partitions", []):
        if not isinstance(p, dict) or "name" not in p:
            raise _err(where, "disk.partitions entries are tables {name, mount, fstype}")
        parts.append(Partition(str(p["name"]), p.get("mount"), str(p.get("fstype", "ext4"))))
    return Disk(name, str(t.get("path", default_path)), major_minor, tuple(parts),
                t.get("mount"), str(t.get("fstype", "ext4")))


def parse_driver(t: Mapping[str, Any], index: int) -> DriverSpec:
    where = f"driver #{index + 1} ({t.get('name', '?')})"
    _known(t, ("name", "ids", "classes", "module", "loaded", "sriov"), where)
    name = t.get("name")
    if not isinstance(name, str) or not name:
        raise _err(where, "name is required")
    ids: list[IdMatch] = []
    for raw in t.get("ids", []):
        m = _ID.match(str(raw))
        if not m:
            raise _err(where, f"id {raw!r} must look like '8086:10d3' or '1af4:*'")
        v, d = m.groups()
        ids.append(IdMatch(None if v == "*" else int(v, 16), None if d == "*" else int(d, 16)))
    for raw in t.get("classes", []):
        m = _CLASS.match(str(raw))
        if not m:
            raise _err(where, f"class {raw!r} must look like '010802' or '060400/ffff00'")
        ids.append(IdMatch(None, None, int(m.group(1), 16), int(m.group(2) or "ffffff", 16)))
    module = t.get("module", name.replace("-", "_"))
    return DriverSpec(name=name, ids=tuple(ids), module=module or None,
                      loaded=bool(t.get("loaded", True)), sriov=bool(t.get("sriov", False)))


def parse_fault(t: Mapping[str, Any], index: int) -> FaultSpec:
    where = f"fault #{index + 1}"
    _known(t, ("write", "ioctl", "errno", "times", "skip"), where)
    if ("write" in t) == ("ioctl" in t):
        raise _err(where, "give exactly one of write = 'PATH-GLOB' or ioctl = 'NAME'")
    op = "write" if "write" in t else "ioctl"
    times = t.get("times")
    return FaultSpec(op, str(t[op]), _errno(t.get("errno", "EIO"), where),
                     None if times is None else int(times), int(t.get("skip", 0)))


def parse_host(doc: Mapping[str, Any], name: str) -> HostSpec:
    """Build and validate a :class:`HostSpec` from a parsed TOML document.

    Raises:
        ConfigError: a missing, unknown or inconsistent entry (named in the message).
    """
    _known(doc, ("host", "driver", "device", "fault", "crash", "state"), "top level")
    host = doc.get("host", {})
    if not isinstance(host, dict):
        raise _err("[host]", "must be a table")
    _known(host, ("description", "cmdline", "iommu", "kernel", "enable_sriov"), "[host]")
    iommu = str(host.get("iommu", "intel"))
    if iommu not in ("intel", "amd", "none"):
        raise _err("[host]", f"iommu = {iommu!r}: use 'intel', 'amd' or 'none'")
    default_cmdline = {"intel": "intel_iommu=on iommu=pt", "amd": "amd_iommu=on iommu=pt",
                       "none": ""}[iommu]
    functions = tuple(parse_function(t, i) for i, t in enumerate(_table_list(doc, "device")))
    drivers = tuple(parse_driver(t, i) for i, t in enumerate(_table_list(doc, "driver")))
    faults = tuple(parse_fault(t, i) for i, t in enumerate(_table_list(doc, "fault")))
    crash = doc.get("crash", {})
    if not isinstance(crash, dict):
        raise _err("[crash]", "must be a table {at_write, applied}")
    _known(crash, ("at_write", "applied"), "[crash]")
    state = doc.get("state")
    if state is not None and not isinstance(state, dict):
        raise _err("[state]", "must be a table")
    spec = HostSpec(
        name=name, description=str(host.get("description", "")),
        cmdline=str(host.get("cmdline", f"BOOT_IMAGE=/boot/vmlinuz ro quiet {default_cmdline}"
                             ).strip()),
        iommu=iommu, kernel_release=str(host.get("kernel", "6.1.0-sim-amd64")),
        functions=functions, drivers=drivers, faults=faults,
        crash_at_write=(int(crash["at_write"]) if "at_write" in crash else None),
        crash_applies=bool(crash.get("applied", False)),
        enable_sriov=bool(host.get("enable_sriov", False)), state=state,
    )
    validate_host(spec)
    return spec


def validate_host(spec: HostSpec) -> None:
    """Check the topology is one a PCI hierarchy can have.

    Raises:
        ConfigError: duplicate addresses, a parent that is not a bridge, children of one
            bridge on different buses, a bus used twice, ACS on a kind that cannot have it.
    """
    by_name: dict[str, Function] = {}
    for fn in spec.functions:
        if fn.name in by_name:
            raise _err(f"device {fn.name}", "address used twice")
        by_name[fn.name] = fn
    names = {d.name for d in spec.drivers}
    if len(names) != len(spec.drivers):
        raise _err("[[driver]]", "a driver name is used twice")
    bus_owner: dict[tuple[int, int], str] = {}
    for fn in spec.functions:
        where = f"device {fn.name}"
        key = (fn.addr.domain, fn.addr.bus)
        owner = "root" if fn.parent is None else str(fn.parent)
        if fn.parent is not None:
            parent = by_name.get(str(fn.parent))
            if parent is None:
                raise _err(where, f"parent {fn.parent} is not declared")
            if not parent.kind.is_bridge:
                raise _err(where, f"parent {fn.parent} is a {parent.kind}, not a bridge")
            if parent.addr.domain != fn.addr.domain:
                raise _err(where, "a device must be in its parent bridge's domain")
        if bus_owner.setdefault(key, owner) != owner:
            raise _err(where, f"bus {fn.addr.domain:04x}:{fn.addr.bus:02x} is already "
                       f"behind {bus_owner[key]}; devices below one bridge share one bus "
                       "and no other device may use it")
        if fn.acs is not None and fn.kind in (Kind.PCIE_PCI_BRIDGE, Kind.PCI_BRIDGE):
            raise _err(where, f"a {fn.kind} cannot have ACS (PCIe r6.0 sec 6.12.1)")
        if fn.sriov is not None and fn.kind != Kind.ENDPOINT:
            raise _err(where, "only endpoints can be SR-IOV PFs")
        if fn.driver is not None and fn.driver not in names:
            raise _err(where, f"driver {fn.driver!r} is not declared in [[driver]]")
    for fn in spec.functions:
        if fn.parent is not None and fn.parent.bus >= fn.addr.bus and fn.parent.domain == \
                fn.addr.domain:
            raise _err(f"device {fn.name}", "a device's bus number must be above its "
                       "parent bridge's bus number")
