"""State: vfioctl's copies of VF tokens — one 0600 file per PF in a 0700 directory.

The kernel never gives a VF token back (docs/kernel.md, "VF token"), so the copy here is
the only one: it is written to a staged file (0600, fsynced) before the kernel is told,
and renamed into place after, and the journal names the staged file, never the secret
(:mod:`vfioctl.manager.tokens` runs that order; recovery completes it).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from vfioctl.address import PciAddress
from vfioctl.errors import HostError, PermissionDenied, VfioctlError, wrap_oserror
from vfioctl.secret import VfToken

TOKENS_DIR: Final = "vf-tokens"
DIR_MODE: Final = 0o700
FILE_MODE: Final = 0o600


@dataclass(frozen=True)
class StoredToken:
    """The stored copy of a PF's token, with what is needed to tell if it is stale."""

    pf: PciAddress
    token: VfToken
    set_at: str
    held_since: str | None      # vfioctl's record of the PF ('detach') when it was set


class TokenStore:
    """``STATE_DIR/vf-tokens``: one 0600 file per PF, in a 0700 directory."""

    def __init__(self, state_dir: Path) -> None:
        self.directory = Path(state_dir) / TOKENS_DIR

    def path(self, pf: PciAddress) -> Path:
        return self.directory / str(pf)

    def _ensure_dir(self) -> None:
        try:
            self.directory.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            self.directory.mkdir(mode=DIR_MODE, exist_ok=True)
            st = os.lstat(self.directory)
            if not stat.S_ISDIR(st.st_mode):
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
            if stat.S_IMODE(st.st_mode) != DIR_MODE:
                os.chmod(self.directory, DIR_MODE)
        except OSError as err:
            raise wrap_oserror(err, f"cannot create the token directory {self.directory}",
                               path=self.directory) from err

    def prepare(self, entry: StoredToken) -> Path:
        """Write ``entry`` to a new 0600 temporary file beside its final name."""
        self._ensure_dir()
        tmp = self.directory / f".{entry.pf}.{os.getpid()}.tmp"
        doc = {"pf": str(entry.pf), "vf_token": entry.token.reveal(),
               "set_at": entry.set_at, "held_since": entry.held_since}
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, FILE_MODE)
            try:
                os.fchmod(fd, FILE_MODE)     # whatever the umask says
                os.write(fd, (json.dumps(doc) + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as err:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise wrap_oserror(err, f"cannot write the token file for {entry.pf}",
                               path=self.directory) from err
        return tmp

    def commit(self, tmp: Path, pf: PciAddress) -> Path:
        final = self.path(pf)
        try:
            os.replace(tmp, final)
        except OSError as err:
            raise wrap_oserror(err, f"cannot store the token file for {pf}",
                               path=final) from err
        return final

    @staticmethod
    def discard(tmp: Path) -> None:
        with contextlib.suppress(OSError):
            os.unlink(tmp)

    def load(self, pf: PciAddress) -> StoredToken | None:
        """The stored token of ``pf``, or None.

        Raises:
            PermissionDenied: the file is readable by others than its owner, or is not
                a regular file (the copy is refused rather than trusted or spread).
            HostError: the file cannot be read or parsed.
        """
        path = self.path(pf)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise wrap_oserror(err, f"cannot read the token file {path}", path=path) \
                from err
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) & 0o077:
                raise PermissionDenied(
                    f"token file {path} has mode {stat.S_IMODE(st.st_mode):04o}; refusing "
                    "to use a VF token others may have read", path=str(path),
                    hint=f"it may have leaked: 'vfioctl token set {pf}' sets a new one "
                    "(stored 0600)")
            raw = os.read(fd, 4096)
        finally:
            os.close(fd)
        try:
            doc = json.loads(raw)
            return StoredToken(PciAddress.parse(doc["pf"]), VfToken.parse(doc["vf_token"]),
                               str(doc["set_at"]), doc.get("held_since"))
        except (ValueError, KeyError, TypeError, VfioctlError):
            # never echo the content: it is (or is close to) the secret
            raise HostError(f"token file {path} holds no valid VF token", path=str(path),
                            hint="remove it and run 'vfioctl token set' again") from None

    def remove(self, pf: PciAddress) -> bool:
        try:
            os.unlink(self.path(pf))
        except FileNotFoundError:
            return False
        except OSError as err:
            raise wrap_oserror(err, f"cannot remove the token file of {pf}",
                               path=self.path(pf)) from err
        return True


