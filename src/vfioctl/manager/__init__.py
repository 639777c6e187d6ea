"""Policy: every change vfioctl makes to a host — detach and reattach under the
IOMMU-group rule, devices held per owner, SR-IOV VF counts, VF tokens — planned first,
then journaled and executed under one writer lock, and recovered after a crash.

:class:`HostdevManager` is the door (:mod:`vfioctl.manager.core`); the planners decide
(:mod:`~vfioctl.manager.groups`, :mod:`~vfioctl.manager.sriov`,
:mod:`~vfioctl.manager.tokens`), :mod:`~vfioctl.manager.execute` and
:mod:`~vfioctl.manager.recovery` carry plans out and put interrupted ones right.
"""

from vfioctl.manager.core import (
    DeviceStatus,
    HostdevManager,
    SriovChange,
    TokenSet,
    plan_json,
    require_writable,
)
from vfioctl.manager.plan import Action, ActionKind, OpKind, Plan, Recovery, Refusal, Report
from vfioctl.manager.tokens import (
    CheckResult,
    TokenCommitFailed,
    TokenNotFound,
    TokenStale,
    TokenStatus,
)
from vfioctl.pci.driver import LEFT_ALONE_DRIVERS

__all__ = ["LEFT_ALONE_DRIVERS", "Action", "ActionKind", "CheckResult", "DeviceStatus",
           "HostdevManager", "OpKind", "Plan", "Recovery", "Refusal", "Report",
           "SriovChange", "TokenCommitFailed", "TokenNotFound", "TokenSet", "TokenStale",
           "TokenStatus", "plan_json", "require_writable"]
