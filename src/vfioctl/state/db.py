"""State: what vfioctl holds on a host, and the journal that makes its changes crash-safe.

One SQLite database (stdlib ``sqlite3``) per host, ``STATE_DIR/vfioctl.db``, beside a
lock file ``STATE_DIR/vfioctl.lock``. The directory is created 0700: it tells who owns
which device, and later holds VF tokens.

**One writer at a time.** A writer holds an exclusive ``flock`` on the lock file for a
whole operation (recovery, checks, every sysfs write, the final bookkeeping), not only
for one SQL transaction, because the host's sysfs is part of what it changes. Waiting
callers poll for the lock up to a timeout (``VFIOCTL_LOCK_TIMEOUT`` seconds, default 10)
and then get :class:`vfioctl.errors.Busy`. The kernel drops a dead process's flock, so a
crash never leaves the host locked. SQLite's own locking (busy timeout) only guards the
short transactions, e.g. a reader against a writer.

**The journal.** A host-changing operation writes, each in its own committed
transaction *before* the sysfs writes it describes:

1. intent: a ``journal`` row (state ``running``) with the record changes to apply on
   success, and one ``steps`` row per device: from (driver, override) → to (driver,
   override), phase ``planned``;
2. each step: phase ``moving`` before the device's first write, ``moved`` once its
   driver link is verified; ``forward`` = 1 when the operation passes its point of no
   return;
3. completion: the record changes and state ``done`` in one transaction.

A ``running`` journal seen by the lock holder belongs to a dead writer (only the lock
holder writes journals), so the manager recovers it: back to each step's *from* state,
or on to its *to* state when ``forward`` is set (see :mod:`vfioctl.manager`).

A record stores only what vfioctl decided (owner, original driver), never what can be
re-read from sysfs (STYLE Part 3 #8).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from vfioctl.address import PciAddress
from vfioctl.errors import Busy, HostError, wrap_oserror

DB_NAME: Final = "vfioctl.db"
LOCK_NAME: Final = "vfioctl.lock"
DEFAULT_LOCK_TIMEOUT: Final = 10.0
_POLL_SECONDS = 0.02
_SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    address           TEXT PRIMARY KEY,
    iommu_group       INTEGER,
    driver            TEXT NOT NULL,    -- the holding driver: vfio-pci or pci-stub
    moved             INTEGER NOT NULL, -- 1: vfioctl detached it and knows its original
    original_driver   TEXT,             -- NULL: it had no driver
    original_override TEXT,
    owner             TEXT,             -- NULL: held for nobody in particular
    managed           INTEGER NOT NULL, -- 1: release(owner) reattaches it
    since             TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS journal (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    op       TEXT NOT NULL,
    owner    TEXT,
    state    TEXT NOT NULL,             -- running | done | rolled-back | rolled-forward
    forward  INTEGER NOT NULL DEFAULT 0,
    pid      INTEGER NOT NULL,
    started  TEXT NOT NULL,
    finished TEXT,
    changes  TEXT NOT NULL              -- JSON {"upsert": [record…], "delete": [addr…]}
);
CREATE TABLE IF NOT EXISTS steps (
    journal_id    INTEGER NOT NULL REFERENCES journal(id),
    seq           INTEGER NOT NULL,
    address       TEXT NOT NULL,
    from_driver   TEXT,
    from_override TEXT,
    to_driver     TEXT,
    to_override   TEXT,
    phase         TEXT NOT NULL,        -- planned | moving | moved | restored
    kind          TEXT NOT NULL DEFAULT 'bind',  -- StepKind
    from_value    TEXT,                 -- numvfs / enable_sriov / token steps
    to_value      TEXT,
    PRIMARY KEY (journal_id, seq)
);
"""

# Version 1 databases (vfioctl 0.1.0) had only bind steps.
_MIGRATE_1_TO_2 = """
ALTER TABLE steps ADD COLUMN kind TEXT NOT NULL DEFAULT 'bind';
ALTER TABLE steps ADD COLUMN from_value TEXT;
ALTER TABLE steps ADD COLUMN to_value TEXT;
"""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def lock_timeout_from_env() -> float:
    """``VFIOCTL_LOCK_TIMEOUT`` in seconds (default 10); a bad value falls back to 10."""
    raw = os.environ.get("VFIOCTL_LOCK_TIMEOUT")
    try:
        return max(0.0, float(raw)) if raw else DEFAULT_LOCK_TIMEOUT
    except ValueError:
        return DEFAULT_LOCK_TIMEOUT


@dataclass(frozen=True)
class DeviceRecord:
    """A device vfioctl holds: parked on ``driver`` (vfio-pci/pci-stub), maybe for an owner.

    ``moved`` is False for a device that was already on the holding driver when an owner
    claimed it: vfioctl then does not know its original driver and gives it back by
    clearing the override and reprobing.
    """

    addr: PciAddress
    group: int | None
    driver: str
    moved: bool
    original_driver: str | None
    original_override: str | None
    owner: str | None
    managed: bool
    since: str

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["addr"] = str(self.addr)
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> DeviceRecord:
        return cls(
            addr=PciAddress.parse(row["addr"]), group=row["group"], driver=row["driver"],
            moved=bool(row["moved"]), original_driver=row["original_driver"],
            original_override=row["original_override"], owner=row["owner"],
            managed=bool(row["managed"]), since=row["since"],
        )


class StepKind(StrEnum):
    """What one journal step changes; recovery puts each kind right its own way
    (:mod:`vfioctl.manager.recovery`)."""

    BIND = "bind"                  # a device's (driver, driver_override)
    ENABLE_SRIOV = "enable_sriov"  # vfio-pci's module parameter, "N"/"Y"
    NUMVFS = "numvfs"              # a PF's sriov_numvfs, as decimal text
    TOKEN = "token"                # a PF's VF token; to_value names the staged file


class JournalState(StrEnum):
    RUNNING = "running"
    DONE = "done"
    ROLLED_BACK = "rolled-back"
    ROLLED_FORWARD = "rolled-forward"


class Phase(StrEnum):
    PLANNED = "planned"   # not touched yet
    MOVING = "moving"     # the first write may have reached the kernel
    MOVED = "moved"       # done and verified


@dataclass(frozen=True)
class Step:
    """One change within a journaled operation.

    ``BIND`` steps use the driver/override fields; the other kinds ``from_value`` and
    ``to_value`` (never a secret: a token step names the 0600 staged file instead).
    """

    seq: int
    addr: PciAddress
    from_driver: str | None = None
    from_override: str | None = None
    to_driver: str | None = None
    to_override: str | None = None
    phase: Phase = Phase.PLANNED
    kind: StepKind = StepKind.BIND
    from_value: str | None = None
    to_value: str | None = None


@dataclass(frozen=True)
class Journal:
    """An operation as the journal knows it."""

    id: int
    op: str
    owner: str | None
    state: str
    forward: bool
    pid: int
    started: str
    steps: tuple[Step, ...]
    upserts: tuple[DeviceRecord, ...]
    deletes: tuple[PciAddress, ...]


class StateStore:
    """The state of one host: its directory, lock and database.

    Raises (from every method): HostError/PermissionDenied when the directory or database
    cannot be created or read; Busy when another writer does not let go in time.
    """

    def __init__(self, directory: Path, *, timeout: float | None = None) -> None:
        self.directory = Path(directory)
        self.timeout = lock_timeout_from_env() if timeout is None else timeout

    @property
    def db_path(self) -> Path:
        return self.directory / DB_NAME

    @property
    def lock_path(self) -> Path:
        return self.directory / LOCK_NAME

    def _ensure_dir(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as err:
            raise wrap_oserror(err, f"cannot create state directory {self.directory}",
                               path=self.directory) from err

    def _connect(self) -> sqlite3.Connection:
        self._ensure_dir()
        try:
            conn = sqlite3.connect(self.db_path, timeout=max(self.timeout, 0.1),
                                   isolation_level=None)
        except sqlite3.Error as err:
            raise _db_error(err, self.db_path) from err
        try:
            conn.row_factory = sqlite3.Row
            # WAL + synchronous=NORMAL: a commit survives the death of the process (what
            # the journal is for) without an fsync per journal step; only a power loss
            # can drop the last commits, and a power loss resets the kernel's driver
            # bindings too (and /run, where a real host keeps this, is tmpfs).
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version < _SCHEMA_VERSION:
                _migrate(conn, version)
        except sqlite3.Error as err:
            conn.close()
            raise _db_error(err, self.db_path) from err
        return conn

    @contextlib.contextmanager
    def writer(self) -> Iterator[StateWriter]:
        """Hold the host's writer lock (waiting up to ``timeout``) and a connection.

        The lock is released on any exit, including a crash-like BaseException: that is
        what the kernel does for a dead process, and the journal stays as written.

        Raises:
            Busy: if another vfioctl holds the lock for longer than ``timeout``.
        """
        self._ensure_dir()
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as err:
            raise wrap_oserror(err, f"cannot open lock file {self.lock_path}",
                               path=self.lock_path) from err
        try:
            self._acquire(fd)
            conn = self._connect()
            try:
                yield StateWriter(conn, self.db_path)
            finally:
                conn.close()
        finally:
            os.close(fd)  # closing the only descriptor drops the flock

    def _acquire(self, fd: int) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as err:
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise wrap_oserror(err, f"cannot lock {self.lock_path}",
                                       path=self.lock_path) from err
            if time.monotonic() >= deadline:
                raise Busy(
                    "another vfioctl is changing this host; try again",
                    hint=f"it held {self.lock_path} for more than {self.timeout:g} s "
                    "(VFIOCTL_LOCK_TIMEOUT sets how long to wait)",
                )
            time.sleep(_POLL_SECONDS)

    def read_records(self) -> list[DeviceRecord]:
        """The records, without taking the writer lock (a consistent SQLite snapshot)."""
        if not self.db_path.exists():
            return []
        conn = self._connect()
        try:
            return StateWriter(conn, self.db_path).records()
        finally:
            conn.close()


class StateWriter:
    """Database access for the lock holder; every method commits before returning."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self._path = path

    @contextlib.contextmanager
    def _txn(self) -> Iterator[sqlite3.Connection]:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        except sqlite3.Error as err:
            raise _db_error(err, self._path) from err

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        try:
            return list(self._conn.execute(sql, args))
        except sqlite3.Error as err:
            raise _db_error(err, self._path) from err

    # -- records ------------------------------------------------------------------------
    def records(self) -> list[DeviceRecord]:
        rows = self._query("SELECT * FROM devices")
        return sorted((_record(r) for r in rows), key=lambda rec: rec.addr)

    def put_records(self, upserts: Sequence[DeviceRecord],
                    deletes: Sequence[PciAddress] = ()) -> None:
        """Change records outside any journal (ownership only, no sysfs change)."""
        with self._txn() as conn:
            _apply(conn, upserts, deletes)

    # -- journal ------------------------------------------------------------------------
    def begin(self, op: str, owner: str | None, steps: Sequence[Step],
              upserts: Sequence[DeviceRecord], deletes: Sequence[PciAddress]) -> int:
        """Record the intent of an operation; returns its journal id."""
        changes = json.dumps({"upsert": [r.to_row() for r in upserts],
                              "delete": [str(a) for a in deletes]})
        with self._txn() as conn:
            cur = conn.execute(
                "INSERT INTO journal (op, owner, state, forward, pid, started, changes) "
                "VALUES (?, ?, 'running', 0, ?, ?, ?)",
                (op, owner, os.getpid(), now(), changes))
            jid = int(cur.lastrowid or 0)
            conn.executemany(
                "INSERT INTO steps (journal_id, seq, address, from_driver, from_override, "
                "to_driver, to_override, phase, kind, from_value, to_value) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(jid, s.seq, str(s.addr), s.from_driver, s.from_override, s.to_driver,
                  s.to_override, str(s.phase), str(s.kind), s.from_value, s.to_value)
                 for s in steps])
        return jid

    def set_phase(self, jid: int, seq: int, phase: Phase) -> None:
        with self._txn() as conn:
            conn.execute("UPDATE steps SET phase=? WHERE journal_id=? AND seq=?",
                         (str(phase), jid, seq))

    def set_forward(self, jid: int) -> None:
        """Mark the point of no return: recovery now finishes the operation."""
        with self._txn() as conn:
            conn.execute("UPDATE journal SET forward=1 WHERE id=?", (jid,))

    def finish(self, jid: int, state: JournalState, *, apply_changes: bool,
               extra_upserts: Sequence[DeviceRecord] = ()) -> None:
        """Close a journal; with ``apply_changes`` its record changes land in the same
        transaction, so records and journal never disagree."""
        with self._txn() as conn:
            if apply_changes:
                row = conn.execute("SELECT changes FROM journal WHERE id=?",
                                   (jid,)).fetchone()
                ups, dels = _changes(row["changes"])
                _apply(conn, ups, dels)
            if extra_upserts:
                _apply(conn, extra_upserts, ())
            conn.execute("UPDATE journal SET state=?, finished=? WHERE id=?",
                         (str(state), now(), jid))

    def unfinished(self) -> list[Journal]:
        """Journals left ``running`` (by a dead writer when seen by the lock holder)."""
        out = []
        for row in self._query("SELECT * FROM journal WHERE state='running' ORDER BY id"):
            steps = tuple(
                Step(seq=s["seq"], addr=PciAddress.parse(s["address"]),
                     from_driver=s["from_driver"], from_override=s["from_override"],
                     to_driver=s["to_driver"], to_override=s["to_override"],
                     phase=Phase(s["phase"]), kind=StepKind(s["kind"]),
                     from_value=s["from_value"], to_value=s["to_value"])
                for s in self._query("SELECT * FROM steps WHERE journal_id=? ORDER BY seq",
                                     (row["id"],)))
            ups, dels = _changes(row["changes"])
            out.append(Journal(id=row["id"], op=row["op"], owner=row["owner"],
                               state=row["state"], forward=bool(row["forward"]),
                               pid=row["pid"], started=row["started"], steps=steps,
                               upserts=tuple(ups), deletes=tuple(dels)))
        return out

    def journals(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest journal rows (for diagnostics and tests)."""
        return [dict(r) for r in self._query(
            "SELECT id, op, owner, state, forward, started, finished FROM journal "
            "ORDER BY id DESC LIMIT ?", (limit,))]


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    """Bring a database to the current schema in one exclusive transaction (two first
    callers may both get here: the second sees the new version and does nothing)."""
    conn.execute("BEGIN EXCLUSIVE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        if version < _SCHEMA_VERSION:
            if version == 1 and "steps" in tables:
                for stmt in _MIGRATE_1_TO_2.strip().splitlines():
                    conn.execute(stmt)
            else:
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
            conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _record(row: sqlite3.Row) -> DeviceRecord:
    return DeviceRecord(
        addr=PciAddress.parse(row["address"]), group=row["iommu_group"],
        driver=row["driver"], moved=bool(row["moved"]),
        original_driver=row["original_driver"], original_override=row["original_override"],
        owner=row["owner"], managed=bool(row["managed"]), since=row["since"])


def _apply(conn: sqlite3.Connection, upserts: Sequence[DeviceRecord],
           deletes: Sequence[PciAddress]) -> None:
    for addr in deletes:
        conn.execute("DELETE FROM devices WHERE address=?", (str(addr),))
    for rec in upserts:
        conn.execute(
            "INSERT OR REPLACE INTO devices VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (str(rec.addr), rec.group, rec.driver, int(rec.moved), rec.original_driver,
             rec.original_override, rec.owner, int(rec.managed), rec.since))


def _changes(text: str) -> tuple[list[DeviceRecord], list[PciAddress]]:
    data = json.loads(text)
    return ([DeviceRecord.from_row(r) for r in data.get("upsert", [])],
            [PciAddress.parse(a) for a in data.get("delete", [])])


def _db_error(err: sqlite3.Error, path: Path) -> Busy | HostError:
    if isinstance(err, sqlite3.OperationalError) and "locked" in str(err):
        return Busy("another vfioctl is changing this host; try again",
                    hint=f"{path} stayed locked (VFIOCTL_LOCK_TIMEOUT sets how long to wait)")
    return HostError(f"vfioctl's state database {path} is unusable: {err}",
                     path=str(path),
                     hint="move it aside if it is damaged; vfioctl then forgets what it held")
