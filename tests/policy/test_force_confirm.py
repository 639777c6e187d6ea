"""``detach --force`` with a human in the loop, on a writable copy of the simulated
workstation, where ``detach --group 0000:04:00.0`` takes the NIC (enp4s0, the default
route) and the SATA controller (the root disk): it says what it takes, asks on a
terminal (default no), and without a terminal needs ``--yes``. The terminal path runs
the real CLI in a child process on a pseudo-terminal (stdlib ``pty``)."""

from __future__ import annotations

import hashlib
import io
import os
import pty
import select
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from vfioctl.cli.main import main
from vfioctl.sim.loader import bundled_text

TAKES = [
    "0000:04:00.0 from the host: interface enp4s0 is up with address 192.168.1.23/24 "
    "and routes",
    "0000:05:00.0 from the host: disk sda: sda1 is mounted on /boot/efi, sda2 holds the "
    "root filesystem /",
]
MOVES = ("0000:00:1c.0: left alone: pcieport\n"
         "0000:00:1c.2: left alone: pcieport\n"
         "0000:00:1c.4: left alone: pcieport\n"
         "0000:03:00.0: xhci_hcd -> vfio-pci\n"
         "0000:04:00.0: igb -> vfio-pci\n"
         "0000:05:00.0: ahci -> vfio-pci\n")
DETACH = ["detach", "--group", "0000:04:00.0", "--force"]


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("VFIOCTL_HOST", raising=False)
    path = tmp_path / "ws.toml"
    path.write_text(bundled_text("workstation"))
    return path


def drivers(ws: Path) -> dict[str, str]:
    code, out, _ = run("--host", f"sim:{ws}", "list")
    assert code == 0
    rows = [line.split() for line in out.splitlines()[1:]]
    return {r[0]: r[3] for r in rows}


# -- no terminal (in-process: pytest's stdin is not a terminal) ---------------------------


def test_without_a_terminal_force_needs_yes_and_changes_nothing(ws: Path) -> None:
    before = digest(ws)
    code, out, err = run("--host", f"sim:{ws}", *DETACH)
    assert (code, out) == (2, "")
    assert err == ("vfioctl: error: --force would take 2 devices the host uses "
                   "(0000:04:00.0, 0000:05:00.0) and there is no terminal to confirm on; "
                   "pass --yes to take them anyway\n")
    assert digest(ws) == before
    # the dry run stops where the run would (and never asks)
    assert run("--host", f"sim:{ws}", *DETACH, "--dry-run") == (code, out, err)
    assert digest(ws) == before


def test_yes_takes_them_and_says_what_it_took(ws: Path) -> None:
    before = digest(ws)
    code, out, err = run("--host", f"sim:{ws}", *DETACH, "--yes", "--dry-run")
    assert (code, out) == (0, MOVES)
    assert err.splitlines() == [f"vfioctl: --force: would take {t}" for t in TAKES]
    assert digest(ws) == before

    code, out, err = run("--host", f"sim:{ws}", *DETACH, "--yes")
    assert (code, out) == (0, MOVES)
    assert err.splitlines() == [f"vfioctl: --force: taking {t}" for t in TAKES]
    now = drivers(ws)
    assert (now["0000:04:00.0"], now["0000:05:00.0"]) == ("vfio-pci", "vfio-pci")


def test_force_on_what_the_host_does_not_use_asks_nothing(ws: Path) -> None:
    code, out, err = run("--host", f"sim:{ws}", "detach", "--force", "nvme0n1")
    assert (code, out, err) == (0, "0000:06:00.0: nvme -> vfio-pci\n", "")


def test_yes_without_force_changes_no_refusal(ws: Path) -> None:
    code, out, err = run("--host", f"sim:{ws}", "detach", "--group", "--yes", "enp4s0")
    assert (code, out) == (5, "")
    assert "in use by the host" in err and err.count("\n") == 1


# -- a terminal: the real CLI on a pty ---------------------------------------------------

_CHILD = "import sys; from vfioctl.cli.main import main; sys.exit(main(sys.argv[1:]))"


def _read_until(fd: int, wanted: bytes, buf: bytearray, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while wanted not in buf:
        left = deadline - time.monotonic()
        assert left > 0, f"no {wanted!r} on the terminal; got {bytes(buf)!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                chunk = b""
            assert chunk, f"the terminal closed before {wanted!r}; got {bytes(buf)!r}"
            buf.extend(chunk)


def _drain(fd: int, buf: bytearray, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], deadline - time.monotonic())
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            return
        if not chunk:
            return
        buf.extend(chunk)


def on_a_terminal(ws: Path, answer: bytes) -> tuple[int, str]:
    """Run ``detach --group 0000:04:00.0 --force`` on a pty, answer the question, and
    return the exit status and everything the terminal showed."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), TERM="dumb")
    env.pop("VFIOCTL_HOST", None)
    pid, fd = pty.fork()
    if pid == 0:  # the child: the real CLI, its stdin/stdout/stderr the terminal
        try:
            os.execve(sys.executable, [sys.executable, "-c", _CHILD, "--host", f"sim:{ws}",
                                       *DETACH], env)
        finally:
            os._exit(127)
    buf = bytearray()
    try:
        _read_until(fd, b"[y/N]", buf)
        os.write(fd, answer + b"\n")
        _drain(fd, buf)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), buf.decode().replace("\r\n", "\n")


def test_on_a_terminal_it_asks_and_no_changes_nothing(ws: Path) -> None:
    before = digest(ws)
    code, shown = on_a_terminal(ws, b"n")
    lines = shown.splitlines()
    assert lines[:2] == [f"vfioctl: --force: taking {t}" for t in TAKES]
    assert lines[2] == "Detach 2 devices the host uses? [y/N]: n"
    assert lines[3:] == ["vfioctl: error: not confirmed: nothing was detached; answer y to "
                         "take them, or pass --yes"]
    assert code == 5
    assert digest(ws) == before


def test_on_a_terminal_the_default_is_no(ws: Path) -> None:
    before = digest(ws)
    code, _ = on_a_terminal(ws, b"")
    assert code == 5 and digest(ws) == before


def test_on_a_terminal_yes_detaches(ws: Path) -> None:
    code, shown = on_a_terminal(ws, b"y")
    assert code == 0, shown
    lines = shown.splitlines()
    assert lines[2] == "Detach 2 devices the host uses? [y/N]: y"
    assert "\n".join(lines[3:]) + "\n" == MOVES
    now = drivers(ws)
    assert (now["0000:04:00.0"], now["0000:05:00.0"]) == ("vfio-pci", "vfio-pci")
