"""Recovery: put every change of a dead writer's operation on one side of it.

Only the lock holder writes journals, so a ``running`` journal seen by the lock holder
belongs to a writer that died. Steps still ``planned`` were never touched; the others go
to their *to* side when the journal passed its point of no return, else to their *from*
side. A step that refuses that side goes to the other, so no device is left driverless
by accident; records follow each device's side, so what vfioctl remembers matches what
sysfs shows.

A token step that cannot be completed leaves the kernel's token unknown: the stored
copy, which may be the old one, is removed rather than trusted (the user sets a new
token). Staged token files no journal names are a writer that died before its journal
began: the kernel never saw them, and they are removed.
"""

from __future__ import annotations

from vfioctl.address import PciAddress
from vfioctl.errors import VfioctlError
from vfioctl.host.base import Host
from vfioctl.manager import steps as step_ops
from vfioctl.manager.plan import Recovery
from vfioctl.pci.device import PciDevice
from vfioctl.state import Journal, JournalState, Phase, StateWriter, Step, StepKind, TokenStore

_WHAT = {StepKind.BIND: "now on", StepKind.NUMVFS: "VFs now",
         StepKind.ENABLE_SRIOV: "vfio-pci enable_sriov now", StepKind.TOKEN: "VF token"}


def recover(host: Host, w: StateWriter, store: TokenStore | None) -> list[Recovery]:
    """Finish or roll back every unfinished journal; then drop orphaned staged tokens."""
    out: list[Recovery] = []
    for journal in w.unfinished():
        out.extend(_recover_one(host, w, store, journal))
    if store is not None:
        for name in store.list_staged():
            store.discard_staged(name)
    return out


def _recover_one(host: Host, w: StateWriter, store: TokenStore | None,
                 journal: Journal) -> list[Recovery]:
    forward = journal.forward
    results: list[Recovery] = []
    arrived: set[PciAddress] = set()  # devices now on their "to" side
    ordered = list(journal.steps) if forward else list(reversed(journal.steps))
    for step in ordered:
        if step.kind is StepKind.BIND and not PciDevice(host, step.addr).exists():
            results.append(Recovery(step.addr, journal.op, "stuck", None,
                                    "the device is gone"))
            continue
        if step.phase is Phase.PLANNED and not forward:
            if step.kind is StepKind.TOKEN:
                step_ops.apply(host, store, step, forward=False)  # drop the staged file
            continue
        before = _state(host, step)
        result = _one(host, store, journal, step, forward, arrived)
        if step.phase is not Phase.PLANNED or _state(host, step) != before:
            results.append(result)
    # Records follow the devices: apply the journal's changes for arrivals only.
    ups = [r for r in journal.upserts if r.addr in arrived]
    dels = [a for a in journal.deletes if a in arrived]
    w.put_records(ups, dels)
    w.finish(journal.id, JournalState.ROLLED_FORWARD if forward else
             JournalState.ROLLED_BACK, apply_changes=False)
    return sorted(results, key=lambda r: r.addr)


def _one(host: Host, store: TokenStore | None, journal: Journal, step: Step,
         forward: bool, arrived: set[PciAddress]) -> Recovery:
    what = _WHAT[step.kind]
    problem = ""
    for direction in ((True, False) if forward else (False, True)):
        try:
            state = step_ops.apply(host, store, step, forward=direction)
        except VfioctlError as err:
            problem = problem or str(err)
            if step.kind is StepKind.TOKEN and direction and store is not None:
                # The kernel may hold the new token: the old copy is not to be trusted.
                store.remove(step.addr)
                problem += "; the stored VF token was removed: set a new one"
            continue
        if direction:
            arrived.add(step.addr)
        return Recovery(step.addr, journal.op, "forward" if direction else "back", state,
                        problem, what)
    now_on = PciDevice(host, step.addr).driver if step.kind is StepKind.BIND else None
    return Recovery(step.addr, journal.op, "stuck", now_on, problem, what)


def _state(host: Host, step: Step) -> object:
    if step.kind is StepKind.BIND:
        dev = PciDevice(host, step.addr)
        return (dev.driver, dev.driver_override)
    return None
