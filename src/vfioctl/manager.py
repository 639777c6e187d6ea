"""Policy: detach and reattach PCI devices with the IOMMU-group rule, host-safety checks,
ownership, and a crash-safe journal.

:class:`HostdevManager` is what ``vfioctl detach``/``reattach``/``status`` and the QEMU
launcher (``prepare``/``release``) call. It decides *what* moves where; the moving itself
is :func:`vfioctl.pci.driver.move_to`, and the bookkeeping is :mod:`vfioctl.state`.

The group rule (seeds/004, Laine Stump and Alex Williamson, 2013): a device alone in its
IOMMU group is detached by itself. When other members the host is using share the group
and ``group`` is not set, the request is refused, naming each member and its driver —
a user who did not know about the group would otherwise lose those devices silently.
With ``group``, every member is detached; members on pcieport or pci-stub are left alone
(the kernel accepts them in a VFIO group and pcieport must keep driving its port), as are
members already on vfio-pci.

Every operation runs under the host's writer lock and, before anything else, recovers
an unfinished journal left by a writer that died (see :meth:`HostdevManager.recover`).
Within an operation, every check runs before the first write, and every write is undone
in reverse order when a later one fails, so a refused or failed operation leaves the
host as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from vfioctl.address import PciAddress
from vfioctl.errors import (
    DeviceInUse,
    GroupNotViable,
    OperationInvalid,
    ReadOnlyHost,
    UsageError,
    VfioctlError,
    VfsEnabled,
)
from vfioctl.host.base import DEV_VFIO, Host
from vfioctl.pci.device import VFIO_DRIVER, PciDevice, get_device
from vfioctl.pci.driver import ANY_DRIVER, HOLDING_DRIVERS, ensure_driver, is_bridge, move_to
from vfioctl.pci.iommu import IommuGroup, iommu_status
from vfioctl.pci.usage import find_host_uses
from vfioctl.state import (
    DeviceRecord,
    Journal,
    JournalState,
    Phase,
    StateStore,
    StateWriter,
    Step,
    now,
)
from vfioctl.vfio.token import forget_token

# Drivers a group member may keep when the group is detached (seed 004): pcieport drives
# the port itself and never DMAs for the device, pci-stub already keeps the host off it.
LEFT_ALONE_DRIVERS = frozenset({"pcieport", "pci-stub"})


@dataclass(frozen=True)
class Action:
    """What an operation did (or deliberately did not do) to one device.

    ``kind``: ``detached``, ``reattached``, ``reprobed`` (given back to the kernel's
    choice: vfioctl had not detached it), ``already`` (on the wanted driver already),
    ``left-alone`` (a group member kept on its driver), ``claimed`` (ownership taken of a
    device already detached), ``unclaimed`` (ownership dropped, the device stays
    detached), ``not-held`` (nothing to give back).
    """

    addr: PciAddress
    kind: str
    before: str | None
    after: str | None
    owner: str | None = None

    def describe(self) -> str:
        """One line for people, e.g. ``0000:01:00.0: nvidia -> vfio-pci``."""
        before, after = _drv(self.before), _drv(self.after)
        held = f" (held for '{self.owner}')" if self.owner else ""
        text = {
            "detached": f"{before} -> {after}{held}",
            "reattached": f"{before} -> {after}",
            "reprobed": f"{before} -> {after} (not detached by vfioctl: cleared "
                        f"driver_override and reprobed)",
            "already": f"already on {after}{held}",
            "left-alone": f"left alone: {after}",
            "claimed": f"already on {after}, now held for '{self.owner}'",
            "unclaimed": f"stays on {after}, no longer held for '{self.owner}'",
            "not-held": f"nothing to do: on {after}, not detached by vfioctl",
        }[self.kind]
        return f"{self.addr}: {text}"


@dataclass(frozen=True)
class Recovery:
    """One device put right after an interrupted operation."""

    addr: PciAddress
    op: str
    direction: str  # "back" (rolled back) | "forward" (completed) | "stuck"
    driver: str | None
    note: str = ""

    def describe(self) -> str:
        how = {"back": f"rolled back an interrupted {self.op}",
               "forward": f"completed an interrupted {self.op}",
               "stuck": f"could not finish an interrupted {self.op}"}[self.direction]
        tail = f" ({self.note})" if self.note else ""
        return f"recovered {self.addr}: {how}, now on {_drv(self.driver)}{tail}"


@dataclass(frozen=True)
class Report:
    """The result of one operation: per-device actions, plus any recovery done first."""

    actions: tuple[Action, ...]
    recovered: tuple[Recovery, ...] = ()


@dataclass(frozen=True)
class DeviceStatus:
    """A held device as recorded, with its driver as sysfs shows it now."""

    record: DeviceRecord
    driver: str | None
    driver_override: str | None

    def to_json(self) -> dict[str, object]:
        rec = self.record
        return {
            "address": str(rec.addr),
            "iommu_group": rec.group,
            "driver": self.driver,
            "held_on": rec.driver,
            "original_driver": rec.original_driver if rec.moved else None,
            "detached_by_vfioctl": rec.moved,
            "owner": rec.owner,
            "managed": rec.managed,
            "since": rec.since,
        }


@dataclass
class _Move:
    """A planned move of one device (internal)."""

    dev: PciDevice
    to_driver: str | None
    to_override: str | None
    kind: str
    from_driver: str | None = None
    from_override: str | None = None
    after: str | None = None
    owner: str | None = None


@dataclass
class _Plan:
    moves: list[_Move] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)  # in the order devices appear
    upserts: list[DeviceRecord] = field(default_factory=list)
    deletes: list[PciAddress] = field(default_factory=list)


def _drv(name: str | None) -> str:
    if name == ANY_DRIVER:
        return "the kernel's choice"
    return name if name else "(no driver)"


def _uniq(addrs: Sequence[PciAddress | str]) -> list[PciAddress]:
    out: list[PciAddress] = []
    for a in addrs:
        addr = PciAddress.parse(a) if isinstance(a, str) else a
        if addr not in out:
            out.append(addr)
    if not out:
        raise UsageError("no PCI address given", hint="name at least one device")
    return out


class HostdevManager:
    """Detach/reattach devices on one host, remembering what it holds and for whom.

    The library never prints: every method returns what it did (a :class:`Report`).
    Constructing a manager does no I/O.
    """

    def __init__(self, host: Host, *, lock_timeout: float | None = None) -> None:
        self.host = host
        state_dir = host.state_dir
        self._store = None if state_dir is None else StateStore(state_dir,
                                                                timeout=lock_timeout)

    # -- public operations --------------------------------------------------------------
    def recover(self) -> list[Recovery]:
        """Finish or roll back operations a dead vfioctl left unfinished.

        A detach interrupted before every device reached its target is rolled back (each
        device to its original driver and override); one interrupted after that point,
        and every reattach/release (they pass their point of no return at the first
        write, since the host may start using a returned device at once), is completed.
        A device that cannot go the chosen way is sent the other way, so none is left
        driverless by accident. Read-only hosts have nothing to recover.

        Raises:
            Busy: if another vfioctl holds the lock for too long.
        """
        if self._store is None or self.host.readonly:
            return []
        with self._store.writer() as w:
            return self._recover(w)

    def detach(self, addrs: Sequence[PciAddress | str], *, group: bool = False,
               driver: str = VFIO_DRIVER, force: bool = False,
               owner: str | None = None) -> Report:
        """Move devices off their host drivers onto ``driver`` (vfio-pci or pci-stub).

        Args:
            addrs: the devices asked for.
            group: also detach every other member of their IOMMU groups (seed 004).
            driver: ``vfio-pci`` (for VFIO) or ``pci-stub`` (keep the host off a member
                nobody means to use).
            force: detach even devices the host is using (network, disks, boot GPU).
            owner: hold the devices for this owner (a guest); see :meth:`prepare`.

        Returns:
            One action per device considered, in address order per group.

        Raises:
            UsageError: if ``driver`` is not a holding driver or an address is malformed.
            ReadOnlyHost: on a snapshot or a bundled simulated host.
            DeviceNotFound: if a device does not exist.
            GroupNotViable: if another member of a group is in use by the host and
                ``group`` is not set.
            OperationInvalid: for a bridge or PCIe port, or a device without IOMMU group.
            VfsEnabled: for an SR-IOV PF whose VFs are enabled.
            DeviceInUse: if the host uses a device (without ``force``), or a device or a
                member of its group is held for another owner.
            DriverNotFound: if ``driver`` is not available and cannot be loaded.
            HostError: if the kernel refuses a write (everything done is undone first).
            Busy: if another vfioctl holds the lock for too long.
        """
        if driver not in HOLDING_DRIVERS:
            raise UsageError(f"cannot detach onto driver '{driver}'",
                             hint="use vfio-pci (for VFIO) or pci-stub")
        wanted = _uniq(addrs)
        with self._writer(f"detach {wanted[0]}") as (w, recovered):
            # Step 1: check everything before touching anything.
            plan = self._plan_detach(w, wanted, group=group, driver=driver, force=force,
                                     owner=owner)
            if plan.moves:
                ensure_driver(self.host, driver)
            # Step 2..4: journal, move, record.
            self._execute(w, "detach", owner, plan, forward_at_start=False)
            return Report(tuple(plan.actions), tuple(recovered))

    def prepare(self, owner: str, devices: Sequence[PciAddress | str], *,
                group: bool = False, driver: str = VFIO_DRIVER,
                force: bool = False) -> Report:
        """Hold ``devices`` for ``owner`` (a guest about to start), detaching them first.

        A device, or another member of its IOMMU group, held for a different owner
        cannot be given to this one. Devices vfioctl detaches here are *managed*:
        :meth:`release` gives them back to their original drivers; devices that were
        already detached stay detached on release.

        Raises:
            Everything :meth:`detach` raises; DeviceInUse names the other owner.
        """
        if not owner:
            raise UsageError("prepare needs an owner name")
        return self.detach(devices, group=group, driver=driver, force=force, owner=owner)

    def reattach(self, addrs: Sequence[PciAddress | str], *, group: bool = False,
                 owner: str | None = None) -> Report:
        """Give devices back to the host: each to the driver it had when vfioctl
        detached it (bound by name), with ``driver_override`` cleared.

        A device vfioctl did not detach has its override cleared and is reprobed (the
        kernel picks its driver), and the action says so.

        Args:
            addrs: the devices to give back.
            group: also give back every member of their groups that vfioctl holds.
            owner: the owner the devices are held for; required for held devices.

        Raises:
            ReadOnlyHost, DeviceNotFound, Busy: as for :meth:`detach`.
            DeviceInUse: if a device is held for an owner other than ``owner``, or its
                group is open by a VFIO user (a running guest).
            GroupNotViable: if vfioctl holds other members of the group and ``group`` is
                not set (a group goes back as a whole).
            DriverNotFound: if an original driver is gone and cannot be loaded.
            HostError: if the kernel refuses a write (everything done is undone first).
        """
        wanted = _uniq(addrs)
        with self._writer(f"reattach {wanted[0]}") as (w, recovered):
            plan = self._plan_reattach(w, wanted, group=group, owner=owner)
            self._execute(w, "reattach", owner, plan, forward_at_start=True)
            return Report(tuple(plan.actions), tuple(recovered))

    def release(self, owner: str) -> Report:
        """Give back everything held for ``owner``: managed devices return to their
        original drivers; devices that were detached before :meth:`prepare` stay
        detached, held for nobody.

        Raises:
            ReadOnlyHost, Busy, DriverNotFound, HostError: as for :meth:`reattach`.
        """
        if not owner:
            raise UsageError("release needs an owner name")
        with self._writer(f"release devices of {owner}") as (w, recovered):
            records = [r for r in w.records() if r.owner == owner]
            plan = _Plan()
            managed = [r for r in records if r.managed]
            for rec in records:
                if rec.managed:
                    continue
                dev = PciDevice(self.host, rec.addr)
                plan.actions.append(Action(rec.addr, "unclaimed", dev.driver, dev.driver,
                                           owner))
                if rec.moved:
                    plan.upserts.append(dataclasses.replace(rec, owner=None))
                else:
                    plan.deletes.append(rec.addr)
            if managed:
                sub = self._plan_reattach(w, [r.addr for r in managed], group=True,
                                          owner=owner, only_held=True)
                plan.moves.extend(sub.moves)
                plan.actions[:0] = sub.actions
                plan.deletes.extend(sub.deletes)
            self._execute(w, "release", owner, plan, forward_at_start=True)
            return Report(tuple(plan.actions), tuple(recovered))

    def status(self) -> list[DeviceStatus]:
        """What vfioctl holds, for whom, and each device's original driver.

        Recovers an unfinished journal first (like every operation), so the answer is
        never a half-done state. A read-only host holds nothing.

        Raises:
            Busy: if another vfioctl holds the lock for too long.
        """
        if self._store is None or self.host.readonly:
            return []
        with self._store.writer() as w:
            self._recover(w)
            records = w.records()
        out = []
        for rec in records:
            dev = PciDevice(self.host, rec.addr)
            present = dev.exists()
            out.append(DeviceStatus(rec, dev.driver if present else None,
                                    dev.driver_override if present else None))
        return out

    # -- locking ------------------------------------------------------------------------
    @contextlib.contextmanager
    def _writer(self, what: str) -> Iterator[tuple[StateWriter, list[Recovery]]]:
        if self.host.readonly or self._store is None:
            name = self.host.name
            if name.startswith("sim:"):
                hint = (f"copy it first: 'vfioctl sim copy {name[4:]} FILE', then use "
                        f"--host sim:FILE")
            else:
                hint = ("a snapshot cannot change; use the live host (--host linux) or a "
                        "simulated one (--host sim:FILE)")
            raise ReadOnlyHost(f"host {name} is read-only: cannot {what}", hint=hint)
        with self._store.writer() as w:
            recovered = self._recover(w)
            yield w, recovered

    # -- planning: detach ---------------------------------------------------------------
    def _plan_detach(self, w: StateWriter, wanted: list[PciAddress], *, group: bool,
                     driver: str, force: bool, owner: str | None) -> _Plan:
        records = {r.addr: r for r in w.records()}
        named = [get_device(self.host, a) for a in wanted]
        # Step 1a: what each named device is, alone.
        for dev in named:
            self._check_detachable(dev, driver)
        # Step 1b: the group rule, group by group in the order they were named.
        by_group: dict[int | None, list[PciDevice]] = {}
        for dev in named:
            by_group.setdefault(dev.iommu_group, []).append(dev)
        plan = _Plan()
        for number, devs in by_group.items():
            members = ([d for d in IommuGroup(self.host, number).devices()]
                       if number is not None else list(devs))
            others = [m for m in members if m not in devs]
            if not group:
                offenders = [m for m in others if not m.vfio_safe]
                if offenders:
                    raise _group_refusal(number, devs, offenders, verb="detach")
                targets = devs
            else:
                targets = sorted(set(devs) | set(others), key=lambda d: d.addr)
            self._check_owners(records, targets, members, owner)
            for dev in targets:
                self._plan_one_detach(plan, records, dev, dev in devs, driver, owner,
                                      number)
            if driver == VFIO_DRIVER and number is not None:
                self._check_viable_after(number, members, plan)
        # Step 1c: the host must not be using what is about to move.
        if not force:
            self._check_host_uses([m.dev for m in plan.moves])
        return plan

    def _check_detachable(self, dev: PciDevice, driver: str) -> None:
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
                hint=f"disable the VFs first (write 0 to /{dev.path}/sriov_numvfs), "
                f"then detach it",
            )
        if driver == VFIO_DRIVER and dev.iommu_group is None:
            reason = iommu_status(self.host).reason
            raise OperationInvalid(
                f"cannot detach {dev.name} onto vfio-pci: it has no IOMMU group",
                hint=reason or "enable the IOMMU (see 'vfioctl doctor')",
            )

    def _check_owners(self, records: dict[PciAddress, DeviceRecord],
                      targets: list[PciDevice], members: list[PciDevice],
                      owner: str | None) -> None:
        """A group goes to one owner at a time: refuse when any member is held for a
        different owner than the one asking (an unowned request may not move a held
        device either, checked per move)."""
        if owner is None:
            return
        for dev in targets:
            rec = records.get(dev.addr)
            if rec is not None and rec.owner not in (None, owner):
                raise _held_by(dev.addr, rec.owner)
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

    def _plan_one_detach(self, plan: _Plan, records: dict[PciAddress, DeviceRecord],
                         dev: PciDevice, named: bool, driver: str, owner: str | None,
                         number: int | None) -> None:
        current, override = dev.driver, dev.driver_override
        rec = records.get(dev.addr)
        on_vfio = current is not None and (current == VFIO_DRIVER or dev.is_vfio_variant)
        if current == driver or (not named and on_vfio):
            # Already where it should be (or on vfio-pci, which the seed keeps as is).
            if owner is not None and (rec is None or rec.owner is None):
                if rec is None:
                    rec = DeviceRecord(dev.addr, number, current or driver, moved=False,
                                       original_driver=None, original_override=None,
                                       owner=owner, managed=False, since=now())
                else:
                    rec = dataclasses.replace(rec, owner=owner)
                plan.upserts.append(rec)
                plan.actions.append(Action(dev.addr, "claimed", current, current, owner))
            else:
                plan.actions.append(Action(dev.addr, "already", current, current,
                                           rec.owner if rec else None))
            return
        if not named and (current in LEFT_ALONE_DRIVERS or is_bridge(dev)):
            plan.actions.append(Action(dev.addr, "left-alone", current, current))
            return
        if rec is not None and rec.owner not in (None, owner):
            raise _held_by(dev.addr, rec.owner)
        if current in HOLDING_DRIVERS or (current is not None and dev.is_vfio_variant):
            self._check_group_closed(dev)
        # Keep what vfioctl already knows about the original driver.
        if rec is not None and rec.moved:
            orig, orig_override = rec.original_driver, rec.original_override
        else:
            orig, orig_override = current, override
        new = DeviceRecord(dev.addr, number, driver, moved=True, original_driver=orig,
                           original_override=orig_override, owner=owner,
                           managed=owner is not None, since=now())
        move = _Move(dev, driver, driver, "detached", current, override, driver, owner)
        plan.moves.append(move)
        plan.upserts.append(new)
        plan.actions.append(Action(dev.addr, "detached", current, driver, owner))

    def _check_viable_after(self, number: int, members: list[PciDevice],
                            plan: _Plan) -> None:
        moving = {m.dev.addr for m in plan.moves}
        stuck = [(m.name, m.driver) for m in members
                 if m.addr not in moving and not m.vfio_safe]
        if stuck:
            names = ", ".join(f"{a} ({d})" for a, d in stuck)
            raise GroupNotViable(
                f"IOMMU group {number} would still not be viable: {names}",
                group=number, offenders=tuple(stuck),
                hint="vfioctl does not detach bridges; bind them to pcieport or unbind them",
            )

    def _check_host_uses(self, devs: list[PciDevice]) -> None:
        blocked = []
        for dev in devs:
            uses = find_host_uses(dev)
            if uses:
                blocked.append((dev, "; ".join(u.detail for u in uses)))
        if not blocked:
            return
        first = blocked[0][0]
        if len(blocked) == 1:
            message = f"PCI device {first.name} is in use by the host: {blocked[0][1]}"
        else:
            message = "devices are in use by the host: " + ", ".join(
                f"{dev.name} ({why})" for dev, why in blocked)
        them = "it" if len(blocked) == 1 else "them"
        raise DeviceInUse(message, addr=first.addr,
                          hint=f"stop using {them} first, or pass --force to detach anyway")

    def _check_group_closed(self, dev: PciDevice) -> None:
        """Unbinding vfio-pci from a device a guest has open blocks until the guest lets
        go; refuse instead. Opening ``/dev/vfio/N`` answers EBUSY while another process
        holds the group (KERNEL.md)."""
        number = dev.iommu_group
        if number is None:
            return
        try:
            fd = self.host.open(DEV_VFIO / str(number))
        except OSError as err:
            if err.errno == errno.EBUSY:
                raise DeviceInUse(
                    f"PCI device {dev.name} is in use: IOMMU group {number} is open by a "
                    f"VFIO user (a running guest?)",
                    addr=dev.addr,
                    hint="stop the guest or program using it first",
                ) from err
            return
        self.host.close(fd)

    # -- planning: reattach -------------------------------------------------------------
    def _plan_reattach(self, w: StateWriter, wanted: list[PciAddress], *, group: bool,
                       owner: str | None, only_held: bool = False) -> _Plan:
        records = {r.addr: r for r in w.records()}
        named = [get_device(self.host, a) for a in wanted]
        by_group: dict[int | None, list[PciDevice]] = {}
        for dev in named:
            by_group.setdefault(dev.iommu_group, []).append(dev)
        plan = _Plan()
        for number, devs in by_group.items():
            members = (IommuGroup(self.host, number).devices() if number is not None
                       else list(devs))
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
                self._plan_one_reattach(plan, records, dev, dev in devs or only_held,
                                        owner)
        # The original drivers must exist before anything is unbound.
        for move in plan.moves:
            if move.to_driver not in (None, ANY_DRIVER):
                ensure_driver(self.host, move.to_driver)
        return plan

    def _plan_one_reattach(self, plan: _Plan, records: dict[PciAddress, DeviceRecord],
                           dev: PciDevice, named: bool, owner: str | None) -> None:
        current, override = dev.driver, dev.driver_override
        rec = records.get(dev.addr)
        if rec is not None and rec.owner is not None and rec.owner != owner:
            raise _held_by(dev.addr, rec.owner)
        to_driver: str | None
        if rec is None:
            if not named:
                plan.actions.append(Action(dev.addr, "left-alone", current, current))
                return
            if current not in HOLDING_DRIVERS and override is None:
                plan.actions.append(Action(dev.addr, "not-held", current, current))
                return
            to_driver = ANY_DRIVER
            kind = "reprobed"
        elif rec.moved:
            to_driver, kind = rec.original_driver, "reattached"
        else:
            to_driver, kind = ANY_DRIVER, "reprobed"
        if current in HOLDING_DRIVERS or (current is not None and dev.is_vfio_variant):
            self._check_group_closed(dev)
        plan.moves.append(_Move(dev, to_driver, None, kind, current, override, to_driver))
        if rec is not None:
            plan.deletes.append(dev.addr)
        plan.actions.append(Action(dev.addr, kind, current, to_driver))

    # -- execution ----------------------------------------------------------------------
    def _execute(self, w: StateWriter, op: str, owner: str | None, plan: _Plan, *,
                 forward_at_start: bool) -> None:
        """Steps 2-4 of every operation: journal the intent, move the devices in order
        (undoing in reverse on failure), then record the outcome with the journal's end.
        """
        if not plan.moves:
            if plan.upserts or plan.deletes:
                w.put_records(plan.upserts, plan.deletes)
            return
        steps = [Step(seq, m.dev.addr, m.from_driver, m.from_override, m.to_driver,
                      m.to_override) for seq, m in enumerate(plan.moves)]
        # Step 2: intent, durable before the first write.
        jid = w.begin(op, owner, steps, plan.upserts, plan.deletes)
        if forward_at_start:
            w.set_forward(jid)
        # Step 3: move each device; on a refusal undo the moves so far, newest first.
        done: list[_Move] = []
        try:
            for seq, move in enumerate(plan.moves):
                w.set_phase(jid, seq, Phase.MOVING)
                done.append(move)
                move_to(move.dev, move.to_driver, move.to_override)
                w.set_phase(jid, seq, Phase.MOVED)
        except Exception as err:
            failed = self._undo(done)
            if failed is None:
                w.finish(jid, JournalState.ROLLED_BACK, apply_changes=False)
            elif isinstance(err, VfioctlError):
                # The journal stays running: the next vfioctl command retries the undo.
                err.hint = (f"undoing it failed too ({failed}); the next vfioctl command "
                            f"retries")
            raise
        # Step 4: past the point of no return; record the outcome with the journal's end.
        if not forward_at_start:
            w.set_forward(jid)
        w.finish(jid, JournalState.DONE, apply_changes=True)
        # A PF that changed driver has a new kernel VF token (vfio-pci makes a random one
        # at bind) or none: a stored copy is stale from now on.
        for move in plan.moves:
            if move.from_driver != move.to_driver:
                forget_token(self.host, move.dev.addr)
        # Report what the kernel chose where it chose.
        for i, action in enumerate(plan.actions):
            if action.kind == "reprobed":
                plan.actions[i] = dataclasses.replace(
                    action, after=PciDevice(self.host, action.addr).driver)

    def _undo(self, done: list[_Move]) -> VfioctlError | None:
        first_error = None
        for move in reversed(done):
            try:
                move_to(move.dev, move.from_driver, move.from_override)
            except VfioctlError as err:
                first_error = first_error or err
        return first_error

    # -- recovery -----------------------------------------------------------------------
    def _recover(self, w: StateWriter) -> list[Recovery]:
        out: list[Recovery] = []
        for journal in w.unfinished():
            out.extend(self._recover_one(w, journal))
        return out

    def _recover_one(self, w: StateWriter, journal: Journal) -> list[Recovery]:
        """Put every device of a dead writer's operation on one side of it.

        Steps still ``planned`` were never touched; the others go to their *to* state
        when the journal passed its point of no return, else to their *from* state. A
        device that refuses that side goes to the other; records follow each device's
        side, so what vfioctl remembers matches what sysfs shows.
        """
        forward = journal.forward
        results: list[Recovery] = []
        arrived: set[PciAddress] = set()  # devices now on their "to" side
        steps = list(journal.steps) if forward else list(reversed(journal.steps))
        for step in steps:
            dev = PciDevice(self.host, step.addr)
            if not dev.exists():
                results.append(Recovery(step.addr, journal.op, "stuck", None,
                                        "the device is gone"))
                continue
            if step.phase == "planned" and not forward:
                continue
            sides = [(step.to_driver, step.to_override, "forward"),
                     (step.from_driver, step.from_override, "back")]
            if not forward:
                sides.reverse()
            before = (dev.driver, dev.driver_override)
            result = None
            problem = ""
            for drv, ovr, direction in sides:
                try:
                    move_to(dev, drv, ovr)
                except VfioctlError as err:
                    problem = problem or str(err)
                    continue
                if direction == "forward":
                    arrived.add(step.addr)
                result = Recovery(step.addr, journal.op, direction, dev.driver, problem)
                break
            if result is None:
                result = Recovery(step.addr, journal.op, "stuck", dev.driver, problem)
            if step.phase != "planned" or (dev.driver, dev.driver_override) != before:
                results.append(result)
        # Records follow the devices: apply the journal's changes for arrivals only.
        ups = [r for r in journal.upserts if r.addr in arrived]
        dels = [a for a in journal.deletes if a in arrived]
        w.put_records(ups, dels)
        w.finish(journal.id, JournalState.ROLLED_FORWARD if forward else JournalState.ROLLED_BACK,
                 apply_changes=False)
        return sorted(results, key=lambda r: r.addr)


def _held_by(addr: PciAddress, owner: str | None) -> DeviceInUse:
    return DeviceInUse(
        f"PCI device {addr} is in use by '{owner}'", addr=addr, owner=owner,
        hint=f"release it from {owner} first ('vfioctl reattach --owner {owner} {addr}')",
    )


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
    return GroupNotViable(
        message,
        group=number if number is not None else -1,
        offenders=tuple((m.name, m.driver) for m in others),
        hint=hint,
    )
