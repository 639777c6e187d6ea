"""Installing the hook and the emulator wrapper: two small scripts, written so that
installing twice changes nothing and uninstalling removes only vfioctl's own files.

- ``HOOKS_DIR/qemu.d/vfioctl`` — libvirt (6.5 and later) runs every executable in
  ``qemu.d/`` as a qemu hook, after ``HOOKS_DIR/qemu`` if that exists: an existing hook
  keeps working, untouched. The script runs ``vfioctl libvirt hook`` with this Python.
- the emulator wrapper (default ``/usr/local/libexec/vfioctl-qemu``), named as the
  ``<emulator>`` of domains with token-carrying VFs: :mod:`vfioctl.libvirt.emulator`
  (standard library only) run by the system's Python, since it runs as QEMU's user,
  who may not reach vfioctl's virtual environment; then the real QEMU.

libvirt clears the environment of hooks (it passes ``PATH``, ``HOME`` and ``LC_ALL``),
so the vfioctl settings install runs with (``--host``/``VFIOCTL_HOST``,
``VFIOCTL_STATE_DIR``, ``VFIOCTL_LIBVIRT_RUN_DIR``, ``VFIOCTL_LOCK_TIMEOUT``) are
written into the hook script, and the run directory into the wrapper. libvirtd looks for
hook scripts when it starts: restart it after the first install.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from vfioctl.errors import InternalError, OperationInvalid, wrap_oserror
from vfioctl.libvirt.handoff import RUN_DIR_ENV, run_dir

DEFAULT_HOOKS_DIR: Final = Path("/etc/libvirt/hooks")
DEFAULT_WRAPPER: Final = Path("/usr/local/libexec/vfioctl-qemu")
DEFAULT_QEMU: Final = "/usr/bin/qemu-system-x86_64"
#: the wrapper runs as QEMU's user: the system's Python, not vfioctl's environment
DEFAULT_WRAPPER_PYTHON: Final = "/usr/bin/python3"
HOOK_NAME: Final = "vfioctl"
HOOK_MARKER: Final = "# vfioctl libvirt hook"
WRAPPER_MARKER: Final = "# vfioctl emulator wrapper"
#: the settings a hook must see as install saw them
PASSED_ENV: Final = ("VFIOCTL_HOST", "VFIOCTL_STATE_DIR", RUN_DIR_ENV,
                     "VFIOCTL_LOCK_TIMEOUT")


@dataclass(frozen=True)
class Change:
    """One file install/uninstall looked at: ``written``, ``unchanged``, ``removed`` or
    ``absent``."""

    path: Path
    what: str

    def describe(self) -> str:
        return f"{self.path}: {self.what}"


def hook_path(hooks_dir: Path) -> Path:
    return hooks_dir / "qemu.d" / HOOK_NAME


def hook_script(python: str, env: Mapping[str, str]) -> str:
    """The text of ``qemu.d/vfioctl``."""
    lines = ["#!/bin/sh", f"{HOOK_MARKER}: written by 'vfioctl libvirt install', "
             "removed by 'vfioctl libvirt uninstall'.",
             "# libvirt runs it as: vfioctl DOMAIN OP SUBOP EXTRA, the domain XML on stdin."]
    for name in PASSED_ENV:
        if name in env:
            lines.append(f"{name}={shlex.quote(env[name])}; export {name}")
    lines.append(f"exec {shlex.quote(python)} -m vfioctl libvirt hook \"$@\"")
    return "\n".join(lines) + "\n"


def wrapper_script(python: str, qemu: str, directory: Path) -> str:
    """The text of the emulator wrapper: :mod:`vfioctl.libvirt.emulator` itself (it uses
    the standard library only), run by ``python`` with the QEMU and the run directory
    written in."""
    from vfioctl.libvirt import emulator

    source = Path(emulator.__file__).read_text()
    tail = 'if __name__ == "__main__":  # (the installed wrapper replaces this block)\n'
    if tail not in source:
        raise InternalError("vfioctl.libvirt.emulator has lost its main block")
    body = source[:source.index(tail)]
    call = (f"sys.exit(main([\"--qemu\", {qemu!r}, \"--run-dir\", {str(directory)!r}, "
            "\"--\", *sys.argv[1:]]))\n")
    return "\n".join([
        f"#!{python} -I",
        f"{WRAPPER_MARKER}: written by 'vfioctl libvirt install'. Name it as a domain's",
        "# <emulator>: it runs QEMU (same pid) with the domain's VF tokens handed over in",
        "# a pipe, never on the command line (docs/libvirt.md).",
        body.rstrip("\n") + "\n\n", call])


def _has_marker(path: Path, marker: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return False
    return marker.encode() in head


def is_wrapper(path: str | None) -> bool:
    """Whether ``path`` (a domain's ``<emulator>``) is vfioctl's emulator wrapper."""
    return path is not None and _has_marker(Path(path), WRAPPER_MARKER)


def _write(path: Path, text: str, marker: str) -> Change:
    if path.is_symlink() or (path.exists() and not _has_marker(path, marker)):
        raise OperationInvalid(f"{path} exists and is not vfioctl's: not replaced",
                               hint="move it away (or into another name) and install again")
    try:
        if path.exists() and path.read_text() == text and os.access(path, os.X_OK):
            return Change(path, "unchanged")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.chmod(0o755)
        tmp.replace(path)
    except OSError as err:
        raise wrap_oserror(err, f"cannot write {path}", path=path) from err
    return Change(path, "written")


def _remove(path: Path, marker: str) -> Change:
    if not path.exists() and not path.is_symlink():
        return Change(path, "absent")
    if path.is_symlink() or not _has_marker(path, marker):
        raise OperationInvalid(f"{path} is not vfioctl's: not removed",
                               hint="remove it yourself if you mean to")
    try:
        path.unlink()
    except OSError as err:
        raise wrap_oserror(err, f"cannot remove {path}", path=path) from err
    return Change(path, "removed")


def install(hooks_dir: Path = DEFAULT_HOOKS_DIR, wrapper: Path = DEFAULT_WRAPPER, *,
            qemu: str = DEFAULT_QEMU, python: str | None = None,
            wrapper_python: str = DEFAULT_WRAPPER_PYTHON,
            env: Mapping[str, str] | None = None) -> list[Change]:
    """Write the hook script and the emulator wrapper (nothing when they are already
    what they would be).

    Raises:
        OperationInvalid: a file of that name exists and is not vfioctl's.
        HostError / PermissionDenied: it cannot be written.
    """
    env = dict(os.environ if env is None else env)
    python = python or sys.executable
    directory = Path(env[RUN_DIR_ENV]) if env.get(RUN_DIR_ENV) else run_dir()
    return [_write(hook_path(hooks_dir), hook_script(python, env), HOOK_MARKER),
            _write(wrapper, wrapper_script(wrapper_python, qemu, directory), WRAPPER_MARKER)]


def uninstall(hooks_dir: Path = DEFAULT_HOOKS_DIR,
              wrapper: Path = DEFAULT_WRAPPER) -> list[Change]:
    """Remove vfioctl's hook script and wrapper; anything else stays.

    Raises:
        OperationInvalid: a file of that name is not vfioctl's.
    """
    return [_remove(hook_path(hooks_dir), HOOK_MARKER), _remove(wrapper, WRAPPER_MARKER)]


__all__ = ["DEFAULT_HOOKS_DIR", "DEFAULT_QEMU", "DEFAULT_WRAPPER", "Change", "hook_path",
           "hook_script", "install", "is_wrapper", "uninstall", "wrapper_script"]
