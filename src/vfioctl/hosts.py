"""Opening a host from a user's spec (``--host`` / ``VFIOCTL_HOST``), by scheme.

The seam (:mod:`vfioctl.host`) knows no implementation of itself; this table does, so a
front end names a backend by its scheme and the module behind it is imported only when
that scheme is used (``vfioctl --host sim:…`` never imports the Linux ioctl code, and
the real host never imports the simulator).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from vfioctl.errors import NotFound, UsageError
from vfioctl.host.base import Host

DEFAULT_SPEC = "linux"


def _open_linux(arg: str) -> Host:
    from vfioctl.host.linux import LinuxHost

    if not arg:
        return LinuxHost("/")
    root = Path(arg)
    if not root.exists():
        raise NotFound(f"host tree {arg} not found",
                       hint="point --host linux:DIR at a directory made by "
                       "'vfioctl snapshot DIR'")
    if not (root / "sys" / "bus" / "pci").is_dir():
        raise UsageError(
            f"'{arg}' is not a host tree: {root / 'sys/bus/pci'} is missing",
            hint="point --host linux:DIR at a directory made by 'vfioctl snapshot DIR'",
        )
    return LinuxHost(root)


def _open_sim(arg: str) -> Host:
    if not arg:
        raise UsageError("--host sim: needs a name or a file, e.g. sim:workstation")
    from vfioctl.sim.host import open_sim_host

    return open_sim_host(arg)


#: scheme -> opener of ``SCHEME:ARG``; the argument may be empty (``linux``).
BACKENDS: dict[str, Callable[[str], Host]] = {"linux": _open_linux, "sim": _open_sim}


def open_host(spec: str | None = None) -> Host:
    """Open the host named by ``spec``: ``linux``, ``linux:DIR``, ``sim:NAME|FILE``.

    With no spec, ``VFIOCTL_HOST`` is used, then the running kernel.

    Raises:
        UsageError: if the spec names no known backend or DIR does not exist.
        NotFound / ConfigError: from the simulator for a missing or bad host file.
    """
    spec = spec or os.environ.get("VFIOCTL_HOST") or DEFAULT_SPEC
    scheme, _, arg = spec.partition(":")
    opener = BACKENDS.get(scheme)
    if opener is None:
        raise UsageError(
            f"unknown host '{spec}'",
            hint="use --host linux, --host linux:DIR or --host sim:NAME|FILE",
        )
    return opener(arg)


__all__ = ["BACKENDS", "DEFAULT_SPEC", "open_host"]
