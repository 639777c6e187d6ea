"""State: the writer lock, an exclusive ``flock`` on ``STATE_DIR/vfioctl.lock``.

A writer holds it for a whole operation (checks, sysfs writes, bookkeeping), because the
host's sysfs is part of what it changes; the kernel drops it when its holder dies, so a
crash never leaves a host locked, and a free lock beside a ``running`` journal proves
that journal's writer is dead. The file is 0600: whoever can open it can hold it, and
only root may keep root's writers waiting.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path
from typing import Final

from vfioctl.errors import Busy, wrap_oserror
from vfioctl.state.secure import SafeDir, open_file

LOCK_NAME: Final = "vfioctl.lock"
LOCK_MODE: Final = 0o600
_POLL_SECONDS: Final = 0.02
_HELD_ELSEWHERE: Final = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)


def open_lock(d: SafeDir, *, create: bool) -> int | None:
    """The lock file's descriptor (made 0600 with ``create``), or None if it is missing."""
    flags = (os.O_RDWR | os.O_CREAT) if create else os.O_RDONLY
    return open_file(d, LOCK_NAME, flags, mode=LOCK_MODE, what="lock file")


def try_lock(fd: int, path: Path) -> bool:
    """Take the lock if it is free, without waiting."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in _HELD_ELSEWHERE:
            return False
        raise wrap_oserror(err, f"cannot lock {path}", path=path) from err
    return True


def wait_lock(fd: int, path: Path, timeout: float) -> None:
    """Take the lock, polling for up to ``timeout`` seconds.

    Raises:
        Busy: another vfioctl held it all that time.
    """
    deadline = time.monotonic() + timeout
    while not try_lock(fd, path):
        if time.monotonic() >= deadline:
            raise Busy(
                "another vfioctl is changing this host; try again",
                hint=f"it held {path} for more than {timeout:g} s "
                "(VFIOCTL_LOCK_TIMEOUT sets how long to wait)",
            )
        time.sleep(_POLL_SECONDS)
