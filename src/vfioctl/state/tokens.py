"""State: vfioctl's copies of VF tokens — one 0600 file per PF in a 0700 directory.

The kernel never gives a VF token back (docs/kernel.md, "VF token"), so the copy here is
the only one. Setting one is journaled (:mod:`vfioctl.manager.tokens`): the new token is
*staged* in a new 0600 file (fsynced), the journal names that file (never the secret),
the kernel is told, and the staged file is renamed into place; recovery completes the
rename or discards the file, and discards staged files no journal names
(:meth:`TokenStore.list_staged`).

Everything happens through a descriptor of the verified ``vf-tokens/`` directory
(:mod:`vfioctl.state.secure`): a directory swapped for a symlink between two calls is
refused, never followed, and a file is trusted only if it is ours, 0600, with one link.
Staged files are handed out by *name* (``.staged-PF-PID-RANDOM``), which only ever means
a file inside that directory. A stored file that does not parse is a one-line
:class:`~vfioctl.errors.HostError` naming the file, never echoing what it holds (it is,
or is close to, the secret).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from vfioctl.address import PciAddress
from vfioctl.errors import HostError, InternalError, VfioctlError, wrap_oserror
from vfioctl.secret import VfToken
from vfioctl.state.secure import (
    SafeDir,
    StateUnsafe,
    fsync_dir,
    open_file,
    open_state_dir,
    open_subdir,
)

TOKENS_DIR: Final = "vf-tokens"
DIR_MODE: Final = 0o700
FILE_MODE: Final = 0o600
STAGED_PREFIX: Final = ".staged-"
_STAGED_NAME: Final = re.compile(r"\.staged-[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]"
                                 r"-[0-9]+-[0-9a-f]{16}")
_MAX_SIZE: Final = 4096


@dataclass(frozen=True)
class StoredToken:
    """The stored copy of a PF's token, with what is needed to tell if it is stale."""

    pf: PciAddress
    token: VfToken
    set_at: str
    held_since: str | None      # vfioctl's record of the PF ('detach') when it was set


class TokenStore:
    """``STATE_DIR/vf-tokens``: one 0600 file per PF, in a 0700 directory.

    Constructing one does no I/O; reading never creates the directory. Every method
    raises StateUnsafe (exit 77) for a directory or file another user could have planted
    or redirected, PermissionDenied when this user may not use it, HostError otherwise.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.directory = self.state_dir / TOKENS_DIR

    def path(self, pf: PciAddress) -> Path:
        """Where ``pf``'s token is kept, for messages (access goes through the store)."""
        return self.directory / str(pf)

    # -- staging (the journaled 'token set') --------------------------------------------
    def stage(self, entry: StoredToken) -> str:
        """Write ``entry`` to a new 0600 file (fsynced, and its directory too) and return
        the file's name inside ``vf-tokens/``, for the journal to name."""
        name = f"{STAGED_PREFIX}{entry.pf}-{os.getpid()}-{secrets.token_hex(8)}"
        with self._dir(create=True) as d:
            assert d is not None
            _write_new(d, name, _encode(entry), what=f"the staged token file for {entry.pf}")
        return name

    def load_staged(self, name: str) -> StoredToken:
        """The token in a staged file.

        Raises:
            HostError: the name is not a staged file's, or it is gone or malformed.
        """
        _check_staged_name(name, self.directory)
        with self._dir(create=False) as d:
            return self._staged(d, name)

    def commit_staged(self, name: str, pf: PciAddress) -> Path:
        """Make a staged file ``pf``'s stored token: checked, renamed in place within the
        directory, the directory fsynced. Returns the final path, for messages.

        Raises:
            HostError: the staged file is gone, malformed, for another PF, or the rename
                failed.
        """
        _check_staged_name(name, self.directory)
        with self._dir(create=False) as d:
            staged = self._staged(d, name)
            assert d is not None
            if staged.pf != pf:
                raise HostError(f"staged token file {d.shown(name)} is not for PF {pf}",
                                path=str(d.shown(name)),
                                hint="run 'vfioctl token set' again")
            try:
                os.rename(name, str(pf), src_dir_fd=d.fd, dst_dir_fd=d.fd)
            except OSError as err:
                raise wrap_oserror(err, f"cannot store the token file for {pf}",
                                   path=self.path(pf)) from err
            fsync_dir(d)
        return self.path(pf)

    def _staged(self, d: SafeDir | None, name: str) -> StoredToken:
        entry = None if d is None else _load(d, name, pf=None)
        if entry is None:
            raise HostError(f"staged token file {self.directory / name} is gone",
                            path=str(self.directory / name),
                            hint="run 'vfioctl token set' again")
        return entry

    def discard_staged(self, name: str) -> None:
        """Remove a staged file; one already gone is fine (recovery may repeat this)."""
        _check_staged_name(name, self.directory)
        with self._dir(create=False) as d:
            if d is not None and _unlink(d, name, what="staged token file"):
                fsync_dir(d)

    def list_staged(self) -> list[str]:
        """The names of every staged file (to discard those no journal names)."""
        with self._dir(create=False) as d:
            if d is None:
                return []
            try:
                names = os.listdir(d.fd)
            except OSError as err:
                raise wrap_oserror(err, f"cannot list {self.directory}",
                                   path=self.directory) from err
        return sorted(n for n in names if _STAGED_NAME.fullmatch(n))

    # -- stored tokens --------------------------------------------------------------------
    def load(self, pf: PciAddress) -> StoredToken | None:
        """The stored token of ``pf``, or None.

        Raises:
            StateUnsafe: the file is someone else's, readable by others than its owner,
                not a regular file, or a link (refused rather than trusted or spread).
            HostError: the file cannot be read or parsed.
        """
        with self._dir(create=False) as d:
            return None if d is None else _load(d, str(pf), pf=pf)

    def remove(self, pf: PciAddress) -> bool:
        """Forget ``pf``'s stored token; False if there was none."""
        with self._dir(create=False) as d:
            if d is None or not _unlink(d, str(pf), what="token file"):
                return False
            fsync_dir(d)
        return True

    # -- the former API (tmp paths): kept for callers not yet journaling 'token set' ---
    def prepare(self, entry: StoredToken) -> Path:
        """:meth:`stage`, as a path (for messages and :meth:`commit`)."""
        return self.directory / self.stage(entry)

    def commit(self, tmp: Path, pf: PciAddress) -> Path:
        """:meth:`commit_staged` of a :meth:`prepare` result."""
        return self.commit_staged(self._staged_name(tmp), pf)

    def discard(self, tmp: Path) -> None:
        """:meth:`discard_staged` of a :meth:`prepare` result, ignoring errors (it runs
        while another error is on its way)."""
        with contextlib.suppress(VfioctlError):
            self.discard_staged(self._staged_name(tmp))

    def _staged_name(self, tmp: Path) -> str:
        if Path(tmp).parent != self.directory:
            raise InternalError(f"{tmp} is not a staged token file of {self.directory}")
        return Path(tmp).name

    @contextlib.contextmanager
    def _dir(self, *, create: bool) -> Iterator[SafeDir | None]:
        """The verified ``vf-tokens/`` (None if it or the state directory is missing)."""
        state = open_state_dir(self.state_dir, create=create)
        if state is None:
            yield None
            return
        with state:
            tokens = open_subdir(state, TOKENS_DIR, create=create, what="token directory")
        if tokens is None:
            yield None
            return
        with tokens:
            _tighten(tokens)
            yield tokens


# -- helpers ------------------------------------------------------------------------------------
def _check_staged_name(name: str, directory: Path) -> None:
    """A journal's word for a staged file must name one, inside the directory only."""
    if not _STAGED_NAME.fullmatch(name):
        raise HostError(f"'{name}' is not the name of a staged token file in {directory}",
                        path=str(directory),
                        hint="the state database may be damaged: move it aside")


def _tighten(d: SafeDir) -> None:
    """``vf-tokens/`` is 0700: group/other read or search bits of our own are dropped
    (write bits were refused by the check: someone may have planted files)."""
    try:
        st = os.fstat(d.fd)
        if stat.S_IMODE(st.st_mode) & 0o077 and st.st_uid == os.geteuid():
            os.fchmod(d.fd, DIR_MODE)
    except OSError as err:
        raise wrap_oserror(err, f"cannot make {d.path} private", path=d.path) from err


def _encode(entry: StoredToken) -> bytes:
    doc = {"pf": str(entry.pf), "vf_token": entry.token.reveal(), "set_at": entry.set_at,
           "held_since": entry.held_since}
    return (json.dumps(doc) + "\n").encode()


def _write_new(d: SafeDir, name: str, data: bytes, *, what: str) -> None:
    """A new file (never an existing one, never through a link), 0600, fsynced."""
    fd = None
    try:
        fd = open_file(d, name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode=FILE_MODE,
                       what="token file")
        assert fd is not None
        os.fchmod(fd, FILE_MODE)     # whatever the umask says
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError as err:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=d.fd)
        raise wrap_oserror(err, f"cannot write {what}", path=d.shown(name)) from err
    finally:
        if fd is not None:
            os.close(fd)
    fsync_dir(d)


def _load(d: SafeDir, name: str, *, pf: PciAddress | None) -> StoredToken | None:
    """The token in ``name``, or None if there is no such file; ``pf`` (for a stored
    file) is the PF it must be for."""
    shown = d.shown(name)
    fd = open_file(d, name, os.O_RDONLY, what="token file")
    if fd is None:
        return None
    try:
        _check_private(os.fstat(fd), shown, pf)
        raw = _read_small(fd)
    except OSError as err:
        raise wrap_oserror(err, f"cannot read the token file {shown}", path=shown) from err
    finally:
        os.close(fd)
    entry = _decode(raw, shown)
    if pf is not None and entry.pf != pf:
        raise _malformed(shown)
    return entry


def _check_private(st: os.stat_result, shown: Path, pf: PciAddress | None) -> None:
    """Ours (a token someone else wrote is theirs, not the kernel's), and 0600."""
    again = f"'vfioctl token set {pf}'" if pf is not None else "'vfioctl token set'"
    if st.st_uid != os.geteuid():
        raise StateUnsafe(
            f"token file {shown} is owned by uid {st.st_uid}, not "
            f"{'root' if os.geteuid() == 0 else f'uid {os.geteuid()}'}; refusing a VF "
            "token another user could have chosen", path=str(shown),
            hint=f"remove it, then {again} sets a new one")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise StateUnsafe(
            f"token file {shown} has mode {mode:04o}; refusing to use a VF token others "
            "may have read", path=str(shown),
            hint=f"it may have leaked: {again} sets a new one (stored 0600)")


def _read_small(fd: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size <= _MAX_SIZE:
        chunk = os.read(fd, _MAX_SIZE + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _decode(raw: bytes, shown: Path) -> StoredToken:
    if len(raw) > _MAX_SIZE:
        raise _malformed(shown)
    try:
        doc: Any = json.loads(raw)
        if not isinstance(doc, dict):
            raise ValueError("not an object")
        pf, token, set_at, held = (doc.get(k) for k in
                                   ("pf", "vf_token", "set_at", "held_since"))
        if not (isinstance(pf, str) and isinstance(token, str)
                and isinstance(set_at, str) and (held is None or isinstance(held, str))):
            raise ValueError("wrong types")
        datetime.fromisoformat(set_at)
        return StoredToken(PciAddress.parse(pf), VfToken.parse(token), set_at, held)
    except (ValueError, RecursionError, VfioctlError):
        raise _malformed(shown) from None


def _malformed(shown: Path) -> HostError:
    # never echo the content: it is (or is close to) the secret
    return HostError(f"token file {shown} holds no valid VF token", path=str(shown),
                     hint="remove it and run 'vfioctl token set' again")


def _unlink(d: SafeDir, name: str, *, what: str) -> bool:
    try:
        os.unlink(name, dir_fd=d.fd)
    except FileNotFoundError:
        return False
    except OSError as err:
        if err.errno == errno.EISDIR:
            raise StateUnsafe(f"{what} {d.shown(name)} is a directory",
                              path=str(d.shown(name)), hint="remove it") from err
        raise wrap_oserror(err, f"cannot remove {what} {d.shown(name)}",
                           path=d.shown(name)) from err
    return True
