"""State: opening ``STATE_DIR/vfioctl.db`` for a writer or a reader, safely.

SQLite opens files by name and resolves symlinks itself (a ``/proc/self/fd/N/...`` path
is turned back into the directory's name; SQLite 3.40 has no "no-follow" URI option, and
Python cannot pass ``SQLITE_OPEN_NOFOLLOW``). So the database is opened only by the
resolved path of a verified state directory (:mod:`vfioctl.state.secure`: every
directory on that path is trusted, so the name cannot be redirected), after the database
and its ``-wal``/``-shm`` files were checked, and with ``mode=rw``/``mode=ro`` so that
SQLite itself never creates the database: vfioctl creates it (``O_EXCL|O_NOFOLLOW``,
0644; the 0700 directory keeps it private) when a writer first writes.

**Readers never wait for writers, and create nothing.** The database is in WAL mode: a
reader opened ``mode=ro`` reads the last commit while a writer writes. SQLite needs the
``-wal``/``-shm`` files for that, and only a writer (or a reader that may write the
directory) can create them; they exist while a writer is connected, and after a crash.
When they do not, the database file alone is complete, so a reader copies it through its
descriptor into memory (checking that nothing changed while it read) instead: a user who
may read the database but not write the directory can read it too.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from vfioctl.errors import Busy, HostError, PermissionDenied, VfioctlError, wrap_oserror
from vfioctl.state.secure import SafeDir, StateUnreadable, check_entry, open_file

DB_NAME: Final = "vfioctl.db"
DB_MODE: Final = 0o644     # the directory (0700) keeps it private; an admin may open it
_SIDE_FILES: Final = ("-wal", "-shm")
_SNAPSHOT_LIMIT: Final = 64 << 20
_SNAPSHOT_TRIES: Final = 3
_NO_ACCESS: Final = frozenset({"SQLITE_PERM", "SQLITE_AUTH", "SQLITE_CANTOPEN",
                               "SQLITE_READONLY", "SQLITE_CANTOPEN_ISDIR",
                               "SQLITE_READONLY_DIRECTORY", "SQLITE_READONLY_CANTINIT",
                               "SQLITE_READONLY_CANTLOCK", "SQLITE_READONLY_RECOVERY"})
_live = 0                  # open connections to the file, in this process
_live_lock = threading.Lock()


def check_files(d: SafeDir) -> bool:
    """Whether the database exists, after checking it and its side files.

    Raises:
        StateUnsafe: one of them is a symlink, not a regular file, or someone else's.
    """
    for suffix in _SIDE_FILES:
        check_entry(d, DB_NAME + suffix, what="database file")
    return check_entry(d, DB_NAME, what="state database")


def connect_writer(d: SafeDir, *, create: bool, timeout: float) -> sqlite3.Connection | None:
    """A read-write connection for the lock holder; None if there is no database and
    ``create`` is off."""
    if not check_files(d):
        if not create:
            return None
        _create(d)
    _check_access(d, os.R_OK | os.W_OK, "write")
    return _connect(_uri(d, "rw"), d.shown(DB_NAME), timeout=timeout)


def connect_reader(d: SafeDir, *, timeout: float) -> sqlite3.Connection | None:
    """A connection that only reads; None if there is no database.

    Raises:
        StateUnreadable: this user may not read the database.
    """
    if not check_files(d):
        return None
    _check_access(d, os.R_OK, "read", reader=True)
    for _ in range(_SNAPSHOT_TRIES):
        if check_entry(d, DB_NAME + "-wal", what="database file") or _live_connections():
            break
        data = _snapshot(d)
        if data is not None:
            return _from_bytes(data, d.shown(DB_NAME))
    return _connect(_uri(d, "ro"), d.shown(DB_NAME), timeout=timeout, reader=True)


def db_error(err: sqlite3.Error, path: Path, *, reader: bool = False) -> VfioctlError:
    """SQLite's error as the product's: Busy, PermissionDenied or HostError."""
    name = getattr(err, "sqlite_errorname", "")
    if isinstance(err, sqlite3.OperationalError) and "locked" in str(err):
        return Busy("another vfioctl is changing this host; try again",
                    hint=f"{path} stayed locked (VFIOCTL_LOCK_TIMEOUT sets how long "
                    "to wait)")
    if name in _NO_ACCESS:
        cls = StateUnreadable if reader else PermissionDenied
        return cls(f"cannot {'read' if reader else 'write'} vfioctl's state database "
                   f"{path} ({err})", path=str(path), hint="run vfioctl as root")
    return HostError(f"vfioctl's state database {path} is unusable: {err}",
                     path=str(path),
                     hint="move it aside if it is damaged; vfioctl then forgets what it "
                     "held")


# -- helpers ----------------------------------------------------------------------------------
def _uri(d: SafeDir, mode: str) -> str:
    return f"file:{quote(os.path.join(d.real, DB_NAME))}?mode={mode}"


def _create(d: SafeDir) -> None:
    """The empty database file, made by vfioctl: never where a link points."""
    try:
        fd = open_file(d, DB_NAME, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode=DB_MODE,
                       what="state database")
    except FileExistsError:
        return      # another writer's: checked again when opened
    assert fd is not None
    try:
        os.fchmod(fd, DB_MODE)
    finally:
        os.close(fd)


def _check_access(d: SafeDir, mode: int, verb: str, *, reader: bool = False) -> None:
    """Say "permission denied" ourselves (naming the file) rather than SQLite's "unable
    to open database file"; by ``faccessat``, since opening the database here could
    cancel SQLite's locks on it (see :func:`_snapshot`)."""
    try:
        ok = os.access(DB_NAME, mode, dir_fd=d.fd, effective_ids=True,
                       follow_symlinks=False)
    except OSError as err:
        raise wrap_oserror(err, f"cannot check the state database {d.shown(DB_NAME)}",
                           path=d.shown(DB_NAME)) from err
    if not ok:
        cls = StateUnreadable if reader else PermissionDenied
        raise cls(f"cannot {verb} vfioctl's state database {d.shown(DB_NAME)}",
                  path=str(d.shown(DB_NAME)), errno=errno.EACCES,
                  hint="run vfioctl as root")


def _connect(uri: str, shown: Path, *, timeout: float,
             reader: bool = False) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=max(timeout, 0.1),
                               isolation_level=None, factory=_Counted)
    except sqlite3.Error as err:
        raise db_error(err, shown, reader=reader) from err
    conn.row_factory = sqlite3.Row
    return conn


class _Counted(sqlite3.Connection):
    """A connection to the database file, counted while open (see :func:`_snapshot`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        global _live
        super().__init__(*args, **kwargs)
        with _live_lock:
            _live += 1
        self._open = True

    def close(self) -> None:
        global _live
        super().close()
        with _live_lock:
            if self._open:
                self._open = False
                _live -= 1


def _live_connections() -> bool:
    with _live_lock:
        return _live > 0


def _snapshot(d: SafeDir) -> bytes | None:
    """The database file's bytes, if no writer touched it while they were read.

    Closing any descriptor of a file drops every POSIX lock this process holds on it,
    SQLite's included ("How To Corrupt An SQLite Database File", 2.2). So this runs only
    while this process has no connection to the file, and never while a ``-wal`` exists
    (a connection in WAL mode anywhere keeps one): other processes' locks are their own.
    """
    fd = open_file(d, DB_NAME, os.O_RDONLY, what="state database")
    if fd is None:
        return None
    try:
        return _stable_copy(d, fd)
    except OSError as err:
        raise wrap_oserror(err, f"cannot read the state database {d.shown(DB_NAME)}",
                           path=d.shown(DB_NAME)) from err
    finally:
        os.close(fd)


def _stable_copy(d: SafeDir, fd: int) -> bytes | None:
    before = os.fstat(fd)
    if before.st_size > _SNAPSHOT_LIMIT:
        return None
    data = os.pread(fd, before.st_size + 1, 0)
    after = os.fstat(fd)
    same = (before.st_size, before.st_mtime_ns, before.st_ctime_ns) == \
        (after.st_size, after.st_mtime_ns, after.st_ctime_ns)
    if not same or len(data) != before.st_size:
        return None
    if check_entry(d, DB_NAME + "-wal", what="database file"):
        return None     # a writer connected meanwhile
    return data


def _from_bytes(data: bytes, shown: Path) -> sqlite3.Connection:
    """An in-memory copy of a database file; its header says WAL, which an in-memory
    database cannot use, so the copy says rollback journal instead (bytes 18-19)."""
    image = bytearray(data)
    if len(image) >= 20 and image[18] == 2 and image[19] == 2:
        image[18] = image[19] = 1
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.row_factory = sqlite3.Row
    if image:
        try:
            conn.deserialize(bytes(image))
        except sqlite3.Error as err:
            conn.close()
            raise db_error(err, shown, reader=True) from err
    return conn
