"""Mechanics: who holds a VFIO group or device open, found before an unbind that would
block.

Unbinding vfio-pci from a device whose VFIO device file is open does not fail: the
kernel waits, in the writing process, until the user closes it (docs/kernel.md,
"Unbinds that block"). A PF on vfio-pci takes its VFs with it, and ``sriov_numvfs=0``
removes them, so both wait on every open VF. vfioctl must therefore ask *before* the
write, and name the holder so the user knows what to stop.

Two ways to ask, both through the Host seam:

- a probe: opening ``/dev/vfio/N`` answers EBUSY while another file description holds
  the group (a group has one opener at a time);
- a scan of ``/proc/PID/fd``: links to ``/dev/vfio/N`` or to the device's cdev
  (``/dev/vfio/devices/vfioX``) name the process, and ``/proc/PID/comm`` its command.

The scan needs read access to other users' ``/proc/PID/fd`` (root has it); without it
the probe still refuses, only without a name.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from vfioctl.host.base import DEV_VFIO, DEV_VFIO_DEVICES, PROC, Host
from vfioctl.pci.device import PciDevice


@dataclass(frozen=True)
class Holder:
    """A process with a VFIO file of the device open."""

    pid: int
    comm: str
    path: str  # what its fd points at, e.g. /dev/vfio/13

    def describe(self) -> str:
        return f"pid {self.pid} ({self.comm})" if self.comm else f"pid {self.pid}"


def vfio_paths(dev: PciDevice) -> set[str]:
    """The absolute paths a user of ``dev`` has open: its group node and its cdev."""
    out: set[str] = set()
    group = dev.iommu_group
    if group is not None:
        out.add(f"/{DEV_VFIO}/{group}")
    try:
        for name in dev.host.listdir(dev.path / "vfio-dev"):
            out.add(f"/{DEV_VFIO_DEVICES}/{name}")
    except OSError:
        pass
    return out


def find_holders(host: Host, paths: set[str]) -> list[Holder]:
    """Every process with an fd on one of ``paths``, by pid (unreadable ones skipped)."""
    if not paths:
        return []
    try:
        pids = sorted(int(p) for p in host.listdir(PROC) if p.isascii() and p.isdigit())
    except OSError:
        return []
    out: list[Holder] = []
    for pid in pids:
        base = f"{PROC}/{pid}"
        try:
            fds = host.listdir(f"{base}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = host.readlink(f"{base}/fd/{fd}")
            except OSError:
                continue
            if target in paths:
                out.append(Holder(pid, _comm(host, base), target))
                break
    return out


def _comm(host: Host, base: str) -> str:
    try:
        return host.read_text(f"{base}/comm").strip()
    except OSError:
        return ""


def group_busy(host: Host, group: int | None) -> bool:
    """True when another opener holds ``/dev/vfio/N`` (the probe answers EBUSY). A
    read-only host (a snapshot) has no openers to ask about."""
    if group is None or host.readonly or not host.exists(DEV_VFIO / str(group)):
        return False
    try:
        fd = host.open(DEV_VFIO / str(group))
    except OSError as err:
        return err.errno == errno.EBUSY
    host.close(fd)
    return False


def device_users(dev: PciDevice) -> list[Holder] | None:
    """Who has ``dev`` open through VFIO: ``None`` when nobody; a list (maybe empty when
    the holder cannot be named) when its group is busy or a process holds its files."""
    holders = find_holders(dev.host, vfio_paths(dev))
    if holders or group_busy(dev.host, dev.iommu_group):
        return holders
    return None


__all__ = ["Holder", "device_users", "find_holders", "group_busy", "vfio_paths"]
