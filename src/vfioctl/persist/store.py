"""Reading and writing ``/etc/vfioctl``: the configuration file and persisted VF tokens.

Root reads these files at boot and acts on them, so they get the same protection as the
runtime state (:mod:`vfioctl.state.secure`): the directory is walked from ``/`` without
following a planted link, must be a real directory owned by root (or by the user, for a
simulated host) that nobody else may write, and files are opened relative to it with
``O_NOFOLLOW`` and checked after opening. The configuration is replaced atomically
(temporary file, fsync, rename, fsync of the directory), so a crash leaves the old file
or the new one, never half of one.

The directory itself is 0755 (anyone may read what is persisted: ``persist list``,
``status``, ``doctor``); VF tokens are secrets and live apart, in ``vf-tokens/`` (0700)
with one 0600 file per PF, exactly as the runtime token store keeps them
(:class:`vfioctl.state.tokens.TokenStore`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from typing import Final

from vfioctl.address import PciAddress
from vfioctl.errors import ConfigError, HostError, wrap_oserror
from vfioctl.persist.config import Config, parse, render
from vfioctl.persist.paths import CONFIG_NAME, EtcPaths
from vfioctl.secret import VfToken
from vfioctl.state.secure import fsync_dir, open_file, open_state_dir
from vfioctl.state.tokens import StoredToken, TokenStore

CONFIG_MODE: Final = 0o644
DIR_MODE: Final = 0o755
MAX_CONFIG: Final = 4 << 20


def load(paths: EtcPaths) -> Config:
    """The persisted configuration; empty when nothing was ever persisted.

    Raises:
        ConfigError: the file does not parse (exit 3).
        StateUnsafe / PermissionDenied: it, or its directory, could have been planted or
            cannot be read (exit 77). HostError: another read failure.
    """
    d = open_state_dir(paths.config_dir, create=False)
    if d is None:
        return Config()
    with d:
        fd = open_file(d, CONFIG_NAME, os.O_RDONLY, what="persisted configuration")
        if fd is None:
            return Config()
        with os.fdopen(fd, "rb") as f:
            raw = f.read(MAX_CONFIG + 1)
    if len(raw) > MAX_CONFIG:
        raise ConfigError(f"persisted configuration {paths.config} is larger than "
                          f"{MAX_CONFIG >> 20} MiB", hint="it is not vfioctl's file: "
                          "move it away")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"persisted configuration {paths.config} is not UTF-8 text "
                          f"(byte {err.start})", hint="the file is TOML, which is UTF-8"
                          ) from None
    return parse(text, str(paths.config))


def save(paths: EtcPaths, config: Config) -> None:
    """Replace the configuration file with ``config`` (atomically).

    Raises:
        StateUnsafe / PermissionDenied (exit 77), HostError.
    """
    data = render(config).encode()
    d = open_state_dir(paths.config_dir, create=True)
    assert d is not None
    with d:
        st = os.fstat(d.fd)
        if st.st_mode & 0o777 != DIR_MODE:
            os.fchmod(d.fd, DIR_MODE)       # created 0700 by the walk; tokens are apart
        tmp = f".{CONFIG_NAME}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = open_file(d, tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode=CONFIG_MODE,
                       what="new persisted configuration")
        assert fd is not None
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, CONFIG_NAME, src_dir_fd=d.fd, dst_dir_fd=d.fd)
        except OSError as err:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=d.fd)
            raise wrap_oserror(err, f"cannot write {paths.config}", path=paths.config
                               ) from None
        fsync_dir(d)


def tokens(paths: EtcPaths) -> TokenStore:
    """The persisted VF tokens (``/etc/vfioctl/vf-tokens``, 0700, files 0600)."""
    return TokenStore(paths.config_dir)


def save_token(paths: EtcPaths, pf: PciAddress, token: VfToken, set_at: str) -> None:
    """Keep ``token`` as ``pf``'s persisted token (staged, fsynced, renamed in place)."""
    store = tokens(paths)
    name = store.stage(StoredToken(pf, token, set_at, None))
    try:
        store.commit_staged(name, pf)
    except HostError:
        store.discard_staged(name)
        raise


def load_token(paths: EtcPaths, pf: PciAddress) -> VfToken | None:
    """The persisted token of ``pf`` (never printed: a :class:`VfToken`)."""
    stored = tokens(paths).load(pf)
    return None if stored is None else stored.token


__all__ = ["load", "load_token", "save", "save_token", "tokens"]
