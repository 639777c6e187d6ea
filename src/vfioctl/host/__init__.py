"""The host seam: what vfioctl needs from a host (:mod:`vfioctl.host.base`), and its
implementations (:mod:`vfioctl.host.linux`; the simulator lives in :mod:`vfioctl.sim`).
Front ends open one by scheme through :func:`vfioctl.hosts.open_host`."""

from __future__ import annotations

from vfioctl.host.base import Host

__all__ = ["Host"]
