"""Applying the persisted configuration: at boot (udev, then the rest) or by hand.

Per entry, in this order, each step only if the one before it held:

1. **the hardware check** (:mod:`vfioctl.persist.check`): a changed device or group is
   not touched, and is reported; where an initramfs rule already set its
   ``driver_override``, the override is cleared and the device reprobed, so the host
   gets it back as if nothing was persisted;
2. **the binding**, the way the udev rule does it before the drivers' modules load: a
   device no driver has bound yet gets ``driver_override`` set, the wanted driver
   loaded, and is probed — so the host driver never binds it. A device some driver
   already took (built into the kernel, loaded from an initramfs without vfioctl's
   hook, or the host running since) is detached through the manager, under the group
   rule, as ``vfioctl detach`` would, all entries of one group together;
3. **the VF token** (opt-in), through the manager (``VFIO_DEVICE_FEATURE``, the runtime
   token store updated), before any VF exists, so no VF user ever sees the kernel's
   random token;
4. **the VFs** (opt-in), through the manager, with vfio-pci's ``enable_sriov``: the
   user opted in when persisting ``numvfs``.

Applying twice changes nothing the second time (every step looks first).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from vfioctl.address import PciAddress
from vfioctl.errors import HostError, VfioctlError
from vfioctl.manager import HostdevManager
from vfioctl.pci.device import PciDevice
from vfioctl.pci.driver import ensure_driver, probe, set_override
from vfioctl.persist import store
from vfioctl.persist.check import Verdict, check
from vfioctl.persist.config import Entry
from vfioctl.persist.paths import EtcPaths

Log = Callable[[str, bool], None]
"""Where each line goes (the kernel log at boot, stderr): (line, is_problem)."""


@dataclass
class Outcome:
    """What applying one entry did."""

    address: PciAddress
    result: str = "unchanged"        # "applied" | "unchanged" | "refused"
    renumbered: bool = False
    messages: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {"address": str(self.address), "result": self.result,
                "renumbered": self.renumbered, "messages": list(self.messages)}


def apply(mgr: HostdevManager, paths: EtcPaths, entries: Sequence[Entry], *,
          log: Log | None = None, others: Sequence[Entry] = ()) -> list[Outcome]:
    """Apply ``entries`` (all of one configuration, or the one a udev event names).

    ``others`` (the rest of the configuration, at boot) are not applied, but those that
    fail the hardware check lose the override the boot's early rules gave them *before*
    anything here loads a driver that would bind them.
    """
    say: Log = log or (lambda line, problem: None)
    for other in others:
        if other.address not in {e.address for e in entries} \
                and not check(mgr.host, other).ok:
            _give_back(mgr, other, Outcome(other.address))
    outcomes = {e.address: Outcome(e.address) for e in entries}
    verdicts = [check(mgr.host, e) for e in entries]
    passed: list[Verdict] = []
    for v in verdicts:
        out = outcomes[v.entry.address]
        if not v.ok:
            _refuse(out, v.describe(), say)
            _give_back(mgr, v.entry, out)
            continue
        if v.renumbered:
            out.renumbered = True
            out.messages.append(v.describe())
            say(v.describe(), False)
        passed.append(v)
    for group in _by_group(passed):
        _bind(mgr, group, outcomes, say)
    for v in passed:
        out = outcomes[v.entry.address]
        if out.result == "refused":
            continue
        try:
            if v.entry.token:
                _token(mgr, paths, v.entry, out, say)
            if v.entry.numvfs is not None:
                _numvfs(mgr, v.entry, out, say)
        except VfioctlError as err:
            _refuse(out, f"{v.entry.address}: not applied: {err}", say)
    for out in outcomes.values():
        if out.result == "unchanged" and not out.messages:
            out.messages.append(f"{out.address}: already as persisted")
    return [outcomes[e.address] for e in entries]


def _refuse(out: Outcome, line: str, say: Log) -> None:
    out.result = "refused"
    out.messages.append(line)
    say(line, True)


def _changed(out: Outcome, line: str, say: Log) -> None:
    if out.result != "refused":
        out.result = "applied"
    out.messages.append(line)
    say(line, False)


def _give_back(mgr: HostdevManager, entry: Entry, out: Outcome) -> None:
    """Undo what an initramfs rule did for a refused entry: the override it set keeps
    the host's driver off a device vfioctl will not take."""
    dev = PciDevice(mgr.host, entry.address)
    if not dev.exists() or dev.driver is not None or dev.driver_override != entry.driver:
        return
    try:
        set_override(dev, None)
        probe(dev)
    except HostError as err:
        out.messages.append(f"{entry.address}: cannot give it back to the host: {err}")
        return
    out.messages.append(f"{entry.address}: given back to the host "
                        f"({dev.driver or 'no driver'})")


def _by_group(verdicts: list[Verdict]) -> list[list[Entry]]:
    groups: dict[object, list[Entry]] = {}
    for v in verdicts:
        key = v.group_now if v.group_now is not None else v.entry.address
        groups.setdefault(key, []).append(v.entry)
    return list(groups.values())


def _bind(mgr: HostdevManager, entries: list[Entry], outcomes: dict[PciAddress, Outcome],
          say: Log) -> None:
    host = mgr.host
    taken: list[Entry] = []
    for entry in entries:
        dev = PciDevice(host, entry.address)
        out = outcomes[entry.address]
        if dev.driver == entry.driver:
            continue
        if dev.driver is not None:
            taken.append(entry)
            continue
        try:
            if dev.driver_override != entry.driver:
                set_override(dev, entry.driver)
            ensure_driver(host, entry.driver)     # loading it binds the device
            if dev.driver is None:
                probe(dev)
        except VfioctlError as err:
            _refuse(out, f"{entry.address}: not applied: {err}", say)
            continue
        if dev.driver != entry.driver:
            _refuse(out, f"{entry.address}: not applied: {entry.driver} did not bind it "
                    f"(driver now: {dev.driver or 'none'})", say)
            continue
        _changed(out, f"{entry.address}: bound to {entry.driver} before any host driver",
                 say)
    by_driver: dict[str, list[Entry]] = {}
    for entry in taken:
        by_driver.setdefault(entry.driver, []).append(entry)
    for driver, group in by_driver.items():
        was = {e.address: PciDevice(host, e.address).driver for e in group}
        try:
            mgr.detach([e.address for e in group], driver=driver)
        except VfioctlError as err:
            for e in group:
                _refuse(outcomes[e.address], f"{e.address}: not applied: {err}", say)
            continue
        for e in group:
            _changed(outcomes[e.address], f"{e.address}: detached from {was[e.address]} "
                     f"onto {driver} (a driver had bound it first)", say)


def _token(mgr: HostdevManager, paths: EtcPaths, entry: Entry, out: Outcome,
           say: Log) -> None:
    token = store.load_token(paths, entry.address)
    if token is None:
        _refuse(out, f"{entry.address}: not applied: no persisted VF token in "
                f"{store.tokens(paths).path(entry.address)}", say)
        return
    status = mgr.token_status(entry.address)
    if status.stored is not None and status.stale is None and status.stored.token == token:
        return
    mgr.set_token(entry.address, token)
    _changed(out, f"{entry.address}: persisted VF token set (runtime store updated)", say)


def _numvfs(mgr: HostdevManager, entry: Entry, out: Outcome, say: Log) -> None:
    assert entry.numvfs is not None
    info = mgr.sriov(entry.address)
    if info.sriov_numvfs == entry.numvfs:
        return
    if info.sriov_numvfs != 0:
        _refuse(out, f"{entry.address}: not applied: it has {info.sriov_numvfs} VFs, "
                f"{entry.numvfs} persisted (left as they are)", say)
        return
    mgr.set_numvfs(entry.address, entry.numvfs, allow_enable_sriov=True)
    _changed(out, f"{entry.address}: {entry.numvfs} VFs created", say)


__all__ = ["Log", "Outcome", "apply"]
