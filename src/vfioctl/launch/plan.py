"""Launch: what ``vfioctl start`` will do, worked out before anything changes.

:func:`plan_start` turns a parsed domain, a QEMU's capabilities and the user's extra
arguments into a :class:`StartPlan`: the QEMU command line (which never holds a VF
token), the vfio-pci devices QMP ``device_add`` will create (the only place a token
goes), and the manager calls that take the host devices. It reads the host only to
check (``hostcheck``, the drivers of ``managed='no'`` devices) and writes nothing, so
``--dry-run`` prints exactly this plan.

What is translated from the domain (nothing else is; see docs/hostdev-xml.md, "start"):
``<name>`` (``-name``), ``<domain type>`` (``-accel kvm|tcg``), ``<os><type machine>``
(``-machine``), ``<memory>`` (``-m``), ``<vcpu>`` (``-smp``), the PCI controllers
(``pci-bridge`` on pc, ``pcie-root-port`` on q35: every one declared, so that a port
packed as function 4 of a slot comes with its function 0), and the PCI hostdevs
themselves. Any other element that would change the guest is refused unless the caller
says it passes it itself (:mod:`vfioctl.launch.untranslated`).

Why some hostdevs move to QMP: QEMU only takes ``device_add`` on a hotpluggable bus,
and a hot-added PCI function may not join a slot whose function 0 exists already. So
every function of a slot that holds a token-bearing device is added over QMP, function
0 last, and on q35 such a slot must sit behind a ``pcie-root-port`` (``pcie.0`` cannot
hotplug).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vfioctl.address import PciAddress
from vfioctl.conf.hostdev import DomainDef, Location, PciControllerDef
from vfioctl.conf.parse import DomainDocument
from vfioctl.errors import ConfigError, UnsupportedConfig, UsageError
from vfioctl.launch.untranslated import PCI_CONTROLLER_MODELS, Untranslated, check_translated
from vfioctl.qemu.argv import build_hostdev_devices, format_props_json
from vfioctl.qemu.caps import QemuCaps
from vfioctl.qemu.placement import ROOT_BUS, place_hostdevs
from vfioctl.qemu.props import Props, format_pci_addr
from vfioctl.secret import REDACTED, VfToken

SOCKET_NAME = "qmp.sock"
LOG_NAME = "qemu.log"
RECORD_NAME = "launch.json"
_SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux

# QEMU options start does not let the user override: they would break the launch
# protocol (the pid, the paused start, the QMP socket vfioctl talks to).
_REFUSED_EXTRA = frozenset({"-daemonize", "--daemonize"})


@dataclass(frozen=True)
class QemuDevice:
    """One vfio-pci device of the domain, as QEMU will get it.

    ``props`` are the real properties (the VF token included) and are never in a repr;
    :meth:`shown` is the redacted copy for output. ``hotplug`` says whether the device
    goes through QMP ``device_add`` (token-bearing, or sharing a slot with one) instead
    of the command line.
    """

    dev_id: str
    source: PciAddress
    props: Props = field(repr=False)
    has_token: bool
    hotplug: bool

    def shown(self) -> Props:
        """The properties with the VF token replaced by ``<redacted>``."""
        return redact_props(self.props)


@dataclass(frozen=True)
class PrepareCall:
    """One :meth:`HostdevManager.prepare` call: devices, the group flag, and whether
    they are ``managed='yes'`` (unmanaged ones must already be on vfio-pci)."""

    addrs: tuple[PciAddress, ...]
    group: bool
    managed: bool


@dataclass(frozen=True)
class StartPlan:
    """Everything ``start`` will do, in order; nothing here holds a token in its repr.

    ``argv`` is the full QEMU command line (binary first). ``devices`` are every
    vfio-pci device; those with ``hotplug`` are sent with QMP ``device_add`` before
    ``cont``.
    """

    name: str
    binary: str
    caps_source: str
    argv: tuple[str, ...]
    devices: tuple[QemuDevice, ...]
    prepare: tuple[PrepareCall, ...]
    runtime_dir: Path
    qmp_socket: Path
    log_file: Path
    #: what the host checks found (a VF token in the file, an untrusted PF allowed for a
    #: confidential guest): shown to the user and kept in the launch record
    warnings: tuple[str, ...] = ()

    @property
    def hotplugs(self) -> tuple[QemuDevice, ...]:
        return tuple(d for d in self.devices if d.hotplug)

    @property
    def tokens(self) -> tuple[str, ...]:
        """Every VF token of the plan (for redaction and the secrecy checks)."""
        return tuple(str(d.props["vf-token"]) for d in self.devices if "vf-token" in d.props)

    def qmp_commands(self, *, reveal: bool = False) -> list[dict[str, Any]]:
        """The QMP commands after connecting, in order: each ``device_add``, then ``cont``."""
        cmds: list[dict[str, Any]] = [
            {"execute": "device_add", "arguments": dict(d.props) if reveal else d.shown()}
            for d in self.hotplugs
        ]
        cmds.append({"execute": "cont"})
        return cmds


def redact_props(props: Props) -> Props:
    out = dict(props)
    if "vf-token" in out:
        out["vf-token"] = REDACTED
    return out


# A vf-token property in any argument, whatever its value: QEMU's command line is world
# readable (/proc/PID/cmdline), so a token there has leaked, even one vfioctl never saw.
_VF_TOKEN_PROPERTY = re.compile(r"vf[-_]token", re.I)


def _token_pattern(token: str) -> str:
    """A token in any spelling a program may echo it in: any letter case, with or
    without the dashes (``1111…-2222-…`` and ``11112222…``)."""
    digits = re.sub(r"[^0-9a-fA-F]", "", token)
    if len(digits) != 32:
        return re.escape(token)
    groups = (digits[:8], digits[8:12], digits[12:16], digits[16:20], digits[20:])
    return "-?".join(groups)


def redact_text(text: str, tokens: Sequence[str]) -> str:
    """``text`` with every token replaced by ``<redacted>``, whatever its spelling."""
    for token in tokens:
        if token:
            text = re.sub(_token_pattern(token), REDACTED, text, flags=re.I)
    return text


# -- the domain's own settings --------------------------------------------------------------
def check_domain_name(domain: DomainDef) -> str:
    """The domain's ``<name>``: the owner of its devices and its runtime directory name.

    Raises:
        ConfigError: if the name is missing or cannot name a directory.
    """
    name = domain.name
    if not name:
        raise ConfigError(f"{domain.file}: the domain has no <name>",
                          hint="start holds the devices for the domain's name; add <name>")
    if "/" in name or name in (".", "..") or any(ord(c) < 0x20 for c in name):
        raise ConfigError(f"{domain.file}: domain name '{name}' cannot be used by start",
                          hint="use a name without '/' or control characters, as libvirt does")
    return name


def _memory_kib(domain: DomainDef) -> int:
    memory = domain.memory
    if memory is None:
        raise ConfigError(f"{domain.file}: the domain has no <memory>",
                          hint="add e.g. <memory unit='MiB'>1024</memory>")
    if memory.kib <= 0:
        raise ConfigError(f"{memory.where or domain.file}: <memory> must be positive")
    return memory.kib


def _accel(domain: DomainDef) -> str | None:
    kind = domain.domain_type
    if kind is None:
        return None
    accel = {"kvm": "kvm", "qemu": "tcg"}.get(kind)
    if accel is None:
        raise UnsupportedConfig(f"{domain.file}: domain type '{kind}' is not supported "
                                "by vfioctl start", hint="use type='kvm' or type='qemu'")
    return accel


def _opt(value: str) -> str:
    """Escape a value for QEMU's option syntax (a comma is written twice)."""
    return value.replace(",", ",,")


def _controller_args(domain: DomainDef,
                     hostdev_slots: dict[tuple[int, int, int], Location | None]) -> list[str]:
    """``-device`` for every declared PCI controller start creates, parents first.

    All of them, not only those a hostdev sits behind: in ``virsh dumpxml`` output the
    root ports are packed as the functions of one slot, and the firmware scans a slot
    only when its function 0 exists, so the port at ``0x2.0x4`` is reachable only with
    the one at ``0x2.0x0`` (``multifunction=on``) beside it. Spare ports cost nothing
    and keep the guest's topology the one the XML describes.

    Raises:
        UnsupportedConfig: a bus a hostdev needs without a controller start can create,
            a controller without an ``<address>``, or a slot with a function but no
            function 0 (the firmware would never see the devices in it).
    """
    family = domain.machine_family
    root = ROOT_BUS[family]
    by_bus: dict[str, PciControllerDef] = {}
    for ctl in domain.controllers:
        if ctl.index:  # absent or 0: the root bus, or one libvirt would number itself
            by_bus[ctl.bus_id] = ctl
    out: list[str] = []
    done: set[str] = set()
    slots = set(hostdev_slots)
    where = dict(hostdev_slots)

    def emit(bus_id: str, depth: int) -> None:
        if bus_id in done or bus_id == root:
            return
        ctl = by_bus.get(bus_id)
        if ctl is None or depth > 8:
            raise UnsupportedConfig(f"{domain.file}: PCI bus '{bus_id}' has no controller "
                                    "vfioctl start can create")
        model = ctl.model
        addr = ctl.address
        if addr is None:
            raise UnsupportedConfig(f"{ctl.where}: the {model} controller needs an explicit "
                                    "<address type='pci' …/> for vfioctl start")
        parent = root if addr.bus == 0 else _bus_of_index(by_bus, addr.bus)
        emit(parent, depth + 1)
        index = ctl.index or 0
        props: Props
        if family == "pc" and model == "pci-bridge":
            chassis = index if ctl.chassis_nr is None else ctl.chassis_nr
            props = {"driver": "pci-bridge", "chassis_nr": chassis, "id": bus_id,
                     "bus": parent}
        elif family == "q35" and model == "pcie-root-port":
            props = {"driver": "pcie-root-port",
                     "port": 0x10 + index - 1 if ctl.port is None else ctl.port,
                     "chassis": index if ctl.chassis is None else ctl.chassis, "id": bus_id,
                     "bus": parent}
        else:
            raise UnsupportedConfig(
                f"{ctl.where}: PCI controller model '{model}' is not supported by vfioctl "
                "start", hint="put hostdevs on a pci-bridge (pc) or a pcie-root-port (q35)")
        if addr.multifunction is not None:
            props["multifunction"] = addr.multifunction
        props["addr"] = f"0x{addr.slot:x}" + (f".0x{addr.function:x}" if addr.function else "")
        out.extend(["-device", format_props_json(props)])
        slots.add((addr.bus, addr.slot, addr.function))
        where.setdefault((addr.bus, addr.slot, addr.function), ctl.where)
        done.add(bus_id)

    for ctl in sorted(by_bus.values(), key=lambda c: c.index or 0):  # libvirt's order
        if ctl.model == PCI_CONTROLLER_MODELS.get(family):
            emit(ctl.bus_id, 0)
    for hd in domain.hostdevs:  # a bus a hostdev needs that start cannot create: refused
        if hd.guest_address is not None and hd.guest_address.bus:
            emit(_bus_of_index(by_bus, hd.guest_address.bus), 0)
    _check_function_zero(domain, slots, where)
    return out


def _check_function_zero(domain: DomainDef, slots: set[tuple[int, int, int]],
                         where: dict[tuple[int, int, int], Location | None]) -> None:
    """Refuse a guest slot that has functions but no function 0 anywhere in the domain."""
    declared = set(slots)
    for other in domain.others:
        a = other.pci_address
        if a is not None:
            declared.add((a.bus, a.slot, a.function))
    for bus, slot, function in sorted(slots):
        if function and (bus, slot, 0) not in declared:
            at = where.get((bus, slot, function)) or domain.file
            raise UnsupportedConfig(
                f"{at}: guest PCI slot {bus:02x}:{slot:02x} has function {function} "
                "but no function 0, so the guest firmware never scans it and its devices "
                "are missing in the guest",
                hint=f"put a device or controller at {bus:02x}:{slot:02x}.0 with "
                "multifunction='on', or move the function to .0")


def _bus_of_index(by_bus: dict[str, PciControllerDef], index: int) -> str:
    for bus_id, ctl in by_bus.items():
        if ctl.index == index:
            return bus_id
    return f"pci.{index}"


# -- the runtime directory --------------------------------------------------------------------
def runtime_base(state_dir: Path | None) -> Path:
    """Where launch directories live: ``STATE_DIR/qemu`` for a host with a state dir,
    else ``$XDG_RUNTIME_DIR/vfioctl/qemu`` (``/tmp/vfioctl-UID/qemu`` without it)."""
    if state_dir is not None:
        return state_dir / "qemu"
    return _fallback_root() / "qemu"


def _fallback_root() -> Path:
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "vfioctl"
    return Path(f"/tmp/vfioctl-{os.getuid()}")


def runtime_dir(state_dir: Path | None, name: str) -> Path:
    """The 0700 directory of one domain's launch: QMP socket, QEMU log, launch record.

    A unix socket path is limited to 107 bytes; when ``STATE_DIR/qemu/NAME/qmp.sock``
    is longer, a short directory named by a hash of it is used instead (under
    ``$XDG_RUNTIME_DIR/vfioctl`` or ``/tmp/vfioctl-UID``).
    """
    wanted = runtime_base(state_dir).absolute() / name
    if len(os.fsencode(str(wanted / SOCKET_NAME))) <= _SUN_PATH_MAX:
        return wanted
    import hashlib

    digest = hashlib.sha256(os.fsencode(str(wanted))).hexdigest()[:16]
    short = _fallback_root().absolute() / "s" / digest
    if len(os.fsencode(str(short / SOCKET_NAME))) > _SUN_PATH_MAX:
        short = Path(f"/tmp/vfioctl-{os.getuid()}") / "s" / digest
    return short


# -- the plan ---------------------------------------------------------------------------------
def _slot_key(props: Props) -> tuple[str, str]:
    addr = str(props.get("addr", ""))
    return str(props.get("bus", "")), addr.split(".", 1)[0]


def _function(props: Props) -> int:
    addr = str(props.get("addr", ""))
    return int(addr.split(".", 1)[1], 16) if "." in addr else 0


def build_devices(domain: DomainDef, caps: QemuCaps) -> list[QemuDevice]:
    """Every vfio-pci device, with the token, marked for the command line or QMP.

    Hot-plugged devices come out in the order they must be added: per slot, the
    non-zero functions first and function 0 last (QEMU refuses to hot-add a function
    into a slot whose function 0 exists).

    Raises:
        UnsupportedConfig: from the capability check or placement, or a token-bearing
            device on q35's pcie.0 (not hotpluggable).
    """
    built = build_hostdev_devices(domain, caps, reveal=True)
    hot_slots = {_slot_key(d.props) for d in built if d.has_token}
    family = domain.machine_family
    out: list[QemuDevice] = []
    for hd, dev in zip(domain.hostdevs, built, strict=True):
        hotplug = _slot_key(dev.props) in hot_slots
        if hotplug and family == "q35" and dev.props.get("bus") == ROOT_BUS["q35"]:
            raise UnsupportedConfig(
                f"{hd.where}: PCI device {hd.source} carries a vf-token, so vfioctl start "
                "adds it with QMP device_add, and pcie.0 on q35 cannot hot-add devices",
                hint="put it behind a <controller type='pci' model='pcie-root-port'>")
        out.append(QemuDevice(str(dev.props["id"]), hd.source, dev.props, dev.has_token,
                              hotplug))
    cold = [d for d in out if not d.hotplug]
    hot = [d for d in out if d.hotplug]
    slot_order: list[tuple[str, str]] = []
    for d in hot:
        if _slot_key(d.props) not in slot_order:
            slot_order.append(_slot_key(d.props))
    hot.sort(key=lambda d: (slot_order.index(_slot_key(d.props)), _function(d.props) == 0,
                            _function(d.props)))
    return cold + hot


def _hostdev_slots(domain: DomainDef) -> dict[tuple[int, int, int], Location | None]:
    """(bus, slot, function) of every hostdev, as placed (assigned addresses included),
    with the hostdev's line."""
    return {(p.address.bus, p.address.slot, p.address.function): hd.where
            for hd, p in zip(domain.hostdevs, place_hostdevs(domain), strict=True)}


def _prepare_calls(domain: DomainDef) -> tuple[PrepareCall, ...]:
    groups: dict[tuple[bool, bool], list[PciAddress]] = {}
    for hd in domain.hostdevs:
        # group='allow' only widens what vfioctl detaches; unmanaged devices are the
        # user's to detach, so their groups are never touched.
        key = (hd.managed, hd.managed and hd.group_allow)
        groups.setdefault(key, []).append(hd.source)
    order = [(True, True), (True, False), (False, False)]
    return tuple(PrepareCall(tuple(groups[k]), group=k[1], managed=k[0])
                 for k in order if k in groups)


def plan_start(doc: DomainDocument, caps: QemuCaps, *, binary: str,
               state_dir: Path | None, extra_args: Sequence[str] = (),
               untranslated: Untranslated = "refuse") -> StartPlan:
    """Work out the launch of ``doc``'s domain; reads and writes nothing.

    ``untranslated='refuse'`` (the default) refuses a domain with an element start
    does not translate (a disk, ``<cpu>``, UEFI firmware …: see
    :mod:`vfioctl.launch.untranslated`), because the guest would silently lack it;
    ``'ignore'`` is the user saying they give QEMU those things in ``extra_args``.

    Raises:
        ConfigError: missing ``<name>``/``<memory>``, bad values, an untranslated
            element (with ``untranslated='refuse'``).
        UnsupportedConfig: a QEMU without what a hostdev needs (``vf-token`` < 8.1), a
            layout start cannot build (see :func:`build_devices`).
        UsageError: extra arguments that would break the launch or reveal a token.
    """
    domain = doc.domain
    name = check_domain_name(domain)
    devices = build_devices(domain, caps)
    place_hostdevs(domain)  # machine/arch checks also when there are no hostdevs
    check_translated(domain, untranslated)
    tokens = [hd.vf_token.reveal() for hd in domain.hostdevs
              if isinstance(hd.vf_token, VfToken)]
    for arg in extra_args:
        if arg in _REFUSED_EXTRA:
            raise UsageError(f"extra QEMU argument '{arg}' cannot be used with vfioctl start",
                             hint="start runs QEMU in its own session already")
        if redact_text(arg, tokens) != arg or _VF_TOKEN_PROPERTY.search(arg):
            raise UsageError("an extra QEMU argument contains a VF token: it would be "
                             "visible to every user in the process list",
                             hint="give it in the domain XML's <vf-token>: vfioctl start "
                             "hands it to QEMU over QMP")

    rdir = runtime_dir(state_dir, name)
    socket_path = rdir / SOCKET_NAME
    argv: list[str] = [binary, "-name", f"guest={_opt(name)}"]
    argv += ["-machine", _opt(domain.machine or "pc")]
    accel = _accel(domain)
    if accel is not None:
        argv += ["-accel", accel]
    argv += ["-m", f"{_memory_kib(domain)}k", "-smp", str(domain.vcpus)]
    argv += ["-no-user-config", "-nodefaults", "-display", "none", "-S"]
    argv += ["-chardev", f"socket,id=qmp,path={_opt(str(socket_path))},server=on,wait=off",
             "-mon", "chardev=qmp,mode=control"]
    argv += _controller_args(domain, _hostdev_slots(domain))
    for dev in devices:
        if not dev.hotplug:
            argv += ["-device", format_props_json(dev.props)]
    argv += list(extra_args)
    if redact_text(" ".join(argv), tokens) != " ".join(argv):  # belt and braces
        raise AssertionError("a VF token reached the QEMU command line")
    return StartPlan(name=name, binary=binary, caps_source=caps.source, argv=tuple(argv),
                     devices=tuple(devices), prepare=_prepare_calls(domain),
                     runtime_dir=rdir, qmp_socket=socket_path, log_file=rdir / LOG_NAME)


def format_qmp(cmd: dict[str, Any]) -> str:
    return json.dumps(cmd, separators=(",", ":"), ensure_ascii=False)


__all__ = [
    "PrepareCall",
    "QemuDevice",
    "StartPlan",
    "Untranslated",
    "build_devices",
    "format_pci_addr",
    "format_qmp",
    "plan_start",
    "redact_props",
    "redact_text",
    "runtime_dir",
]
