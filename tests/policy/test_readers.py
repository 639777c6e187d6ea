"""Readers never wait for a writer, and a refused command leaves no state behind."""

from __future__ import annotations

import io
import threading
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from vfioctl.cli.main import main
from vfioctl.sim.loader import bundled_text
from vfioctl.state import StateStore


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def _host(tmp_path: Path) -> Path:
    path = tmp_path / "ws.toml"
    path.write_text(bundled_text("workstation"))
    return path


def test_list_and_status_do_not_wait_for_a_writer(tmp_path: Path) -> None:
    host = _host(tmp_path)
    assert run("--host", f"sim:{host}", "detach", "0000:06:00.0")[0] == 0
    store = StateStore(host.with_name("ws.toml.state"), timeout=0)
    held = threading.Event()
    release = threading.Event()

    def writer() -> None:
        with store.writer():
            held.set()
            release.wait(30)

    t = threading.Thread(target=writer)
    t.start()
    try:
        assert held.wait(10)
        for cmd in (["list", "--json"], ["groups"], ["status", "--json"]):
            started = time.monotonic()
            code, _out, err = run("--host", f"sim:{host}", *cmd)
            assert code == 0, err
            assert "busy" not in err
            # the default lock timeout is 10 s: a reader that queued would take that long
            assert time.monotonic() - started < 5, f"{cmd} waited for the writer"
    finally:
        release.set()
        t.join()


def test_a_refused_command_creates_no_state(tmp_path: Path) -> None:
    host = _host(tmp_path)
    state = host.with_name("ws.toml.state")
    for cmd in (["detach", "0000:99:00.0"], ["detach", "0000:01:00.1"],
                ["reattach", "0000:01:00.0"], ["sriov", "0000:01:00.0", "--numvfs", "1"],
                ["token", "set", "0000:01:00.0"], ["detach", "--dry-run", "0000:06:00.0"],
                ["status"], ["list"]):
        code, _, err = run("--host", f"sim:{host}", *cmd)
        assert code in (0, 4, 5), (cmd, err)
        assert not (state / "vfioctl.db").exists(), f"{cmd} created the state database"
