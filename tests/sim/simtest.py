"""Helpers for the simulator's own tests: bundled or data-file hosts, writable in memory."""

from __future__ import annotations

import errno
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath

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


def oserrno(fn: Callable[[], object]) -> int | None:
    """Run ``fn``; the errno name of its OSError, or None when it succeeded."""
    try:
        fn()
    except OSError as err:
        return err.errno
    return None


def errname(code: int | None) -> str:
    return "OK" if code is None else errno.errorcode[code]
