"""Simulator: VFIO users — processes that hold VFIO files open, and how procfs shows them.

Two kinds of process hold VFIO files on a simulated host:

- this process: the container, group and device files it opened through the
  :class:`~vfioctl.sim.host.SimHost` (``open``, ``GROUP_GET_DEVICE_FD``); they belong to
  the process and are never saved;
- other processes (QEMU, a DPDK application) declared in the host's state,
  ``[[state.vfio_user]]`` with ``pid``, ``comm``, ``group`` and ``devices``, or added by a
  test (:meth:`SimHost.add_vfio_user`). Each one did what QEMU does: opened
  ``/dev/vfio/vfio`` and ``/dev/vfio/GROUP``, put the group in the container with the
  type1 IOMMU, and took a device file for each of ``devices``.

Both appear under ``proc/PID/`` as on Linux: ``comm`` (the command name, at most 15
bytes) and ``fd/N`` links — ``/dev/vfio/vfio``, ``/dev/vfio/GROUP``, and
``anon_inode:[vfio-device]`` for a device file of the group API (the name
``anon_inode_getfile("[vfio-device]", ...)`` gives it in drivers/vfio/group.c, which
says nothing about which device it is). File descriptors 0-2 are ``/dev/null``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vfioctl.address import PciAddress
from vfioctl.errors import UsageError
from vfioctl.sim import values as v

PID_MAX_LIMIT = 4 * 1024 * 1024        # include/linux/threads.h on 64-bit
TASK_COMM_LEN = 16                     # comm holds at most 15 bytes and a NUL
DEVICE_FILE = "anon_inode:[vfio-device]"
CONTAINER = "/dev/vfio/vfio"
STDIO = "/dev/null"


@dataclass(frozen=True)
class VfioUser:
    """Another process holding a VFIO group (and maybe device files of it) open."""

    pid: int
    comm: str
    group: int
    devices: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"pid {self.pid} ({self.comm})"

    def fd_targets(self) -> dict[int, str]:
        """What ``readlink proc/PID/fd/N`` answers, fd by fd."""
        fds = {0: STDIO, 1: STDIO, 2: STDIO, 3: CONTAINER, 4: f"/dev/vfio/{self.group}"}
        for i in range(len(self.devices)):
            fds[5 + i] = DEVICE_FILE
        return fds

    def to_state(self) -> dict[str, Any]:
        return {"pid": self.pid, "comm": self.comm, "group": self.group,
                "devices": list(self.devices)}


def check_pid(pid: object) -> int:
    """A pid another process could have. Raises ValueError saying what is allowed."""
    if isinstance(pid, bool) or not isinstance(pid, int) or not 2 <= pid < PID_MAX_LIMIT:
        raise ValueError(f"pid must be an integer 2..{PID_MAX_LIMIT - 1}, got {pid!r}")
    if pid == os.getpid():
        raise ValueError(f"pid {pid} is this process's own pid; a VFIO user declared on "
                         "the host is another process")
    return pid


def check_comm(comm: object) -> str:
    """A command name as ``proc/PID/comm`` holds it: any text without NUL, at most 15
    bytes in UTF-8 (the kernel truncates longer names; here they are refused)."""
    if not isinstance(comm, str) or "\0" in comm or \
            len(comm.encode()) > TASK_COMM_LEN - 1:
        raise ValueError(f"comm must be a string of at most {TASK_COMM_LEN - 1} bytes "
                         f"without NUL, got {comm!r}")
    return comm


def check_devices(devices: object) -> tuple[str, ...]:
    """PCI addresses (canonical form), each once."""
    if isinstance(devices, str) or not isinstance(devices, (list, tuple)):
        raise ValueError(f"devices must be a list of PCI addresses, got {devices!r}")
    out: list[str] = []
    for d in devices:
        if not isinstance(d, (str, PciAddress)):
            raise ValueError(f"devices: {d!r} is not a PCI address")
        try:
            name = str(d if isinstance(d, PciAddress) else PciAddress.parse(d))
        except UsageError:
            raise ValueError(f"devices: {d!r} is not a PCI address") from None
        if name in out:
            raise ValueError(f"devices: {name} is given twice")
        out.append(name)
    return tuple(out)


def make_user(pid: object, comm: object, group: object, devices: object = ()) -> VfioUser:
    """Check each field (types and ranges only; the kernel checks the rest).

    Raises:
        ValueError: what is wrong, naming the field.
    """
    if isinstance(group, bool) or not isinstance(group, int) or not 0 <= group < 1 << 31:
        raise ValueError(f"group must be an IOMMU group number, got {group!r}")
    return VfioUser(check_pid(pid), check_comm(comm), group, check_devices(devices))


def parse_users(raw: object) -> list[VfioUser]:
    """``[[state.vfio_user]]`` entries.

    Raises:
        ConfigError: an entry with a missing, unknown or mistyped key (named).
    """
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise v.err("[state]", "vfio_user must be an array of tables ([[state.vfio_user]] "
                    f"with pid, comm, group, devices), got {v.describe(raw)}")
    out = []
    for i, t in enumerate(raw):
        where = f"[[state.vfio_user]] #{i + 1}"
        entry: Mapping[str, Any] = t
        v.known(entry, ("pid", "comm", "group", "devices"), where)
        for key in ("pid", "comm", "group"):
            if key not in entry:
                raise v.err(where, f"{key} is required")
        try:
            out.append(make_user(entry["pid"], entry["comm"], entry["group"],
                                 entry.get("devices", [])))
        except ValueError as err:
            raise v.err(where, str(err)) from None
    return out


def own_comm() -> str:
    """This process's command name, as the real kernel has it (``vfioctl``, ``python3``)."""
    try:
        with open("/proc/self/comm", encoding="utf-8", errors="replace") as f:
            return f.read().rstrip("\n")[:TASK_COMM_LEN - 1]
    except OSError:
        return "python3"
