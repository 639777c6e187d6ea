"""Crash at every write: the simulator kills the operation at write N (before or after
the kernel applied it), for every N; the next vfioctl recovers from the journal.

After recovery every device is where it was or where it was asked to go — the whole
operation on one side, never a device driverless by accident or with a stale
driver_override — vfioctl's records match sysfs, and no journal is left running.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from policytest import State, snapshot

from vfioctl.manager import HostdevManager
from vfioctl.sim.faults import SimCrash
from vfioctl.sim.host import SimHost

Op = Callable[[HostdevManager], object]
GPU_GROUP = ("0000:00:01.0", "0000:01:00.0", "0000:01:00.1", "0000:01:00.2", "0000:01:00.3")


def _detach_group(mgr: HostdevManager) -> object:
    return mgr.detach(["0000:01:00.1"], group=True)


def _reattach_group(mgr: HostdevManager) -> object:
    return mgr.reattach(["0000:01:00.1"], group=True)


def _stub_group(mgr: HostdevManager) -> object:
    return mgr.detach(["0000:03:00.0"], group=True, driver="pci-stub")


def _prepare_vm1(mgr: HostdevManager) -> object:
    return mgr.prepare("vm1", ["0000:01:00.0"], group=True)


def _release_vm1(mgr: HostdevManager) -> object:
    return mgr.release("vm1")


def _detach_ws_gpu(mgr: HostdevManager) -> object:
    return mgr.detach(["0000:01:00.0"], group=True)


@dataclass(frozen=True)
class CrashCase:
    name: str
    host: str
    before: tuple[Op, ...]     # run first, without faults
    op: Op                     # killed at every write in turn
    devices: tuple[str, ...]


CASES = [
    CrashCase("group-detach", "policy", (), _detach_group, GPU_GROUP),
    CrashCase("group-reattach", "policy", (_detach_group,), _reattach_group, GPU_GROUP),
    CrashCase("group-detach-pci-stub", "policy", (), _stub_group,
              ("0000:00:02.0", "0000:03:00.0", "0000:03:00.1")),
    CrashCase("prepare", "policy", (), _prepare_vm1, GPU_GROUP),
    CrashCase("release", "policy", (_prepare_vm1,), _release_vm1, GPU_GROUP),
    CrashCase("workstation-gpu-detach", "workstation", (), _detach_ws_gpu,
              ("0000:00:01.0", "0000:01:00.0", "0000:01:00.1")),
]


def _records(mgr: HostdevManager) -> set[tuple[str, str, str | None, str | None, bool]]:
    return {(str(s.record.addr), s.record.driver, s.record.original_driver,
             s.record.owner, s.record.managed) for s in mgr.status()}


def _setup(sim: Callable[[str], SimHost], case: CrashCase) -> SimHost:
    host = sim(case.host)
    for op in case.before:
        op(HostdevManager(host))
    return host


def _check_recovered(host: SimHost, case: CrashCase, where: str, start: State, end: State,
                     rec_start: set[object], rec_end: set[object]) -> None:
    mgr = HostdevManager(host)
    recovered = mgr.recover()
    now = snapshot(host, case.devices)
    assert now in (start, end), f"{where}: half-done state {now}"
    assert recovered, f"{where}: recovery must say what it did"
    assert {str(r.addr) for r in recovered} <= set(case.devices)
    assert _records(mgr) == (rec_start if now == start else rec_end), where
    assert mgr.recover() == [], f"{where}: a journal is still running"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_crash_at_every_write(case: CrashCase, sim: Callable[[str], SimHost]) -> None:
    # A clean run tells the states on either side and how many writes there are.
    clean = _setup(sim, case)
    start, rec_start = snapshot(clean, case.devices), _records(HostdevManager(clean))
    first = clean.write_count
    case.op(HostdevManager(clean))
    writes = clean.write_count - first
    end, rec_end = snapshot(clean, case.devices), _records(HostdevManager(clean))
    assert start != end and writes > 0
    for n in range(1, writes + 1):
        for applied in (False, True):
            where = f"{case.name}: crash at write {n}/{writes} (applied={applied})"
            host = _setup(sim, case)
            host.faults.crash_at(host.write_count + n, applied=applied)
            with pytest.raises(SimCrash):
                case.op(HostdevManager(host))
            host.faults.clear()
            _check_recovered(host, case, where, start, end, rec_start, rec_end)
            # the host is usable again: the operation now runs to its end
            if snapshot(host, case.devices) == start:
                case.op(HostdevManager(host))
            assert snapshot(host, case.devices) == end, where


def test_crash_during_recovery_is_recovered_again(sim: Callable[[str], SimHost]) -> None:
    """Recovery is itself journal-driven and idempotent: kill it at each of its writes."""
    case = CASES[0]
    clean = _setup(sim, case)
    start, rec_start = snapshot(clean, case.devices), _records(HostdevManager(clean))
    case.op(HostdevManager(clean))
    end, rec_end = snapshot(clean, case.devices), _records(HostdevManager(clean))
    checked = 0
    for n in (3, 6, 8):   # mid-first device, end of the second, the last write
        k = 1
        while True:
            host = _setup(sim, case)
            host.faults.crash_at(host.write_count + n)
            with pytest.raises(SimCrash):
                case.op(HostdevManager(host))
            host.faults.crash_at(host.write_count + k, applied=True)
            try:
                HostdevManager(host).recover()
            except SimCrash:
                host.faults.clear()
                _check_recovered(host, case, f"crash {n}, recovery crash {k}", start, end,
                                 rec_start, rec_end)
                checked += 1
                k += 1
                continue
            break
    assert checked >= 3


class _Killed(BaseException):
    """A death outside any sysfs write (between the last write and the bookkeeping)."""


def test_a_detach_past_its_point_of_no_return_is_completed(
        sim: Callable[[str], SimHost], monkeypatch: pytest.MonkeyPatch) -> None:
    from vfioctl.state import StateWriter

    host = sim("policy")
    real_finish = StateWriter.finish

    def dying_finish(self: StateWriter, jid: int, state: str, **kw: object) -> None:
        if state == "done":
            raise _Killed
        real_finish(self, jid, state, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(StateWriter, "finish", dying_finish)
    with pytest.raises(_Killed):
        _detach_group(HostdevManager(host))
    monkeypatch.setattr(StateWriter, "finish", real_finish)
    mgr = HostdevManager(host)
    assert [r.describe() for r in mgr.recover()] == [
        "recovered 0000:01:00.0: completed an interrupted detach, now on vfio-pci",
        "recovered 0000:01:00.1: completed an interrupted detach, now on vfio-pci",
        "recovered 0000:01:00.3: completed an interrupted detach, now on vfio-pci",
    ]
    assert [(str(s.record.addr), s.record.original_driver) for s in mgr.status()] == [
        ("0000:01:00.0", "nouveau"), ("0000:01:00.1", "snd_hda_intel"),
        ("0000:01:00.3", None)]


def test_a_device_that_refuses_to_go_back_is_held_not_left_driverless(
        sim: Callable[[str], SimHost]) -> None:
    import errno

    host = sim("policy")
    host.faults.crash_at(host.write_count + 5)        # the audio function's unbind
    with pytest.raises(SimCrash):
        _detach_group(HostdevManager(host))
    host.faults.clear()
    host.faults.fail_write("sys/bus/pci/drivers/nouveau/bind", errno.EIO)
    mgr = HostdevManager(host)
    assert [r.describe() for r in mgr.recover()] == [
        "recovered 0000:01:00.0: completed an interrupted detach, now on vfio-pci (cannot "
        "bind 0000:01:00.0 to nouveau: EIO (Input/output error))",
        "recovered 0000:01:00.1: rolled back an interrupted detach, now on snd_hda_intel",
    ]
    assert snapshot(host, ["0000:01:00.0", "0000:01:00.1"]) == {
        "0000:01:00.0": ("vfio-pci", "vfio-pci"), "0000:01:00.1": ("snd_hda_intel", None)}
    # vfioctl remembers the original driver of the device it could not give back
    assert [(str(s.record.addr), s.record.original_driver) for s in mgr.status()] == [
        ("0000:01:00.0", "nouveau")]
    host.faults.clear()
    assert [a.kind for a in mgr.reattach(["0000:01:00.0"]).actions] == ["reattached"]
