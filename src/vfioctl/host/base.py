"""The seam: what vfioctl needs from a host, at the level of files and VFIO ioctls.

Everything above this module (pci/, vfio/, manager, cli) is written against
:class:`Host` only, so the same code runs on the real kernel (``LinuxHost("/")``), on a
captured tree (``LinuxHost(DIR)``, read-only) and on the simulator (``SimHost``). As in
libvirt's ``tests/virpcimock.c`` the cut is at the kernel's own interface: sysfs/procfs
files and ``/dev/vfio`` file descriptors, not at any higher-level concept.

Contract for implementations:

- Paths are :class:`PurePosixPath` objects or plain ``str`` *relative to the host's
  root* ``/`` (implementations use ``str(path)``; the read model passes ``str`` on its
  hot path because building thousands of PurePosixPath objects costs more than the
  reads themselves), e.g.
  ``sys/bus/pci/devices/0000:01:00.0/driver_override`` or ``proc/cmdline``.
  (docs/rationale.md "Architecture rules": relative to the tree's root, not the sysfs
  root, because vfioctl also reads ``/proc/cmdline``, ``/proc/mounts`` and opens
  ``/dev/vfio``.)
- Failures are ``OSError`` with the errno the kernel would give (ENOENT for a missing
  file, EBUSY, EINVAL, EACCES …). No vfioctl exceptions come out of a Host, except
  :class:`vfioctl.errors.ReadOnlyHost` from a write on a read-only host.
- ``ioctl`` mirrors ``fcntl.ioctl(fd, request, buf, True)``: ``arg`` is an int or a
  ``bytearray`` that the call may update in place; the return value is the ioctl's
  non-negative result (e.g. the new fd of ``VFIO_GROUP_GET_DEVICE_FD``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol, runtime_checkable

SysPath = PurePosixPath | str

# Every kernel file vfioctl reads or writes, relative to the host's root: the one place
# these paths are spelled (docs/kernel.md says what each one means).
PCI_BUS = PurePosixPath("sys/bus/pci")
PCI_DEVICES = PCI_BUS / "devices"
PCI_DRIVERS = PCI_BUS / "drivers"
IOMMU_GROUPS = PurePosixPath("sys/kernel/iommu_groups")
SYS_CLASS_IOMMU = PurePosixPath("sys/class/iommu")
SYS_BLOCK = PurePosixPath("sys/block")
SYS_MODULE = PurePosixPath("sys/module")
VFIO_PCI_PARAMS = SYS_MODULE / "vfio_pci" / "parameters"
VFIO_TYPE1_PARAMS = SYS_MODULE / "vfio_iommu_type1" / "parameters"
LIB_MODULES = PurePosixPath("lib/modules")
PROC = PurePosixPath("proc")
PROC_CMDLINE = PROC / "cmdline"
PROC_CPUINFO = PROC / "cpuinfo"
PROC_MOUNTS = PROC / "mounts"
PROC_SWAPS = PROC / "swaps"
PROC_OSRELEASE = PROC / "sys" / "kernel" / "osrelease"
PROC_NET_ROUTE = PROC / "net" / "route"
PROC_NET_ROUTE6 = PROC / "net" / "ipv6_route"
PROC_NET_INET6 = PROC / "net" / "if_inet6"
PROC_SELF_LIMITS = PROC / "self" / "limits"
PROC_SELF_STATUS = PROC / "self" / "status"
PROC_MEMINFO = PROC / "meminfo"
PROC_NVIDIA_GPUS = PROC / "driver" / "nvidia" / "gpus"
SYS_HUGEPAGES = PurePosixPath("sys/kernel/mm/hugepages")
DEV = PurePosixPath("dev")
DEV_KVM = DEV / "kvm"
DEV_VFIO = DEV / "vfio"
DEV_VFIO_DEVICES = DEV_VFIO / "devices"
DEV_IOMMU = DEV / "iommu"


@dataclass(frozen=True)
class IfAddress:
    """One address the kernel has on a network interface (netlink ``RTM_GETADDR``).

    ``family`` is ``socket.AF_INET`` or ``socket.AF_INET6``; ``scope`` is the kernel's
    ``ifa_scope`` (0 universe/global, 200 site, 253 link, 254 host).
    """

    ifname: str
    family: int
    address: str
    prefixlen: int
    scope: int = 0


@runtime_checkable
class Host(Protocol):
    """A Linux host as seen through its files and VFIO ioctls."""

    @property
    def name(self) -> str:
        """How the user named it: ``linux``, ``linux:/tmp/snap``, ``sim:workstation``."""
        ...

    @property
    def readonly(self) -> bool:
        """True when writes and VFIO opens are refused (snapshots, bundled sim hosts)."""
        ...

    @property
    def state_dir(self) -> Path | None:
        """Where vfioctl keeps its journal and tokens for this host; None when read-only."""
        ...

    # -- files ------------------------------------------------------------------------
    def read_bytes(self, path: SysPath) -> bytes:
        """Whole content of a file (``config`` is binary)."""
        ...

    def read_text(self, path: SysPath) -> str:
        """Whole content of a text file, undecoded bytes replaced."""
        ...

    def write(self, path: SysPath, data: str) -> None:
        """One ``write(2)`` of ``data`` to an existing file, as ``echo -n`` would do.

        Raises ``vfioctl.errors.ReadOnlyHost`` on a read-only host.
        """
        ...

    def readlink(self, path: SysPath) -> str:
        """Target of a symbolic link, as the kernel stores it (usually relative)."""
        ...

    def listdir(self, path: SysPath) -> list[str]:
        """Names in a directory, unsorted."""
        ...

    def exists(self, path: SysPath) -> bool:
        """True if the path exists (following links)."""
        ...

    def is_link(self, path: SysPath) -> bool:
        ...

    # -- VFIO character devices ---------------------------------------------------------
    def open(self, path: SysPath) -> int:
        """Open a character device (``dev/vfio/vfio``, ``dev/vfio/N``) read-write; an fd."""
        ...

    def ioctl(self, fd: int, request: int, arg: int | bytearray = 0) -> int:
        """``ioctl(2)`` on an fd from :meth:`open` or returned by an earlier ioctl."""
        ...

    def close(self, fd: int) -> None:
        ...

    # -- network ----------------------------------------------------------------------
    def ip_addresses(self) -> list[IfAddress]:
        """Every IPv4/IPv6 address on every interface, as the kernel reports it over
        netlink (a snapshot or simulator: what it captured or models; [] if nothing)."""
        ...

    # -- modules ----------------------------------------------------------------------
    def load_module(self, name: str) -> None:
        """``modprobe NAME``: make a driver available (vfio-pci on a real host)."""
        ...
