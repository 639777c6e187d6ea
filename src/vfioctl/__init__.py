"""vfioctl: safe, explainable and scriptable VFIO PCI device assignment on Linux.

The library API (docs/api.md)::

    import vfioctl

    with vfioctl.open("sim:ws.toml") as host:       # or "linux", "linux:DIR"
        for group in host.groups():
            ...
        plan = host.plan_detach(["0000:01:00.0"], group=True)   # nothing changed yet
        report = host.detach(["0000:01:00.0"], group=True)      # the same plan, run

Everything a front end needs is a name here: :func:`open` and :class:`Session` (reads,
plans, detach/reattach, prepare/release, SR-IOV, VF tokens), the plan and report types,
:class:`VfToken`, and the error tree. Heavy modules are imported on first use of a
name, so ``import vfioctl`` (and ``vfioctl --help``) stays light.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vfioctl.address import PciAddress, parse_address
    from vfioctl.errors import (
        Busy,
        ConfigError,
        DeviceInUse,
        DeviceNotFound,
        DriverNotFound,
        GroupNotFound,
        GroupNotViable,
        HostError,
        InternalError,
        NotDetached,
        NotFound,
        OperationInvalid,
        PermissionDenied,
        ReadOnlyHost,
        UnsupportedConfig,
        UsageError,
        VfioctlError,
        VfioIoctlError,
        VfsEnabled,
        XmlError,
    )
    from vfioctl.manager import (
        Action,
        ActionKind,
        CheckResult,
        DeviceStatus,
        OpKind,
        Plan,
        Recovery,
        Refusal,
        Report,
        SriovChange,
        TokenNotFound,
        TokenSet,
        TokenStale,
        TokenStatus,
    )
    from vfioctl.model import DeviceDetail, DeviceInfo, GroupInfo, GroupMember
    from vfioctl.pci.sriov import EnableSriovRequired, SriovInfo, VfInfo
    from vfioctl.secret import VfToken
    from vfioctl.session import Session
    from vfioctl.vfio.device import TokenNotAccepted, VfTokenRejected

__version__ = "0.1.0"

# name -> module it lives in (imported on first use)
_LAZY: dict[str, str] = {
    **dict.fromkeys(("Action", "ActionKind", "CheckResult", "DeviceStatus", "OpKind",
                     "Plan", "Recovery", "Refusal", "Report", "SriovChange",
                     "TokenNotFound", "TokenSet", "TokenStale", "TokenStatus"),
                    "vfioctl.manager"),
    **dict.fromkeys(("DeviceDetail", "DeviceInfo", "GroupInfo", "GroupMember"),
                    "vfioctl.model"),
    **dict.fromkeys(("EnableSriovRequired", "SriovInfo", "VfInfo"), "vfioctl.pci.sriov"),
    "VfToken": "vfioctl.secret",
    "Session": "vfioctl.session",
    **dict.fromkeys(("PciAddress", "parse_address"), "vfioctl.address"),
    **dict.fromkeys(("Busy", "ConfigError", "DeviceInUse", "DeviceNotFound", "DriverNotFound",
                     "GroupNotFound", "GroupNotViable", "HostError", "InternalError",
                     "NotDetached", "NotFound", "OperationInvalid", "PermissionDenied",
                     "ReadOnlyHost", "UnsupportedConfig", "UsageError", "VfioctlError",
                     "VfioIoctlError", "VfsEnabled", "XmlError"), "vfioctl.errors"),
    **dict.fromkeys(("TokenNotAccepted", "VfTokenRejected"), "vfioctl.vfio.device"),
}


def open(spec: str | None = None, *, lock_timeout: float | None = None) -> Session:
    """Open a host: ``"linux"`` (this kernel), ``"linux:DIR"`` (a snapshot, read-only),
    ``"sim:NAME"`` / ``"sim:FILE"`` (a simulated host); default ``VFIOCTL_HOST``, then
    ``"linux"``. Use it as a context manager.

    Raises:
        UsageError: an unknown spec. NotFound / ConfigError: a missing or bad sim file.
    """
    from vfioctl.session import open_session

    return open_session(spec, lock_timeout=lock_timeout)


def copy_simulated_host(name: str, path: str | os.PathLike[str], *,
                        overwrite: bool = False) -> str:
    """Write bundled simulated host ``name`` (``workstation``, ``sriov-server``,
    ``q35-vmtest``) to ``path`` and return the spec that opens the copy, ``sim:PATH``."""
    from vfioctl.session import copy_simulated_host as copy

    return copy(name, path, overwrite=overwrite)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vfioctl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "Action", "ActionKind", "Busy", "CheckResult", "ConfigError", "DeviceDetail",
    "DeviceInUse", "DeviceInfo", "DeviceNotFound", "DeviceStatus", "DriverNotFound",
    "EnableSriovRequired", "GroupInfo", "GroupMember", "GroupNotFound", "GroupNotViable",
    "HostError", "InternalError", "NotDetached", "NotFound", "OpKind", "OperationInvalid",
    "PciAddress", "PermissionDenied", "Plan", "ReadOnlyHost", "Recovery", "Refusal",
    "Report", "Session", "SriovChange", "SriovInfo", "TokenNotAccepted", "TokenNotFound",
    "TokenSet", "TokenStale", "TokenStatus", "UnsupportedConfig", "UsageError", "VfInfo",
    "VfToken", "VfTokenRejected", "VfioIoctlError", "VfioctlError", "VfsEnabled",
    "XmlError", "__version__", "copy_simulated_host", "open", "parse_address",
]
