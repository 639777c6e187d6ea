"""Plans: what a host-changing operation will do, decided before anything is written.

Every operation of the manager is planned first (``plan_detach``, ``plan_reattach``,
``plan_numvfs``, ``plan_token_set`` …) and then the *same* plan is executed under the
writer lock, so ``--dry-run`` and a real run cannot disagree. A plan says, per device,
where it goes and why (:class:`Action`), or why the operation is refused
(:class:`Refusal`), and carries the journal steps and record changes that executing it
means (:mod:`vfioctl.manager.execute`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from vfioctl.address import PciAddress
from vfioctl.errors import InternalError, VfioctlError
from vfioctl.pci.driver import ANY_DRIVER
from vfioctl.state import DeviceRecord, Step, StoredToken


class OpKind(StrEnum):
    """The operations the manager journals (the journal's ``op`` names start with it)."""

    DETACH = "detach"
    REATTACH = "reattach"
    RELEASE = "release"
    NUMVFS = "sriov"
    TOKEN_SET = "token-set"
    TOKEN_FORGET = "token-forget"


class ActionKind(StrEnum):
    """What an operation does (or deliberately does not do) to one device."""

    DETACHED = "detached"        # host driver -> holding driver
    REATTACHED = "reattached"    # holding driver -> the original driver, by name
    REPROBED = "reprobed"        # override cleared, the kernel picks (original unknown)
    ALREADY = "already"          # on the wanted driver already
    LEFT_ALONE = "left-alone"    # a group member kept on its driver (pcieport, pci-stub)
    CLAIMED = "claimed"          # already detached, now held for an owner
    UNCLAIMED = "unclaimed"      # stays detached, no longer held for the owner
    NOT_HELD = "not-held"        # nothing to give back
    ENABLE_SRIOV = "enable-sriov"  # vfio-pci's enable_sriov parameter N -> Y
    VFS_CREATED = "vfs-created"
    VFS_REMOVED = "vfs-removed"
    VFS_UNCHANGED = "vfs-unchanged"
    TOKEN_SET = "token-set"
    TOKEN_FORGOTTEN = "token-forgotten"
    NO_TOKEN = "no-token"        # forget: nothing stored


def _drv(name: str | None) -> str:
    if name == ANY_DRIVER:
        return "the kernel's choice"
    return name if name else "(no driver)"


@dataclass(frozen=True)
class Action:
    """One device's part in an operation: from, to, for whom, and why.

    For driver moves ``before``/``after`` are drivers; for SR-IOV actions they are VF
    counts (``"0"`` -> ``"2"``) or the parameter's value; for token actions None.
    """

    addr: PciAddress
    kind: ActionKind
    before: str | None
    after: str | None
    owner: str | None = None
    why: str = ""

    def describe(self) -> str:
        """One line for people, e.g. ``0000:01:00.0: nvidia -> vfio-pci``."""
        before, after = _drv(self.before), _drv(self.after)
        held = f" (held for '{self.owner}')" if self.owner else ""
        k = ActionKind
        text = {
            k.DETACHED: f"{before} -> {after}{held}",
            k.REATTACHED: f"{before} -> {after}",
            k.REPROBED: f"{before} -> {after} (not detached by vfioctl: cleared "
                        f"driver_override and reprobed)",
            k.ALREADY: f"already on {after}{held}",
            k.LEFT_ALONE: f"left alone: {after}",
            k.CLAIMED: f"already on {after}, now held for '{self.owner}'",
            k.UNCLAIMED: f"stays on {after}, no longer held for '{self.owner}'",
            k.NOT_HELD: f"nothing to do: on {after}, not detached by vfioctl",
            k.ENABLE_SRIOV: f"vfio-pci enable_sriov {self.before} -> {self.after}",
            k.VFS_CREATED: f"VFs {self.before} -> {self.after}",
            k.VFS_REMOVED: f"VFs {self.before} -> {self.after}",
            k.VFS_UNCHANGED: f"already has {self.after} VFs",
            k.TOKEN_SET: "VF token set (stored 0600)",
            k.TOKEN_FORGOTTEN: "stored VF token deleted (the kernel keeps its token)",
            k.NO_TOKEN: "no VF token stored",
        }[self.kind]
        return f"{self.addr}: {text}"

    def to_json(self) -> dict[str, Any]:
        return {"address": str(self.addr), "action": str(self.kind), "from": self.before,
                "to": self.after, "owner": self.owner, "why": self.why}


@dataclass(frozen=True)
class Refusal:
    """Why the operation cannot run; executing a plan with one raises ``error``."""

    error: VfioctlError

    def describe(self) -> str:
        hint = f"; {self.error.hint}" if self.error.hint else ""
        return f"refused: {self.error}{hint}"

    def to_json(self) -> dict[str, Any]:
        return {"error": type(self.error).__name__, "message": str(self.error),
                "hint": self.error.hint, "exit_code": self.error.exit_code}


@dataclass
class Plan:
    """What one operation will do. Built by the planners, executed by the manager.

    ``steps`` are the journal steps in execution order; ``upserts``/``deletes`` the
    record changes that land with the journal's end; ``needs_drivers`` the drivers to
    load (modprobe) before the first write. ``forward_at_start``: the operation passes
    its point of no return at its first write (a device given back may be used by the
    host at once), so recovery completes it rather than rolling it back.
    """

    op: OpKind
    owner: str | None = None
    actions: list[Action] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    upserts: list[DeviceRecord] = field(default_factory=list)
    deletes: list[PciAddress] = field(default_factory=list)
    needs_drivers: list[str] = field(default_factory=list)
    forward_at_start: bool = False
    notices: list[str] = field(default_factory=list)
    #: a token to stage (0600) before the journal begins; the TOKEN step names the file
    stage: StoredToken | None = field(default=None, repr=False)
    #: how to plan the same request again (under the lock, when a caller executes a
    #: plan it made earlier): the host may have changed since
    replan: Callable[[], Plan] | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return not self.refusals

    @property
    def changes_host(self) -> bool:
        return bool(self.steps)

    def refuse(self, error: VfioctlError) -> Plan:
        self.refusals.append(Refusal(error))
        return self

    def check(self) -> None:
        """Raise the first refusal, if any: what the real run would fail with."""
        if self.refusals:
            raise self.refusals[0].error

    def describe(self) -> list[str]:
        if self.refusals:
            return [r.describe() for r in self.refusals]
        return [a.describe() for a in self.actions]

    def to_json(self) -> dict[str, Any]:
        return {"op": str(self.op), "owner": self.owner,
                "actions": [a.to_json() for a in self.actions],
                "refusals": [r.to_json() for r in self.refusals],
                "changes_host": self.changes_host}


class planning:
    """``with planning(plan):`` turns a refusal raised while planning into the plan's
    refusal: planning stops at the first one, and nothing was written."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    def __enter__(self) -> Plan:
        return self.plan

    def __exit__(self, et: type[BaseException] | None, err: BaseException | None,
                 tb: object) -> bool:
        if isinstance(err, VfioctlError) and not isinstance(err, InternalError):
            self.plan.refuse(err)
            return True
        return False


@dataclass(frozen=True)
class Recovery:
    """One change put right after an interrupted operation."""

    addr: PciAddress
    op: str
    direction: Literal["back", "forward", "stuck"]  # rolled back | completed | neither
    state: str | None  # the device's driver now, or the value the step left
    note: str = ""
    what: str = "now on"

    def describe(self) -> str:
        how = {"back": f"rolled back an interrupted {self.op}",
               "forward": f"completed an interrupted {self.op}",
               "stuck": f"could not finish an interrupted {self.op}"}[self.direction]
        tail = f" ({self.note})" if self.note else ""
        value = _drv(self.state) if self.what == "now on" else str(self.state)
        return f"recovered {self.addr}: {how}, {self.what} {value}{tail}"

    @property
    def driver(self) -> str | None:
        return self.state


@dataclass(frozen=True)
class Report:
    """The result of one executed operation: per-device actions, plus any recovery done
    first (a dead vfioctl's operation put right before this one ran)."""

    actions: tuple[Action, ...]
    recovered: tuple[Recovery, ...] = ()
    plan: Plan | None = None

    def to_json(self) -> dict[str, Any]:
        return {"actions": [a.to_json() for a in self.actions],
                "recovered": [r.describe() for r in self.recovered]}


__all__ = ["Action", "ActionKind", "OpKind", "Plan", "Recovery", "Refusal", "Report",
           "planning"]
