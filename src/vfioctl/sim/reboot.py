"""Simulator: ``vfioctl sim reboot FILE`` — a host file's kernel goes through a boot again.

What a reboot forgets is what the kernel and ``/run`` hold: every bind made since boot,
every ``driver_override``, VFs, VF tokens, other processes' VFIO files, vfioctl's
runtime state (the host's state directory, ``FILE.state``: journal, records, stored
tokens). What it keeps is the hardware (the host file above the state marker) and the
simulated host's ``/etc`` (``FILE.etc``), where persisted configuration lives.

The boot follows the order that decides who gets a device on Linux, because that order
is what boot-time persistence has to win against (docs/persistence.md, "Boot flow"):

1. **kernel init**: every function is added; drivers built into the kernel
   (``module = ""``) probe it at once;
2. **initramfs**: ``early`` names the overrides an initramfs udev rule sets; then the
   drivers the host file forces (``driver = "…"`` on a device: drivers loaded from the
   initramfs) bind, honouring an override;
3. **udev coldplug in the real root**, device by device in add order: ``on_add`` (the
   rules before ``80-drivers.rules``), then the modules whose id tables match the device
   are loaded (its modalias), and a loaded module probes every unbound device it matches;
   modules marked ``loaded = true`` that no device asked for are loaded last.

Every bind is logged in order (:class:`BootLog`), like the kernel log, so a test can say
a host driver never bound a device, not merely that it is not bound now.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vfioctl.errors import HostError
from vfioctl.sim.host import SimHost
from vfioctl.sim.kernel import SimKernel
from vfioctl.sim.loader import parse_text, read_host_file, render_file
from vfioctl.sim.model import DriverSpec, Function

EarlyOverride = Callable[[str, str, str], str | None]
"""(address, ``vvvv:dddd``, subsystem ``vvvv:dddd``) -> the driver an initramfs rule
sets as ``driver_override``, or None."""
OnAdd = Callable[[SimHost, str], None]
"""Runs for each device's add event in the real root, before its modules load."""


@dataclass
class BootLog:
    """What happened during the boot, in order: ``binds`` as (address, driver, stage),
    the stage being ``kernel``, ``initramfs``, ``udev rule``, ``modalias (DRIVER)`` or
    ``module (DRIVER)``."""

    binds: list[tuple[str, str, str]] = field(default_factory=list)

    def bound_ever(self, addr: str, driver: str) -> bool:
        return any(a == addr and d == driver for a, d, _ in self.binds)


def reboot(path: Path, *, early: EarlyOverride | None = None,
           on_add: OnAdd | None = None) -> BootLog:
    """Reboot the simulated host in ``path`` and return what its boot bound.

    Raises:
        NotFound / ConfigError: the host file is missing or invalid.
        HostError: the runtime state directory cannot be cleared.
    """
    loaded = read_host_file(path)
    assert loaded is not None
    hardware = loaded[0]
    spec = parse_text(hardware, str(path))
    log = BootLog()
    kernel = SimKernel(spec)
    _kernel_init(kernel, log)
    _initramfs(kernel, early, log)
    _clear_runtime(path.parent / (path.name + ".state"))
    _write(path, render_file(hardware, kernel))
    host = SimHost.from_file(path)
    _coldplug(host, on_add, log)
    return log


def _record(kernel: SimKernel, before: dict[str, str | None], log: BootLog,
            stage: str) -> None:
    for name, dev in kernel.devices.items():
        if dev.driver is not None and before.get(name) != dev.driver:
            log.binds.append((name, dev.driver, stage))


def _drivers(kernel: SimKernel) -> dict[str, str | None]:
    return {name: dev.driver for name, dev in kernel.devices.items()}


def _kernel_init(kernel: SimKernel, log: BootLog) -> None:
    kernel.registered = [n for n in kernel.registered if kernel.drivers[n].module is None]
    for dev in kernel.devices.values():
        dev.driver_override = dev.fn.driver_override
        if dev.fn.unbound:
            continue
        forced = dev.fn.driver
        if forced is None:
            kernel._attach(dev)
        elif kernel.drivers[forced].module is None:
            kernel._bind(kernel.drivers[forced], dev)
    _record(kernel, {}, log, "kernel")


def _ids(fn: Function) -> tuple[str, str]:
    return (f"{fn.vendor:04x}:{fn.device:04x}",
            f"{fn.subsystem_vendor:04x}:{fn.subsystem_device:04x}")


def _initramfs(kernel: SimKernel, early: EarlyOverride | None, log: BootLog) -> None:
    before = _drivers(kernel)
    if early is not None:
        for name, dev in kernel.devices.items():
            wanted = early(name, *_ids(dev.fn))
            if wanted is not None:
                dev.driver_override = wanted
    for dev in kernel.devices.values():
        forced = dev.fn.driver
        if forced is None or dev.fn.unbound or dev.driver is not None:
            continue
        drv = kernel.drivers[forced]
        if drv.name not in kernel.registered:
            kernel.registered.append(drv.name)
        if dev.driver_override in (None, drv.name):
            kernel._bind(drv, dev)
    _record(kernel, before, log, "initramfs")


def _wants(drv: DriverSpec, fn: Function) -> bool:
    """The device's modalias matches the driver's id table (override or not: udev loads
    the module by modalias; the override decides only who binds)."""
    return any(m.matches(fn.vendor, fn.device, fn.class_code) for m in drv.ids)


def _coldplug(host: SimHost, on_add: OnAdd | None, log: BootLog) -> None:
    spec = host.kernel.spec
    modules = [d for d in spec.drivers if d.module is not None and d.loaded]
    for name in list(host.kernel.devices):
        before = _drivers(host.kernel)
        if on_add is not None:
            on_add(host, name)
        _record(host.kernel, before, log, "udev rule")
        fn = host.kernel.devices[name].fn
        for drv in modules:
            if drv.name not in host.kernel.registered and _wants(drv, fn):
                before = _drivers(host.kernel)
                host.load_module(drv.module or drv.name)
                _record(host.kernel, before, log, f"modalias ({drv.name})")
    for drv in modules:
        if drv.name not in host.kernel.registered:
            before = _drivers(host.kernel)
            host.load_module(drv.module or drv.name)
            _record(host.kernel, before, log, f"module ({drv.name})")


def _clear_runtime(state_dir: Path) -> None:
    """``/run`` does not survive a reboot: remove the host's state directory (never
    through a symlink planted in its place)."""
    try:
        st = os.lstat(state_dir)
    except FileNotFoundError:
        return
    except OSError as err:
        raise HostError(f"cannot look at the simulated host's state directory "
                        f"{state_dir}", errno=err.errno) from None
    if not stat.S_ISDIR(st.st_mode):
        raise HostError(f"the simulated host's state directory {state_dir} is not a "
                        "directory", hint="remove it; vfioctl creates it itself")
    try:
        shutil.rmtree(state_dir)
    except OSError as err:
        raise HostError(f"cannot clear the simulated host's state directory {state_dir}",
                        errno=err.errno) from None


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.reboot")
    mode = os.stat(path).st_mode & 0o777
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


__all__ = ["BootLog", "EarlyOverride", "OnAdd", "reboot"]
