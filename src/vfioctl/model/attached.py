"""What the host has on each PCI function: its network interfaces and block devices.

For ``list``'s text columns only (``list --json`` never pays for them). Interfaces are
the entries of ``devices/ADDR/net/`` (virtio-net: ``devices/ADDR/virtioN/net/``), one
listing per function; block devices come from one pass over ``sys/block``, whose links
point into the sysfs subtree of the function that drives the disk (the last PCI address
in the link's target, e.g. ``../devices/pci0000:00/0000:00:1c.4/0000:05:00.0/ata1/…``).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable

from vfioctl.address import PciAddress
from vfioctl.errors import UsageError
from vfioctl.host.base import SYS_BLOCK, Host, SysPath
from vfioctl.pci.device import PciDevice


def _listdir(host: Host, path: SysPath) -> list[str]:
    try:
        return sorted(host.listdir(path))
    except OSError:
        return []


def interfaces_of(dev: PciDevice) -> list[str]:
    """The function's network interfaces, in name order."""
    host = dev.host
    entries = _listdir(host, dev.path)
    names = list(_listdir(host, dev.path / "net")) if "net" in entries else []
    for entry in entries:
        if entry.startswith("virtio") and entry[6:].isdigit():
            names += _listdir(host, dev.path / entry / "net")
    return sorted(names)


def disks_by_function(host: Host) -> dict[PciAddress, list[str]]:
    """Block device names by the function they sit below (virtual ones, such as loop,
    dm and md devices, sit below none and are left out)."""
    out: dict[PciAddress, list[str]] = {}
    for name in _listdir(host, SYS_BLOCK):
        try:
            target = host.readlink(SYS_BLOCK / name)
        except OSError:
            continue
        owner: PciAddress | None = None
        for part in posixpath.normpath(target).split("/"):
            try:
                owner = PciAddress.parse(part)
            except UsageError:
                continue
        if owner is not None:
            out.setdefault(owner, []).append(name)
    return out


def attached(host: Host, addrs: Iterable[PciAddress]) -> dict[PciAddress, list[str]]:
    """Interfaces then block devices of each function in ``addrs``."""
    disks = disks_by_function(host)
    return {a: interfaces_of(PciDevice(host, a)) + disks.get(a, []) for a in addrs}


__all__ = ["attached", "disks_by_function", "interfaces_of"]
