"""Helpers for the state tests: records, a directory a child run as 'nobody' can reach,
and running a snippet of vfioctl code as that user."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from vfioctl.address import PciAddress
from vfioctl.state import DeviceRecord, Step

NOBODY = 65534
IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root: chowns files to another "
                                "user and runs children as 'nobody'")

SRC = Path(__file__).resolve().parents[2] / "src"


def record(addr: str = "0000:01:00.0", owner: str | None = "vm1") -> DeviceRecord:
    return DeviceRecord(addr=PciAddress.parse(addr), group=1, driver="vfio-pci", moved=True,
                        original_driver="nouveau", original_override=None, owner=owner,
                        managed=True, since="2026-01-01T00:00:00+00:00")


def step(addr: str = "0000:01:00.0") -> Step:
    return Step(seq=0, addr=PciAddress.parse(addr), from_driver="nouveau",
                to_driver="vfio-pci", to_override="vfio-pci")


def tree(path: Path) -> list[str]:
    """Every name under ``path`` (relative), to tell whether anything was created."""
    if not os.path.lexists(path):
        return []
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@contextmanager
def shared_dir() -> Iterator[Path]:
    """A 0755 directory under /tmp: pytest's tmp_path is 0700, which 'nobody' cannot
    enter, and the state directory's ancestors must be root's."""
    base = Path(tempfile.mkdtemp(prefix="vfioctl-state-test-", dir="/tmp"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run_as_nobody(code: str) -> dict[str, Any]:
    """Run ``code`` (which sets ``result``) as uid/gid nobody; returns {"result": …} or
    {"error": class name, "exit": exit code, "message": str, "hint": str}. Any other
    exception escapes the child as a traceback, and fails the test."""
    prog = textwrap.dedent("""
        import json, sys
        from pathlib import Path
        from vfioctl.errors import VfioctlError
        try:
        {body}
            print(json.dumps({{"result": result}}))
        except VfioctlError as err:
            print(json.dumps({{"error": type(err).__name__, "exit": err.exit_code,
                              "message": str(err), "hint": err.hint,
                              "mro": [c.__name__ for c in type(err).__mro__]}}))
        """).format(body=textwrap.indent(textwrap.dedent(code), "    "))
    # setpriv rather than subprocess's user=: it execs the interpreter before the
    # capabilities go, so an interpreter below a 0700 home (pyenv's) still starts.
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("needs setpriv (util-linux) to run a child as 'nobody'")
    proc = subprocess.run([setpriv, "--reuid", str(NOBODY), "--regid", str(NOBODY),
                           "--clear-groups", "--", sys.executable, "-c", prog],
                          capture_output=True, text=True, timeout=600, cwd="/",
                          env={**os.environ, "PYTHONPATH": str(SRC)})
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout)
    return out
