"""Simulator: the ``proc/`` part of the file tree.

``cmdline``, ``sys/kernel/osrelease``, ``mounts`` and ``swaps``; ``net/route``,
``net/ipv6_route`` and ``net/if_inet6`` from the interfaces that exist now
(:mod:`vfioctl.sim.net`); and a directory per process that holds VFIO files — this one
(``os.getpid()``, which always exists, as ``proc/self`` does) and every VFIO user of the
host (:mod:`vfioctl.sim.users`) — with ``comm`` and ``fd/N`` links (this one also has
``limits``), and every ``[[process]]`` of the host file (:mod:`vfioctl.sim.extras`).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from vfioctl.sim import extras, net
from vfioctl.sim.kernel import SimKernel
from vfioctl.sim.users import own_comm
from vfioctl.sim.vfs import Dir, File, Link

VIRTUAL_MOUNTS = (
    "sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0",
    "proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0",
    "udev /dev devtmpfs rw,nosuid,relatime,mode=755 0 0",
    "tmpfs /run tmpfs rw,nosuid,nodev,noexec,relatime,mode=755 0 0",
)
SWAPS_HEADER = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"


def _text(value: str) -> File:
    data = value.encode()
    return File(lambda: data)


def _live(fn: Callable[[], str]) -> File:
    return File(lambda: fn().encode())


def build_proc(root: Dir, k: SimKernel) -> None:
    proc = root.mkdir("proc")
    proc.children["cmdline"] = _text(k.spec.cmdline + "\n")
    proc.mkdir("sys/kernel").children["osrelease"] = _text(k.spec.kernel_release + "\n")
    proc.children["mounts"] = _live(lambda: mounts(k))
    proc.children["swaps"] = _text(SWAPS_HEADER)
    pnet = proc.mkdir("net")
    pnet.children["route"] = _live(lambda: net.proc_route(k.live_interfaces()))
    pnet.children["ipv6_route"] = _live(lambda: net.proc_ipv6_route(k.live_interfaces()))
    pnet.children["if_inet6"] = _live(lambda: net.proc_if_inet6(k.live_interfaces()))
    me = os.getpid()
    _process(proc, me, own_comm(), k.vfio.fd_targets())
    proc.mkdir(str(me)).children["limits"] = _text(extras.limits(k.spec.extras))
    proc.children["self"] = Link(str(me))
    for user in k.vfio_users.values():
        _process(proc, user.pid, user.comm, user.fd_targets())
    for other in k.spec.extras.processes:
        if str(other.pid) not in proc.children:    # a VFIO user's pid wins
            _process(proc, other.pid, other.comm, other.fd_targets())


def _process(proc: Dir, pid: int, comm: str, fds: dict[int, str]) -> None:
    d = proc.mkdir(str(pid))
    d.children["comm"] = _text(comm + "\n")
    fd_dir = d.mkdir("fd")
    for fd, target in fds.items():
        fd_dir.children[str(fd)] = Link(target)


def _escape(field: str) -> str:
    """``mangle`` in fs/proc_namespace.c: space, tab, newline and backslash as octal."""
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in field)


def mounts(k: SimKernel) -> str:
    """The mount table is not tied to the driver: the kernel keeps a mount whose disk
    vanished, so these lines stay after an unbind (as on a real host)."""
    lines = list(VIRTUAL_MOUNTS)
    if any(h.total for h in k.spec.extras.hugepages):   # systemd's dev-hugepages.mount
        lines.append("hugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0")
    for dev in k.devices.values():
        for disk in dev.fn.disks:
            if disk.mount:
                lines.append(f"/dev/{disk.name} {_escape(disk.mount)} {disk.fstype} "
                             "rw,relatime 0 0")
            for part in disk.partitions:
                if part.mount:
                    lines.append(f"/dev/{part.name} {_escape(part.mount)} {part.fstype} "
                                 "rw,relatime 0 0")
    return "\n".join(lines) + "\n"
