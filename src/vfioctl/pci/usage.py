"""Mechanics: does the host rely on a PCI function right now? (network, storage, display)

Detaching a device the host is using takes the host's network, disks or console away
with it, so the manager refuses such a device without ``--force``. Every fact comes from
what the kernel exposes (and the simulator models the same):

- network: the function's interfaces, ``devices/ADDR/net/IFNAME/`` (virtio-net:
  ``devices/ADDR/virtioN/net/IFNAME/``) with ``operstate``, ``flags`` and ``master``;
  the interface addresses the kernel reports over netlink (:meth:`Host.ip_addresses`);
  routes in ``proc/net/route`` and ``proc/net/ipv6_route``; IPv6 addresses in
  ``proc/net/if_inet6``. An interface counts when it is up and has an address of
  global or site scope (IPv4 or IPv6; link-local and host-scope ones do not, as every
  up interface gets an ``fe80::`` address), or carries routes, or is a port of an up
  bridge/bond. Addresses come from netlink because routes do not show them all: an
  IPv4 address added as ``/32`` or with ``noprefixroute`` installs no prefix route, and
  procfs has no per-interface IPv4 address list. Where netlink cannot be used (a
  sandbox; a snapshot taken before addresses were captured) procfs is still read.
- storage: ``sys/block/NAME`` links into the device's sysfs subtree (partitions are
  subdirectories, stacked devices such as dm/md under ``holders/``), matched against
  ``proc/mounts`` and ``proc/swaps``.
  A disk or partition that a device-mapper or MD device is stacked on (``holders/``)
  counts even when nothing on it is mounted: an open LUKS volume, an active RAID array
  or LVM volume group loses a leg when the disk goes.
- display: ``boot_vga`` = 1, the GPU the firmware and the console draw on.
- processes: a process holding one of the function's device nodes open — the DRM nodes
  of a GPU (``devices/ADDR/drm/card1`` is ``/dev/dri/card1``, ``renderD129`` likewise),
  NVIDIA's ``/dev/nvidiaN`` (N is the "Device Minor" in
  ``proc/driver/nvidia/gpus/ADDR/information``), a sound card's ``/dev/snd`` nodes
  (``devices/ADDR/sound/cardN/controlCN``, ``pcmCND0p``…): a display server, a CUDA
  program or a sound server. Found by reading ``proc/PID/fd/*`` links through the Host,
  only for a function that has such nodes. psutil is not used: it reads the live
  ``/proc`` only (not a snapshot or a simulated host) and its ``open_files()`` skips
  character devices. Processes whose ``fd`` directory this user may not read (other
  users', without root) cannot be seen.

Missing files mean "no such use" (a snapshot or simulator need not model everything),
never an error.
"""
from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import PurePosixPath

from vfioctl.host.base import (
    DEV,
    PROC,
    PROC_MOUNTS,
    PROC_NET_INET6,
    PROC_NET_ROUTE,
    PROC_NET_ROUTE6,
    PROC_NVIDIA_GPUS,
    PROC_SWAPS,
    SYS_BLOCK,
    Host,
    IfAddress,
)
from vfioctl.pci.device import PciDevice

_SYS_BLOCK = SYS_BLOCK
# nvidia.ko's per-GPU procfs file (its minor number); not in host.base, which is not
# this module's to change: spelled here, the one place that reads it.
_PROC_MOUNTS = PROC_MOUNTS
_PROC_SWAPS = PROC_SWAPS
_PROC_ROUTE = PROC_NET_ROUTE
_PROC_ROUTE6 = PROC_NET_ROUTE6
_PROC_INET6 = PROC_NET_INET6
_IFF_UP = 0x1
_RT_SCOPE_LINK = 253  # ifa_scope: 0 universe, 200 site, 253 link, 254 host, 255 nowhere
_ADDRESSES_NAMED = 3  # addresses a message spells out before "(+N more)"
_UP_STATES = frozenset({"up", "unknown", "dormant"})


@dataclass(frozen=True)
class HostUse:
    """One way the host relies on a device; ``detail`` is a phrase for messages."""

    kind: str  # "network" | "storage" | "display" | "process"
    detail: str


def find_host_uses(dev: PciDevice) -> list[HostUse]:
    """Every use the host makes of ``dev`` now, in a stable order (empty: free to take)."""
    uses: list[HostUse] = []
    uses.extend(_network_uses(dev))
    uses.extend(_storage_uses(dev))
    if dev.boot_vga:
        uses.append(HostUse("display", "it is the boot GPU (boot_vga=1) the console uses"))
    uses.extend(_process_uses(dev))
    return uses


# -- processes holding device nodes ------------------------------------------------------

_DRM_NODES = ("card", "renderD", "controlD")
_SND_NODES = ("controlC", "pcmC", "hwC", "midiC")
_PROCS_NAMED = 3  # processes a message spells out per node before "(+N more)"


def device_nodes(dev: PciDevice) -> list[str]:
    """The ``/dev`` paths of the function's DRM, sound and NVIDIA nodes (empty for most
    devices, and for any device while vfio-pci drives it)."""
    host = dev.host
    nodes = [f"/{DEV}/dri/{n}" for n in _listdir(host, dev.path / "drm")
             if n.startswith(_DRM_NODES)]
    for card in _listdir(host, dev.path / "sound"):
        if card.startswith("card") and card[4:].isdigit():
            nodes.extend(f"/{DEV}/snd/{n}" for n in _listdir(host, dev.path / "sound" / card)
                         if n.startswith(_SND_NODES))
    info = _read(host, PROC_NVIDIA_GPUS / dev.name / "information")
    for line in (info or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Device Minor" and value.strip().isdigit():
            nodes.append(f"/{DEV}/nvidia{int(value.strip())}")
    return nodes


def open_by(host: Host, nodes: set[str]) -> dict[str, list[tuple[int, str]]]:
    """Node -> the (pid, comm) of each process that has it open, pids ascending."""
    found: dict[str, dict[int, str]] = {}
    pids = sorted(int(p) for p in _listdir(host, PROC) if p.isdigit())
    for pid in pids:
        fd_dir = PROC / str(pid) / "fd"
        for fd in _listdir(host, fd_dir):
            try:
                target = host.readlink(fd_dir / fd)
            except OSError:
                continue
            if target in nodes:
                per = found.setdefault(target, {})
                if pid not in per:
                    comm = (_read(host, PROC / str(pid) / "comm") or "").strip()
                    per[pid] = comm or "?"
    return {node: sorted(per.items()) for node, per in sorted(found.items())}


def _process_uses(dev: PciDevice) -> list[HostUse]:
    nodes = device_nodes(dev)
    if not nodes:
        return []
    uses = []
    for node, procs in open_by(dev.host, set(nodes)).items():
        named = ", ".join(f"pid {pid} ({comm})" for pid, comm in procs[:_PROCS_NAMED])
        more = len(procs) - _PROCS_NAMED
        uses.append(HostUse("process", f"{node} is open by {named}"
                                       + (f" (+{more} more)" if more > 0 else "")))
    return uses


# -- network ----------------------------------------------------------------------------


def _read(host: Host, path: PurePosixPath) -> str | None:
    try:
        return host.read_text(path)
    except OSError:
        return None


def _listdir(host: Host, path: PurePosixPath) -> list[str]:
    try:
        return sorted(host.listdir(path))
    except OSError:
        return []


def _network_uses(dev: PciDevice) -> list[HostUse]:
    host = dev.host
    ifaces = _interfaces(dev)
    if not ifaces:
        return []
    routes4 = _route_ifaces(_read(host, _PROC_ROUTE))
    routes6 = _route6_ifaces(_read(host, _PROC_ROUTE6))
    addrs6 = _inet6_ifaces(_read(host, _PROC_INET6))
    addresses: dict[str, list[IfAddress]] | None = None
    uses = []
    for ifname, base in ifaces:
        if not _iface_up(host, base):
            continue
        if addresses is None:  # asked once, and only for an up interface: netlink costs
            addresses = _host_addresses(host)
        what = []
        named = addresses.get(ifname, [])
        if named:
            what.append(_addresses_phrase(named))
        if ifname in routes4 or ifname in routes6:
            what.append("routes")
        if not named and ifname in addrs6:
            what.append("addresses")  # procfs only: netlink was unavailable
        master = _link_base(host, base / "master")
        if what:
            uses.append(HostUse("network", f"interface {ifname} is up with "
                                           f"{' and '.join(what)}"))
        elif master is not None:
            uses.append(HostUse("network", f"interface {ifname} is up as a port of "
                                           f"{master}"))
    return uses


def _interfaces(dev: PciDevice) -> list[tuple[str, PurePosixPath]]:
    """The function's network interfaces and their sysfs directories: ``ADDR/net/IFNAME``
    for most drivers, ``ADDR/virtioN/net/IFNAME`` for virtio-net, whose interface hangs
    off the virtio device that virtio-pci creates below the PCI function."""
    host = dev.host
    parents = [dev.path] + [dev.path / e for e in _listdir(host, dev.path)
                            if e.startswith("virtio") and e[6:].isdigit()]
    return [(ifname, parent / "net" / ifname)
            for parent in parents for ifname in _listdir(host, parent / "net")]


def _host_addresses(host: Host) -> dict[str, list[IfAddress]]:
    """Interface -> its addresses that count (global or site scope), in kernel order.

    A host that cannot say (a damaged snapshot file) answers nothing here; procfs is
    still read by the caller."""
    try:
        addresses = host.ip_addresses()
    except OSError:
        return {}
    out: dict[str, list[IfAddress]] = {}
    for addr in addresses:
        if addr.scope < _RT_SCOPE_LINK:
            out.setdefault(addr.ifname, []).append(addr)
    return out


def _addresses_phrase(addresses: list[IfAddress]) -> str:
    """``address 10.99.1.1/32`` or ``addresses A, B, C (+2 more)``."""
    shown = ", ".join(f"{a.address}/{a.prefixlen}" for a in addresses[:_ADDRESSES_NAMED])
    if len(addresses) == 1:
        return f"address {shown}"
    more = len(addresses) - _ADDRESSES_NAMED
    return f"addresses {shown}" + (f" (+{more} more)" if more > 0 else "")


def _iface_up(host: Host, base: PurePosixPath) -> bool:
    flags = _read(host, base / "flags")
    if flags is not None:
        try:
            if int(flags.strip(), 16) & _IFF_UP:
                return True
        except ValueError:
            pass
    state = _read(host, base / "operstate")
    return state is not None and state.strip() in _UP_STATES


def _link_base(host: Host, path: PurePosixPath) -> str | None:
    try:
        return posixpath.basename(host.readlink(path))
    except OSError:
        return None


def _route_ifaces(text: str | None) -> set[str]:
    """Interfaces with an IPv4 route (``proc/net/route``: header line, then Iface first)."""
    if not text:
        return set()
    out = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if fields:
            out.add(fields[0])
    return out


def _route6_ifaces(text: str | None) -> set[str]:
    """Interfaces with an IPv6 route other than link-local/multicast ones, which every up
    interface gets automatically (``proc/net/ipv6_route``: 10 columns, device last)."""
    if not text:
        return set()
    out = set()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 10 or fields[-1] == "lo":
            continue
        dest = fields[0].lower()
        if dest.startswith("fe80") or dest.startswith("ff"):
            continue
        out.add(fields[-1])
    return out


def _inet6_ifaces(text: str | None) -> set[str]:
    """Interfaces with a non-link-local IPv6 address (``proc/net/if_inet6``: scope is the
    4th column, 20 = link, 10 = host)."""
    if not text:
        return set()
    out = set()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[3] not in ("20", "10"):
            out.add(fields[5])
    return out


# -- storage ----------------------------------------------------------------------------


def _storage_uses(dev: PciDevice) -> list[HostUse]:
    host = dev.host
    disks = _disks_of(dev)
    if not disks:
        return []
    mounts = _mounts(host)
    swaps = _swaps(host)
    uses = []
    for disk in disks:
        dirs = [(disk, _SYS_BLOCK / disk)] + [
            (part, _SYS_BLOCK / disk / part) for part in _partitions(host, disk)]
        found: list[str] = []
        for name, sysdir in dirs:
            for node in _node_names(host, name, sysdir):
                for point in mounts.get(node, []):
                    found.append(f"{node} is mounted on {point}"
                                 if point != "/" else f"{node} holds the root filesystem /")
                if node in swaps:
                    found.append(f"{node} is in use as swap")
        if not found:
            found = _held(host, dirs)
        if found:
            uses.append(HostUse("storage", f"disk {disk}: {', '.join(_dedup(found))}"))
    return uses


def _held(host: Host, dirs: list[tuple[str, PurePosixPath]]) -> list[str]:
    """``sda2 is held by dm-0 (mapper/cryptroot)``: a stacked device is active on it."""
    out = []
    for name, sysdir in dirs:
        for holder in _listdir(host, sysdir / "holders"):
            dm_name = (_read(host, _SYS_BLOCK / holder / "dm" / "name") or "").strip()
            out.append(f"{name} is held by {holder}"
                       + (f" (mapper/{dm_name})" if dm_name else ""))
    return out


def _dedup(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _disks_of(dev: PciDevice) -> list[str]:
    """Block devices whose sysfs directory lies inside ``dev``'s subtree."""
    host = dev.host
    try:
        prefix = dev.sysfs_path.rstrip("/") + "/"
    except OSError:
        return []
    disks = []
    for name in _listdir(host, _SYS_BLOCK):
        try:
            target = host.readlink(_SYS_BLOCK / name)
        except OSError:
            continue
        real = posixpath.normpath(posixpath.join(str(_SYS_BLOCK), target))
        if real.startswith(prefix):
            disks.append(name)
    return disks


def _partitions(host: Host, disk: str) -> list[str]:
    return [n for n in _listdir(host, _SYS_BLOCK / disk) if n.startswith(disk) and n != disk]


def _node_names(host: Host, name: str, sysdir: PurePosixPath, depth: int = 0) -> list[str]:
    """``name`` and every stacked device built on it (dm, md), by kernel name and by
    ``/dev/mapper`` name, so that mounts of an LVM volume on the disk are found too."""
    nodes = [name]
    if depth < 4:
        for holder in _listdir(host, sysdir / "holders"):
            nodes.extend(_node_names(host, holder, _SYS_BLOCK / holder, depth + 1))
            dm_name = _read(host, _SYS_BLOCK / holder / "dm" / "name")
            if dm_name and dm_name.strip():
                nodes.append(f"mapper/{dm_name.strip()}")
    return _dedup(nodes)


def _unescape(field: str) -> str:
    """``proc/mounts`` escapes space, tab, newline and backslash as octal (``\\040``)."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _dev_node(host: Host, source: str) -> str | None:
    """``/dev/sda1`` -> ``sda1``; a symlink (``/dev/disk/by-uuid/…``, ``/dev/mapper/x``
    on udev systems) is followed once through the Host."""
    if not source.startswith("/dev/"):
        return None
    rel = source[len("/dev/"):]
    try:
        if host.is_link(DEV / rel):
            target = host.readlink(DEV / rel)
            return posixpath.basename(target)
    except OSError:
        pass
    return rel


def _mounts(host: Host) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in (_read(host, _PROC_MOUNTS) or "").splitlines():
        fields = line.split()
        if len(fields) < 2:
            continue
        node = _dev_node(host, _unescape(fields[0]))
        if node is not None:
            out.setdefault(node, []).append(_unescape(fields[1]))
    return out


def _swaps(host: Host) -> set[str]:
    out = set()
    for line in (_read(host, _PROC_SWAPS) or "").splitlines()[1:]:
        fields = line.split()
        if fields:
            node = _dev_node(host, _unescape(fields[0]))
            if node is not None:
                out.add(node)
    return out
