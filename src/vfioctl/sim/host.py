"""Simulator: :class:`SimHost`, the ``Host`` seam over a simulated kernel.

``--host sim:NAME`` opens a bundled host, read-only: a mutating call raises
:class:`ReadOnlyHost` saying to ``vfioctl sim copy NAME FILE`` first. ``--host sim:FILE``
opens a host file; every change the kernel makes is written back to FILE at once
(temp file + rename, under an ``fcntl`` lock in the host's state directory), and every
call first picks up what other processes saved, so concurrent vfioctl processes see one
kernel, as on a real host. File descriptors from :meth:`SimHost.open` belong to this
process and are not saved.

Testing hooks: :attr:`SimHost.faults` (a :class:`FaultPlan`), :attr:`SimHost.writes`
(every write attempted, with its errno), :attr:`SimHost.kernel`, and
:meth:`SimHost.add_vfio_user` / :meth:`SimHost.remove_vfio_user` (another process that
holds VFIO files, saved with the host). A write the real kernel would not return from
raises :class:`~vfioctl.sim.blocking.SimWouldBlock`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from vfioctl.errors import HostError, PermissionDenied, ReadOnlyHost
from vfioctl.host import uapi
from vfioctl.host.base import IfAddress, SysPath
from vfioctl.sim import net
from vfioctl.sim.blocking import SimWouldBlock
from vfioctl.sim.faults import FaultPlan, SimCrash, fault_oserror
from vfioctl.sim.kernel import SimKernel
from vfioctl.sim.loader import (
    bundled_names,
    bundled_text,
    kernel_from_spec,
    parse_text,
    read_host_file,
    render_file,
    split_state,
)
from vfioctl.sim.sysfs import build_tree
from vfioctl.sim.users import VfioUser
from vfioctl.sim.vfs import CharDev, Dir, File, Link, Tree

T = TypeVar("T")
_KVM_FD_BASE = 1 << 20     # fds of /dev/kvm opens, apart from the VFIO layer's


@dataclass(frozen=True)
class WriteRecord:
    """One write attempted through the seam: ``errno`` None when it succeeded (or when
    it would have blocked in the kernel: ``blocked``)."""

    path: str
    data: str
    errno: int | None
    blocked: bool = False


class SimHost:
    """A simulated Linux host (implements :class:`vfioctl.host.base.Host`)."""

    def __init__(self, kernel: SimKernel, *, name: str, hardware_text: str,
                 readonly: bool = False, path: Path | None = None,
                 state_dir: Path | None = None, bundled: str | None = None) -> None:
        self._kernel = kernel
        self._name = name
        self._hardware = hardware_text
        self._readonly = readonly
        self._path = path
        self._bundled = bundled
        self._state_dir = state_dir
        self._tree: Tree | None = None
        self._tree_version = -1
        self._stamp: tuple[int, int, int] | None = None
        self._digest: str | None = None
        spec = kernel.spec
        self.faults = FaultPlan(spec.faults, crash_at_write=spec.crash_at_write,
                                crash_applies=spec.crash_applies)
        self.writes: list[WriteRecord] = []
        self._kvm_fds: set[int] = set()

    # -- constructors --------------------------------------------------------------------------
    @classmethod
    def from_text(cls, text: str, *, name: str = "sim:test",
                  state_dir: Path | None = None) -> SimHost:
        """A writable host kept in memory only (tests, benchmarks)."""
        spec = parse_text(text, name)
        return cls(kernel_from_spec(spec), name=name, hardware_text=split_state(text),
                   state_dir=state_dir)

    @classmethod
    def bundled(cls, name: str, *, writable: bool = False) -> SimHost:
        """A host shipped with vfioctl; read-only unless ``writable`` (then in memory)."""
        text = bundled_text(name)
        spec = parse_text(text, name)
        return cls(kernel_from_spec(spec), name=f"sim:{name}", hardware_text=text,
                   readonly=not writable, bundled=name)

    @classmethod
    def from_file(cls, path: Path) -> SimHost:
        """A host file, written back on every change.

        Raises:
            NotFound: no such file. ConfigError: not a valid host description.
        """
        loaded = read_host_file(path)
        assert loaded is not None
        hardware, spec, stamp, digest = loaded
        host = cls(kernel_from_spec(spec), name=f"sim:{path}", hardware_text=hardware,
                   path=path, state_dir=path.parent / (path.name + ".state"))
        host._stamp, host._digest = stamp, digest
        return host

    # -- Host properties -----------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    @property
    def readonly(self) -> bool:
        return self._readonly

    @property
    def state_dir(self) -> Path | None:
        return self._state_dir

    @property
    def kernel(self) -> SimKernel:
        self._refresh()
        return self._kernel

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def write_count(self) -> int:
        return len(self.writes)

    def writes_to(self, glob: str) -> list[WriteRecord]:
        """The writes whose path matches ``glob`` (e.g. ``*/0000:03:00.0/*``)."""
        import fnmatch
        return [w for w in self.writes if fnmatch.fnmatchcase(w.path, glob)]

    # -- files -----------------------------------------------------------------------------------
    def _current_tree(self) -> Tree:
        self._refresh()
        if self._tree is None or self._tree_version != self._kernel.version:
            self._tree = build_tree(self._kernel)
            self._tree_version = self._kernel.version
        return self._tree

    def read_bytes(self, path: SysPath) -> bytes:
        node = self._current_tree().lookup(str(path))
        if isinstance(node, Dir):
            raise OSError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if isinstance(node, CharDev) or not isinstance(node, File) or node.read is None:
            # a write-only attribute (kernfs) or a device node we do not read
            raise OSError(errno.EACCES if isinstance(node, File) else errno.EINVAL,
                          os.strerror(errno.EACCES if isinstance(node, File)
                                      else errno.EINVAL), str(path))
        return node.read()

    def read_text(self, path: SysPath) -> str:
        return self.read_bytes(path).decode("utf-8", "replace")

    def readlink(self, path: SysPath) -> str:
        node = self._current_tree().lookup(str(path), follow=False)
        if not isinstance(node, Link):
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), str(path))
        return node.target

    def listdir(self, path: SysPath) -> list[str]:
        node = self._current_tree().lookup(str(path))
        if not isinstance(node, Dir):
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))
        return list(node.children)

    def exists(self, path: SysPath) -> bool:
        try:
            self._current_tree().lookup(str(path))
        except OSError:
            return False
        return True

    def is_link(self, path: SysPath) -> bool:
        try:
            return isinstance(self._current_tree().lookup(str(path), follow=False), Link)
        except OSError:
            return False

    def write(self, path: SysPath, data: str) -> None:
        self._check_writable(f"write {path}")
        number = len(self.writes) + 1
        record_errno: int | None = None
        blocked = False
        try:
            self._mutate(lambda: self._write(str(path), data, number))
        except OSError as err:
            record_errno = err.errno
            raise
        except SimCrash:
            record_errno = errno.EINTR
            raise
        except SimWouldBlock:
            blocked = True
            raise
        finally:
            self.writes.append(WriteRecord(str(path), data, record_errno, blocked))

    def _write(self, path: str, data: str, number: int) -> None:
        node, real = self._current_tree().resolve(path)
        if isinstance(node, Dir):
            raise OSError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        plan = self.faults
        crash = plan.crash_at_write == number
        if crash and not plan.crash_applies:
            raise SimCrash(number, path, applied=False)
        code = plan.write_error([path, real])
        if code is not None:
            raise fault_oserror(code, path)
        if not isinstance(node, File) or node.write is None:
            raise OSError(errno.EACCES, os.strerror(errno.EACCES), path)
        node.write(data)
        if crash:
            raise SimCrash(number, path, applied=True)

    # -- VFIO ------------------------------------------------------------------------------------
    def open(self, path: SysPath) -> int:
        self._check_writable(f"open {path}")
        node = self._current_tree().lookup(str(path))
        if not isinstance(node, CharDev):
            raise OSError(errno.ENXIO, os.strerror(errno.ENXIO), str(path))
        if node.key.startswith("kvm:"):       # sim.extras: open only, no ioctls
            if node.key == "kvm:denied":
                raise OSError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            fd = _KVM_FD_BASE + len(self._kvm_fds)
            while fd in self._kvm_fds:
                fd += 1
            self._kvm_fds.add(fd)
            return fd
        # container, group, device cdev, iommufd: sim.vfio
        return self._mutate(lambda: self._kernel.vfio.open(node.key))

    def ioctl(self, fd: int, request: int, arg: int | bytearray = 0) -> int:
        name = uapi.IOCTL_NAMES.get(request, f"{request:#x}")
        code = self.faults.ioctl_error(name)
        if code is not None:
            raise fault_oserror(code)
        return self._mutate(lambda: self._kernel.vfio.ioctl(fd, request, arg))

    def close(self, fd: int) -> None:
        if fd in self._kvm_fds:
            self._kvm_fds.discard(fd)
            return
        self._mutate(lambda: self._kernel.vfio.close(fd))

    def ip_addresses(self) -> list[IfAddress]:
        """The modelled addresses of the interfaces that exist now, ``lo`` first, IPv4
        then IPv6, as a netlink dump lists them (:mod:`vfioctl.sim.net`)."""
        return net.ip_addresses(self.kernel.live_interfaces())

    # -- other processes ---------------------------------------------------------------------
    def add_vfio_user(self, pid: int, comm: str, group: int,
                      devices: tuple[str, ...] | list[str] = ()) -> VfioUser:
        """Another process (QEMU, say) opens ``/dev/vfio/GROUP``, puts it in a container
        and takes a device file for each of ``devices``; saved with a host file.

        Raises:
            ValueError: a bad pid, comm or address. OSError: what the kernel answers
                that process (ENOENT, EBUSY, EPERM, ENODEV; see
                :meth:`SimKernel.add_vfio_user`).
        """
        return self._mutate(lambda: self._kernel.add_vfio_user(pid, comm, group, devices))

    def remove_vfio_user(self, pid: int) -> None:
        """The process ``pid`` exits and its VFIO files are closed.

        Raises:
            ValueError: no such user.
        """
        self._mutate(lambda: self._kernel.remove_vfio_user(pid))

    def load_module(self, name: str) -> None:
        self._check_writable(f"load module {name}")
        self._mutate(lambda: self._kernel.load_module(name))

    # -- persistence -----------------------------------------------------------------------------
    def _check_writable(self, what: str) -> None:
        if self._readonly:
            target = self._bundled or "NAME"
            raise ReadOnlyHost(
                f"host {self._name} is a bundled, read-only simulated host: cannot {what}",
                hint=f"copy it first: 'vfioctl sim copy {target} FILE', then use "
                     "--host sim:FILE")

    def _mutate(self, op: Callable[[], T]) -> T:
        if self._path is None:
            try:
                return op()
            finally:
                self._kernel.dirty = False
        with self._lock():
            self._refresh(strict=True)
            try:
                return op()
            finally:
                if self._kernel.dirty:
                    self._save()

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        assert self._state_dir is not None
        try:
            self._state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as err:
            raise _state_error(err, f"cannot create the simulated host's state directory "
                               f"{self._state_dir}", self._state_dir) from None
        fd = open_lock_file(self._state_dir / LOCK_NAME)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _refresh(self, *, strict: bool = False) -> None:
        """Pick up state another process saved since we last loaded or saved.

        Reads trust the file's (inode, mtime, size); under the lock (``strict``) the
        content hash decides, since a save within one mtime tick can reuse all three.
        """
        if self._path is None:
            return
        if not strict and _stamp(self._path) == self._stamp:
            return
        loaded = read_host_file(self._path, unless_digest=self._digest)
        if loaded is None:
            return
        hardware, spec, stamp, digest = loaded
        self._digest = digest
        kernel = kernel_from_spec(spec)
        kernel.vfio = self._kernel.vfio
        kernel.vfio.kernel = kernel
        self._kernel, self._hardware, self._stamp = kernel, hardware, stamp
        self._tree = None

    def _save(self) -> None:
        assert self._path is not None
        text = render_file(self._hardware, self._kernel)
        secret = bool(self._kernel.vf_tokens)
        try:
            mode = os.stat(self._path).st_mode & 0o777
        except FileNotFoundError:
            mode = 0o644
        if secret:
            mode = 0o600
        fd, tmp = tempfile.mkstemp(prefix=f".{self._path.name}.", dir=self._path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, self._path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        self._kernel.dirty = False
        self._stamp = _stamp(self._path)
        self._digest = hashlib.sha256(text.encode()).hexdigest()


LOCK_NAME = "sim.lock"


def open_lock_file(path: Path) -> int:
    """Open (creating, 0600) the lock file beside a host file, refusing one that another
    user could have planted: a symlink (``O_NOFOLLOW``: ELOOP), something that is not a
    regular file, or a file owned by someone other than this user or root.

    Raises:
        PermissionDenied: such a file, or no permission (exit 77; names the path).
        HostError: any other failure to open it.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
                     | os.O_NONBLOCK, 0o600)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise PermissionDenied(f"refusing the simulator lock file {path}: it is a "
                                   "symbolic link", path=str(path),
                                   hint="remove it; vfioctl creates the lock file itself"
                                   ) from None
        raise _state_error(err, f"cannot open the simulator lock file {path}",
                           path) from None
    st = os.fstat(fd)
    why = None
    if not stat.S_ISREG(st.st_mode):
        why = "it is not a regular file"
    elif st.st_uid not in (os.geteuid(), 0):
        why = f"it is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()}) or root"
    if why is not None:
        os.close(fd)
        raise PermissionDenied(f"refusing the simulator lock file {path}: {why}",
                               path=str(path), hint="remove it; vfioctl creates the lock "
                               "file itself")
    return fd


def _state_error(err: OSError, message: str, path: Path) -> HostError:
    cls = PermissionDenied if err.errno in (errno.EACCES, errno.EPERM) else HostError
    return cls(message, path=str(path), errno=err.errno,
               hint="run vfioctl as a user who may write beside the host file"
               if cls is PermissionDenied else None)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def open_sim_host(arg: str) -> SimHost:
    """``--host sim:ARG``: a bundled host by name, else a host file path.

    Raises:
        NotFound: neither a bundled name nor an existing file.
        ConfigError: the file is not a valid host description.
    """
    if "/" not in arg and not arg.endswith(".toml") and arg in bundled_names():
        return SimHost.bundled(arg)
    if "/" not in arg and not arg.endswith(".toml") and not Path(arg).exists():
        bundled_text(arg)          # raises NotFound listing how to find hosts
    return SimHost.from_file(Path(arg))


__all__ = ["SimCrash", "SimHost", "SimWouldBlock", "WriteRecord", "open_sim_host"]
