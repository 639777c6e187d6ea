"""Eight processes race to detach the same group on one ``sim:FILE`` host.

Each is a separate process (fork) with its own SimHost and HostdevManager, as eight
``vfioctl`` commands would be: only the state directory's lock and the simulator's file
tie them together. Exactly one may change the host; the others must fail cleanly (the
group is held for another owner, or the host is busy) or find the work already done.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest
from policytest import host_text, snapshot

from vfioctl.errors import Busy, DeviceInUse, VfioctlError
from vfioctl.hosts import open_host
from vfioctl.manager import HostdevManager
from vfioctl.sim.host import SimHost

RACERS = 8
GROUP = ("0000:00:01.0", "0000:01:00.0", "0000:01:00.1")


def _racer(path: str, owner: str | None, barrier: Any, results: Any) -> None:
    host = open_host(f"sim:{path}")
    barrier.wait()
    try:
        report = HostdevManager(host).detach(["0000:01:00.0"], group=True, owner=owner)
    except VfioctlError as err:
        results.put((owner, type(err).__name__, str(err)))
    except BaseException as err:  # anything else is a bug the parent must see
        results.put((owner, "crash", repr(err)))
    else:
        results.put((owner, "ok", [a.kind for a in report.actions]))


def _race(tmp_path: Path, owners: list[str | None]) -> list[tuple[Any, ...]]:
    path = tmp_path / "ws.toml"
    path.write_text(host_text("workstation"))
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(len(owners))
    results = ctx.Queue()
    procs = [ctx.Process(target=_racer, args=(str(path), o, barrier, results))
             for o in owners]
    for p in procs:
        p.start()
    out = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=600)
        assert p.exitcode == 0
    return out


def _check_state(tmp_path: Path, owner: str | None) -> None:
    host = open_host(f"sim:{tmp_path / 'ws.toml'}")
    assert isinstance(host, SimHost)
    assert snapshot(host, GROUP) == {
        "0000:00:01.0": ("pcieport", None),
        "0000:01:00.0": ("vfio-pci", "vfio-pci"),
        "0000:01:00.1": ("vfio-pci", "vfio-pci"),
    }
    mgr = HostdevManager(host)
    assert mgr.recover() == []
    assert [(str(s.record.addr), s.record.original_driver, s.record.owner)
            for s in mgr.status()] == [("0000:01:00.0", "nouveau", owner),
                                       ("0000:01:00.1", "snd_hda_intel", owner)]


def test_eight_owners_race_for_one_group(tmp_path: Path) -> None:
    owners: list[str | None] = [f"vm{i}" for i in range(RACERS)]
    results = _race(tmp_path, owners)
    winners = [r for r in results if r[1] == "ok"]
    assert len(winners) == 1, results
    assert winners[0][2] == ["left-alone", "detached", "detached"]
    winner = winners[0][0]
    for owner, kind, message in results:
        if owner == winner:
            continue
        assert kind in (DeviceInUse.__name__, Busy.__name__), (owner, kind, message)
        if kind == DeviceInUse.__name__:
            assert f"is in use by '{winner}'" in message
    _check_state(tmp_path, winner)


def test_eight_plain_detaches_change_the_host_once(tmp_path: Path) -> None:
    results = _race(tmp_path, [None] * RACERS)
    assert all(kind in ("ok", Busy.__name__) for _, kind, _ in results), results
    changed = [r for r in results if r[1] == "ok" and "detached" in r[2]]
    assert len(changed) == 1, results
    for _, kind, kinds in results:
        if kind == "ok":
            assert kinds in (["left-alone", "detached", "detached"],
                             ["left-alone", "already", "already"])
    _check_state(tmp_path, None)


@pytest.mark.parametrize("timeout", [0.2])
def test_a_held_lock_gives_busy(tmp_path: Path, timeout: float) -> None:
    from policytest import make_host

    host = make_host("policy", tmp_path / "state")
    mgr = HostdevManager(host, lock_timeout=timeout)
    other = mgr._store
    assert other is not None
    with other.writer(), pytest.raises(Busy) as info:  # another vfioctl at work
        HostdevManager(host, lock_timeout=timeout).detach(["0000:02:00.0"])
    assert str(info.value) == "another vfioctl is changing this host; try again"
    assert "VFIOCTL_LOCK_TIMEOUT" in (info.value.hint or "")
    assert snapshot(host, ["0000:02:00.0"]) == {"0000:02:00.0": ("nvme", None)}
    # once the lock is free the same call goes through
    assert [a.kind for a in mgr.detach(["0000:02:00.0"]).actions] == ["detached"]
