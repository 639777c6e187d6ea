"""Read-side documents: the stable JSON shapes of ``list``, ``groups`` and ``show``.

These dicts are API (README "JSON output"): keys are only ever added, never renamed or
retyped. Ids are 4 lowercase hex digits without ``0x``, classes 6; absent values are
``null``, never missing keys. They are the ``to_json()`` of the typed records in
:mod:`vfioctl.model`, which is what new code should use.
"""

from __future__ import annotations

from typing import Any

from vfioctl.address import PciAddress
from vfioctl.host.base import Host
from vfioctl.model import device_info, get_device_info, group_info, list_devices, list_groups
from vfioctl.pci.device import PciDevice
from vfioctl.pci.iommu import IommuGroup

Json = dict[str, Any]


def device_record(dev: PciDevice) -> Json:
    """One element of ``list --json``."""
    return device_info(dev).to_json()


def group_record(group: IommuGroup) -> Json:
    """One element of ``groups --json``."""
    return group_info(group).to_json()


def list_records(host: Host) -> list[Json]:
    """``list --json``: every function in address order."""
    return [d.to_json() for d in list_devices(host)]


def group_records(host: Host) -> list[Json]:
    """``groups --json``: every IOMMU group in numeric order ([] when the IOMMU is off)."""
    return [g.to_json() for g in list_groups(host)]


def show_record(host: Host, addr: PciAddress | str) -> Json:
    """``show ADDR --json``: everything known about one function.

    Raises:
        UsageError: malformed address.
        DeviceNotFound: no such device.
    """
    return get_device_info(host, addr).to_json()
