"""The read model: typed records of PCI functions and IOMMU groups, read from a Host.

:func:`list_devices`, :func:`get_device_info` and :func:`list_groups` return frozen
dataclasses (:class:`DeviceInfo`, :class:`DeviceDetail`, :class:`GroupInfo`) that the
CLI renders as tables or, through ``to_json()``, as the stable documents of README
"JSON output". One module per record (``device``, ``detail``, ``groups``), imported on
first use of a name here, so that ``list`` does not pay for decoding config space.
:mod:`vfioctl.inventory` keeps the document-returning functions of earlier releases.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vfioctl.model.detail import DeviceDetail, get_device_info
    from vfioctl.model.device import DeviceInfo, device_info, list_devices
    from vfioctl.model.groups import GroupInfo, GroupMember, group_info, list_groups

_LAZY: dict[str, str] = {
    "DeviceInfo": "vfioctl.model.device",
    "device_info": "vfioctl.model.device",
    "list_devices": "vfioctl.model.device",
    "DeviceDetail": "vfioctl.model.detail",
    "get_device_info": "vfioctl.model.detail",
    "GroupInfo": "vfioctl.model.groups",
    "GroupMember": "vfioctl.model.groups",
    "group_info": "vfioctl.model.groups",
    "list_groups": "vfioctl.model.groups",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vfioctl.model' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "DeviceDetail",
    "DeviceInfo",
    "GroupInfo",
    "GroupMember",
    "device_info",
    "get_device_info",
    "group_info",
    "list_devices",
    "list_groups",
]
