"""Choosing a host backend from a user's spec (``--host`` / ``VFIOCTL_HOST``)."""

from __future__ import annotations

import os
from pathlib import Path

from vfioctl.errors import UsageError
from vfioctl.host.base import Host

DEFAULT_SPEC = "linux"


def open_host(spec: str | None = None) -> Host:
    """Open the host named by ``spec``: ``linux``, ``linux:DIR``, ``sim:NAME|FILE``.

    With no spec, ``VFIOCTL_HOST`` is used, then the running kernel.

    Raises:
        UsageError: if the spec names no known backend or DIR does not exist.
        NotFound / ConfigError: from the simulator for a missing or bad host file.
    """
    spec = spec or os.environ.get("VFIOCTL_HOST") or DEFAULT_SPEC
    kind, _, arg = spec.partition(":")
    if kind == "linux":
        from vfioctl.host.linux import LinuxHost

        if not arg:
            return LinuxHost("/")
        root = Path(arg)
        if not (root / "sys" / "bus" / "pci").is_dir():
            raise UsageError(
                f"'{arg}' is not a host tree: {root / 'sys/bus/pci'} is missing",
                hint="point --host linux:DIR at a directory made by 'vfioctl snapshot DIR'",
            )
        return LinuxHost(root)
    if kind == "sim":
        if not arg:
            raise UsageError("--host sim: needs a name or a file, e.g. sim:workstation")
        from vfioctl.sim.host import open_sim_host

        return open_sim_host(arg)
    raise UsageError(
        f"unknown host '{spec}'",
        hint="use --host linux, --host linux:DIR or --host sim:NAME|FILE",
    )


__all__ = ["Host", "open_host"]
