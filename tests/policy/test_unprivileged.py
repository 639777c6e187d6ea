"""An ordinary user next to root's vfioctl state: read-only commands work (they read the
host, not the state database) or say in one line what they cannot show; changes are
refused with exit 77 (permission denied), never exit 70.

Runs the real console entry as ``nobody`` (setpriv) after root has changed the host;
skipped when the suite does not run as root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from vfioctl.sim.loader import bundled_text

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                                reason="needs root and setpriv to run a command as nobody")


def vfioctl(*args: str, user: str | None = None, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    prefix = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] \
        if user == "nobody" else []
    return subprocess.run([*prefix, sys.executable, "-m", "vfioctl", *args],
                          capture_output=True, text=True, check=False, timeout=120,
                          env={**os.environ, **(env or {})}, cwd="/")


@pytest.fixture
def shared_host() -> Iterator[Path]:
    """A simulated host file anyone may read, in a directory anyone may enter, that
    root has changed (so root's 0700 state directory and database exist beside it)."""
    top = Path(tempfile.mkdtemp(prefix="vfioctl-unpriv-"))
    try:
        top.chmod(0o755)
        host = top / "ws.toml"
        host.write_text(bundled_text("workstation"))
        host.chmod(0o644)
        done = vfioctl("--host", f"sim:{host}", "detach", "0000:06:00.0")
        assert done.returncode == 0, done.stderr
        state = top / "ws.toml.state"
        assert (state / "vfioctl.db").exists() and state.stat().st_uid == 0
        host.chmod(0o644)
        yield host
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.parametrize("cmd", [["list"], ["list", "--json"], ["groups"],
                                 ["groups", "--json"], ["show", "0000:06:00.0"],
                                 ["explain", "0000:01:00.0"]])
def test_read_commands_work_for_an_ordinary_user(shared_host: Path, cmd: list[str]) -> None:
    proc = vfioctl("--host", f"sim:{shared_host}", *cmd, user="nobody")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "0000:06:00.0" in proc.stdout or cmd[0] == "explain"
    # it reads the host as it is: the NVMe root detached
    if cmd == ["list", "--json"]:
        assert '"driver": "vfio-pci"' in proc.stdout


def test_status_and_changes_say_permission_denied(shared_host: Path) -> None:
    for cmd, code in ((["status"], 77), (["detach", "0000:02:00.0"], 77),
                      (["reattach", "0000:06:00.0"], 77)):
        proc = vfioctl("--host", f"sim:{shared_host}", *cmd, user="nobody")
        assert proc.returncode == code, (cmd, proc.returncode, proc.stderr)
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("vfioctl: error: "), proc.stderr
        assert "root" in lines[0] or "permission" in lines[0].lower(), lines[0]


def test_doctor_on_the_live_host_state_dir(tmp_path: Path) -> None:
    """``doctor`` reads the host; a root-owned state directory beside it changes
    nothing (exit 0 or 1: its checks, never 70/77)."""
    state = Path(tempfile.mkdtemp(prefix="vfioctl-state-"))
    try:
        state.chmod(0o700)
        (state / "vfioctl.db").write_bytes(b"")
        proc = vfioctl("doctor", user="nobody", env={"VFIOCTL_STATE_DIR": str(state)})
        assert proc.returncode in (0, 1), proc.stderr
        assert "Traceback" not in proc.stderr
    finally:
        shutil.rmtree(state, ignore_errors=True)
