"""Simulator: host description files <-> kernels, and the state section written back.

A host file is the hardware description followed, once vfioctl changed something, by a
``[state]`` table below :data:`STATE_MARKER` (:mod:`vfioctl.sim.state`). Only that tail
is rewritten, so comments and layout of the hand-written hardware part survive every
save. Without ``[state]`` the kernel boots: every device is probed as at power-on.

A host file is user input: whatever is wrong with it (not UTF-8, not TOML, a value of
the wrong type or range, a state the kernel cannot be in) is a :class:`ConfigError`
(exit 3) naming the file and the key, and a file the user may not read is a
:class:`PermissionDenied` (exit 77) naming the path.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tomllib
from importlib import resources
from pathlib import Path

import tomli_w

from vfioctl.errors import ConfigError, NotFound, PermissionDenied
from vfioctl.sim.kernel import SimKernel
from vfioctl.sim.model import HostSpec
from vfioctl.sim.parse import parse_host
from vfioctl.sim.state import apply_state, dump_state

STATE_MARKER = "# ---- vfioctl state: written by vfioctl on every change; edit the " \
    "hardware above, not this ----"
BUNDLED_PACKAGE = "vfioctl.sim"
MAX_HOST_FILE = 64 << 20      # a generated 4096-function host is about 1 MiB


def bundled_names() -> list[str]:
    """Names of the hosts shipped in the package (``sim:NAME``)."""
    base = resources.files(BUNDLED_PACKAGE) / "hosts"
    return sorted(p.name[:-5] for p in base.iterdir() if p.name.endswith(".toml"))


def bundled_text(name: str) -> str:
    """The description of a bundled host.

    Raises:
        NotFound: no bundled host of that name.
    """
    if name not in bundled_names():
        raise NotFound(f"simulated host '{name}' not found",
                       hint="'vfioctl sim list' shows the bundled hosts; give a path for "
                       "a host file (sim:./myhost.toml)")
    return (resources.files(BUNDLED_PACKAGE) / "hosts" / f"{name}.toml").read_text()


def parse_text(text: str, name: str) -> HostSpec:
    """Parse a host description.

    Raises:
        ConfigError: not TOML, or not a valid host (the message names the entry).
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"host file {name} is not valid TOML: {err}",
                          hint="see docs/simulator.md for the host format") from None
    except RecursionError:
        raise ConfigError(f"host file {name} is not valid TOML: arrays or tables nested "
                          "too deeply") from None
    return parse_host(doc, name)


def decode(raw: bytes, name: str) -> str:
    """The text of a host file.

    Raises:
        ConfigError: not UTF-8 (the message says where).
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        col = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise ConfigError(f"host file {name} is not UTF-8 text: byte "
                          f"{raw[err.start]:#04x} at line {line}, column {col}",
                          hint="host files are TOML, which is UTF-8") from None


def split_state(text: str) -> str:
    """The hardware part of a host file (everything above the state marker)."""
    idx = text.find(STATE_MARKER)
    return text if idx < 0 else text[:idx].rstrip("\n") + "\n"


def kernel_from_spec(spec: HostSpec) -> SimKernel:
    """A kernel for ``spec``: booted, or restored from the spec's ``[state]``.

    Raises:
        ConfigError: the hardware cannot be built, or the state does not fit it.
    """
    kernel = SimKernel(spec)
    if spec.state is None:
        kernel.boot()
    else:
        apply_state(kernel, spec.state)
    return kernel


def render_file(hardware_text: str, k: SimKernel) -> str:
    """Hardware text + marker + the current state."""
    return (hardware_text.rstrip("\n") + "\n\n" + STATE_MARKER + "\n"
            + tomli_w.dumps({"state": dump_state(k)}))


Stamp = tuple[int, int, int]


def read_host_file(path: Path, *, unless_digest: str | None = None
                   ) -> tuple[str, HostSpec, Stamp, str] | None:
    """``(hardware_text, spec, stamp, digest)`` of a host file; None when its content
    hashes to ``unless_digest`` (nothing changed: no need to parse).

    The stamp (inode, mtime, size) is taken from the very file that was read: saves
    replace the file by rename, so an open file never changes under the reader, and a
    stamp taken separately could belong to a newer file than the text.

    Raises:
        NotFound: the file does not exist.
        ConfigError: it is not a valid host description.
    """
    try:
        # O_NONBLOCK: a FIFO planted as the host file must not hang the open
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise ConfigError(f"simulated host file {path} is not a regular file",
                                  hint="give the path of a host file (TOML)")
            raw = f.read(MAX_HOST_FILE + 1)
    except FileNotFoundError:
        raise NotFound(f"simulated host file {path} not found",
                       hint="'vfioctl sim copy workstation FILE' writes one to start from"
                       ) from None
    except PermissionError as err:
        raise PermissionDenied(f"cannot read simulated host file {path}", path=str(path),
                               errno=err.errno or errno.EACCES,
                               hint="run vfioctl as a user who may read it, or copy it "
                               "('vfioctl sim copy')") from None
    except IsADirectoryError:
        raise ConfigError(f"simulated host file {path} is a directory",
                          hint="give the path of a host file (TOML)") from None
    except OSError as err:
        raise ConfigError(f"cannot read simulated host file {path}: "
                          f"{os.strerror(err.errno) if err.errno else err}",
                          hint="give the path of a host file (TOML)") from None
    if len(raw) > MAX_HOST_FILE:
        raise ConfigError(f"simulated host file {path} is larger than "
                          f"{MAX_HOST_FILE >> 20} MiB", hint="give the path of a host file")
    digest = hashlib.sha256(raw).hexdigest()
    if digest == unless_digest:
        return None
    text = decode(raw, str(path))
    spec = parse_text(text, str(path))
    hardware = split_state(text)
    if spec.state is not None and STATE_MARKER not in text:
        # a hand-written [state] without the marker: keep the data, lose the layout
        doc = tomllib.loads(text)
        doc.pop("state")
        hardware = tomli_w.dumps(doc)
    return hardware, spec, (st.st_ino, st.st_mtime_ns, st.st_size), digest
