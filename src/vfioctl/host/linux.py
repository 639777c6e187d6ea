"""The real kernel (root ``/``) or a tree laid out like it (a snapshot): the only module
that calls ``os``/``fcntl`` on ``/sys``, ``/proc`` and ``/dev/vfio``.

Fault injection for the real-kernel tier (tests/realkernel/test_60_crash_recovery.py),
ignored unless set: with ``VFIOCTL_TEST_CRASH_AT_WRITE=N`` in the environment, the
process kills itself with SIGKILL right before its Nth :meth:`LinuxHost.write` (counted
per host object from 1; a CLI run has one), or right after that write(2) returned —
applied or refused — when ``VFIOCTL_TEST_CRASH_AFTER=1`` is set too. SIGKILL, not an
exception: nothing of vfioctl runs after it (no ``finally``, no undo), exactly like a
power cut or ``kill -9``, so the next vfioctl command has only the journal to go on.
``VFIOCTL_TEST_CRASH_AT_IOCTL=N`` does the same at the Nth :meth:`LinuxHost.ioctl`
(a VF token reaches the kernel by ``VFIO_DEVICE_FEATURE``, not by a write). The
simulator's equivalent is ``SimHost.faults.crash_at``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import subprocess
from pathlib import Path

from vfioctl.errors import ReadOnlyHost
from vfioctl.host import ifaddr
from vfioctl.host.base import IfAddress, SysPath

#: Test-only fault injection (see the module docstring); never set in production.
CRASH_AT_WRITE_ENV = "VFIOCTL_TEST_CRASH_AT_WRITE"
CRASH_AT_IOCTL_ENV = "VFIOCTL_TEST_CRASH_AT_IOCTL"
CRASH_AFTER_ENV = "VFIOCTL_TEST_CRASH_AFTER"


def _crash_at_write(env: str = CRASH_AT_WRITE_ENV) -> int | None:
    """The write (or ioctl) number the fault-injection hook kills the process at, or
    None (unset)."""
    value = os.environ.get(env, "").strip()
    if not value:
        return None
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        # A typo must not silently turn a crash test into a clean run.
        raise ValueError(f"{env} must be a call number >= 1, not {value!r}")
    return number


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class LinuxHost:
    """A Linux host rooted at ``root``.

    ``LinuxHost("/")`` is the running kernel. ``LinuxHost(DIR)`` reads a tree captured
    with ``vfioctl snapshot`` (or any directory laid out like ``/``) and is read-only:
    a snapshot has no kernel behind it to react to writes.
    """

    def __init__(self, root: str | Path = "/", *, readonly: bool | None = None,
                 state_dir: Path | None = None) -> None:
        self._root = Path(root)
        live = self._root.resolve() == Path("/")
        self._readonly = (not live) if readonly is None else readonly
        if state_dir is None and not self._readonly:
            state_dir = Path(os.environ.get("VFIOCTL_STATE_DIR", "/run/vfioctl"))
        self._state_dir = state_dir
        self._name = "linux" if live else f"linux:{root}"
        self._prefix = str(self._root).rstrip("/") + "/"
        self._writes = 0  # write() calls so far: the fault-injection hook's counter
        self._ioctls = 0  # ioctl() calls so far, likewise

    @property
    def name(self) -> str:
        return self._name

    @property
    def root(self) -> Path:
        return self._root

    @property
    def readonly(self) -> bool:
        return self._readonly

    @property
    def state_dir(self) -> Path | None:
        return self._state_dir

    def _p(self, path: SysPath) -> str:
        return f"{self._prefix}{path}"

    def read_bytes(self, path: SysPath) -> bytes:
        # os.open/os.read rather than open(): no buffered-IO objects per sysfs attribute,
        # which is most of the cost of listing thousands of functions.
        fd = os.open(self._p(path), os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunks = []
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def read_text(self, path: SysPath) -> str:
        return self.read_bytes(path).decode("utf-8", "replace")

    def _check_writable(self, what: str) -> None:
        if self._readonly:
            raise ReadOnlyHost(
                f"host {self._name} is read-only: cannot {what}",
                hint="a snapshot cannot change; use a simulated host (--host sim:FILE) "
                "or the live host (--host linux)",
            )

    def write(self, path: SysPath, data: str) -> None:
        self._check_writable(f"write {path}")
        self._writes += 1
        crash_at = _crash_at_write()
        crash_after = (crash_at == self._writes
                       and os.environ.get(CRASH_AFTER_ENV, "").strip() == "1")
        if crash_at == self._writes and not crash_after:
            _die()
        # One write(2) on an existing file: sysfs attributes take the whole value at once,
        # and O_CREAT must never make a regular file where the kernel has none.
        try:
            fd = os.open(self._p(path), os.O_WRONLY)
            try:
                os.write(fd, data.encode())
            finally:
                os.close(fd)
        finally:
            if crash_after:
                _die()

    def readlink(self, path: SysPath) -> str:
        return os.readlink(self._p(path))

    def listdir(self, path: SysPath) -> list[str]:
        return os.listdir(self._p(path))

    def exists(self, path: SysPath) -> bool:
        return os.path.exists(self._p(path))

    def is_link(self, path: SysPath) -> bool:
        return os.path.islink(self._p(path))

    def open(self, path: SysPath) -> int:
        self._check_writable(f"open {path}")
        return os.open(self._p(path), os.O_RDWR | os.O_CLOEXEC)

    def ioctl(self, fd: int, request: int, arg: int | bytearray = 0) -> int:
        self._ioctls += 1
        crash_at = _crash_at_write(CRASH_AT_IOCTL_ENV)
        if crash_at != self._ioctls:
            return self._ioctl(fd, request, arg)
        if os.environ.get(CRASH_AFTER_ENV, "").strip() != "1":
            _die()
        try:
            return self._ioctl(fd, request, arg)
        finally:
            _die()

    def _ioctl(self, fd: int, request: int, arg: int | bytearray) -> int:
        if isinstance(arg, bytearray):
            return int(fcntl.ioctl(fd, request, arg, True))
        return int(fcntl.ioctl(fd, request, arg))

    def close(self, fd: int) -> None:
        os.close(fd)

    def ip_addresses(self) -> list[IfAddress]:
        """The live host: netlink ``RTM_GETADDR`` of this process's network namespace, []
        when netlink cannot be used (no pyroute2, a sandbox without netlink sockets),
        so callers fall back to procfs. A tree: what ``vfioctl snapshot`` captured in
        ``ifaddr.ADDRESSES_FILE``, [] when it has none; OSError (EINVAL, or the read's
        errno) when that file is damaged or unreadable."""
        if self._root.resolve() == Path("/"):
            try:
                return ifaddr.read_netlink()
            except ifaddr.NetlinkUnavailable:
                return []
        try:
            text = self.read_text(ifaddr.ADDRESSES_FILE)
        except FileNotFoundError:
            return []
        return ifaddr.loads(text)

    def load_module(self, name: str) -> None:
        self._check_writable(f"load module {name}")
        try:
            proc = subprocess.run(["modprobe", name], capture_output=True, text=True,
                                  check=False)
        except FileNotFoundError as err:
            raise OSError(errno.ENOENT, "modprobe not found") from err
        if proc.returncode != 0:
            raise OSError(errno.ENOENT, proc.stderr.strip() or f"modprobe {name} failed")
