"""Simulator: a host description (parsed TOML) -> a validated :class:`HostSpec`.

Every key is read through :mod:`vfioctl.sim.values`: its type and range are checked and
a wrong one is a :class:`ConfigError` naming the entry (``device #4 (0000:03:00.0)``),
the key, what it got and what is allowed. Nothing else leaves this module, so a hostile
host file cannot make vfioctl fail with anything but exit status 3. The ``[state]``
table is checked later, against the kernel it describes (:mod:`vfioctl.sim.state`).
"""

from __future__ import annotations

import errno as errno_mod
import re
from collections.abc import Mapping
from typing import Any

from vfioctl.address import PciAddress
from vfioctl.errors import UsageError
from vfioctl.sim import extras
from vfioctl.sim import values as v
from vfioctl.sim.caps import MODELS, parse_caps
from vfioctl.sim.model import (
    ACS_BITS,
    ACS_DEFAULT_CAP,
    Disk,
    DriverSpec,
    FaultSpec,
    Function,
    HostSpec,
    IdMatch,
    Kind,
    Partition,
    Sriov,
)
from vfioctl.sim.net import parse_net

_ID = re.compile(r"^([0-9a-fA-F]{4}|\*):([0-9a-fA-F]{4}|\*)$")
_CLASS = re.compile(r"^(?:class:)?([0-9a-fA-F]{6})(?:/([0-9a-fA-F]{6}))?$")
_DEVNUM = re.compile(r"^(\d{1,4}):(\d{1,7})$")
_RELEASE = re.compile(r"^[A-Za-z0-9._+~-]{1,64}$")
MAX_NUMNODES = 1024           # CONFIG_NODES_SHIFT=10
MAX_ERRNO = 4095
MAX_COUNT = 1 << 31
_err = v.err


def _where_fn(t: Mapping[str, Any], index: int) -> str:
    addr = t.get("addr")
    return f"device #{index + 1} ({addr if isinstance(addr, str) and len(addr) < 40 else '?'})"


def _hex(value: object, where: str, key: str, bits: int) -> int:
    """A number, or a hex string (``"0d"``, ``"0x0d"``), below ``2**bits``."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _err(where, f"{key} must be a number or a hex string, got {v.describe(value)}")
    if isinstance(value, int):
        n = value
    else:
        text = value.lower().removeprefix("0x")
        if not re.fullmatch(r"[0-9a-f]{1,16}", text):
            raise _err(where, f"{key} = {value!r} is not hexadecimal")
        n = int(text, 16)
    if not 0 <= n < (1 << bits):
        raise _err(where, f"{key} = {value!r} is out of range (allowed: 0..{(1 << bits) - 1:#x})")
    return n


def _id_pair(value: object, where: str, key: str) -> tuple[int, int]:
    if not isinstance(value, str) or not _ID.match(value) or "*" in value:
        raise _err(where, f"{key} must look like '8086:10d3', got {v.describe(value)}")
    ven, dev = value.split(":")
    return int(ven, 16), int(dev, 16)


def _addr(value: object, where: str, key: str) -> PciAddress:
    if not isinstance(value, str) or len(value) > 40:
        raise _err(where, f"{key} must be a PCI address like '0000:03:00.0', got "
                   f"{v.describe(value)}")
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
                raise _err(where, f"acs flag {word[:20]!r} unknown (use {' '.join(ACS_BITS)})")
            bits |= ACS_BITS[word.upper()]
        return bits
    if isinstance(value, int):
        return _hex(value, where, "acs", 16)
    raise _err(where, "acs must be true/false, flags like 'SV RR CR UF', or a number, got "
               f"{v.describe(value)}")


def _errno(value: object, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return v.as_int(value, where, "errno", 1, MAX_ERRNO)
    if isinstance(value, str) and re.fullmatch(r"E[A-Z0-9]{1,15}", value.upper()) and \
            isinstance(getattr(errno_mod, value.upper(), None), int):
        return int(getattr(errno_mod, value.upper()))
    raise _err(where, f"errno must be an errno name like 'EBUSY' or a number 1..{MAX_ERRNO}, "
               f"got {v.describe(value)}")


def _table_list(doc: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    raw = doc.get(key, [])
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise _err(f"[[{key}]]", f"'{key}' must be an array of tables ([[{key}]]), got "
                   f"{v.describe(raw)}")
    return raw


def _opt_bool(t: Mapping[str, Any], key: str, where: str) -> bool | None:
    if key not in t:
        return None
    return v.get_bool(t, key, where, False)


FN_KEYS = ("addr", "kind", "id", "subsystem", "class", "revision", "parent", "pcie", "acs",
           "multifunction", "sriov", "ari", "flr", "pm_reset", "numa_node", "boot_vga",
           "secondary_bus", "net", "disk", "driver", "driver_override", "label", "model",
           "caps", "config_size", *extras.FN_KEYS)


def parse_function(t: Mapping[str, Any], index: int) -> Function:
    where = _where_fn(t, index)
    v.known(t, FN_KEYS, where)
    if "addr" not in t:
        raise _err(where, "addr is required (e.g. addr = '0000:03:00.0')")
    addr = _addr(t["addr"], where, "addr")
    if "label" in t:
        v.get_str(t, "label", where)
    model = None
    if "model" in t:
        name = v.get_str(t, "model", where, max_len=64)
        model = MODELS.get(name)
        if model is None:
            raise _err(where, f"model {name!r} unknown (use {', '.join(MODELS)})")
    kind_name = v.get_str(t, "kind", where, model.kind if model and model.kind else
                          "endpoint", max_len=64)
    try:
        kind = Kind(kind_name)
    except ValueError:
        raise _err(where, f"kind {kind_name!r} unknown (use {', '.join(Kind)})") from None
    if model is not None and model.kind is not None and kind != model.kind:
        raise _err(where, f"model {model.name} is a {model.kind}, not a {kind}")
    caps = None
    if "caps" in t:
        try:
            caps = parse_caps(t["caps"], where)
        except ValueError as err:
            raise _err(where, str(err)) from None
    config_size: int | None = model.config_size if model else None
    if "config_size" in t:
        config_size = t["config_size"]
        if isinstance(config_size, bool) or config_size not in (256, 4096) or \
                not isinstance(config_size, int):
            raise _err(where, f"config_size must be 256 or 4096, got "
                       f"{v.describe(config_size)}")
    if "id" not in t:
        raise _err(where, "id is required (vendor:device, e.g. id = '8086:10d3')")
    vendor, device = _id_pair(t["id"], where, "id")
    svendor, sdevice = _id_pair(t["subsystem"], where, "subsystem") if "subsystem" in t \
        else (0, 0)
    default_class = {Kind.HOST_BRIDGE: 0x060000}.get(kind, 0x060400 if kind.is_bridge
                                                     else None)
    raw_class = t.get("class", default_class)
    if raw_class is None:
        raise _err(where, "class is required for an endpoint (e.g. class = '020000')")
    class_code = _hex(raw_class, where, "class", 24)
    parent = _addr(t["parent"], where, "parent") if "parent" in t else None
    sriov = _parse_sriov(t["sriov"], where, vendor) if "sriov" in t else None
    pcie = _opt_bool(t, "pcie", where)
    acs = _acs(t.get("acs"), where)
    if acs is not None and pcie is False:
        raise _err(where, "acs needs pcie = true (ACS is a PCIe extended capability)")
    ari = v.get_bool(t, "ari", where, model.ari if model else False)
    if caps is not None:
        for name, present in (("acs", acs is not None), ("ari", ari),
                              ("sriov", sriov is not None)):
            if caps.has(name) and not present:
                raise _err(where, f"caps lists {name} but the device has no {name} = ...")
    if config_size == 256 and (acs is not None or sriov is not None or ari):
        raise _err(where, "acs, ari and sriov are extended capabilities: they need "
                   "config_size = 4096")
    nets = tuple(parse_net(n, where) for n in v.tables(t.get("net", []), where, "net"))
    disks = tuple(_parse_disk(d, where, i)
                  for i, d in enumerate(v.tables(t.get("disk", []), where, "disk")))
    drv = v.as_name(t["driver"], where, "driver", "driver name (or '' for none)",
                    empty=True) if "driver" in t else None
    override = v.get_str(t, "driver_override", where, "", max_len=4094)
    drm, sound_card, nvidia_minor = extras.parse_function_extras(t, where)
    return Function(
        addr=addr, kind=kind, vendor=vendor, device=device, class_code=class_code,
        revision=_hex(t.get("revision", 0), where, "revision", 8),
        subsystem_vendor=svendor, subsystem_device=sdevice, parent=parent, pcie=pcie,
        acs=acs, multifunction=_opt_bool(t, "multifunction", where), sriov=sriov,
        ari=ari, flr=v.get_bool(t, "flr", where, model.flr if model else False),
        pm_reset=v.get_bool(t, "pm_reset", where, model.pm_reset if model else False),
        model=model, caps=caps, config_size=config_size,
        numa_node=v.get_int(t, "numa_node", where, -1, MAX_NUMNODES - 1, -1),
        boot_vga=v.get_bool(t, "boot_vga", where, False),
        secondary_bus=(_hex(t["secondary_bus"], where, "secondary_bus", 8)
                       if "secondary_bus" in t else None),
        net=nets, disks=disks, driver=drv or None, unbound=(drv == ""),
        driver_override=override or None,
        drm=drm, sound_card=sound_card, nvidia_minor=nvidia_minor,
    )


def _parse_sriov(value: object, where: str, vendor: int) -> Sriov:
    s = v.table(value, where, "sriov (a table {total_vfs, offset, stride, vf_id})")
    w = f"{where} sriov"
    v.known(s, ("total_vfs", "offset", "stride", "vf_id"), w)
    if "vf_id" not in s:
        raise _err(w, "vf_id is required (the VFs' vendor:device, e.g. '8086:154c')")
    vf_vendor, vf_device = _id_pair(s["vf_id"], w, "vf_id")
    if vf_vendor != vendor:
        raise _err(w, "vf_id must have the PF's vendor")
    # TotalVFs, First VF Offset and VF Stride are 16-bit registers (PCIe r6.0 9.3.3)
    total = v.get_int(s, "total_vfs", w, 1, 0xFFFF)
    offset = v.get_int(s, "offset", w, 1, 0xFFFF, 1)
    stride = v.get_int(s, "stride", w, 1, 0xFFFF, 1)
    return Sriov(total, offset, stride, vf_device)


def _parse_disk(t: Mapping[str, Any], where: str, index: int) -> Disk:
    w = f"{where} disk"
    v.known(t, ("name", "path", "partitions", "mount", "fstype", "dev"), w)
    if "name" not in t:
        raise _err(w, "name is required (e.g. 'sda' or 'nvme0n1')")
    name = v.as_name(t["name"], w, "name", "block device name", max_len=31)
    m = re.match(r"^nvme(\d+)n\d+$", name)
    default_path = f"nvme/nvme{m.group(1)}" if m else f"ata{index + 1}/host{index}/" \
        f"target{index}:0:0/{index}:0:0:0/block"
    path = v.get_str(t, "path", w, default_path, max_len=200)
    parts_of_path = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts_of_path) or \
            any(not re.fullmatch(r"[A-Za-z0-9_.:+@-]+", p) for p in parts_of_path):
        raise _err(w, f"path = {path!r} must be a relative path below the device's "
                   "directory, like 'nvme/nvme0' (no '.', '..' or empty parts)")
    dev = v.get_str(t, "dev", w, "259:0" if m else f"8:{16 * index}", max_len=20)
    dm = _DEVNUM.match(dev)
    if not dm or int(dm.group(1)) > 4095 or int(dm.group(2)) > (1 << 20) - 64:
        raise _err(w, f"dev = {dev!r} must be MAJOR:MINOR (major < 4096, minor < 2^20)")
    parts = []
    for i, p in enumerate(v.get_list(t, "partitions", w, "partition tables")):
        pw = f"{w} partitions[{i}]"
        pt = v.table(p, pw, "a partition")
        v.known(pt, ("name", "mount", "fstype"), pw)
        if "name" not in pt:
            raise _err(pw, "name is required (e.g. 'sda1')")
        parts.append(Partition(v.as_name(pt["name"], pw, "name", "partition name",
                                         max_len=31),
                               _mount(pt, pw), _fstype(pt, pw)))
    return Disk(name, path, dev, tuple(parts), _mount(t, w), _fstype(t, w))


def _mount(t: Mapping[str, Any], where: str) -> str | None:
    if "mount" not in t:
        return None
    point = v.get_str(t, "mount", where, max_len=1024)
    if not point.startswith("/"):
        raise _err(where, f"mount = {point!r} must be an absolute path like '/boot'")
    return point


def _fstype(t: Mapping[str, Any], where: str) -> str:
    return v.as_name(t.get("fstype", "ext4"), where, "fstype", "file system type",
                     max_len=31)


def parse_driver(t: Mapping[str, Any], index: int) -> DriverSpec:
    raw = t.get("name")
    where = f"driver #{index + 1} ({raw if isinstance(raw, str) and len(raw) < 40 else '?'})"
    v.known(t, ("name", "ids", "classes", "module", "loaded", "sriov", "max_vfs"), where)
    if "name" not in t:
        raise _err(where, "name is required")
    name = v.as_name(t["name"], where, "name", "driver name")
    ids: list[IdMatch] = []
    for i, text in enumerate(v.str_list(t, "ids", where, "'vendor:device' strings")):
        m = _ID.match(text)
        if not m:
            raise _err(where, f"ids[{i}] = {text!r} must look like '8086:10d3' or '1af4:*'")
        ven, dev = m.groups()
        ids.append(IdMatch(None if ven == "*" else int(ven, 16),
                           None if dev == "*" else int(dev, 16)))
    for i, text in enumerate(v.str_list(t, "classes", where, "class strings")):
        m = _CLASS.match(text)
        if not m:
            raise _err(where, f"classes[{i}] = {text!r} must look like '010802' or "
                       "'060400/ffff00'")
        ids.append(IdMatch(None, None, int(m.group(1), 16), int(m.group(2) or "ffffff", 16)))
    module = v.as_name(t.get("module", name.replace("-", "_")), where, "module",
                       "module name (or '' for built in)", empty=True)
    return DriverSpec(name=name, ids=tuple(ids), module=module or None,
                      loaded=v.get_bool(t, "loaded", where, True),
                      sriov=v.get_bool(t, "sriov", where, False),
                      max_vfs=v.get_int(t, "max_vfs", where, 0, 0xFFFF) if "max_vfs" in t
                      else None)


def parse_fault(t: Mapping[str, Any], index: int) -> FaultSpec:
    where = f"fault #{index + 1}"
    v.known(t, ("write", "ioctl", "errno", "times", "skip"), where)
    if ("write" in t) == ("ioctl" in t):
        raise _err(where, "give exactly one of write = 'PATH-GLOB' or ioctl = 'NAME'")
    op = "write" if "write" in t else "ioctl"
    target = v.get_str(t, op, where, max_len=1024)
    times = v.get_int(t, "times", where, 0, MAX_COUNT) if "times" in t else None
    return FaultSpec(op, target, _errno(t.get("errno", "EIO"), where), times,
                     v.get_int(t, "skip", where, 0, MAX_COUNT, 0))


def parse_host(doc: Mapping[str, Any], name: str) -> HostSpec:
    """Build and validate a :class:`HostSpec` from a parsed TOML document.

    Raises:
        ConfigError: a missing, unknown, mistyped, out-of-range or inconsistent entry
            (named in the message).
    """
    v.known(doc, ("host", "driver", "device", "fault", "crash", "state", "process"),
            "top level")
    host = v.table(doc.get("host", {}), "[host]", "[host]")
    v.known(host, ("description", "cmdline", "iommu", "kernel", "enable_sriov",
                   *extras.HOST_KEYS), "[host]")
    iommu = v.get_str(host, "iommu", "[host]", "intel", max_len=16)
    if iommu not in ("intel", "amd", "none"):
        raise _err("[host]", f"iommu = {iommu!r}: use 'intel', 'amd' or 'none'")
    default_cmdline = {"intel": "intel_iommu=on iommu=pt", "amd": "amd_iommu=on iommu=pt",
                       "none": ""}[iommu]
    release = v.get_str(host, "kernel", "[host]", "6.1.0-sim-amd64", max_len=64)
    if not _RELEASE.match(release) or release in (".", ".."):
        raise _err("[host]", f"kernel = {release!r} must be a kernel release like "
                   "'6.1.0-18-amd64' (letters, digits and ._+~-)")
    cmdline = v.get_str(host, "cmdline", "[host]",
                        f"BOOT_IMAGE=/boot/vmlinuz ro quiet {default_cmdline}",
                        max_len=4096).strip()
    functions = tuple(parse_function(t, i) for i, t in enumerate(_table_list(doc, "device")))
    drivers = tuple(parse_driver(t, i) for i, t in enumerate(_table_list(doc, "driver")))
    faults = tuple(parse_fault(t, i) for i, t in enumerate(_table_list(doc, "fault")))
    crash = v.table(doc.get("crash", {}), "[crash]", "[crash] (a table {at_write, applied})")
    v.known(crash, ("at_write", "applied"), "[crash]")
    state = doc.get("state")
    if state is not None:
        v.table(state, "[state]", "[state]")
    spec = HostSpec(
        name=name, description=v.get_str(host, "description", "[host]", "", max_len=200),
        cmdline=cmdline, iommu=iommu, kernel_release=release,
        functions=functions, drivers=drivers, faults=faults,
        crash_at_write=(v.get_int(crash, "at_write", "[crash]", 1, MAX_COUNT)
                        if "at_write" in crash else None),
        crash_applies=v.get_bool(crash, "applied", "[crash]", False),
        enable_sriov=v.get_bool(host, "enable_sriov", "[host]", False), state=state,
        extras=extras.parse_extras(host, doc.get("process")),
    )
    validate_host(spec)
    return spec


def validate_host(spec: HostSpec) -> None:
    """Check the topology is one a PCI hierarchy can have.

    Raises:
        ConfigError: duplicate addresses, interface or disk names; a parent that is not
            a bridge; children of one bridge on different buses, a bus used twice; ACS
            on a kind that cannot have it; a boot driver that is not declared.
    """
    by_name: dict[str, Function] = {}
    for fn in spec.functions:
        if fn.name in by_name:
            raise _err(f"device {fn.name}", "address used twice")
        by_name[fn.name] = fn
    names = {d.name for d in spec.drivers}
    if len(names) != len(spec.drivers):
        raise _err("[[driver]]", "a driver name is used twice")
    ifnames: set[str] = set()
    disks: set[str] = set()
    bus_owner: dict[tuple[int, int], str] = {}
    for fn in spec.functions:
        where = f"device {fn.name}"
        for net in fn.net:
            if net.name in ifnames:
                raise _err(where, f"network interface name {net.name} is used twice")
            ifnames.add(net.name)
        for disk in fn.disks:
            for block in (disk.name, *(p.name for p in disk.partitions)):
                if block in disks:
                    raise _err(where, f"block device name {block} is used twice")
                disks.add(block)
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
