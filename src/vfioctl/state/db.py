"""State: what vfioctl holds on a host, and the journal that makes its changes crash-safe.

One SQLite database (stdlib ``sqlite3``) per host, ``STATE_DIR/vfioctl.db``, beside a
lock file ``STATE_DIR/vfioctl.lock``. The directory is created 0700: it tells who owns
which device, and holds VF tokens. Everything in it is opened so that no other user can
plant or redirect it (:mod:`vfioctl.state.secure`; refusals are
:class:`~vfioctl.state.secure.StateUnsafe`, exit 77).

**One writer at a time.** A writer holds an exclusive ``flock`` on the lock file for a
whole operation (recovery, checks, every sysfs write, the final bookkeeping), not only
for one SQL transaction, because the host's sysfs is part of what it changes. Waiting
callers poll for the lock up to a timeout (``VFIOCTL_LOCK_TIMEOUT`` seconds, default 10)
and then get :class:`vfioctl.errors.Busy`. The kernel drops a dead process's flock, so a
crash never leaves the host locked (:mod:`vfioctl.state.lock`).

**Creation.** The database is created by a writer's first write, never by taking the
lock or reading; ``writer(defer=True)`` does not even create the directory until then
(:mod:`vfioctl.state.session` says why that is sound).

**Readers never wait for writers.** :meth:`StateStore.read_records` and
:meth:`StateStore.needs_recovery` take no lock and create nothing; the database is in
WAL mode, so they read the last commit while a writer works (:mod:`vfioctl.state.dbfile`).
A reader that may not read the state gets
:class:`~vfioctl.state.secure.StateUnreadable`, to report "cannot tell".

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
or on to its *to* state when ``forward`` is set (see :mod:`vfioctl.manager`). A reader
that sees one tells a dead writer from a live one by trying the lock without waiting.

A record stores only what vfioctl decided (owner, original driver), never what can be
re-read from sysfs (docs/rationale.md "Architecture rules": read the kernel again,
remember only decisions).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from vfioctl.address import PciAddress
from vfioctl.errors import HostError, PermissionDenied, VfioctlError
from vfioctl.state.dbfile import DB_NAME, connect_reader, db_error
from vfioctl.state.lock import LOCK_NAME, open_lock, try_lock
from vfioctl.state.schema import has_schema
from vfioctl.state.secure import StateUnreadable, open_state_dir
from vfioctl.state.session import WriterSession

DEFAULT_LOCK_TIMEOUT: Final = 10.0

__all__ = ["DB_NAME", "DEFAULT_LOCK_TIMEOUT", "LOCK_NAME", "DeviceRecord", "Journal",
           "JournalState", "Phase", "StateStore", "StateWriter", "Step", "StepKind",
           "lock_timeout_from_env", "now"]


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

    Constructing one does no I/O. Raises (from every method): StateUnsafe when the
    directory or a file in it could have been planted or redirected; PermissionDenied
    when this user may not use it; HostError when it is unusable; Busy when another
    writer does not let go in time.
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

    @contextlib.contextmanager
    def writer(self, *, defer: bool = False) -> Iterator[StateWriter]:
        """Hold the host's writer lock (waiting up to ``timeout``).

        The directory and lock file are created now (``defer``: only at the first write,
        :mod:`vfioctl.state.session`), the database only at the first write. The lock is
        released on any exit, including a crash-like BaseException: that is what the
        kernel does for a dead process, and the journal stays as written.

        Raises:
            Busy: if another vfioctl holds the lock for longer than ``timeout``.
            StateUnsafe, PermissionDenied: see the class.
        """
        session = WriterSession(self.directory, self.timeout, defer=defer)
        try:
            session.start()
            yield StateWriter(None, self.db_path, session=session)
        finally:
            session.close()

    def read_records(self) -> list[DeviceRecord]:
        """The records as of the last commit: no lock, nothing created, no waiting for a
        writer. [] when there is no state.

        Raises:
            StateUnreadable: this user may not read the state (or it is unsafe).
            HostError: the database is damaged.
        """
        return sorted((_record(r, self.db_path)
                       for r in self._read("SELECT * FROM devices")),
                      key=lambda rec: rec.addr)

    def needs_recovery(self) -> bool:
        """Whether a dead writer left an operation unfinished, found without waiting.

        False when there is no state, no ``running`` journal, or a live writer holds the
        lock (its journal is in progress, not interrupted); True when the lock is free
        and the journal is still running once it was taken. The lock is let go at once.

        Raises:
            StateUnreadable: this user cannot tell (it may not read the database, or a
                journal is running and it may not open the lock file: only root can).
            HostError: the database is damaged.
        """
        if not self._has_running_journal():
            return False
        try:
            return self._lock_is_free() and self._has_running_journal()
        except PermissionDenied as err:
            if isinstance(err, StateUnreadable):
                raise
            raise StateUnreadable(
                "an operation on this host is unfinished or still in progress, and this "
                f"user cannot tell which ({err.message})", path=err.path,
                hint="run vfioctl as root: it finishes or rolls back an interrupted "
                "operation") from err

    # -- the read side --------------------------------------------------------------------
    def _has_running_journal(self) -> bool:
        return bool(self._read("SELECT id FROM journal WHERE state='running' LIMIT 1"))

    def _read(self, sql: str) -> list[sqlite3.Row]:
        """Rows of one query against the last commit."""
        with _as_reader():
            d = open_state_dir(self.directory, create=False)
            if d is None:
                return []
            with d:
                conn = connect_reader(d, timeout=self.timeout)
                if conn is None:
                    return []
                try:
                    return list(conn.execute(sql)) if has_schema(conn) else []
                except sqlite3.Error as err:
                    raise db_error(err, self.db_path, reader=True) from err
                finally:
                    conn.close()

    def _lock_is_free(self) -> bool:
        """Try the writer lock without waiting, and let it go again at once."""
        d = open_state_dir(self.directory, create=False)
        if d is None:
            return True
        with d:
            fd = open_lock(d, create=False)
            if fd is None:
                return True         # nobody can hold a lock on a file that is not there
            try:
                return try_lock(fd, self.lock_path)
            finally:
                os.close(fd)        # drops the lock if we took it


@contextlib.contextmanager
def _as_reader() -> Iterator[None]:
    """Permission problems, as the read side reports them."""
    try:
        yield
    except PermissionDenied as err:
        if isinstance(err, StateUnreadable):
            raise
        raise StateUnreadable.from_error(err) from err


class StateWriter:
    """Database access for the lock holder; every method commits before returning.

    Reads before the database exists answer "nothing"; the first write creates it
    (and, for a deferred writer, the directory and the lock: :meth:`hold`).
    """

    def __init__(self, conn: sqlite3.Connection | None, path: Path, *,
                 session: WriterSession | None = None) -> None:
        self._conn = conn
        self._path = path
        self._session = session

    @property
    def held(self) -> bool:
        """Whether the writer lock is held (False only for a deferred writer on a host
        without state, until its first write)."""
        return self._session is None or self._session.held

    def hold(self) -> None:
        """Take the writer lock now, creating the state directory if needed: a deferred
        writer calls it before changing anything outside the database (staging a VF
        token, a sysfs write) so that the change happens under the lock.

        Raises:
            Busy: another writer holds the lock, or (deferred) changed the host since
                this writer looked at it.
        """
        if self._session is not None:
            self._session.hold()

    def _connection(self, *, create: bool) -> sqlite3.Connection | None:
        if self._session is None:
            return self._conn
        return self._session.connection(create=create)

    @contextlib.contextmanager
    def _txn(self) -> Iterator[sqlite3.Connection]:
        conn = self._connection(create=True)
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as err:
            raise db_error(err, self._path) from err

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        conn = self._connection(create=False)
        if conn is None:
            return []
        try:
            return list(conn.execute(sql, args))
        except sqlite3.Error as err:
            raise db_error(err, self._path) from err

    # -- records ------------------------------------------------------------------------
    def records(self) -> list[DeviceRecord]:
        rows = self._query("SELECT * FROM devices")
        return sorted((_record(r, self._path) for r in rows), key=lambda rec: rec.addr)

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
                ups, dels = _changes(row["changes"], self._path)
                _apply(conn, ups, dels)
            if extra_upserts:
                _apply(conn, extra_upserts, ())
            conn.execute("UPDATE journal SET state=?, finished=? WHERE id=?",
                         (str(state), now(), jid))

    def unfinished(self) -> list[Journal]:
        """Journals left ``running`` (by a dead writer when seen by the lock holder)."""
        out = []
        for row in self._query("SELECT * FROM journal WHERE state='running' ORDER BY id"):
            steps = self._query("SELECT * FROM steps WHERE journal_id=? ORDER BY seq",
                                (row["id"],))
            out.append(_journal(row, steps, self._path))
        return out

    def journals(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest journal rows (for diagnostics and tests)."""
        return [dict(r) for r in self._query(
            "SELECT id, op, owner, state, forward, started, finished FROM journal "
            "ORDER BY id DESC LIMIT ?", (limit,))]


def _record(row: sqlite3.Row, path: Path) -> DeviceRecord:
    with _malformed(path, "device record"):
        return DeviceRecord(
            addr=PciAddress.parse(row["address"]), group=row["iommu_group"],
            driver=row["driver"], moved=bool(row["moved"]),
            original_driver=row["original_driver"],
            original_override=row["original_override"],
            owner=row["owner"], managed=bool(row["managed"]), since=row["since"])


def _journal(row: sqlite3.Row, steps: Sequence[sqlite3.Row], path: Path) -> Journal:
    with _malformed(path, f"journal entry ({row['id']})"):
        ups, dels = _changes(row["changes"], path)
        return Journal(
            id=row["id"], op=row["op"], owner=row["owner"], state=row["state"],
            forward=bool(row["forward"]), pid=row["pid"], started=row["started"],
            steps=tuple(
                Step(seq=s["seq"], addr=PciAddress.parse(s["address"]),
                     from_driver=s["from_driver"], from_override=s["from_override"],
                     to_driver=s["to_driver"], to_override=s["to_override"],
                     phase=Phase(s["phase"]), kind=StepKind(s["kind"]),
                     from_value=s["from_value"], to_value=s["to_value"])
                for s in steps),
            upserts=tuple(ups), deletes=tuple(dels))


@contextlib.contextmanager
def _malformed(path: Path, what: str) -> Iterator[None]:
    """A row vfioctl cannot have written is a damaged database (exit 6), not a bug."""
    try:
        yield
    except (ValueError, KeyError, TypeError, AttributeError, IndexError,
            VfioctlError) as err:
        raise HostError(f"vfioctl's state database {path} holds a malformed {what}",
                        path=str(path),
                        hint="move it aside if it is damaged; vfioctl then forgets what "
                        "it held") from err


def _apply(conn: sqlite3.Connection, upserts: Sequence[DeviceRecord],
           deletes: Sequence[PciAddress]) -> None:
    for addr in deletes:
        conn.execute("DELETE FROM devices WHERE address=?", (str(addr),))
    for rec in upserts:
        conn.execute(
            "INSERT OR REPLACE INTO devices VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (str(rec.addr), rec.group, rec.driver, int(rec.moved), rec.original_driver,
             rec.original_override, rec.owner, int(rec.managed), rec.since))


def _changes(text: str, path: Path) -> tuple[list[DeviceRecord], list[PciAddress]]:
    with _malformed(path, "journal entry"):
        data = json.loads(text)
        return ([DeviceRecord.from_row(r) for r in data.get("upsert", [])],
                [PciAddress.parse(a) for a in data.get("delete", [])])
