"""The token handoff: how a VF token gets from vfioctl's store (root's, 0600) to the
emulator wrapper (which runs as QEMU's user) without a command line, an environment
or a libvirt log on the way.

At ``start begin`` — the last hook call before libvirt executes the emulator — the hook
writes ``RUN_DIR/UUID.json``: the domain's token-carrying VFs and their tokens, a
regular file readable by QEMU's user only (0400, owned by the uid of the domain's DAC
``<seclabel>``). The wrapper reads it and hands the tokens to QEMU through a pipe
(:mod:`vfioctl.libvirt.emulator`). The hook removes the file at ``started`` (QEMU has
read its configuration by then), and at ``stopped``/``release`` and at the next
``prepare`` in case a start failed in between: a token rests on disk (tmpfs: /run) for
the seconds libvirt takes to start QEMU.

``RUN_DIR`` is ``VFIOCTL_LIBVIRT_RUN_DIR`` or ``/run/vfioctl-libvirt`` (beside the
default state directory /run/vfioctl, which is 0700 and so closed to QEMU's user): walked
from ``/`` under the state directory's rules (no planted link followed, no directory
another user may change), root's, mode 0711 (QEMU's user may open a file it knows the
name of, and list nothing).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from vfioctl.address import PciAddress
from vfioctl.errors import wrap_oserror
from vfioctl.secret import VfToken
from vfioctl.state.secure import SafeDir, open_state_dir

DEFAULT_RUN_DIR: Final = Path("/run/vfioctl-libvirt")
RUN_DIR_ENV: Final = "VFIOCTL_LIBVIRT_RUN_DIR"
RUN_DIR_MODE: Final = 0o711
FILE_MODE: Final = 0o400


def run_dir() -> Path:
    """Where handoff files live (``VFIOCTL_LIBVIRT_RUN_DIR``, else /run/vfioctl-libvirt)."""
    env = os.environ.get(RUN_DIR_ENV)
    return Path(env) if env else DEFAULT_RUN_DIR


def _name(uuid: str) -> str:
    return f"{uuid}.json"


def _open(directory: Path, *, create: bool) -> SafeDir | None:
    d = open_state_dir(directory, create=create)
    if d is not None and create:
        os.fchmod(d.fd, RUN_DIR_MODE)
    return d


def write_handoff(directory: Path, uuid: str, tokens: Mapping[PciAddress, VfToken], *,
                  uid: int | None, gid: int | None) -> Path:
    """Write the handoff file of domain ``uuid`` (replacing an older one) for QEMU's
    ``uid``/``gid`` (None: this process's own). Returns its path.

    Raises:
        StateUnsafe / PermissionDenied: the run directory fails the checks.
        HostError: it cannot be written.
    """
    doc = {"devices": [{"host": str(addr), "vf-token": token.reveal()}
                       for addr, token in sorted(tokens.items())]}
    data = json.dumps(doc).encode()
    d = _open(directory, create=True)
    assert d is not None
    name, tmp = _name(uuid), f".{uuid}.tmp"
    path = directory / name
    with d:
        for stale in (tmp, name):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stale, dir_fd=d.fd)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, FILE_MODE, dir_fd=d.fd)
        except OSError as err:
            raise wrap_oserror(err, f"cannot write {path}", path=path) from err
        try:
            os.fchmod(fd, FILE_MODE)
            if uid is not None and (uid, gid) != (os.geteuid(), os.getegid()):
                os.fchown(fd, uid, -1 if gid is None else gid)
            os.write(fd, data)
            os.fsync(fd)
            os.rename(tmp, name, src_dir_fd=d.fd, dst_dir_fd=d.fd)
        except OSError as err:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=d.fd)
            raise wrap_oserror(err, f"cannot write {path}", path=path) from err
        finally:
            os.close(fd)
    return path


def remove_handoff(directory: Path, uuid: str) -> bool:
    """Remove domain ``uuid``'s handoff file; True if there was one. A missing run
    directory is no error (nothing was ever handed off)."""
    d = _open(directory, create=False)
    if d is None:
        return False
    with d:
        try:
            os.unlink(_name(uuid), dir_fd=d.fd)
        except FileNotFoundError:
            return False
        except OSError as err:
            raise wrap_oserror(err, f"cannot remove {directory / _name(uuid)}",
                               path=directory / _name(uuid)) from err
    return True


__all__ = ["DEFAULT_RUN_DIR", "RUN_DIR_ENV", "remove_handoff", "run_dir", "write_handoff"]
