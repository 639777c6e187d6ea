"""Launch: ``vfioctl start`` / ``vfioctl release`` — a guest's QEMU with its PCI hostdevs,
VF tokens kept off the command line (docs/rationale.md, "The VF token is a secret").

``plan`` works out what will happen (pure: the typed domain and QEMU's capabilities),
``run`` does it with the manager (whose own plan ``--dry-run`` prints) and a real QEMU
process, ``qmp`` talks to QEMU (``qemu.qmp`` imported lazily).
"""

from __future__ import annotations

from vfioctl.launch.plan import PrepareCall, QemuDevice, StartPlan, plan_start
from vfioctl.launch.qmp import QemuError, QemuExited, QmpCommandFailed, QmpTimeout
from vfioctl.launch.run import (
    Launch,
    Release,
    Standin,
    check_start,
    describe_start,
    release,
    standin_device,
    start,
)

__all__ = [
    "Launch",
    "PrepareCall",
    "QemuDevice",
    "QemuError",
    "QemuExited",
    "QmpCommandFailed",
    "QmpTimeout",
    "Release",
    "Standin",
    "StartPlan",
    "check_start",
    "describe_start",
    "plan_start",
    "release",
    "standin_device",
    "start",
]
