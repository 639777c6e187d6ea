"""State: what one writer holds — the verified state directory, the lock, a connection —
and when each comes into being.

**Nothing is created before it is needed.** The database is opened when first read and
created only by the first write (a journal's ``begin``, a record change): a command
that takes the writer lock and then fails validation leaves no database behind.

**Deferred writers** (``StateStore.writer(defer=True)``) go one step further for a host
with no state directory at all: they create nothing and lock nothing until their first
write (or :meth:`WriterSession.hold`). That is sound because a missing directory holds
nothing to recover and nothing another writer could be using, so the plan is made from
"vfioctl holds nothing". The risk is another vfioctl changing the host between that
look and our first write; every change vfioctl makes to a host begins with a journal
row, which creates the database, so the first write creates the directory, takes the
lock, and refuses with :class:`vfioctl.errors.Busy` ("try again") if a database has
appeared meanwhile. If the directory exists, a deferred writer locks at once like any
other (creating at most the lock file inside it).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from vfioctl.errors import Busy
from vfioctl.state.dbfile import DB_NAME, check_files, connect_writer, db_error
from vfioctl.state.lock import LOCK_NAME, open_lock, wait_lock
from vfioctl.state.schema import set_up_writer
from vfioctl.state.secure import SafeDir, open_state_dir


class WriterSession:
    """One writer's directory, lock and connection; :meth:`close` lets go of all three."""

    def __init__(self, directory: Path, timeout: float, *, defer: bool) -> None:
        self.directory = directory
        self.timeout = timeout
        self.defer = defer
        self._dir: SafeDir | None = None
        self._lock_fd: int | None = None
        self._conn: sqlite3.Connection | None = None
        self._planned_on_nothing = False

    @property
    def held(self) -> bool:
        """Whether this writer holds the lock."""
        return self._lock_fd is not None

    def start(self) -> None:
        """Lock now, unless deferred on a host without a state directory."""
        self._dir = open_state_dir(self.directory, create=not self.defer)
        if self._dir is None:
            self._planned_on_nothing = True
            return
        self._lock()

    def hold(self) -> None:
        """Take the lock now if not yet held (creating the directory); see the module
        docstring for why a deferred writer may then get Busy."""
        if self._lock_fd is not None:
            return
        if self._dir is None:
            self._dir = open_state_dir(self.directory, create=True)
            assert self._dir is not None
        self._lock()
        if self._planned_on_nothing and check_files(self._dir):
            raise Busy("another vfioctl changed this host while this command was "
                       "checking it; try again",
                       hint=f"{self._dir.shown(DB_NAME)} appeared meanwhile")

    def connection(self, *, create: bool) -> sqlite3.Connection | None:
        """The lock holder's connection; None while there is no database to read (and
        ``create`` is off). With ``create`` the lock is taken and the database made."""
        if self._conn is not None:
            return self._conn
        if create:
            self.hold()
        elif self._lock_fd is None:
            return None             # deferred, no state directory: nothing to read
        assert self._dir is not None
        conn = connect_writer(self._dir, create=create, timeout=self.timeout)
        if conn is None:
            return None
        try:
            set_up_writer(conn)
        except sqlite3.Error as err:
            conn.close()
            raise db_error(err, self._dir.shown(DB_NAME)) from err
        self._conn = conn
        return conn

    def close(self) -> None:
        """The connection, then the lock (closing its only descriptor drops the flock),
        then the directory."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if self._dir is not None:
            self._dir.close()
            self._dir = None

    def _lock(self) -> None:
        assert self._dir is not None
        fd = open_lock(self._dir, create=True)
        assert fd is not None
        try:
            wait_lock(fd, self._dir.shown(LOCK_NAME), self.timeout)
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd
