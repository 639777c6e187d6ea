"""Every reader of the model in one place, for front ends that use them all."""

from __future__ import annotations

from vfioctl.model.detail import get_device_info
from vfioctl.model.device import device_info, list_devices
from vfioctl.model.groups import group_info, list_groups

__all__ = ["device_info", "get_device_info", "group_info", "list_devices", "list_groups"]
