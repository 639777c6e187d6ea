"""Simulator: what a host offers a guest besides PCI — KVM, memory, iommufd, processes.

``vfioctl doctor`` asks questions the PCI model cannot answer: can ``/dev/kvm`` be
opened, how much memory may this process lock (VFIO pins all guest memory), are huge
pages reserved, does the kernel have iommufd and the VFIO device cdev, may vfio use
unsafe interrupts; and host-use detection asks which processes hold a GPU's or sound
card's device nodes open. These ``[host]`` keys and ``[[process]]`` tables model them;
every one has a default, so a host file written before them describes the same host:

- ``kvm = "usable"`` (``/dev/kvm`` opens), ``"absent"`` (no node: virtualization off in
  the firmware or kvm not loaded) or ``"denied"`` (the node exists, opening it gives
  EACCES: the user is not in the ``kvm`` group);
- ``memlock`` = this process's ``RLIMIT_MEMLOCK`` in bytes, or ``"unlimited"``
  (``proc/self/limits``); default 8 MiB, the kernel's default since 5.16;
- ``memory_mib`` (``MemTotal``) and ``hugepages = [{size_kib, total, free}]``
  (``proc/meminfo``, ``sys/kernel/mm/hugepages/hugepages-NkB/``); default: the two x86
  sizes with none reserved;
- ``iommufd = true``: ``/dev/iommu`` and ``/dev/vfio/devices/vfioN`` exist; what opening
  and binding them does depends on the kernel release (:mod:`vfioctl.sim.vfio`);
- ``allow_unsafe_interrupts`` (vfio_iommu_type1's parameter) and
  ``interrupt_remapping`` (the DMAR unit's ecap IR bit; Intel hosts only);
- ``[[process]]`` with ``pid``, ``comm`` and ``open`` (absolute paths of the files it
  holds open, e.g. ``"/dev/dri/card1"``): ``proc/PID/comm`` and ``proc/PID/fd/N``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vfioctl.sim import values as v
from vfioctl.sim.users import check_comm, check_pid

KVM_STATES = ("usable", "absent", "denied")
HUGEPAGE_SIZES_KIB = (2048, 1048576)      # x86-64: 2 MiB (PMD) and 1 GiB (PUD) pages
DEFAULT_MEMLOCK = 8 << 20                 # MLOCK_LIMIT since 5.16 (include/uapi/linux/resource.h)
DEFAULT_MEMORY_MIB = 32768
MAX_MEMORY_MIB = 1 << 24                  # 16 TiB
HOST_KEYS = ("kvm", "memlock", "memory_mib", "hugepages", "iommufd",
             "allow_unsafe_interrupts", "interrupt_remapping")
FN_KEYS = ("drm", "sound_card", "nvidia_minor")
FIRST_FD = 3                               # 0-2: /dev/null, as for a VFIO user


@dataclass(frozen=True)
class HugePages:
    size_kib: int
    total: int = 0
    free: int = 0


@dataclass(frozen=True)
class Process:
    """A process of the host holding files open (a display server, a CUDA program)."""

    pid: int
    comm: str
    open: tuple[str, ...] = ()

    def fd_targets(self) -> dict[int, str]:
        fds = {0: "/dev/null", 1: "/dev/null", 2: "/dev/null"}
        for i, path in enumerate(self.open):
            fds[FIRST_FD + i] = path
        return fds


@dataclass(frozen=True)
class HostExtras:
    kvm: str = "usable"
    memlock: int | None = DEFAULT_MEMLOCK   # None: unlimited
    memory_mib: int = DEFAULT_MEMORY_MIB
    hugepages: tuple[HugePages, ...] = field(
        default_factory=lambda: tuple(HugePages(s) for s in HUGEPAGE_SIZES_KIB))
    iommufd: bool = False
    allow_unsafe_interrupts: bool = False
    interrupt_remapping: bool = True
    processes: tuple[Process, ...] = ()


def parse_extras(host: Mapping[str, Any], raw_processes: object) -> HostExtras:
    """The ``[host]`` keys above and the ``[[process]]`` tables.

    Raises:
        ConfigError: a key of the wrong type or range (named).
    """
    where = "[host]"
    kvm = v.get_str(host, "kvm", where, "usable", max_len=16)
    if kvm not in KVM_STATES:
        raise v.err(where, f"kvm = {kvm!r}: use {', '.join(map(repr, KVM_STATES))}")
    memlock: int | None = DEFAULT_MEMLOCK
    if "memlock" in host:
        raw = host["memlock"]
        if raw == "unlimited":
            memlock = None
        elif isinstance(raw, int) and not isinstance(raw, bool):
            memlock = v.as_int(raw, where, "memlock", 0, (1 << 63) - 2)
        else:
            raise v.err(where, "memlock must be a number of bytes or 'unlimited', got "
                        f"{v.describe(raw)}")
    memory = v.get_int(host, "memory_mib", where, 64, MAX_MEMORY_MIB, DEFAULT_MEMORY_MIB)
    pages = _hugepages(host, memory) if "hugepages" in host else HostExtras().hugepages
    return HostExtras(
        kvm=kvm, memlock=memlock, memory_mib=memory, hugepages=pages,
        iommufd=v.get_bool(host, "iommufd", where, False),
        allow_unsafe_interrupts=v.get_bool(host, "allow_unsafe_interrupts", where, False),
        interrupt_remapping=v.get_bool(host, "interrupt_remapping", where, True),
        processes=_processes(raw_processes))


def _hugepages(host: Mapping[str, Any], memory_mib: int) -> tuple[HugePages, ...]:
    where = "[host] hugepages"
    out: dict[int, HugePages] = {s: HugePages(s) for s in HUGEPAGE_SIZES_KIB}
    reserved = 0
    for i, t in enumerate(v.tables(host["hugepages"], "[host]", "hugepages")):
        w = f"{where}[{i}]"
        v.known(t, ("size_kib", "total", "free"), w)
        size = v.get_int(t, "size_kib", w, 0, 1 << 30)
        if size not in HUGEPAGE_SIZES_KIB:
            sizes = " and ".join(map(str, HUGEPAGE_SIZES_KIB))
            raise v.err(w, f"size_kib = {size}: x86-64 has {sizes}")
        total = v.get_int(t, "total", w, 0, 1 << 31)
        free = v.get_int(t, "free", w, 0, total, total)
        out[size] = HugePages(size, total, free)
        reserved += size * total
    if reserved > memory_mib * 1024:
        raise v.err(where, f"reserves {reserved // 1024} MiB, more than memory_mib = "
                    f"{memory_mib}")
    return tuple(out[s] for s in HUGEPAGE_SIZES_KIB)


def _processes(raw: object) -> tuple[Process, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise v.err("[[process]]", "process must be an array of tables ([[process]] with "
                    f"pid, comm, open), got {v.describe(raw)}")
    out: list[Process] = []
    pids: set[int] = set()
    for i, t in enumerate(raw):
        where = f"[[process]] #{i + 1}"
        v.known(t, ("pid", "comm", "open"), where)
        for key in ("pid", "comm"):
            if key not in t:
                raise v.err(where, f"{key} is required")
        try:
            pid, comm = check_pid(t["pid"]), check_comm(t["comm"])
        except ValueError as err:
            raise v.err(where, str(err)) from None
        if pid in pids:
            raise v.err(where, f"pid {pid} is declared twice")
        pids.add(pid)
        paths = v.str_list(t, "open", where, "absolute paths")
        for path in paths:
            if not path.startswith("/") or len(path) > 4095:
                raise v.err(where, f"open: {path[:60]!r} must be an absolute path like "
                            "'/dev/dri/card0'")
        out.append(Process(pid, comm, tuple(paths)))
    return tuple(out)


def parse_function_extras(t: Mapping[str, Any], where: str
                          ) -> tuple[tuple[str, ...], int | None, int | None]:
    """A device's ``drm`` node names (``["card1", "renderD129"]``), ``sound_card``
    (N of ``sound/cardN``) and ``nvidia_minor`` (``/dev/nvidiaN``)."""
    drm = tuple(v.as_name(n, where, f"drm[{i}]", "DRM node name")
                for i, n in enumerate(v.get_list(t, "drm", where, "DRM node names")))
    bad = [n for n in drm if drm_minor(n) is None]
    if bad:
        raise v.err(where, f"drm: {bad[0]!r} must look like 'card1' or 'renderD129'")
    sound = v.get_int(t, "sound_card", where, 0, 31) if "sound_card" in t else None
    minor = v.get_int(t, "nvidia_minor", where, 0, 254) if "nvidia_minor" in t else None
    return drm, sound, minor


def drm_minor(node: str) -> int | None:
    """``card1`` -> 1, ``renderD129`` -> 129; None for any other name."""
    m = re.fullmatch(r"(?:card|renderD|controlD)(\d{1,3})", node)
    return int(m.group(1)) if m else None


def meminfo(x: HostExtras) -> str:
    """``proc/meminfo``, the lines doctor reads (fs/proc/meminfo.c, mm/hugetlb.c
    ``hugetlb_report_meminfo`` for the default 2 MiB size)."""
    default = next(h for h in x.hugepages if h.size_kib == HUGEPAGE_SIZES_KIB[0])
    hugetlb = sum(h.size_kib * h.total for h in x.hugepages)
    total = x.memory_mib * 1024
    return (f"MemTotal:       {total:>8} kB\n"
            f"MemFree:        {max(total - hugetlb, 0) // 2:>8} kB\n"
            f"HugePages_Total: {default.total:>7}\n"
            f"HugePages_Free:  {default.free:>7}\n"
            f"HugePages_Rsvd:  {0:>7}\n"
            f"HugePages_Surp:  {0:>7}\n"
            f"Hugepagesize:   {default.size_kib:>8} kB\n"
            f"Hugetlb:        {hugetlb:>8} kB\n")


def limits(x: HostExtras) -> str:
    """``proc/self/limits``: fs/proc/base.c ``proc_pid_limits`` layout, the rows that
    matter here."""
    mem = "unlimited" if x.memlock is None else str(x.memlock)
    head = f"{'Limit':<25} {'Soft Limit':<20} {'Hard Limit':<20} {'Units':<10}\n"
    return (head
            + f"{'Max open files':<25} {'1024':<20} {'524288':<20} {'files':<10}\n"
            + f"{'Max locked memory':<25} {mem:<20} {mem:<20} {'bytes':<10}\n")
