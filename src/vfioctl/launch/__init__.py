"""Launch: ``vfioctl start`` / ``vfioctl release`` — a guest's QEMU with its PCI hostdevs,
VF tokens kept off the command line (seed 000's objection).

``plan`` works out what will happen (pure but for the XML tree), ``run`` does it with
the manager and a real QEMU process, ``qmp`` talks to QEMU (``qemu.qmp`` imported lazily).
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
