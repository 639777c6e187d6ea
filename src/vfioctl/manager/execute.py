"""Executing a plan: journal the intent, carry out each step, record the outcome.

The order that makes every operation crash-safe (the journal is described in
:mod:`vfioctl.state.db`):

1. load the drivers the plan needs (modprobe; not a change vfioctl undoes), stage a new
   VF token in its 0600 file;
2. intent: the journal row and its steps, durable before the first write;
3. each step: phase ``moving`` before its first write, ``moved`` once verified; on a
   refusal the steps done so far are undone, newest first;
4. past the point of no return, the record changes land with the journal's end.

A plan marked ``forward_at_start`` (reattach, release, removing VFs, a token) is
completed by recovery once its first write may have happened; the others are rolled
back until their last step is done.
"""

from __future__ import annotations

import dataclasses

from vfioctl.errors import VfioctlError
from vfioctl.host.base import Host
from vfioctl.manager import steps as step_ops
from vfioctl.manager.plan import ActionKind, Plan
from vfioctl.manager.tokens import TokenCommitFailed
from vfioctl.pci.device import PciDevice
from vfioctl.pci.driver import ensure_driver
from vfioctl.state import JournalState, Phase, StateWriter, Step, StepKind, TokenStore

#: A TOKEN step's ``to_value`` until execution has staged the file it names.
STAGE_PENDING = "<staged at execution>"


def execute(host: Host, w: StateWriter, store: TokenStore | None, plan: Plan) -> None:
    """Carry out ``plan`` (already checked to have no refusals) under the writer lock.

    Raises:
        Whatever a step raises; everything done before it is undone first (if undoing
        fails too, the journal stays open for the next vfioctl command and the error's
        hint says so). :class:`TokenCommitFailed` leaves the journal open on purpose.
    """
    plan.check()
    if not plan.steps and not plan.upserts and not plan.deletes:
        return
    w.hold()  # from here on this writer holds the lock (the state directory may be new)
    for driver in plan.needs_drivers:
        ensure_driver(host, driver)
    if not plan.steps:
        if plan.upserts or plan.deletes:
            w.put_records(plan.upserts, plan.deletes)
        return
    todo = list(plan.steps)
    if plan.stage is not None:
        assert store is not None
        name = store.stage(plan.stage)
        todo = [dataclasses.replace(s, to_value=name)
                if s.kind is StepKind.TOKEN and s.to_value == STAGE_PENDING else s
                for s in todo]
    # Step 2: intent, durable before the first write.
    jid = w.begin(str(plan.op), plan.owner, todo, plan.upserts, plan.deletes)
    if plan.forward_at_start:
        w.set_forward(jid)
    # Step 3: each step; on a refusal undo the ones done so far, newest first.
    done: list[Step] = []
    try:
        for step in todo:
            w.set_phase(jid, step.seq, Phase.MOVING)
            done.append(step)
            step_ops.apply(host, store, step, forward=True)
            w.set_phase(jid, step.seq, Phase.MOVED)
    except TokenCommitFailed:
        raise
    except Exception as err:
        failed = _undo(host, store, done)
        if failed is None:
            w.finish(jid, JournalState.ROLLED_BACK, apply_changes=False)
        elif isinstance(err, VfioctlError):
            err.hint = (f"undoing it failed too ({failed}); the next vfioctl command "
                        f"retries")
        raise
    # Step 4: past the point of no return; record the outcome with the journal's end.
    if not plan.forward_at_start:
        w.set_forward(jid)
    w.finish(jid, JournalState.DONE, apply_changes=True)
    _after(host, store, plan, todo)


def _undo(host: Host, store: TokenStore | None, done: list[Step]) -> VfioctlError | None:
    first_error = None
    for step in reversed(done):
        try:
            step_ops.apply(host, store, step, forward=False)
        except VfioctlError as err:
            first_error = first_error or err
    return first_error


def _after(host: Host, store: TokenStore | None, plan: Plan, done: list[Step]) -> None:
    # A PF that changed driver has a new kernel VF token (vfio-pci makes a random one at
    # bind) or none: a stored copy is stale from now on.
    if store is not None:
        for step in done:
            if step.kind is StepKind.BIND and step.from_driver != step.to_driver:
                store.remove(step.addr)
    # Report what the kernel chose where it chose.
    for i, action in enumerate(plan.actions):
        if action.kind is ActionKind.REPROBED:
            plan.actions[i] = dataclasses.replace(
                action, after=PciDevice(host, action.addr).driver)
