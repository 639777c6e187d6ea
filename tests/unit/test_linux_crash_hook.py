"""LinuxHost's fault-injection hook (VFIOCTL_TEST_CRASH_AT_WRITE / VFIOCTL_TEST_CRASH_AFTER),
on a tmp tree with writes allowed: the process dies by SIGKILL right before (or right
after) its Nth write, and the hook does nothing unless set.

The dying runs happen in a child interpreter, since the hook kills its own process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from vfioctl.host.linux import CRASH_AFTER_ENV, CRASH_AT_WRITE_ENV, LinuxHost

NAMES = ("a", "b", "c")

# Writes "a", "b", "c" through one LinuxHost, then one to a missing file, then says so.
CHILD = """
import sys
from vfioctl.host.linux import LinuxHost
host = LinuxHost(sys.argv[1], readonly=False)
for name in ("a", "b", "c"):
    host.write(name, "new")
try:
    host.write("missing/attr", "new")
except FileNotFoundError:
    pass
print("survived", flush=True)
"""


def _tree(tmp_path: Path) -> Path:
    for name in NAMES:
        (tmp_path / name).write_text("old")
    return tmp_path


def _contents(root: Path) -> list[str]:
    return [(root / name).read_text() for name in NAMES]


def _run(root: Path, at: str | None, after: str | None = None, *,
         script: str = CHILD) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in (CRASH_AT_WRITE_ENV, CRASH_AFTER_ENV)}
    if at is not None:
        env[CRASH_AT_WRITE_ENV] = at
    if after is not None:
        env[CRASH_AFTER_ENV] = after
    return subprocess.run([sys.executable, "-c", script, str(root)], env=env,
                          capture_output=True, text=True, check=False, timeout=600)


def test_unset_hook_changes_nothing(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    proc = _run(root, None)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "survived\n"
    assert _contents(root) == ["new", "new", "new"]


@pytest.mark.parametrize(("at", "written"), [
    ("1", ["old", "old", "old"]),
    ("2", ["new", "old", "old"]),
    ("3", ["new", "new", "old"]),
])
def test_killed_right_before_the_nth_write(tmp_path: Path, at: str,
                                           written: list[str]) -> None:
    root = _tree(tmp_path)
    proc = _run(root, at)
    assert proc.returncode == -signal.SIGKILL
    assert proc.stdout == ""
    assert _contents(root) == written


@pytest.mark.parametrize(("at", "written"), [
    ("1", ["new", "old", "old"]),
    ("3", ["new", "new", "new"]),
])
def test_killed_right_after_the_nth_write(tmp_path: Path, at: str,
                                          written: list[str]) -> None:
    root = _tree(tmp_path)
    proc = _run(root, at, after="1")
    assert proc.returncode == -signal.SIGKILL
    assert _contents(root) == written


def test_killed_after_a_refused_write_too(tmp_path: Path) -> None:
    """Write 4 fails (no such attribute): "after" still means after the write(2)."""
    root = _tree(tmp_path)
    proc = _run(root, "4", after="1")
    assert proc.returncode == -signal.SIGKILL
    assert proc.stdout == ""
    assert _contents(root) == ["new", "new", "new"]


def test_a_number_past_the_last_write_never_fires(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    proc = _run(root, "5", after="1")
    assert proc.returncode == 0, proc.stderr
    assert _contents(root) == ["new", "new", "new"]


def test_after_needs_exactly_1(tmp_path: Path) -> None:
    """Any other VFIOCTL_TEST_CRASH_AFTER value keeps the default: before the write."""
    root = _tree(tmp_path)
    proc = _run(root, "2", after="yes")
    assert proc.returncode == -signal.SIGKILL
    assert _contents(root) == ["new", "old", "old"]


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_a_malformed_number_fails_loudly_before_writing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    root = _tree(tmp_path)
    monkeypatch.setenv(CRASH_AT_WRITE_ENV, value)
    host = LinuxHost(root, readonly=False)
    with pytest.raises(ValueError, match=CRASH_AT_WRITE_ENV):
        host.write("a", "new")
    assert _contents(root) == ["old", "old", "old"]


# Two read-only refusals, then two hosts writing "a" and "b" each.
CHILD_PER_HOST = """
import sys
from vfioctl.errors import ReadOnlyHost
from vfioctl.host.linux import LinuxHost
for _ in range(2):
    try:
        LinuxHost(sys.argv[1]).write("c", "new")   # a tree: read-only by default
    except ReadOnlyHost:
        pass
for _ in range(2):
    host = LinuxHost(sys.argv[1], readonly=False)
    host.write("a", "new")
    host.write("b", "new")
print("survived", flush=True)
"""


def test_the_count_is_per_host_and_refused_read_only_writes_do_not_count(
        tmp_path: Path) -> None:
    """Armed at 3: no host makes a third write (the read-only ones refuse first)."""
    root = _tree(tmp_path)
    proc = _run(root, "3", script=CHILD_PER_HOST)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "survived\n"
    assert _contents(root) == ["new", "new", "old"]
    killed = _run(_tree(tmp_path), "2", script=CHILD_PER_HOST)
    assert killed.returncode == -signal.SIGKILL
    assert _contents(root) == ["new", "old", "old"]
