"""Simulator: injected failures — a write or ioctl that fails, or a process that dies.

Faults come from a host file's ``[[fault]]``/``[crash]`` tables or from tests through
:class:`FaultPlan`. They belong to the process (they are not saved back to the host
file): a fault that fires once fires once per process.

A crash is modelled by :class:`SimCrash`, a ``BaseException`` so that ordinary
``except Exception`` handlers (and ``contextlib.ExitStack`` rollbacks that catch only
exceptions) do not run, just as a killed process runs no cleanup. The kernel state the
crash leaves behind is already saved, so the next process sees the half-done state.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from dataclasses import dataclass

from vfioctl.sim.model import FaultSpec


class SimCrash(BaseException):
    """The simulated process died at write number ``at_write`` (to ``path``)."""

    def __init__(self, at_write: int, path: str, applied: bool) -> None:
        state = "after the kernel applied it" if applied else "before it reached the kernel"
        super().__init__(f"simulated crash at write #{at_write} ({path}), {state}")
        self.at_write = at_write
        self.path = path
        self.applied = applied


@dataclass
class _Armed:
    spec: FaultSpec
    seen: int = 0
    fired: int = 0

    def check(self) -> bool:
        """Count a matching call; True if this one must fail."""
        self.seen += 1
        if self.seen <= self.spec.skip:
            return False
        if self.spec.times is not None and self.fired >= self.spec.times:
            return False
        self.fired += 1
        return True


class FaultPlan:
    """The faults armed in one process."""

    def __init__(self, specs: Iterable[FaultSpec] = (), *, crash_at_write: int | None = None,
                 crash_applies: bool = False) -> None:
        self._armed = [_Armed(s) for s in specs]
        self.crash_at_write = crash_at_write
        self.crash_applies = crash_applies

    def fail_write(self, path_glob: str, errno: int, *, times: int | None = None,
                   skip: int = 0) -> None:
        """Make writes to paths matching ``path_glob`` fail with ``errno``.

        The glob is matched against the path as written and as resolved through links
        (``sys/bus/pci/devices/*/driver/unbind`` or ``sys/bus/pci/drivers/*/unbind``).
        """
        self._armed.append(_Armed(FaultSpec("write", path_glob, errno, times, skip)))

    def fail_ioctl(self, name: str, errno: int, *, times: int | None = None,
                   skip: int = 0) -> None:
        """Make the ioctl called ``name`` (``GROUP_GET_DEVICE_FD``…) fail with ``errno``."""
        self._armed.append(_Armed(FaultSpec("ioctl", name, errno, times, skip)))

    def crash_at(self, write_number: int, *, applied: bool = False) -> None:
        """Die at the Nth write of this process (1-based); ``applied``: after the kernel
        carried it out (the process died before write(2) returned)."""
        self.crash_at_write = write_number
        self.crash_applies = applied

    def clear(self) -> None:
        self._armed.clear()
        self.crash_at_write = None

    def write_error(self, paths: Iterable[str]) -> int | None:
        candidates = list(paths)
        for armed in self._armed:
            if armed.spec.op == "write" and any(
                    fnmatch.fnmatchcase(p, armed.spec.target) for p in candidates) \
                    and armed.check():
                return armed.spec.errno
        return None

    def ioctl_error(self, name: str) -> int | None:
        for armed in self._armed:
            if armed.spec.op == "ioctl" and armed.spec.target.upper() in (
                    name, "VFIO_" + name) and armed.check():
                return armed.spec.errno
        return None


def fault_oserror(code: int, path: str | None = None) -> OSError:
    return OSError(code, os.strerror(code), path) if path else OSError(code, os.strerror(code))
