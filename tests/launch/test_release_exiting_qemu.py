"""``release --stop`` waits for every thread of QEMU, not only its main thread.

Found on the real kernel (tests/realkernel/test_70_start.py): when QEMU exits, its main
thread turns into a zombie at once while its other threads are still exiting, and they
hold the shared file table — the VFIO container, group and device fds — until the last
one is gone. ``release`` took the zombie main thread for an exited QEMU and gave the
device back while the group was still open: the manager refused (EBUSY, "IOMMU group 11
is open by a VFIO user").

The stand-in here is a process whose main thread exits (``SYS_exit``, not
``exit_group``) while a second thread, with SIGTERM blocked, keeps an exclusive lock on
a file for a second: the lock plays the part of ``/dev/vfio/N``.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vfioctl.launch import release
from vfioctl.launch.plan import RECORD_NAME, runtime_dir
from vfioctl.sim.host import SimHost

SYS_EXIT = {"x86_64": 60, "aarch64": 93}.get(platform.machine())

# argv: LOCKFILE READYFILE
EXITING_QEMU = r"""
import ctypes, fcntl, os, signal, sys, threading, time
held = open(sys.argv[1], "w")
fcntl.flock(held, fcntl.LOCK_EX)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # inherited by the thread
leader = os.getpid()

def teardown():
    # wait until the main thread is a zombie, like QEMU's after exit()
    while open(f"/proc/{leader}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
        time.sleep(0.01)
    open(sys.argv[2], "w").close()
    time.sleep(1.0)          # still holding the lock (QEMU: closing its VFIO fds)
    os._exit(0)

threading.Thread(target=teardown).start()
ctypes.CDLL(None, use_errno=True).syscall(%d, 0)   # SYS_exit: this thread only
"""


def _starttime(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[19])


def _other_threads(pid: int) -> list[str]:
    try:
        return [t for t in os.listdir(f"/proc/{pid}/task") if t != str(pid)]
    except FileNotFoundError:
        return []


@pytest.mark.skipif(SYS_EXIT is None, reason="SYS_exit number known for x86_64/aarch64 only")
def test_release_stop_waits_for_the_last_qemu_thread(host: SimHost, tmp_path: Path) -> None:
    lock, ready = tmp_path / "vfio-group.lock", tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", EXITING_QEMU % SYS_EXIT, str(lock),
                             str(ready)], start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "stand-in failed"
            time.sleep(0.01)
        rdir = runtime_dir(host.state_dir, "vm1")
        rdir.mkdir(parents=True, mode=0o700)
        (rdir / RECORD_NAME).write_text(json.dumps(
            {"domain": "vm1", "pid": proc.pid, "starttime": _starttime(proc.pid)}))
        # The main thread is a zombie, the process is not gone: release must stop it.
        result = release(host, "vm1", stop=True)
        assert result.stopped_pid == proc.pid
        # When release returns, the last thread has closed its files.
        with open(lock) as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert _other_threads(proc.pid) == []
        assert not (rdir / RECORD_NAME).exists()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
