"""The oracle of the real-kernel tier: the guest's kernel read and driven through raw
sysfs and raw ioctls, with no vfioctl code involved — plus an optional simulated twin.

Scenarios compare what vfioctl says with what this module reads, so the real side must
stay independent of the product (as pyudev tests against ``udevadm``): :class:`RawFs`
is plain ``os`` calls, and the VFIO ioctl number is spelled out from
``include/uapi/linux/vfio.h`` (docs/kernel.md "Ioctl numbers and structs" lists them).
Writes go to the live ``/sys`` of the guest only; conftest.py guarantees these helpers
never run anywhere else.

The differential test (docs/rationale.md "Architecture rules": a disagreement between
the simulator and the real kernel is a simulator bug) rides on the same steps: a
:class:`GuestKernel` may carry a ``twin`` — the same class over a ``SimHost`` of
``sim:q35-vmtest`` — and every write and module load is applied to the twin first, then
to the kernel. Outcomes that differ (one fails, or both fail with other errnos) are
recorded in :attr:`divergences`; the scenarios assert on the real kernel only, and
test_90_differential reports the rest.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Protocol

P = PurePosixPath
PCI_DEVICES = P("sys/bus/pci/devices")
DRIVERS_PROBE = P("sys/bus/pci/drivers_probe")
IOMMU_GROUPS = P("sys/kernel/iommu_groups")
DEV_VFIO = P("dev/vfio")
VFIO_PCI_PARAMS = P("sys/module/vfio_pci/parameters")

# include/uapi/linux/vfio.h: _IO(VFIO_TYPE ';', VFIO_BASE 100 + n); no size/dir bits.
VFIO_GROUP_GET_STATUS = (ord(";") << 8) | (100 + 3)
VFIO_GROUP_FLAGS_VIABLE = 1 << 0


class Files(Protocol):
    """What the oracle needs from a machine: the shape of ``vfioctl.host.base.Host``, so
    that a ``SimHost`` can stand in for the real kernel as the twin."""

    def read_text(self, path: P) -> str: ...
    def write(self, path: P, data: str) -> None: ...
    def readlink(self, path: P) -> str: ...
    def listdir(self, path: P) -> list[str]: ...
    def exists(self, path: P) -> bool: ...
    def is_link(self, path: P) -> bool: ...
    def open(self, path: P) -> int: ...
    def ioctl(self, fd: int, request: int, arg: int | bytearray = 0) -> int: ...
    def close(self, fd: int) -> None: ...
    def load_module(self, name: str) -> None: ...


class RawFs:
    """The live guest, through ``os``/``fcntl`` only (paths relative to ``/``)."""

    def _p(self, path: P) -> str:
        return "/" + str(path)

    def read_text(self, path: P) -> str:
        with open(self._p(path), "rb") as f:
            return f.read().decode()

    def write(self, path: P, data: str) -> None:
        """One write(2), as ``echo -n`` would do; the kernel's errno comes out as OSError."""
        fd = os.open(self._p(path), os.O_WRONLY)
        try:
            os.write(fd, data.encode())
        finally:
            os.close(fd)

    def readlink(self, path: P) -> str:
        return os.readlink(self._p(path))

    def listdir(self, path: P) -> list[str]:
        return os.listdir(self._p(path))

    def exists(self, path: P) -> bool:
        return os.path.exists(self._p(path))

    def is_link(self, path: P) -> bool:
        return os.path.islink(self._p(path))

    def open(self, path: P) -> int:
        return os.open(self._p(path), os.O_RDWR | os.O_CLOEXEC)

    def ioctl(self, fd: int, request: int, arg: int | bytearray = 0) -> int:
        if isinstance(arg, bytearray):
            return int(fcntl.ioctl(fd, request, arg, True))
        return int(fcntl.ioctl(fd, request, arg))

    def close(self, fd: int) -> None:
        os.close(fd)

    def load_module(self, name: str) -> None:
        subprocess.run(["modprobe", name], check=True)


@dataclass(frozen=True)
class Function:
    """What raw sysfs says about one PCI function."""

    address: str
    vendor: str
    device: str
    subsystem_vendor: str
    subsystem_device: str
    class_: str
    driver: str | None
    driver_override: str | None
    iommu_group: int | None
    physfn: str | None
    virtfns: tuple[str, ...]
    sriov_totalvfs: int | None
    sriov_numvfs: int | None


@dataclass(frozen=True)
class Divergence:
    """One step where the simulated twin and the real kernel disagreed."""

    step: str
    kernel: str
    sim: str

    def __str__(self) -> str:
        return f"{self.step}: kernel {self.kernel}, simulator {self.sim}"


def _outcome(err: OSError | None) -> str:
    if err is None:
        return "OK"
    import errno as errno_mod

    return errno_mod.errorcode.get(err.errno or 0, str(err.errno))


class GuestKernel:
    """Reads and writes of PCI/IOMMU/VFIO state; kernel errnos are left as OSError."""

    def __init__(self, fs: Files | None = None, twin: GuestKernel | None = None) -> None:
        self.fs: Files = fs if fs is not None else RawFs()
        self.twin = twin
        self.divergences: list[Divergence] = []

    # -- reading ------------------------------------------------------------------------
    def read(self, path: P) -> str:
        return self.fs.read_text(path).strip()

    def attr(self, name: str, attr: str) -> str:
        return self.read(PCI_DEVICES / name / attr)

    def exists(self, name: str) -> bool:
        return self.fs.exists(PCI_DEVICES / name)

    def addresses(self) -> list[str]:
        return sorted(self.fs.listdir(PCI_DEVICES))

    def _link_name(self, path: P) -> str | None:
        return os.path.basename(self.fs.readlink(path)) if self.fs.is_link(path) else None

    def driver(self, name: str) -> str | None:
        return self._link_name(PCI_DEVICES / name / "driver")

    def group_of(self, name: str) -> int | None:
        link = self._link_name(PCI_DEVICES / name / "iommu_group")
        return int(link) if link is not None else None

    def virtfns(self, name: str) -> tuple[str, ...]:
        """VF addresses of a PF in virtfnN order (N numerically, not as strings)."""
        dev = PCI_DEVICES / name
        links = [e for e in self.fs.listdir(dev) if e.startswith("virtfn")]
        links.sort(key=lambda e: int(e.removeprefix("virtfn")))
        return tuple(os.path.basename(self.fs.readlink(dev / e)) for e in links)

    def function(self, name: str) -> Function:
        dev = PCI_DEVICES / name

        def opt_int(attr: str) -> int | None:
            return int(self.read(dev / attr)) if self.fs.exists(dev / attr) else None

        override = self.read(dev / "driver_override")
        return Function(
            address=name,
            vendor=self.read(dev / "vendor"),
            device=self.read(dev / "device"),
            subsystem_vendor=self.read(dev / "subsystem_vendor"),
            subsystem_device=self.read(dev / "subsystem_device"),
            class_=self.read(dev / "class"),
            driver=self.driver(name),
            driver_override=None if override == "(null)" else override,
            iommu_group=self.group_of(name),
            physfn=self._link_name(dev / "physfn"),
            virtfns=self.virtfns(name),
            sriov_totalvfs=opt_int("sriov_totalvfs"),
            sriov_numvfs=opt_int("sriov_numvfs"),
        )

    def functions(self) -> dict[str, Function]:
        return {name: self.function(name) for name in self.addresses()}

    def groups(self) -> dict[int, frozenset[str]]:
        """IOMMU group number -> member addresses, from /sys/kernel/iommu_groups."""
        return {
            int(g): frozenset(self.fs.listdir(IOMMU_GROUPS / g / "devices"))
            for g in self.fs.listdir(IOMMU_GROUPS)
        }

    def vfio_group_nodes(self) -> list[int]:
        """Groups that have a /dev/vfio/N node (some member is bound to vfio-pci)."""
        if not self.fs.exists(DEV_VFIO):
            return []
        return sorted(int(n) for n in self.fs.listdir(DEV_VFIO) if n.isdigit())

    # -- VFIO ---------------------------------------------------------------------------
    def group_status(self, group: int) -> int:
        """VFIO_GROUP_GET_STATUS flags of /dev/vfio/N (struct vfio_group_status)."""
        fd = self.fs.open(DEV_VFIO / str(group))
        try:
            buf = bytearray(struct.pack("II", 8, 0))
            self.fs.ioctl(fd, VFIO_GROUP_GET_STATUS, buf)
            return int(struct.unpack("II", buf)[1])
        finally:
            self.fs.close(fd)

    def group_viable(self, group: int) -> bool:
        return bool(self.group_status(group) & VFIO_GROUP_FLAGS_VIABLE)

    # -- driving (mirrored onto the twin) -------------------------------------------------
    def _mirrored(self, step: str, apply: Callable[[GuestKernel], None]) -> None:
        sim_err: OSError | None = None
        if self.twin is not None:
            try:
                apply(self.twin)
            except OSError as err:
                sim_err = err
        try:
            apply(self._without_twin())
        except OSError as err:
            self._compare(step, err, sim_err)
            raise
        self._compare(step, None, sim_err)

    def _without_twin(self) -> GuestKernel:
        solo = GuestKernel(self.fs)
        solo.divergences = self.divergences
        return solo

    def _compare(self, step: str, real: OSError | None, sim: OSError | None) -> None:
        if self.twin is not None and _outcome(real) != _outcome(sim):
            self.divergences.append(Divergence(step, _outcome(real), _outcome(sim)))

    def write(self, path: P, value: str) -> None:
        self._mirrored(f"write {value!r} to {path}", lambda k: k.fs.write(path, value))

    def modprobe(self, module: str) -> None:
        self._mirrored(f"modprobe {module}", lambda k: k.fs.load_module(module))

    def bind(self, name: str, driver: str) -> str | None:
        """Move a function to ``driver`` with the recipe of docs/kernel.md "Binding and
        driver override"; returns the new driver.

        driver_override, then unbind from the current driver, then drivers_probe.
        """
        self.write(PCI_DEVICES / name / "driver_override", driver)
        self.unbind(name)
        self.probe(name)
        return self.driver(name)

    def probe(self, name: str) -> None:
        """``drivers_probe``: let the kernel pick a driver (driver_override first)."""
        self.write(DRIVERS_PROBE, name)

    def unbind(self, name: str) -> None:
        """Leave a function driverless (its driver_override is kept)."""
        if self.driver(name) is not None:
            self.write(PCI_DEVICES / name / "driver/unbind", name)
        elif self.twin is not None and self.twin.driver(name) is not None:
            self.divergences.append(Divergence(f"driver of {name} before unbind", "none",
                                               str(self.twin.driver(name))))

    def clear_override(self, name: str) -> None:
        self.write(PCI_DEVICES / name / "driver_override", "\n")

    def vfio_pci_param(self, param: str) -> str:
        return self.read(VFIO_PCI_PARAMS / param)

    def set_vfio_pci_param(self, param: str, value: str) -> None:
        self.write(VFIO_PCI_PARAMS / param, value)

    # -- the live guest only --------------------------------------------------------------
    def wait_for(self, what: str, predicate: Callable[[], bool], timeout_s: float = 300.0) -> None:
        """Poll ``predicate()`` until true: some bindings (VF probes) are asynchronous."""
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
            time.sleep(0.05)

    @contextlib.contextmanager
    def dmesg_since(self) -> Iterator[list[str]]:
        """Collect the kernel log lines written inside the ``with`` block."""
        before = len(self._dmesg())
        lines: list[str] = []
        yield lines
        lines.extend(self._dmesg()[before:])

    def _dmesg(self) -> list[str]:
        return subprocess.run(["dmesg"], capture_output=True, text=True,
                              check=True).stdout.splitlines()
