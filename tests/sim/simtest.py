"""Helpers for the simulator's own tests: bundled or data-file hosts, writable in memory."""

from __future__ import annotations

import errno
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath

from vfioctl.host import uapi
from vfioctl.sim.host import SimHost

DATA_HOSTS = Path(__file__).resolve().parents[1] / "data" / "hosts"
DEV = PurePosixPath("sys/bus/pci/devices")
DRV = PurePosixPath("sys/bus/pci/drivers")


def make_host(name: str, faults: Mapping[str, int] | None = None) -> SimHost:
    """A writable, in-memory copy of a bundled host or of tests/data/hosts/NAME.toml.

    ``faults`` maps a write path glob to the errno every matching write fails with.
    """
    path = DATA_HOSTS / f"{name}.toml"
    host = SimHost.from_text(path.read_text(), name=f"sim:{name}") if path.exists() \
        else SimHost.bundled(name, writable=True)
    for glob, code in (faults or {}).items():
        host.faults.fail_write(glob, code)
    return host


def file_host(tmp_path: Path, name: str = "q35-vmtest") -> tuple[Path, SimHost]:
    """A bundled host copied to a host file (written back on every change, reloaded by
    each ``SimHost.from_file``), with vfio-pci loaded."""
    from vfioctl.sim.loader import bundled_text

    path = tmp_path / f"{name}.toml"
    path.write_text(bundled_text(name))
    host = SimHost.from_file(path)
    host.load_module("vfio-pci")
    return path, host


def oserrno(fn: Callable[[], object]) -> int | None:
    """Run ``fn``; the errno name of its OSError, or None when it succeeded."""
    try:
        fn()
    except OSError as err:
        return err.errno
    return None


def errname(code: int | None) -> str:
    return "OK" if code is None else errno.errorcode[code]


VFIO = PurePosixPath("dev/vfio")


def bind_vfio(host: SimHost, name: str) -> None:
    """The kernel's recipe: override, unbind, drivers_probe (vfio-pci must be loaded)."""
    host.write(DEV / name / "driver_override", "vfio-pci")
    if host.exists(DEV / name / "driver"):
        host.write(DEV / name / "driver/unbind", name)
    host.write(DEV.parent / "drivers_probe", name)


def group_of(host: SimHost, name: str) -> int:
    """The device's IOMMU group, read from its sysfs link."""
    return int(host.readlink(DEV / name / "iommu_group").rsplit("/", 1)[1])


class VfioSession:
    """What a VFIO user does through the Host seam: a container with the type1 IOMMU,
    groups set in it, device files."""

    def __init__(self, host: SimHost) -> None:
        self.h = host
        self.c = host.open(VFIO / "vfio")
        self.groups: dict[int, int] = {}

    def attach(self, number: int) -> int:
        fd = self.h.open(VFIO / str(number))
        self.h.ioctl(fd, uapi.VFIO_GROUP_SET_CONTAINER, uapi.pack_fd(self.c))
        if len(self.groups) == 0:
            self.h.ioctl(self.c, uapi.VFIO_SET_IOMMU, uapi.VFIO_TYPE1v2_IOMMU)
        self.groups[number] = fd
        return fd

    def device(self, name: str, text: str | None = None) -> int:
        number = group_of(self.h, name)
        if number not in self.groups:
            self.attach(number)
        return self.h.ioctl(self.groups[number], uapi.VFIO_GROUP_GET_DEVICE_FD,
                            uapi.pack_device_name(text or name))
