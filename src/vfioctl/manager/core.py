""":class:`HostdevManager`: the one door for every change vfioctl makes to a host.

Detach, reattach, prepare/release for an owner, SR-IOV VF counts (with vfio-pci's
``enable_sriov``) and VF tokens all go through here, and each the same way: plan it
(:mod:`vfioctl.manager.groups`, :mod:`~vfioctl.manager.sriov`, :mod:`~vfioctl.manager.tokens`),
then, under the host's writer lock and after recovering what a dead vfioctl left
unfinished, plan it again against the state the lock guarantees and execute that plan
(:mod:`vfioctl.manager.execute`). ``plan_*`` methods return the plan without changing
anything: that is what ``--dry-run`` prints.

The library never prints: every method returns what it did. Constructing a manager does
no I/O.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vfioctl.address import PciAddress
from vfioctl.errors import DeviceInUse, OperationInvalid, UsageError
from vfioctl.host.base import Host
from vfioctl.manager import groups, sriov, tokens
from vfioctl.manager.checks import require_writable
from vfioctl.manager.execute import STAGE_PENDING, execute
from vfioctl.manager.plan import Action, ActionKind, OpKind, Plan, Recovery, Report, planning
from vfioctl.manager.recovery import recover
from vfioctl.pci.device import VFIO_DRIVER, PciDevice, get_device
from vfioctl.pci.sriov import SriovInfo, get_sriov
from vfioctl.secret import VfToken
from vfioctl.state import (
    DeviceRecord,
    StateStore,
    StateWriter,
    Step,
    StepKind,
    StoredToken,
    TokenStore,
)
from vfioctl.vfio.device import DeviceHandle
from vfioctl.vfio.holders import device_users

Records = dict[PciAddress, DeviceRecord]


@dataclass(frozen=True)
class DeviceStatus:
    """A held device as recorded, with its driver as sysfs shows it now."""

    record: DeviceRecord
    driver: str | None
    driver_override: str | None
    present: bool = True

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
            "present": self.present,
        }


@dataclass(frozen=True)
class SriovChange:
    """What :meth:`HostdevManager.set_numvfs` did: the PF before and after."""

    before: SriovInfo
    after: SriovInfo
    enabled_sriov_param: bool
    report: Report


@dataclass(frozen=True)
class TokenSet:
    """What :meth:`HostdevManager.set_token` did; ``stored.token`` is the secret."""

    stored: StoredToken
    file: Path
    report: Report


class HostdevManager:
    """Every change vfioctl makes to one host, planned, journaled and recoverable."""

    def __init__(self, host: Host, *, lock_timeout: float | None = None) -> None:
        self.host = host
        state_dir = host.state_dir
        self._store = None if state_dir is None or host.readonly else StateStore(
            state_dir, timeout=lock_timeout)

    # -- state --------------------------------------------------------------------------
    def _tokens(self) -> TokenStore | None:
        return None if self._store is None else TokenStore(self._store.directory)

    def records(self) -> Records:
        """vfioctl's records, read without the writer lock (a consistent snapshot)."""
        if self._store is None:
            return {}
        return {r.addr: r for r in self._store.read_records()}

    def needs_recovery(self) -> bool:
        """True when a dead vfioctl left an operation unfinished (never waits for a live
        writer, never creates the state directory)."""
        return self._store is not None and self._store.needs_recovery()

    def recover(self) -> list[Recovery]:
        """Finish or roll back operations a dead vfioctl left unfinished (see
        :mod:`vfioctl.manager.recovery`). Read-only hosts have nothing to recover.

        Raises:
            Busy: if another vfioctl holds the lock for too long.
        """
        if self._store is None:
            return []
        with self._store.writer() as w:
            return recover(self.host, w, self._tokens())

    @contextlib.contextmanager
    def _writer(self, what: str) -> Iterator[tuple[StateWriter, list[Recovery]]]:
        require_writable(self.host, what)
        assert self._store is not None
        # Deferred: a command refused by its plan creates no state at all.
        with self._store.writer(defer=True) as w:
            yield w, recover(self.host, w, self._tokens())

    def _run(self, what: str, make: Callable[[Records], Plan]) -> Report:
        """Plan under the lock (after recovery) and execute that plan."""
        with self._writer(what) as (w, recovered):
            plan = make({r.addr: r for r in w.records()})
            plan.check()
            execute(self.host, w, self._tokens(), plan)
            return Report(tuple(plan.actions), tuple(recovered), plan)

    def _plan(self, make: Callable[[Records], Plan]) -> Plan:
        plan = make(self.records())
        plan.replan = lambda: make(self.records())
        return plan

    def execute(self, plan: Plan) -> Report:
        """Execute a plan made earlier by a ``plan_*`` method, if it still holds.

        Raises:
            OperationInvalid: the host changed since (the plan made now differs).
            Everything the plan's operation raises.
        """
        if plan.replan is None:
            raise UsageError("this plan cannot be executed: make it with a plan_* method")
        make = plan.replan
        with self._writer(str(plan.op)) as (w, recovered):
            now_plan = make()
            if now_plan.to_json() != plan.to_json():
                raise OperationInvalid("the host changed since the plan was made",
                                       hint="plan again and check the new plan")
            if plan.stage is not None and now_plan.stage is not None:
                # the token the caller was planned with (planning again drew a new one)
                now_plan.stage = dataclasses.replace(now_plan.stage, token=plan.stage.token)
            now_plan.check()
            execute(self.host, w, self._tokens(), now_plan)
            return Report(tuple(now_plan.actions), tuple(recovered), now_plan)

    # -- detach, reattach, prepare, release --------------------------------------------
    def plan_detach(self, addrs: Sequence[PciAddress | str], *,
                    group: groups.GroupOptIn = False, driver: str = VFIO_DRIVER,
                    force: bool = False, owner: str | None = None) -> Plan:
        """What :meth:`detach` would do now; changes nothing."""
        return self._plan(lambda r: groups.plan_detach(
            self.host, r, addrs, group=group, driver=driver, force=force, owner=owner))

    def detach(self, addrs: Sequence[PciAddress | str], *,
               group: groups.GroupOptIn = False, driver: str = VFIO_DRIVER,
               force: bool = False, owner: str | None = None) -> Report:
        """Move devices off their host drivers onto ``driver`` (vfio-pci or pci-stub),
        under the IOMMU-group rule (:mod:`vfioctl.manager.groups`).

        Args:
            addrs: the devices asked for.
            group: also detach every other member of their IOMMU groups (True), or of the
                groups of these named devices only (a collection).
            driver: ``vfio-pci`` (for VFIO) or ``pci-stub`` (keep the host off a member
                nobody means to use).
            force: detach even devices the host is using (network, disks, boot GPU).
            owner: hold the devices for this owner (a guest); see :meth:`prepare`.

        Raises:
            The plan's refusal (see :func:`vfioctl.manager.groups.plan_detach`);
            ReadOnlyHost; Busy; DriverNotFound; HostError if the kernel refuses a write
            (everything done is undone first).
        """
        return self._run(_what("detach", addrs), lambda r: groups.plan_detach(
            self.host, r, addrs, group=group, driver=driver, force=force, owner=owner))

    def plan_prepare(self, owner: str, devices: Sequence[PciAddress | str], *,
                     group: groups.GroupOptIn = False, driver: str = VFIO_DRIVER,
                     force: bool = False) -> Plan:
        """What :meth:`prepare` would do now; changes nothing."""
        if not owner:
            raise UsageError("prepare needs an owner name")
        return self.plan_detach(devices, group=group, driver=driver, force=force,
                                owner=owner)

    def prepare(self, owner: str, devices: Sequence[PciAddress | str], *,
                group: groups.GroupOptIn = False, driver: str = VFIO_DRIVER,
                force: bool = False) -> Report:
        """Hold ``devices`` for ``owner`` (a guest about to start), detaching them first.

        A device, or another member of its IOMMU group, held for a different owner
        cannot be given to this one. Devices vfioctl detaches here are *managed*:
        :meth:`release` gives them back to their original drivers; devices that were
        already detached stay detached on release.
        """
        if not owner:
            raise UsageError("prepare needs an owner name")
        return self.detach(devices, group=group, driver=driver, force=force, owner=owner)

    def plan_reattach(self, addrs: Sequence[PciAddress | str], *, group: bool = False,
                      owner: str | None = None) -> Plan:
        """What :meth:`reattach` would do now; changes nothing."""
        return self._plan(lambda r: groups.plan_reattach(self.host, r, addrs, group=group,
                                                         owner=owner))

    def reattach(self, addrs: Sequence[PciAddress | str], *, group: bool = False,
                 owner: str | None = None) -> Report:
        """Give devices back to the host: each to the driver it had when vfioctl
        detached it (bound by name), with ``driver_override`` cleared. A device vfioctl
        did not detach is reprobed (the kernel picks), and the action says so.

        Raises:
            The plan's refusal (see :func:`vfioctl.manager.groups.plan_reattach`);
            ReadOnlyHost; Busy; DriverNotFound; HostError.
        """
        return self._run(_what("reattach", addrs), lambda r: groups.plan_reattach(
            self.host, r, addrs, group=group, owner=owner))

    def plan_release(self, owner: str) -> Plan:
        """What :meth:`release` would do now; changes nothing."""
        return self._plan(lambda r: groups.plan_release(self.host, r, owner))

    def release(self, owner: str) -> Report:
        """Give back everything held for ``owner``: managed devices return to their
        original drivers; devices detached before :meth:`prepare` stay detached, held
        for nobody."""
        if not owner:
            raise UsageError("release needs an owner name")
        return self._run(f"release devices of {owner}",
                         lambda r: groups.plan_release(self.host, r, owner))

    def status(self) -> list[DeviceStatus]:
        """What vfioctl holds, for whom, and each device's original driver (read without
        the writer lock; a read-only host holds nothing)."""
        out = []
        for rec in self.records().values():
            dev = PciDevice(self.host, rec.addr)
            present = dev.exists()
            out.append(DeviceStatus(rec, dev.driver if present else None,
                                    dev.driver_override if present else None, present))
        return sorted(out, key=lambda s: s.record.addr)

    # -- SR-IOV ---------------------------------------------------------------------------
    def sriov(self, pf: PciAddress | str) -> SriovInfo:
        """A PF's SR-IOV state as sysfs shows it now."""
        return get_sriov(self.host, pf)

    def plan_numvfs(self, pf: PciAddress | str, numvfs: int, *,
                    allow_enable_sriov: bool = False) -> Plan:
        """What :meth:`set_numvfs` would do now; changes nothing."""
        return self._plan(lambda r: sriov.plan_numvfs(
            self.host, r, pf, numvfs, allow_enable_sriov=allow_enable_sriov))

    def set_numvfs(self, pf: PciAddress | str, numvfs: int, *,
                   allow_enable_sriov: bool = False) -> SriovChange:
        """Set a PF's number of VFs (0 removes them; N creates N, from 0 only).

        ``allow_enable_sriov``: the user agreed to turn on vfio-pci's ``enable_sriov``
        (:data:`vfioctl.pci.sriov.ENABLE_SRIOV_NOTICE`) when the PF is bound to vfio-pci.

        Raises:
            The plan's refusal (:func:`vfioctl.manager.sriov.plan_numvfs`); ReadOnlyHost;
            Busy; HostError and the errors of :func:`vfioctl.pci.sriov.write_numvfs`.
        """
        before = get_sriov(self.host, pf)
        report = self._run(f"change the VFs of {before.pf}", lambda r: sriov.plan_numvfs(
            self.host, r, pf, numvfs, allow_enable_sriov=allow_enable_sriov))
        enabled = any(a.kind is ActionKind.ENABLE_SRIOV for a in report.actions)
        return SriovChange(before, get_sriov(self.host, before.pf), enabled, report)

    # -- VF tokens ------------------------------------------------------------------------
    def _plan_token_set(self, records: Records, pf: PciAddress | str,
                        token: VfToken | None, force: bool) -> Plan:
        plan = Plan(OpKind.TOKEN_SET, forward_at_start=True)
        with planning(plan):
            store = tokens.token_store(self.host)
            dev = tokens.check_pf(self.host, pf)
            users = device_users(dev)
            if users is not None:
                who = ", ".join(h.describe() for h in users) or "another VFIO user"
                raise DeviceInUse(f"PF {dev.name} is open by {who}: its VF token can be "
                                  "set only while nobody else has it open", addr=dev.addr,
                                  hint="stop that program first (a PF driven from "
                                  "userspace sets its own token)")
            if not force:
                self._check_no_vf_consumers(dev)
            old = tokens.quiet_load(store, dev.addr)
            plan.stage = tokens.new_entry(dev.addr, token, list(records.values()))
            plan.steps.append(Step(0, dev.addr, kind=StepKind.TOKEN,
                                   from_value=tokens.STORED if old else None,
                                   to_value=STAGE_PENDING))
            plan.actions.append(Action(dev.addr, ActionKind.TOKEN_SET, None, None,
                                       why="given" if token is not None else
                                       "a new random UUID"))
        return plan

    @staticmethod
    def _check_no_vf_consumers(dev: PciDevice) -> None:
        """The kernel takes a new token while VFs are open (SET does not check for VF
        users), so their users keep working until their next open — which then fails
        with a token they were never given. Rotating under them needs ``force``."""
        for vf_addr in dev.virtfns:
            users = device_users(PciDevice(dev.host, vf_addr))
            if users is not None:
                who = ", ".join(h.describe() for h in users) or "a VFIO user"
                raise DeviceInUse(
                    f"VF {vf_addr} of PF {dev.name} is open by {who}: a new VF token would "
                    "lock it out at its next open", addr=vf_addr,
                    hint="stop it first, or pass --force to rotate the token anyway and "
                    "give the new one to the VF's user")

    def plan_token_set(self, pf: PciAddress | str, token: VfToken | None = None, *,
                       force: bool = False) -> Plan:
        """What :meth:`set_token` would do now; changes nothing."""
        return self._plan(lambda r: self._plan_token_set(r, pf, token, force))

    def set_token(self, pf: PciAddress | str, token: VfToken | None = None, *,
                  force: bool = False) -> TokenSet:
        """Set the VF token of an SR-IOV PF bound to vfio-pci (default: a fresh random
        one) and store it (0600). VFs opened before keep working; new VF opens need the
        new token, so while a VF is open the change is refused unless ``force``.

        Raises:
            ReadOnlyHost; DeviceNotFound; TokenNotAccepted (not an SR-IOV PF on
            vfio-pci); DeviceInUse (the PF is open by another VFIO user, or a VF is and
            ``force`` is not set);
            VfTokenRejected (VFs are in use and vfioctl has not got their token);
            Busy; HostError; TokenCommitFailed (the kernel has it, storing it failed:
            the next vfioctl command completes it).
        """
        report = self._run("set a VF token",
                           lambda r: self._plan_token_set(r, pf, token, force))
        assert report.plan is not None and report.plan.stage is not None
        stored = report.plan.stage
        store = tokens.token_store(self.host)
        return TokenSet(stored, store.path(stored.pf), report)

    def _plan_token_forget(self, pf: PciAddress | str) -> Plan:
        plan = Plan(OpKind.TOKEN_FORGET, forward_at_start=True)
        with planning(plan):
            store = tokens.token_store(self.host)
            addr = pf if isinstance(pf, PciAddress) else PciAddress.parse(pf)
            if store.load(addr) is None:
                plan.actions.append(Action(addr, ActionKind.NO_TOKEN, None, None))
                return plan
            plan.steps.append(Step(0, addr, kind=StepKind.TOKEN,
                                   from_value=tokens.STORED, to_value=None))
            plan.actions.append(Action(addr, ActionKind.TOKEN_FORGOTTEN, None, None))
        return plan

    def forget_token(self, pf: PciAddress | str) -> bool:
        """Delete vfioctl's copy of a PF's token (the kernel keeps its token). True if
        there was one."""
        report = self._run("forget a VF token", lambda r: self._plan_token_forget(pf))
        return any(a.kind is ActionKind.TOKEN_FORGOTTEN for a in report.actions)

    def token_status(self, pf: PciAddress | str) -> tokens.TokenStatus:
        """The stored token's status (stale or not); the token stays inside the result.

        Raises:
            DeviceNotFound, ReadOnlyHost, PermissionDenied (a file others could read),
            HostError (an unusable file).
        """
        store = tokens.token_store(self.host)
        dev = get_device(self.host, pf)
        stored = store.load(dev.addr)
        stale = (tokens.stale_reason(self.host, stored, list(self.records().values()))
                 if stored is not None else None)
        return tokens.TokenStatus(dev.addr, dev.driver, stored, stale,
                                  store.path(dev.addr) if stored is not None else None)

    def get_token(self, pf: PciAddress | str) -> VfToken:
        """The VF token of ``pf`` for a consumer (QEMU, DPDK, a Python driver).

        Raises:
            TokenNotFound: none stored. TokenStale: the PF was rebound or unbound since.
            DeviceNotFound, ReadOnlyHost, PermissionDenied: as for :meth:`token_status`.
        """
        status = self.token_status(pf)
        if status.stored is None:
            raise tokens.TokenNotFound(status.pf)
        if status.stale is not None:
            raise tokens.TokenStale(status.pf, status.stale)
        return status.stored.token

    @contextlib.contextmanager
    def open_vf(self, vf: PciAddress | str, *, token: VfToken | None = None,
                use_token: bool = True) -> Iterator[DeviceHandle]:
        """Open a VF through VFIO as a consumer would (with ``token`` or its PF's stored
        token), closing it on exit."""
        pf = tokens.needs_stored_token(self.host, vf)
        stored = (self.get_token(pf) if pf is not None and use_token and token is None
                  else None)
        with tokens.open_vf(self.host, vf, stored, token=token,
                            use_token=use_token) as handle:
            yield handle

    def check_vf(self, vf: PciAddress | str, *, use_token: bool = True
                 ) -> tokens.CheckResult:
        """Open a VF with its PF's stored token, read ``DEVICE_GET_INFO``, close it."""
        with self.open_vf(vf, use_token=use_token) as handle:
            pf = PciDevice(self.host, handle.addr).physfn
            with_token = use_token and pf is not None and \
                PciDevice(self.host, pf).driver == VFIO_DRIVER
            return tokens.CheckResult(handle.addr, pf, handle.path, handle.info, with_token)


def _what(verb: str, addrs: Sequence[PciAddress | str]) -> str:
    """``detach 0000:01:00.0`` for a read-only refusal (the first device named)."""
    return f"{verb} {addrs[0]}" if addrs else verb


def plan_json(plan: Plan, *, host: str, dry_run: bool) -> dict[str, Any]:
    """The ``--json`` document of a host-changing command (documented in
    docs/manager.md): the same for a dry run and a run, but for ``dry_run``."""
    return {"host": host, "dry_run": dry_run, **plan.to_json()}


__all__ = ["DeviceStatus", "HostdevManager", "SriovChange", "TokenSet", "plan_json",
           "require_writable"]
