"""Shell completion through click's own machinery, in process.

What a shell gets for ``vfioctl … <TAB>``: the candidates come from click's
``ShellComplete.get_completions`` exactly as the bash/zsh/fish scripts ask for them
(``_VFIOCTL_COMPLETE=…_complete``), with the host taken from ``--host`` or
``VFIOCTL_HOST``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.shell_completion import ShellComplete

from vfioctl.cli.main import cli
from vfioctl.sim.loader import bundled_names


def complete(args: list[str], incomplete: str) -> list[str]:
    comp = ShellComplete(cli, {}, "vfioctl", "_VFIOCTL_COMPLETE")
    return [item.value for item in comp.get_completions(args, incomplete)]


@pytest.fixture(autouse=True)
def _completing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("_VFIOCTL_COMPLETE", "bash_complete")
    monkeypatch.delenv("VFIOCTL_HOST", raising=False)
    monkeypatch.chdir(tmp_path)


def _workstation_addresses() -> list[str]:
    # The independent oracle: the bundled description's own [[device]] addresses.
    import tomllib

    from vfioctl.sim.loader import bundled_text

    spec = tomllib.loads(bundled_text("workstation"))
    return sorted(str(d["addr"]) for d in spec["device"])


def test_addresses_come_from_the_host_given_with_host() -> None:
    got = complete(["--host", "sim:workstation", "show"], "0000:01")
    want = [a for a in _workstation_addresses() if a.startswith("0000:01")]
    assert got == want and want


def test_short_addresses_when_typed_short() -> None:
    assert complete(["--host", "sim:workstation", "explain"], "01:00.") == ["01:00.0", "01:00.1"]


def test_host_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VFIOCTL_HOST", "sim:sriov-server")
    got = complete(["token", "check"], "")
    assert "0000:03:00.0" in got
    assert got == complete(["--host", "sim:sriov-server", "token", "check"], "")
    assert got != complete(["--host", "sim:workstation", "token", "check"], "")


def test_every_device_argument_completes() -> None:
    for args in (["detach"], ["reattach"], ["sriov"], ["token", "set"], ["token", "show"],
                 ["token", "forget"], ["show"]):
        assert complete(["--host", "sim:workstation", *args], "0000:06") == ["0000:06:00.0"]


def test_no_candidates_and_no_traceback_for_a_missing_host() -> None:
    assert complete(["--host", "sim:missing.toml", "show"], "") == []


def test_host_specs() -> None:
    names = bundled_names()
    assert complete(["--host"], "") == ["linux", "linux:", "sim:", *(f"sim:{n}" for n in names)]
    assert complete(["--host"], "sim:work") == ["sim:workstation"]


def test_sim_files_and_directories(tmp_path: Path) -> None:
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "ws.toml").write_text("")
    (tmp_path / "lab" / "ws.toml.state").mkdir()
    (tmp_path / "lab" / "notes.txt").write_text("")
    assert complete(["--host"], "sim:l") == ["sim:lab/"]
    assert complete(["--host"], "sim:lab/") == ["sim:lab/ws.toml"]
    assert complete(["--host"], "linux:la") == ["linux:lab/"]


def test_bundled_names_for_sim_copy() -> None:
    assert complete(["sim", "copy"], "sriov") == ["sriov-server"]


def test_bash_script_and_a_real_completion_request() -> None:
    """The console script answers the shell's request (env vars, as bash sends them)."""
    env = {"_VFIOCTL_COMPLETE": "bash_source", "PATH": "/usr/bin:/bin"}
    script = subprocess.run([sys.executable, "-m", "vfioctl.cli.main"], env=env,
                            capture_output=True, text=True, check=False).stdout
    assert "_vfioctl_completion" in script and "complete -o nosort" in script
    env = {"_VFIOCTL_COMPLETE": "bash_complete", "COMP_WORDS": "vfioctl --host sim:workstation "
           "show 0000:06", "COMP_CWORD": "4", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "vfioctl.cli.main"], env=env,
                         capture_output=True, text=True, check=False).stdout
    assert out.split() == ["plain,0000:06:00.0"]
