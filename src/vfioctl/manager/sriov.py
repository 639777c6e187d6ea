"""Planning a change of a PF's VF count (``sriov_numvfs``), incl. vfio-pci's
``enable_sriov``.

The kernel changes the count only from or to 0 and, on a vfio-pci PF, only while
vfio-pci's ``enable_sriov`` parameter is Y (docs/kernel.md, "SR-IOV"). Removing VFs
takes them away from whoever uses them, so it is refused while vfioctl holds a VF (for
an owner or not) or a VFIO user has one open — the kernel would not refuse the write
but wait until the user closes the VF. Turning ``enable_sriov`` on is a host-wide
decision with a security meaning (:data:`~vfioctl.pci.sriov.ENABLE_SRIOV_NOTICE`), so it
happens only when the caller says the user agreed.

Creating VFs is rolled back by recovery (their removal restores the host); removing
them passes its point of no return at the write (removed VFs cannot be brought back as
they were), so recovery completes it.
"""

from __future__ import annotations

from vfioctl.address import PciAddress
from vfioctl.errors import OperationInvalid, UsageError, VfsEnabled
from vfioctl.host.base import Host
from vfioctl.manager.checks import vfs_held, vfs_open
from vfioctl.manager.groups import Records
from vfioctl.manager.plan import Action, ActionKind, OpKind, Plan, planning
from vfioctl.pci.device import PciDevice
from vfioctl.pci.sriov import ENABLE_SRIOV_NOTICE, EnableSriovRequired, get_sriov
from vfioctl.state import Step, StepKind


def plan_numvfs(host: Host, records: Records, pf: PciAddress | str, numvfs: int, *,
                allow_enable_sriov: bool = False) -> Plan:
    """What setting ``pf``'s VF count to ``numvfs`` means now.

    Refusals: DeviceNotFound; OperationInvalid (not a PF, no driver); UsageError (out of
    range); VfsEnabled (N to M); EnableSriovRequired (a vfio-pci PF, enable_sriov N and
    not allowed); DeviceInUse (a VF held by vfioctl or open by a VFIO user).
    """
    plan = Plan(OpKind.NUMVFS)
    with planning(plan):
        info = get_sriov(host, pf)
        plan.owner = None
        if numvfs < 0 or numvfs > info.sriov_totalvfs:
            raise UsageError(f"PF {info.pf} supports 0 to {info.sriov_totalvfs} VFs, not "
                             f"{numvfs}")
        if numvfs == info.sriov_numvfs:
            plan.actions.append(Action(info.pf, ActionKind.VFS_UNCHANGED,
                                       str(numvfs), str(numvfs)))
            return plan
        if info.sriov_numvfs and numvfs:
            raise VfsEnabled(
                f"PF {info.pf} already has {info.sriov_numvfs} VFs; the kernel changes the "
                "count only from or to 0 (EBUSY)",
                hint=f"set --numvfs 0 first, then --numvfs {numvfs}")
        if info.driver is None:
            raise OperationInvalid(f"PF {info.pf} has no driver, and only its driver can "
                                   "create VFs", hint="bind it to its driver or detach it "
                                   f"onto vfio-pci ('vfioctl detach {info.pf}')")
        dev = PciDevice(host, info.pf)
        if info.sriov_numvfs:
            for err in (vfs_held(dev, records, verb="remove the VFs of"),
                        vfs_open(dev, verb="remove the VFs of")):
                if err is not None:
                    raise err
        if info.userspace_pf and not info.enable_sriov:
            if not allow_enable_sriov:
                raise EnableSriovRequired(info.pf)
            # Left on afterwards: vfio-pci also needs it to remove the VFs again.
            plan.steps.append(Step(len(plan.steps), info.pf, kind=StepKind.ENABLE_SRIOV,
                                   from_value="N", to_value="Y"))
            plan.actions.append(Action(info.pf, ActionKind.ENABLE_SRIOV, "N", "Y",
                                       why="the user agreed (--yes)"))
            plan.notices.append(ENABLE_SRIOV_NOTICE)
        plan.steps.append(Step(len(plan.steps), info.pf, kind=StepKind.NUMVFS,
                               from_value=str(info.sriov_numvfs), to_value=str(numvfs)))
        kind = ActionKind.VFS_CREATED if numvfs else ActionKind.VFS_REMOVED
        why = (f"on {info.driver}" if not info.userspace_pf else
               "a userspace (vfio-pci) PF: its VFs open only with its VF token")
        plan.actions.append(Action(info.pf, kind, str(info.sriov_numvfs), str(numvfs),
                                   why=why))
        plan.forward_at_start = numvfs == 0
    return plan
