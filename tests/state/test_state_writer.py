"""The writer: one at a time, and nothing created before something is written."""

from __future__ import annotations

import sqlite3
import stat
import threading
from pathlib import Path

import pytest
from statetest import record, step, tree

from vfioctl.errors import Busy, HostError
from vfioctl.state import JournalState, StateStore


class Refused(Exception):
    """A command that fails validation under the lock."""


def test_the_lock_alone_creates_no_database(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    with pytest.raises(Refused), store.writer() as w:
        assert w.held and w.records() == [] and w.unfinished() == []
        raise Refused
    assert tree(tmp_path) == ["state", "state/vfioctl.lock"]
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "state" / "vfioctl.lock").stat().st_mode) == 0o600


def test_a_deferred_writer_that_fails_creates_nothing(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    with pytest.raises(Refused), store.writer(defer=True) as w:
        assert not w.held
        assert w.records() == [] and w.unfinished() == [] and w.journals() == []
        raise Refused
    assert tree(tmp_path) == []


def test_a_deferred_writer_creates_everything_at_its_first_write(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    with store.writer(defer=True) as w:
        jid = w.begin("detach", None, [step()], [record()], [])
        assert w.held
        assert tree(tmp_path) == ["state", "state/vfioctl.db", "state/vfioctl.db-shm",
                                  "state/vfioctl.db-wal", "state/vfioctl.lock"]
        w.finish(jid, JournalState.DONE, apply_changes=True)
    assert store.read_records() == [record()]


def test_hold_takes_the_lock_before_any_write(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    with store.writer(defer=True) as w:
        w.hold()
        assert w.held and tree(tmp_path) == ["state", "state/vfioctl.lock"]
        with pytest.raises(Busy), StateStore(tmp_path / "state", timeout=0.1).writer():
            pass


def test_a_deferred_writer_on_an_existing_directory_locks_at_once(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir(mode=0o700)
    with StateStore(tmp_path / "state").writer(defer=True) as w:
        assert w.held
        with pytest.raises(Busy) as info, \
                StateStore(tmp_path / "state", timeout=0.1).writer():
            pass
    assert str(info.value) == "another vfioctl is changing this host; try again"
    assert "VFIOCTL_LOCK_TIMEOUT" in (info.value.hint or "")


def test_a_host_changed_while_a_deferred_writer_planned_is_busy(tmp_path: Path) -> None:
    # The deferred writer looked at a host without state and planned on "vfioctl holds
    # nothing"; another vfioctl then changed the host. Its first write must not act on
    # that stale plan.
    store = StateStore(tmp_path / "state")
    with store.writer(defer=True) as w:
        assert w.records() == []
        with StateStore(tmp_path / "state").writer() as other:
            other.put_records([record("0000:02:00.0")])
        with pytest.raises(Busy, match="changed this host while this command was "
                           "checking it"):
            w.begin("detach", None, [step()], [record()], [])
    assert store.read_records() == [record("0000:02:00.0")]
    with store.writer() as again:
        assert again.unfinished() == []


def test_a_deferred_writer_waits_for_a_writer_that_changes_nothing(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state", timeout=5)
    other_has_lock = threading.Event()
    release = threading.Event()

    def other() -> None:
        with StateStore(tmp_path / "state").writer():
            other_has_lock.set()
            release.wait(5)

    with store.writer(defer=True) as w:
        thread = threading.Thread(target=other)
        thread.start()
        other_has_lock.wait(5)
        threading.Timer(0.2, release.set).start()
        w.put_records([record()])               # waits for the lock, then goes ahead
        thread.join()
    assert store.read_records() == [record()]


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state", timeout=0.2)
    with store.writer() as w:
        w.put_records([record()])
        with pytest.raises(Busy), store.writer():
            pass
    with store.writer() as w:                   # free again once the first let go
        assert w.records() == [record()]


def test_a_journal_row_vfioctl_cannot_have_written_is_a_host_error(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    with store.writer() as w:
        w.begin("detach", None, [step()], [], [])
    raw = sqlite3.connect(store.db_path)
    raw.execute("UPDATE journal SET changes='{not json'")
    raw.commit()
    raw.close()
    with store.writer() as w, pytest.raises(HostError, match="holds a malformed journal"):
        w.unfinished()
