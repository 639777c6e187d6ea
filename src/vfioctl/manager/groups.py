"""Planning detach, reattach and release: the IOMMU-group rule, ownership, host safety.

The group rule (docs/rationale.md, "The IOMMU-group rule"): a device alone in its IOMMU
group is detached by itself. When other members the host is using share the group and
the caller did not opt in (``group``), the request is refused, naming each member and its
driver — a user who did not know about the group would otherwise lose those devices
silently. With the opt-in every member is detached; members on pcieport or pci-stub are
left alone (the kernel accepts them in a VFIO group and pcieport must keep driving its
port), as are members already on vfio-pci.

Every function here only reads the host and vfioctl's records and returns a
:class:`~vfioctl.manager.plan.Plan`; nothing is written until the plan is executed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence

from vfioctl.address import PciAddress
from vfioctl.errors import (
    DeviceInUse,
    GroupNotViable,
    OperationInvalid,
    UsageError,
    VfsEnabled,
)
from vfioctl.host.base import Host
from vfioctl.manager.checks import held_by, host_uses, on_vfio, open_by_user, vfs_held, vfs_open
from vfioctl.manager.plan import Action, ActionKind, OpKind, Plan, planning
from vfioctl.pci.device import VFIO_DRIVER, PciDevice, get_device
from vfioctl.pci.driver import ANY_DRIVER, HOLDING_DRIVERS, LEFT_ALONE_DRIVERS, is_bridge
from vfioctl.pci.iommu import IommuGroup, iommu_status
from vfioctl.state import DeviceRecord, Step, now

Records = dict[PciAddress, DeviceRecord]
GroupOptIn = bool | Collection[PciAddress]
"""``True``: every named device's whole group; a collection: only those devices' groups
(a domain's ``group='allow'`` is per hostdev)."""


def _drv(name: str | None) -> str:
    if name == ANY_DRIVER:
        return "the kernel's choice"
    return name if name else "(no driver)"


def unique(addrs: Sequence[PciAddress | str]) -> list[PciAddress]:
    """The addresses asked for, parsed, in order, without repeats.

    Raises:
        UsageError: a malformed address, or none at all.
    """
    out: list[PciAddress] = []
    for a in addrs:
        addr = PciAddress.parse(a) if isinstance(a, str) else a
        if addr not in out:
            out.append(addr)
    if not out:
        raise UsageError("no PCI address given", hint="name at least one device")
    return out


def _opted_in(group: GroupOptIn, devs: list[PciDevice]) -> bool:
    if isinstance(group, bool):
        return group
    return any(d.addr in group for d in devs)


def _by_group(devs: list[PciDevice]) -> dict[int | None, list[PciDevice]]:
    by_group: dict[int | None, list[PciDevice]] = {}
    for dev in devs:
        by_group.setdefault(dev.iommu_group, []).append(dev)
    return by_group


def _members(host: Host, number: int | None, devs: list[PciDevice]) -> list[PciDevice]:
    return IommuGroup(host, number).devices() if number is not None else list(devs)


# -- detach ---------------------------------------------------------------------------------
def plan_detach(host: Host, records: Records, addrs: Sequence[PciAddress | str], *,
                group: GroupOptIn = False, driver: str = VFIO_DRIVER, force: bool = False,
                owner: str | None = None) -> Plan:
    """What detaching ``addrs`` onto ``driver`` means on this host now.

    The plan's refusals are what :meth:`HostdevManager.detach` raises: UsageError (bad
    driver or address), DeviceNotFound, GroupNotViable (the group rule),
    OperationInvalid (a bridge, no IOMMU group), VfsEnabled (a PF with VFs),
    DeviceInUse (the host uses it, another owner holds it, a VFIO user has it open).
    """
    plan = Plan(OpKind.DETACH, owner)
    with planning(plan):
        if driver not in HOLDING_DRIVERS:
            raise UsageError(f"cannot detach onto driver '{driver}'",
                             hint="use vfio-pci (for VFIO) or pci-stub")
        named = [get_device(host, a) for a in unique(addrs)]
        for dev in named:
            _check_detachable(host, dev, driver)
        for number, devs in _by_group(named).items():
            members = _members(host, number, devs)
            others = [m for m in members if m not in devs]
            if not _opted_in(group, devs):
                offenders = [m for m in others if not m.vfio_safe]
                if offenders:
                    raise _group_refusal(number, devs, offenders, verb="detach")
                targets = devs
            else:
                targets = sorted(set(devs) | set(others), key=lambda d: d.addr)
            _check_owners(records, targets, members, owner)
            for dev in targets:
                _plan_one_detach(plan, records, dev, dev in devs, driver, owner, number)
            if driver == VFIO_DRIVER and number is not None:
                _check_viable_after(number, members, plan)
        if not force:
            moving = [PciDevice(host, s.addr) for s in plan.steps]
            err = host_uses(moving)
            if err is not None:
                raise err
        if plan.steps:
            plan.needs_drivers.append(driver)
    return plan


def _check_detachable(host: Host, dev: PciDevice, driver: str) -> None:
    current = dev.driver
    if is_bridge(dev):
        raise OperationInvalid(
            f"{dev.name} is a PCI bridge or PCIe port "
            f"({'driver ' + current if current else 'no driver'}): "
            f"bridges cannot be detached",
            hint="detach the devices below it; pcieport keeps a group usable for VFIO",
        )
    if current == driver:
        return
    numvfs = dev.sriov_numvfs or 0
    if numvfs > 0:
        why = ("vfio-pci refuses a PF whose VFs exist" if driver == VFIO_DRIVER else
               f"unbinding {_drv(current)} would destroy them")
        raise VfsEnabled(
            f"cannot detach {dev.name}: it is an SR-IOV PF with {numvfs} VFs "
            f"enabled and {why}",
            hint=f"disable the VFs first ('vfioctl sriov {dev.name} --numvfs 0'), "
            f"then detach it",
        )
    if driver == VFIO_DRIVER and dev.iommu_group is None:
        reason = iommu_status(host).reason
        raise OperationInvalid(
            f"cannot detach {dev.name} onto vfio-pci: it has no IOMMU group",
            hint=reason or "enable the IOMMU (see 'vfioctl doctor')",
        )


def _check_owners(records: Records, targets: list[PciDevice], members: list[PciDevice],
                  owner: str | None) -> None:
    """A group goes to one owner at a time: refuse when any member is held for a
    different owner than the one asking (an unowned request may not move a held device
    either, checked per move)."""
    if owner is None:
        return
    for dev in targets:
        rec = records.get(dev.addr)
        if rec is not None and rec.owner not in (None, owner):
            raise held_by(dev.addr, rec.owner)
    for member in members:
        rec = records.get(member.addr)
        if rec is not None and rec.owner not in (None, owner):
            first = targets[0].addr
            raise DeviceInUse(
                f"PCI device {first} shares IOMMU group {rec.group} with "
                f"{member.addr}, which is in use by '{rec.owner}'",
                addr=first, owner=rec.owner,
                hint=f"a group goes to one owner at a time; release {rec.owner}'s "
                f"devices first",
            )


def _plan_one_detach(plan: Plan, records: Records, dev: PciDevice, named: bool,
                     driver: str, owner: str | None, number: int | None) -> None:
    current, override = dev.driver, dev.driver_override
    rec = records.get(dev.addr)
    why = "asked for" if named else f"member of IOMMU group {number} (group opt-in)"
    vfio_now = current is not None and (current == VFIO_DRIVER or dev.is_vfio_variant)
    if current == driver or (not named and vfio_now):
        # Already where it should be (or on vfio-pci, which the group rule keeps as is).
        if owner is not None and (rec is None or rec.owner is None):
            if rec is None:
                rec = DeviceRecord(dev.addr, number, current or driver, moved=False,
                                   original_driver=None, original_override=None,
                                   owner=owner, managed=False, since=now())
            else:
                rec = dataclasses.replace(rec, owner=owner)
            plan.upserts.append(rec)
            plan.actions.append(Action(dev.addr, ActionKind.CLAIMED, current, current,
                                       owner, why))
        else:
            plan.actions.append(Action(dev.addr, ActionKind.ALREADY, current, current,
                                       rec.owner if rec else None, why))
        return
    if not named and (current in LEFT_ALONE_DRIVERS or is_bridge(dev)):
        plan.actions.append(Action(dev.addr, ActionKind.LEFT_ALONE, current, current,
                                   why=f"{why}; {_drv(current)} may stay in a VFIO group"))
        return
    if rec is not None and rec.owner not in (None, owner):
        raise held_by(dev.addr, rec.owner)
    if on_vfio(dev):
        err = open_by_user(dev)
        if err is not None:
            raise err
    # Keep what vfioctl already knows about the original driver.
    if rec is not None and rec.moved:
        orig, orig_override = rec.original_driver, rec.original_override
    else:
        orig, orig_override = current, override
    plan.upserts.append(DeviceRecord(dev.addr, number, driver, moved=True,
                                     original_driver=orig, original_override=orig_override,
                                     owner=owner, managed=owner is not None, since=now()))
    plan.steps.append(Step(len(plan.steps), dev.addr, current, override, driver, driver))
    plan.actions.append(Action(dev.addr, ActionKind.DETACHED, current, driver, owner, why))


def _check_viable_after(number: int, members: list[PciDevice], plan: Plan) -> None:
    moving = {s.addr for s in plan.steps}
    stuck = [(m.name, m.driver) for m in members
             if m.addr not in moving and not m.vfio_safe]
    if stuck:
        names = ", ".join(f"{a} ({d})" for a, d in stuck)
        raise GroupNotViable(
            f"IOMMU group {number} would still not be viable: {names}",
            group=number, offenders=tuple(stuck),
            hint="vfioctl does not detach bridges; bind them to pcieport or unbind them",
        )


# -- reattach and release -------------------------------------------------------------------
def plan_reattach(host: Host, records: Records, addrs: Sequence[PciAddress | str], *,
                  group: bool = False, owner: str | None = None,
                  only_held: bool = False, op: OpKind = OpKind.REATTACH) -> Plan:
    """What giving ``addrs`` back to the host means now.

    Refusals: DeviceNotFound, DeviceInUse (held for another owner; open by a VFIO user;
    a PF whose VFs are held or open), GroupNotViable (vfioctl holds other members and
    ``group`` is not set), VfsEnabled (a PF whose VFs the unbind would remove),
    DriverNotFound (an original driver that cannot be loaded).
    """
    plan = Plan(op, owner, forward_at_start=True)
    with planning(plan):
        named = [get_device(host, a) for a in unique(addrs)]
        for number, devs in _by_group(named).items():
            members = _members(host, number, devs)
            held_others = [m for m in members if m not in devs and m.addr in records]
            if only_held:
                held_others = [m for m in held_others
                               if records[m.addr].owner == owner and records[m.addr].managed]
            if held_others and not group:
                raise _group_refusal(number, devs, held_others, verb="reattach")
            # With group, every member is reported: the held ones move, the rest say why
            # they stay (release reports only what it gives back).
            extra = members if (group and not only_held) else held_others
            targets = sorted(set(devs) | set(extra), key=lambda d: d.addr)
            for dev in targets:
                _plan_one_reattach(plan, records, dev, dev in devs or only_held, owner)
        # The original drivers must exist before anything is unbound: executing the plan
        # loads their modules first.
        for step in plan.steps:
            if step.to_driver not in (None, ANY_DRIVER) \
                    and step.to_driver not in plan.needs_drivers:
                plan.needs_drivers.append(step.to_driver)
    return plan


def _plan_one_reattach(plan: Plan, records: Records, dev: PciDevice, named: bool,
                       owner: str | None) -> None:
    current, override = dev.driver, dev.driver_override
    rec = records.get(dev.addr)
    if rec is not None and rec.owner is not None and rec.owner != owner:
        raise held_by(dev.addr, rec.owner)
    to_driver: str | None
    if rec is None:
        if not named:
            plan.actions.append(Action(dev.addr, ActionKind.LEFT_ALONE, current, current,
                                       why="not held by vfioctl"))
            return
        if current not in HOLDING_DRIVERS and override is None:
            plan.actions.append(Action(dev.addr, ActionKind.NOT_HELD, current, current))
            return
        to_driver, kind, why = ANY_DRIVER, ActionKind.REPROBED, "original driver unknown"
    elif rec.moved:
        to_driver, kind, why = rec.original_driver, ActionKind.REATTACHED, \
            "the driver it had when vfioctl detached it"
    else:
        to_driver, kind, why = ANY_DRIVER, ActionKind.REPROBED, \
            "it was on vfio-pci already when claimed"
    if on_vfio(dev):
        _check_pf_vfs(plan, records, dev)
        err = open_by_user(dev)
        if err is not None:
            raise err
    plan.steps.append(Step(len(plan.steps), dev.addr, current, override, to_driver, None))
    if rec is not None:
        plan.deletes.append(dev.addr)
    plan.actions.append(Action(dev.addr, kind, current, to_driver, why=why))


def _check_pf_vfs(plan: Plan, records: Records, dev: PciDevice) -> None:
    """Unbinding vfio-pci from a PF disables its SR-IOV: its VFs vanish with it."""
    numvfs = dev.sriov_numvfs or 0
    if not numvfs:
        return
    for err in (vfs_held(dev, records, verb="reattach"),
                vfs_open(dev, verb="reattach")):
        if err is not None:
            raise err
    raise VfsEnabled(
        f"cannot reattach PF {dev.name}: it has {numvfs} VFs, and unbinding vfio-pci "
        "from it removes them",
        hint=f"remove them first ('vfioctl sriov {dev.name} --numvfs 0'), then reattach")


def plan_release(host: Host, records: Records, owner: str) -> Plan:
    """Everything held for ``owner`` back: managed devices to their original drivers;
    devices that were detached before the owner claimed them stay detached, held for
    nobody."""
    plan = Plan(OpKind.RELEASE, owner, forward_at_start=True)
    with planning(plan):
        if not owner:
            raise UsageError("release needs an owner name")
        held = [r for r in records.values() if r.owner == owner]
        managed = [r for r in held if r.managed]
        for rec in held:
            if rec.managed:
                continue
            dev = PciDevice(host, rec.addr)
            plan.actions.append(Action(rec.addr, ActionKind.UNCLAIMED, dev.driver,
                                       dev.driver, owner))
            if rec.moved:
                plan.upserts.append(dataclasses.replace(rec, owner=None))
            else:
                plan.deletes.append(rec.addr)
        if managed:
            sub = plan_reattach(host, records, [r.addr for r in managed], group=True,
                                owner=owner, only_held=True, op=OpKind.RELEASE)
            sub.check()
            plan.steps.extend(sub.steps)
            plan.needs_drivers.extend(sub.needs_drivers)
            plan.actions[:0] = sub.actions
            plan.deletes.extend(sub.deletes)
    return plan


def _group_refusal(number: int | None, devs: list[PciDevice], others: list[PciDevice],
                   *, verb: str) -> GroupNotViable:
    names = ", ".join(d.name for d in devs)
    listing = ", ".join(f"{m.name} ({_drv(m.driver)})" for m in others)
    first = devs[0].name
    if verb == "detach":
        hint = (f"detach the whole group with 'vfioctl detach --group {first}', or move "
                f"the device to a slot with its own group (see 'vfioctl explain {first}')")
        message = f"cannot detach {names} alone: IOMMU group {number} also holds {listing}"
    else:
        hint = f"give back the whole group with 'vfioctl reattach --group {first}'"
        message = (f"cannot reattach {names} alone: vfioctl also holds {listing} in "
                   f"IOMMU group {number}")
    return GroupNotViable(message, group=number, offenders=tuple(
        (m.name, m.driver) for m in others), hint=hint)
