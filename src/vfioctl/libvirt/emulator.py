"""The emulator wrapper: what a libvirt domain names as its ``<emulator>`` so that QEMU
gets VF tokens that appear on no command line, in no environment and in no libvirt log.

libvirt starts the wrapper exactly as it would start QEMU (as QEMU's user, in QEMU's
mount namespace and cgroup, with ``-S``). The wrapper then ``exec``s the real QEMU — the
same pid, which libvirt watches — after one change: when the hook left a token handoff
file for this domain (``RUN_DIR/UUID.json``, written at ``start begin``, readable by QEMU's
user only), every ``-device`` libvirt wrote for a listed VF (JSON, ``driver`` vfio-pci,
``host`` the VF) leaves the command line, and goes, with its ``vf-token``, into QEMU
configuration that QEMU reads with ``-readconfig`` from an inherited pipe
(``/proc/self/fd/N``): the secret exists only in that pipe, read once by QEMU.

QEMU creates the devices of ``-readconfig`` (and of the legacy ``-device`` syntax) before
every JSON ``-device``, so the PCI controllers the VF sits behind (its ``bus``, and
theirs) move into the same configuration, in their order; every address is explicit in
libvirt's command line, so creation order changes no guest address. The device keeps
libvirt's id: libvirt still sees "its" hostdev (hot-unplug, queries) and set up
/dev/vfio, cgroup and memory locking for it.

Without a handoff file (libvirt probing QEMU's capabilities, a domain without
token-carrying VFs) the arguments are passed on unchanged. The module imports nothing
but the standard library: ``vfioctl libvirt install`` writes it, whole, into the wrapper
script run by the system's Python, so that QEMU's user needs neither vfioctl nor its
virtual environment.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Sequence
from typing import Any, Final

PROG: Final = "vfioctl-qemu"
_DEVICE_FLAGS: Final = ("-device", "--device")
_MAX_VALUE: Final = 1023   # QEMU's config parser reads a value with %1023[^"]


class WrapperError(Exception):
    """Something the wrapper cannot do: QEMU is not started (libvirt shows the line)."""


def _uuid_of(argv: Sequence[str]) -> str | None:
    for i, arg in enumerate(argv[:-1]):
        if arg in ("-uuid", "--uuid"):
            return argv[i + 1]
    return None


def read_handoff(run_dir: str, uuid: str) -> dict[str, str] | None:
    """``{VF address: token}`` from this domain's handoff file; None when there is none.

    The file must be a regular file owned by this user, not a link, readable by
    nobody else (the hook writes it so).
    """
    if not uuid or "/" in uuid or uuid.startswith("."):
        raise WrapperError(f"invalid domain uuid '{uuid}'")
    path = os.path.join(run_dir, f"{uuid}.json")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except PermissionError as err:
        # Not this domain's business if it has no token VFs: QEMU starts unchanged (and
        # a token VF then fails in QEMU with EACCES); said in the domain's QEMU log.
        print(f"{PROG}: warning: cannot open {path}: {err.strerror}; starting QEMU with "
              "its arguments unchanged", file=sys.stderr)
        return None
    except OSError as err:
        raise WrapperError(f"cannot open the token handoff file {path}: "
                           f"{err.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() \
                or st.st_mode & 0o077 or st.st_nlink != 1:
            raise WrapperError(f"the token handoff file {path} is not a private file of "
                               "this user: refused")
        try:
            doc = json.loads(f.read(1 << 16))
            devices = {str(d["host"]): str(d["vf-token"]) for d in doc["devices"]}
        except (ValueError, KeyError, TypeError):
            raise WrapperError(f"the token handoff file {path} is malformed") from None
    return devices


def _json_device(argv: Sequence[str], i: int) -> dict[str, Any] | None:
    if argv[i] not in _DEVICE_FLAGS or i + 1 >= len(argv):
        return None
    text = argv[i + 1]
    if not text.startswith("{"):
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def _value(dev_id: str, key: str, value: object) -> str:
    if isinstance(value, bool):
        text = "on" if value else "off"
    elif isinstance(value, int | float | str):
        text = str(value)
    else:
        raise WrapperError(f"device {dev_id}: property '{key}' is not a plain value; "
                           "cannot move it into QEMU configuration")
    if '"' in text or "\n" in text or len(text) > _MAX_VALUE:
        raise WrapperError(f"device {dev_id}: property '{key}' cannot be written in "
                           "QEMU configuration")
    return text


def _section(dev: dict[str, Any], token: str | None) -> str:
    dev_id = str(dev.get("id", ""))
    if not dev_id or '"' in dev_id or "\n" in dev_id:
        raise WrapperError(f"a device to move has no usable id: {dev.get('driver')}")
    lines = [f'[device "{dev_id}"]']
    for key, value in dev.items():
        if key == "id":
            continue
        if not key.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise WrapperError(f"device {dev_id}: odd property name '{key}'")
        lines.append(f'  {key} = "{_value(dev_id, key, value)}"')
    if token is not None:
        lines.append(f'  vf-token = "{token}"')
    return "\n".join(lines) + "\n"


def rewrite(argv: Sequence[str], tokens: dict[str, str]) -> tuple[list[str], str]:
    """``argv`` without the listed VFs' ``-device`` (and the controllers they sit
    behind), and the QEMU configuration text that creates them with their tokens; the
    returned argv has ``-readconfig @CONFIG@`` where the first moved device was.

    Raises:
        WrapperError: a listed VF has no ``-device`` of its own, or a device to move
            cannot be written as configuration.
    """
    devices: dict[int, dict[str, Any]] = {}
    by_id: dict[str, int] = {}
    for i in range(len(argv)):
        dev = _json_device(argv, i)
        if dev is not None:
            devices[i] = dev
            if "id" in dev:
                by_id[str(dev["id"])] = i
    moved: dict[int, str | None] = {}
    for host, token in tokens.items():
        hits = [i for i, d in devices.items()
                if d.get("driver") == "vfio-pci" and str(d.get("host", "")) == host]
        if len(hits) != 1:
            raise WrapperError(f"the domain's command line has {len(hits)} vfio-pci "
                               f"devices for VF {host} (expected one)")
        moved[hits[0]] = token
        bus = devices[hits[0]].get("bus")
        seen: set[int] = set()
        while isinstance(bus, str) and bus in by_id and by_id[bus] not in seen:
            j = by_id[bus]
            seen.add(j)
            moved.setdefault(j, None)
            bus = devices[j].get("bus")
    config = "".join(_section(devices[i], moved[i]) for i in sorted(moved))
    out: list[str] = []
    i, placed = 0, False
    while i < len(argv):
        if i in moved:
            if not placed:
                out += ["-readconfig", "@CONFIG@"]
                placed = True
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out, config


def _config_fd(text: str) -> int:
    """A pipe's read end holding ``text`` (inheritable), its write end closed: QEMU
    reads it once, and nobody can read it again."""
    data = text.encode()
    r, w = os.pipe()
    try:
        if len(data) >= 65536:
            raise WrapperError("the QEMU configuration is too large for a pipe")
        os.write(w, data)
    finally:
        os.close(w)
    os.set_inheritable(r, True)
    return r


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m vfioctl.libvirt.emulator --qemu BIN --run-dir DIR -- QEMU-ARGS``."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if "--" not in args:
            raise WrapperError("usage: --qemu BIN --run-dir DIR -- QEMU-ARGS")
        sep = args.index("--")
        opts, qemu_args = args[:sep], args[sep + 1:]
        conf = dict(zip(opts[::2], opts[1::2], strict=False))
        qemu, run_dir = conf.get("--qemu"), conf.get("--run-dir")
        if not qemu or not run_dir:
            raise WrapperError("usage: --qemu BIN --run-dir DIR -- QEMU-ARGS")
        uuid = _uuid_of(qemu_args)
        tokens = read_handoff(run_dir, uuid) if uuid is not None else None
        if tokens:
            new_args, config = rewrite(qemu_args, tokens)
            fd = _config_fd(config)
            qemu_args = [f"/proc/self/fd/{fd}" if a == "@CONFIG@" else a for a in new_args]
        os.execv(qemu, [qemu, *qemu_args])
    except WrapperError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"{PROG}: error: cannot run QEMU: {err.strerror}", file=sys.stderr)
        return 1
    return 0  # not reached: execv replaced this process


if __name__ == "__main__":  # (the installed wrapper replaces this block)
    sys.exit(main())
