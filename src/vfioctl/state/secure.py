"""State: opening the state directory and its files so that no other user can steer them.

vfioctl runs as root, in a directory whose path a user may choose (``VFIOCTL_STATE_DIR``,
or beside a simulated host's file). Whoever can change a directory on that path, or the
state directory itself, could make root create or overwrite files wherever they point (a
symlink planted at ``vfioctl.lock``, ``vf-tokens/`` swapped for a link between two
calls), or hand root a VF token of their choosing. So every access goes through here:

- **Trusted owners** are root and the effective uid (for root: root only). Root owns the
  system; we own ourselves; nobody else is trusted.
- **The path is walked** one component at a time from ``/`` with
  ``O_DIRECTORY|O_NOFOLLOW``; a symlink on the way is followed by hand, inside the walk.
  Every directory reached must have a trusted owner and be writable by group/others only
  if sticky (/tmp): otherwise a third user could swap the entry below it. This matters
  beyond our own ``openat`` calls because SQLite opens files by name (and resolves
  symlinks itself); a path made only of trusted directories cannot be redirected.
- **The state directory** (and ``vf-tokens/``) must be a real directory, not a symlink,
  with a trusted owner and no group/other write bit; vfioctl creates them 0700.
- **Files** are opened relative to the verified directory's descriptor, with
  ``O_NOFOLLOW``, and checked after opening (``fstat``): a regular file, a trusted
  owner, one link (a hard link could alias a file elsewhere).

Refusals are :class:`StateUnsafe` (exit 77), naming the path and what is wrong.
Permission problems are :class:`vfioctl.errors.PermissionDenied` ("run vfioctl as
root"); the read side turns them into :class:`StateUnreadable`, which its callers catch
to report "cannot tell" and go on.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Final

from vfioctl.errors import PermissionDenied, UsageError, wrap_oserror

STATE_DIR_MODE: Final = 0o700
_PARENT_MODE: Final = 0o755        # a missing ancestor vfioctl creates (like mkdir -p)
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS: Final = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK   # no FIFO may hang us
_MAX_STEPS: Final = 256            # path components + symlinks followed, like ELOOP's 40
_READ_HINT: Final = "run vfioctl as root"
_REMOVE_HINT: Final = "remove it (vfioctl neither follows nor trusts it)"
_REDIRECT_HINT: Final = ("another user could redirect vfioctl's state through it: choose "
                         "a state directory (VFIOCTL_STATE_DIR, or move the host file) "
                         "below directories only root or you can change")


class StateUnreadable(PermissionDenied):
    """This process cannot read vfioctl's state (no permission, or it was refused as
    unsafe). Raised by the read side (``needs_recovery``, ``read_records``) so that a
    read-only command can say it cannot tell, instead of failing or guessing."""

    @classmethod
    def from_error(cls, err: PermissionDenied) -> StateUnreadable:
        """The same error, as seen by a reader."""
        if isinstance(err, StateUnreadable):
            return err
        new = cls(err.message, path=err.path, hint=err.hint or _READ_HINT)
        new.errno = err.errno
        return new


class StateUnsafe(StateUnreadable):
    """A state directory or file that another user could have planted, or could
    redirect: refused rather than followed or trusted."""


def trusted_uids() -> frozenset[int]:
    """Owners whose files and directories vfioctl relies on: root and itself."""
    return frozenset({0, os.geteuid()})


def _not_whom() -> str:
    euid = os.geteuid()
    return "root" if euid == 0 else f"you (uid {euid}) or root"


@dataclass
class SafeDir:
    """An open, verified directory: use ``fd`` (``dir_fd=``) for every access inside.

    ``path`` is the path asked for (for messages); ``real`` the resolved absolute path
    walked through trusted directories only, which SQLite may open by name.
    """

    fd: int
    path: Path
    real: str

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def shown(self, name: str) -> Path:
        """``name`` inside this directory, for messages."""
        return self.path / name

    def __enter__(self) -> SafeDir:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


# -- directories ------------------------------------------------------------------------------
def open_state_dir(path: Path, *, create: bool) -> SafeDir | None:
    """The state directory, verified; None when it does not exist and ``create`` is off.

    With ``create``, missing ancestors are made 0755 and the directory itself 0700.

    Raises:
        StateUnsafe: the directory or one of its ancestors fails the checks above.
        PermissionDenied: this user may not reach or create it.
        HostError: any other file-system error.
    """
    absolute = PurePosixPath(os.path.abspath(path))
    if absolute.name == "":
        raise UsageError(f"'{path}' cannot be a state directory",
                         hint="set VFIOCTL_STATE_DIR to a directory of its own")
    walked = _walk(absolute.parent, create=create, shown=Path(path))
    if walked is None:
        return None
    parent_fd, parent_real = walked
    try:
        fd = _open_final_dir(parent_fd, absolute.name, create=create,
                             shown=Path(path), what="state directory")
    finally:
        os.close(parent_fd)
    if fd is None:
        return None
    return SafeDir(fd, Path(path), os.path.join(parent_real, absolute.name))


def open_subdir(parent: SafeDir, name: str, *, create: bool, what: str) -> SafeDir | None:
    """A directory inside a verified one (``vf-tokens/``), held to the same rules."""
    fd = _open_final_dir(parent.fd, name, create=create, shown=parent.shown(name),
                         what=what)
    if fd is None:
        return None
    return SafeDir(fd, parent.shown(name), os.path.join(parent.real, name))


def _walk(path: PurePosixPath, *, create: bool, shown: Path) -> tuple[int, str] | None:
    """Open ``path`` from ``/`` down, checking every directory on the way.

    Returns its descriptor and its resolved path, or None if a component is missing
    (without ``create``).
    """
    todo = list(path.parts[1:])
    real: list[str] = []
    fd = _open_root()
    steps = 0
    try:
        while todo:
            steps += 1
            if steps > _MAX_STEPS:
                raise wrap_oserror(OSError(errno.ELOOP, os.strerror(errno.ELOOP)),
                                   f"cannot resolve the state directory {shown}",
                                   path=shown)
            name = todo.pop(0)
            if name in ("", "."):
                continue
            here = "/" + "/".join([*real, name])
            try:
                next_fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    return None
                _mkdir(fd, name, _PARENT_MODE, here)
                todo.insert(0, name)
                continue
            except OSError as err:
                target = _symlink_target(fd, name, err)
                if target is None:
                    raise wrap_oserror(err, f"cannot open {here} (on the way to the "
                                       f"state directory {shown})", path=here) from err
                if target.is_absolute():
                    os.close(fd)
                    fd, real = -1, []
                    fd = _open_root()
                todo[:0] = [p for p in target.parts if p != "/"]
                continue
            if name == "..":
                real = real[:-1]
            else:
                real.append(name)
            os.close(fd)
            fd = next_fd
            _check_dir(os.fstat(fd), "/" + "/".join(real), final=False, what="directory")
        result = fd, "/" + "/".join(real)
        fd = -1
        return result
    finally:
        if fd >= 0:
            os.close(fd)


def _open_root() -> int:
    fd = os.open("/", _DIR_FLAGS)
    try:
        _check_dir(os.fstat(fd), "/", final=False, what="directory")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _symlink_target(dir_fd: int, name: str, err: OSError) -> PurePosixPath | None:
    """Where ``name`` points, if opening it failed because it is a symlink."""
    if err.errno not in (errno.ELOOP, errno.ENOTDIR):
        return None
    try:
        if not stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode):
            return None
        return PurePosixPath(os.readlink(name, dir_fd=dir_fd))
    except OSError:
        return None


def _open_final_dir(parent_fd: int, name: str, *, create: bool, shown: Path,
                    what: str) -> int | None:
    """Open (or make, 0700) the directory ``name`` itself: never through a symlink."""
    created = False
    for _ in range(3):      # a concurrent creator or remover: look again
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
            break
        except FileNotFoundError:
            if not create:
                return None
            created = _mkdir(parent_fd, name, STATE_DIR_MODE, shown)
        except OSError as err:
            if err.errno in (errno.ELOOP, errno.ENOTDIR):
                kind = "a symbolic link" if _is_link(parent_fd, name) else "not a directory"
                raise StateUnsafe(f"{what} {shown} is {kind}, not a directory of its own",
                                  path=str(shown),
                                  hint="remove it (vfioctl makes a new one)") from None
            raise wrap_oserror(err, f"cannot open the {what} {shown}", path=shown) from err
    else:
        raise wrap_oserror(OSError(errno.ENOENT, os.strerror(errno.ENOENT)),
                           f"cannot create the {what} {shown}", path=shown)
    try:
        if created:
            os.fchmod(fd, STATE_DIR_MODE)       # exactly 0700, whatever the umask
        _check_dir(os.fstat(fd), str(shown), final=True, what=what)
    except OSError as err:
        os.close(fd)
        raise wrap_oserror(err, f"cannot set up the {what} {shown}", path=shown) from err
    except BaseException:
        os.close(fd)
        raise
    return fd


def _mkdir(parent_fd: int, name: str, mode: int, shown: object) -> bool:
    """Make ``name``; False if someone else just did (the caller checks what it is)."""
    try:
        os.mkdir(name, mode, dir_fd=parent_fd)
    except FileExistsError:
        return False
    except OSError as err:
        raise wrap_oserror(err, f"cannot create {shown}", path=shown) from err
    return True


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode)
    except OSError:
        return False


def _check_dir(st: os.stat_result, shown: str, *, final: bool, what: str) -> None:
    """An owner we trust, and no write access for anyone else (sticky ancestors aside:
    there others cannot rename or remove our entries)."""
    if st.st_uid not in trusted_uids():
        raise StateUnsafe(
            f"{what} {shown} is owned by uid {st.st_uid}, not {_not_whom()}", path=shown,
            hint="remove it or fix its owner" if final else _REDIRECT_HINT)
    writable = stat.S_IMODE(st.st_mode) & (stat.S_IWGRP | stat.S_IWOTH)
    if writable and (final or not st.st_mode & stat.S_ISVTX):
        who = "group and others" if writable == 0o022 else (
            "its group" if writable == stat.S_IWGRP else "others")
        raise StateUnsafe(
            f"{what} {shown} is writable by {who} (mode {stat.S_IMODE(st.st_mode):04o})",
            path=shown, hint="remove it, or 'chmod go-w' it if nobody else wrote in it"
            if final else _REDIRECT_HINT)


# -- files ------------------------------------------------------------------------------------
def open_file(d: SafeDir, name: str, flags: int, *, mode: int = 0o600,
              what: str) -> int | None:
    """Open ``name`` in ``d`` (never through a symlink) and check what was opened.

    Returns the descriptor, or None when the file does not exist and ``flags`` has no
    ``O_CREAT``.

    Raises:
        StateUnsafe: it is a symlink, not a regular file, has another owner or links.
        PermissionDenied, HostError: it cannot be opened.
    """
    shown = d.shown(name)
    try:
        fd = os.open(name, flags | _FILE_FLAGS, mode, dir_fd=d.fd)
    except FileNotFoundError:
        if flags & os.O_CREAT:
            raise
        return None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise StateUnsafe(f"{what} {shown} is a symbolic link", path=str(shown),
                              hint=_REMOVE_HINT) from None
        raise wrap_oserror(err, f"cannot open {what} {shown}", path=shown) from err
    try:
        check_file(os.fstat(fd), shown, what=what)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_entry(d: SafeDir, name: str, *, what: str) -> bool:
    """Whether ``name`` exists in ``d``, after checking it as :func:`open_file` does
    (``lstat``): for files another program opens by name (SQLite's -wal and -shm)."""
    try:
        st = os.lstat(name, dir_fd=d.fd)
    except FileNotFoundError:
        return False
    except OSError as err:
        raise wrap_oserror(err, f"cannot look at {what} {d.shown(name)}",
                           path=d.shown(name)) from err
    check_file(st, d.shown(name), what=what)
    return True


def check_file(st: os.stat_result, shown: Path, *, what: str) -> None:
    """A regular file, a trusted owner, one link; or StateUnsafe."""
    if stat.S_ISLNK(st.st_mode):
        problem = "is a symbolic link"
    elif not stat.S_ISREG(st.st_mode):
        problem = "is not a regular file"
    elif st.st_uid not in trusted_uids():
        problem = f"is owned by uid {st.st_uid}, not {_not_whom()}"
    elif st.st_nlink != 1:
        problem = f"has {st.st_nlink} hard links (it may be another file's alias)"
    else:
        return
    raise StateUnsafe(f"{what} {shown} {problem}", path=str(shown), hint=_REMOVE_HINT)


def fsync_dir(d: SafeDir) -> None:
    """Make a rename or unlink in ``d`` durable."""
    try:
        os.fsync(d.fd)
    except OSError as err:
        raise wrap_oserror(err, f"cannot sync {d.path}", path=d.path) from err
