"""Front end: libvirt — the qemu hook (group rule, journal, prepare/release for a domain),
the VF token for libvirt guests (the emulator wrapper), install, and ``check``.

Built on the facade (:func:`vfioctl.open` and :class:`vfioctl.Session`) and the
library's domain XML parser; docs/libvirt.md is the user's guide. ``lxml`` and the
manager are imported only when a hook call needs them.
"""

from __future__ import annotations

from vfioctl.libvirt.check import DomainReport, check
from vfioctl.libvirt.domain import LibvirtDomain, read_domain
from vfioctl.libvirt.hook import HookOutcome, run_hook
from vfioctl.libvirt.install import install, is_wrapper, uninstall
from vfioctl.libvirt.metadata import NAMESPACE, DomainMeta, HostdevMeta, read_metadata

__all__ = ["NAMESPACE", "DomainMeta", "DomainReport", "HookOutcome", "HostdevMeta",
           "LibvirtDomain", "check", "install", "is_wrapper", "read_domain",
           "read_metadata", "run_hook", "uninstall"]
