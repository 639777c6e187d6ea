"""Persistent bindings: what vfioctl binds again at every boot (docs/persistence.md).

The desired state lives in the host's ``/etc/vfioctl`` (:mod:`~vfioctl.persist.paths`;
a simulated host has its own ``/etc``), in a documented TOML file
(:mod:`~vfioctl.persist.config`) with VF tokens apart and root-only
(:mod:`~vfioctl.persist.store`). Entries are made from the manager's detach plans
(:mod:`~vfioctl.persist.record`), checked against the hardware before they are applied
(:mod:`~vfioctl.persist.check`), applied at boot by a udev rule and an initramfs hook
(:mod:`~vfioctl.persist.boot`) through the manager (:mod:`~vfioctl.persist.apply`).
"""

from __future__ import annotations

from vfioctl.persist.apply import Outcome, apply
from vfioctl.persist.check import Verdict, check
from vfioctl.persist.config import Config, Entry, Member, parse, render
from vfioctl.persist.paths import EtcPaths, etc_of, require_etc
from vfioctl.persist.store import load

__all__ = ["Config", "Entry", "EtcPaths", "Member", "Outcome", "Verdict", "apply",
           "check", "etc_of", "load", "parse", "render", "require_etc"]
