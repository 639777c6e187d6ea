"""vfioctl: safe, explainable and scriptable VFIO PCI device assignment on Linux.

The library API: open a host, look at devices and groups, and (in later modules) detach,
reattach and hand devices to guests. Heavy submodules are imported lazily.
"""

from __future__ import annotations

from vfioctl.address import PciAddress, parse_address
from vfioctl.errors import VfioctlError
from vfioctl.host import open_host

__version__ = "0.1.0"

__all__ = ["PciAddress", "VfioctlError", "__version__", "open_host", "parse_address"]
