"""The read side: no lock, no waiting for a writer, nothing created, and clear answers
for a user who may not read the state."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from statetest import SRC, needs_root, record, run_as_nobody, shared_dir, step, tree

from vfioctl.errors import HostError
from vfioctl.state import JournalState, StateStore

HERE = Path(__file__).parent

LIVE_WRITER = """
import sqlite3, sys, time
from pathlib import Path
from statetest import record, step
from vfioctl.state import StateStore

store = StateStore(Path(sys.argv[1]))
with store.writer() as w:
    w.put_records([record()])
    w.begin("detach", None, [step()], [record("0000:02:00.0")], [])
    raw = sqlite3.connect(store.db_path, isolation_level=None)
    raw.execute("BEGIN IMMEDIATE")
    raw.execute("DELETE FROM devices")          # a write in progress, not committed
    print("ready", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def live_writer(tmp_path: Path) -> Iterator[tuple[StateStore, subprocess.Popen[str]]]:
    """A vfioctl in another process holding the lock, with a running journal and an
    open write transaction."""
    state = tmp_path / "state"
    proc = subprocess.Popen([sys.executable, "-c", LIVE_WRITER, str(state)],
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": f"{SRC}:{HERE}"})
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        yield StateStore(state, timeout=10), proc
    finally:
        proc.kill()
        proc.wait()


def _dead_writer(store: StateStore) -> None:
    """A journal left running, as by a writer killed mid-operation."""
    with store.writer() as w:
        w.put_records([record()])
        w.begin("detach", None, [step()], [], [])


def test_no_state_means_nothing_known_and_nothing_created(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "a" / "state")
    assert store.read_records() == []
    assert store.needs_recovery() is False
    assert tree(tmp_path) == []


def test_readers_do_not_wait_for_a_live_writer(
        live_writer: tuple[StateStore, subprocess.Popen[str]]) -> None:
    store, proc = live_writer
    started = time.monotonic()
    assert store.read_records() == [record()]        # the last commit, not the open write
    assert store.needs_recovery() is False           # its writer is alive
    assert time.monotonic() - started < 2            # the lock timeout is 10 s
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert store.needs_recovery() is True            # now nobody will finish it
    with store.writer() as w:
        [journal] = w.unfinished()
        w.finish(journal.id, JournalState.ROLLED_BACK, apply_changes=False)
    assert store.needs_recovery() is False


def test_finished_journals_need_no_recovery(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    with store.writer() as w:
        jid = w.begin("detach", None, [step()], [record()], [])
        w.finish(jid, JournalState.DONE, apply_changes=True)
    assert store.needs_recovery() is False
    assert store.read_records() == [record()]


def test_a_dead_writers_journal_needs_recovery(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    _dead_writer(store)
    assert store.needs_recovery() is True
    assert store.needs_recovery() is True            # asking lets go of the lock again
    with store.writer() as w:
        assert len(w.unfinished()) == 1


def test_reading_a_quiet_database_creates_nothing(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    _dead_writer(store)
    before = tree(tmp_path)
    assert before == ["state", "state/vfioctl.db", "state/vfioctl.lock"]
    assert store.read_records() == [record()]
    assert store.needs_recovery() is True
    assert tree(tmp_path) == before


def test_a_reader_inside_a_writer_sees_its_commits(tmp_path: Path) -> None:
    # the lead's manager reads records while it holds the writer lock
    store = StateStore(tmp_path / "state")
    with store.writer() as w:
        w.put_records([record()])
        assert store.read_records() == [record()]
        w.put_records([record("0000:02:00.0")])
        assert [str(r.addr) for r in store.read_records()] == ["0000:01:00.0",
                                                               "0000:02:00.0"]
        assert w.records() == store.read_records()


def test_a_database_just_created_is_empty_to_readers(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "vfioctl.db").touch()
    assert StateStore(state).read_records() == []
    assert StateStore(state).needs_recovery() is False


def test_a_damaged_database_is_a_host_error(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "vfioctl.db").write_bytes(b"this is not a database" * 100)
    for call in (StateStore(state).read_records, StateStore(state).needs_recovery):
        with pytest.raises(HostError, match=f"state database {state / 'vfioctl.db'} is "
                           "unusable") as info:
            call()
        assert info.value.exit_code == 6


def test_a_malformed_record_is_a_host_error(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    with store.writer() as w:
        w.put_records([record()])
    raw = sqlite3.connect(store.db_path)
    raw.execute("UPDATE devices SET address='nonsense'")
    raw.commit()
    raw.close()
    with pytest.raises(HostError, match="holds a malformed device record") as info:
        store.read_records()
    assert type(info.value) is HostError


# -- an ordinary user ------------------------------------------------------------------------
READ = """
from vfioctl.state import StateStore
store = StateStore(Path({state!r}))
result = [str(r.addr) for r in store.read_records()]
"""
NEEDS = """
from vfioctl.state import StateStore
result = StateStore(Path({state!r})).needs_recovery()
"""
WRITE = """
from vfioctl.state import StateStore
with StateStore(Path({state!r})).writer():
    result = "locked"
"""
TOKEN = """
from vfioctl.address import PciAddress
from vfioctl.state import TokenStore
result = repr(TokenStore(Path({state!r})).load(PciAddress.parse("0000:03:00.0")))
"""


@pytest.fixture
def root_state() -> Iterator[Path]:
    """State root made (0700) in a directory 'nobody' can reach."""
    with shared_dir() as base:
        state = base / "state"
        with StateStore(state).writer() as w:
            w.put_records([record()])
        yield state


@needs_root
@pytest.mark.parametrize("code", [READ, NEEDS])
def test_a_user_who_cannot_read_gets_state_unreadable(root_state: Path, code: str) -> None:
    out = run_as_nobody(code.format(state=str(root_state)))
    assert out["error"] == "StateUnreadable" and out["exit"] == 77, out
    assert str(root_state) in out["message"]
    assert "run vfioctl as root" in out["hint"]


@needs_root
@pytest.mark.parametrize("code", [WRITE, TOKEN])
def test_a_user_who_cannot_write_gets_permission_denied(root_state: Path, code: str) -> None:
    out = run_as_nobody(code.format(state=str(root_state)))
    assert "PermissionDenied" in out["mro"] and out["exit"] == 77, out
    assert str(root_state) in out["message"] and "EACCES" in out["message"]
    assert out["hint"] == "run vfioctl as root"


@needs_root
def test_a_user_who_may_read_the_database_reads_it(root_state: Path) -> None:
    root_state.chmod(0o755)                    # what an admin may choose
    assert run_as_nobody(READ.format(state=str(root_state))) == {"result": ["0000:01:00.0"]}
    assert run_as_nobody(NEEDS.format(state=str(root_state))) == {"result": False}
    store = StateStore(root_state)
    with store.writer() as w:                  # a live writer: -wal and -shm exist
        w.put_records([record("0000:02:00.0")])
        assert (root_state / "vfioctl.db-wal").exists()
        out = run_as_nobody(READ.format(state=str(root_state)))
    assert out == {"result": ["0000:01:00.0", "0000:02:00.0"]}


@needs_root
def test_a_user_cannot_tell_a_dead_writer_from_a_live_one(root_state: Path) -> None:
    root_state.chmod(0o755)
    _dead_writer(StateStore(root_state))
    out = run_as_nobody(NEEDS.format(state=str(root_state)))
    assert out["error"] == "StateUnreadable", out
    assert out["message"].startswith("an operation on this host is unfinished or still "
                                     "in progress, and this user cannot tell which")
    assert out["hint"].startswith("run vfioctl as root")
