"""The simulator's lock file beside a host file (``FILE.state/sim.lock``): opened with
O_NOFOLLOW|O_CLOEXEC, and one another user could have planted (a symlink, a FIFO, a file
owned by someone else but root) is refused with PermissionDenied naming it (exit 77)."""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

import pytest
from simtest import DEV

from vfioctl.cli.main import main
from vfioctl.errors import PermissionDenied
from vfioctl.sim.host import SimHost
from vfioctl.sim.loader import bundled_text

NVME = "0000:06:00.0"


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    path = tmp_path / "ws.toml"
    path.write_text(bundled_text("workstation"))
    return path


def lock_path(path: Path) -> Path:
    return path.parent / (path.name + ".state") / "sim.lock"


def change(path: Path) -> None:
    SimHost.from_file(path).write(DEV / NVME / "driver_override", "vfio-pci")


def test_lock_fd_is_close_on_exec_and_the_file_0600(ws: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    real = fcntl.flock

    def spy(fd: int, op: int) -> None:
        seen.append(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)
        real(fd, op)

    monkeypatch.setattr(fcntl, "flock", spy)        # the module sim.host calls through
    change(ws)
    assert seen and all(seen)
    st = os.lstat(lock_path(ws))
    assert stat.S_ISREG(st.st_mode) and st.st_mode & 0o777 == 0o600


def test_a_planted_symlink_is_refused_and_not_followed(ws: Path, tmp_path: Path) -> None:
    lock = lock_path(ws)
    lock.parent.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    lock.symlink_to(victim)
    text = ws.read_text()
    with pytest.raises(PermissionDenied, match="symbolic link") as info:
        change(ws)
    assert info.value.exit_code == 77 and str(lock) in str(info.value)
    assert not victim.exists() and ws.read_text() == text


def test_a_fifo_is_refused(ws: Path) -> None:
    lock = lock_path(ws)
    lock.parent.mkdir(mode=0o700)
    os.mkfifo(lock, 0o600)
    with pytest.raises(PermissionDenied, match="not a regular file"):
        change(ws)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the file to another user")
def test_a_lock_file_of_another_user_is_refused_but_roots_is_not(ws: Path) -> None:
    lock = lock_path(ws)
    lock.parent.mkdir(mode=0o700)
    lock.touch(mode=0o600)
    os.chown(lock, 65534, 65534)
    with pytest.raises(PermissionDenied, match="owned by uid 65534"):
        change(ws)
    os.chown(lock, 0, 0)                # root (this user here) may own it
    change(ws)


def test_cli_names_the_lock_file_with_exit_77(ws: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    lock = lock_path(ws)
    lock.parent.mkdir(mode=0o700)
    lock.symlink_to("/etc/passwd")
    assert main(["--host", f"sim:{ws}", "detach", NVME]) == 77
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(lock) in err and "Traceback" not in err
