"""``--dry-run`` is the plan the run then executes: for detach, reattach, sriov and token
set, the dry run's JSON actions (or its refusal: exit code and stderr line) equal the
run's, and the dry run changes nothing (host file, state directory)."""

from __future__ import annotations

import hashlib
import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vfioctl.cli.main import main
from vfioctl.sim.loader import bundled_text

WS_DEVICES = ["0000:01:00.0", "0000:01:00.1", "0000:02:00.0", "0000:04:00.0",
              "0000:05:00.0", "0000:06:00.0", "0000:00:01.0", "0000:00:1f.3"]


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def state_files(path: Path) -> list[str]:
    state = path.with_name(path.name + ".state")
    return sorted(str(p.relative_to(state)) for p in state.rglob("*")) if state.exists() \
        else []


def compare(host: Path, *cmd: str) -> tuple[int, dict[str, object] | None]:
    """Run ``cmd --dry-run --json`` then ``cmd --json`` on ``host``; assert they agree."""
    before, files = digest(host), state_files(host)
    dry = run("--host", f"sim:{host}", *cmd, "--dry-run", "--json")
    assert digest(host) == before, f"{cmd}: the dry run changed the host"
    assert state_files(host) == files, f"{cmd}: the dry run changed the state directory"
    real = run("--host", f"sim:{host}", *cmd, "--json")
    assert dry[0] == real[0], f"{cmd}: exit {dry[0]} (dry run) vs {real[0]}"
    if real[0] != 0:
        assert dry[2] == real[2], f"{cmd}: the refusals differ"
        assert dry[1] == real[1] == ""
        return real[0], None
    plan, done = json.loads(dry[1]), json.loads(real[1])
    assert plan["dry_run"] is True
    assert plan["actions"] == done["actions"], f"{cmd}: the run did something else"
    assert plan["refusals"] == done.get("refusals", []) == []
    return 0, done


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    path = tmp_path / "ws.toml"
    path.write_text(bundled_text("workstation"))
    return path


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(picks=st.lists(st.sampled_from(WS_DEVICES), min_size=1, max_size=3, unique=True),
       group=st.booleans(), force=st.booleans(), stub=st.booleans(),
       owner=st.sampled_from([None, "vm1"]))
def test_detach_then_reattach_dry_runs_equal_runs(tmp_path: Path, picks: list[str],
                                                   group: bool, force: bool, stub: bool,
                                                   owner: str | None) -> None:
    host = tmp_path / f"ws-{abs(hash((tuple(picks), group, force, stub, owner)))}.toml"
    host.write_text(bundled_text("workstation"))
    flags = (["--group"] if group else []) + (["--force"] if force else []) + \
        (["--driver", "pci-stub"] if stub else []) + (["--owner", owner] if owner else [])
    code, _ = compare(host, "detach", *picks, *flags)
    back = (["--group"] if group else []) + (["--owner", owner] if owner else [])
    compare(host, "reattach", *picks, *back)
    if code == 0:
        # and once more: nothing held any more, each device says so
        compare(host, "reattach", *picks, *back)


def test_sriov_and_token_dry_runs_equal_runs(tmp_path: Path) -> None:
    host = tmp_path / "srv.toml"
    host.write_text(bundled_text("sriov-server"))
    pf = "0000:03:00.0"
    assert compare(host, "sriov", pf, "--numvfs", "2")[1] is not None  # kernel PF: i40e
    assert compare(host, "sriov", pf, "--numvfs", "3")[0] == 5          # N -> M refused
    assert compare(host, "sriov", pf, "--numvfs", "0")[1] is not None
    assert compare(host, "token", "set", pf)[0] == 5                    # not on vfio-pci
    assert compare(host, "detach", pf)[0] == 0
    assert compare(host, "sriov", pf, "--numvfs", "2")[0] == 5          # enable_sriov
    _, done = compare(host, "sriov", pf, "--numvfs", "2", "--yes")
    assert done is not None and [a["action"] for a in done["actions"]] == [
        "enable-sriov", "vfs-created"]
    assert compare(host, "reattach", pf)[0] == 5                        # VFs would vanish
    _, done = compare(host, "token", "set", pf)
    assert done is not None


def test_token_set_dry_run_json_is_the_run_json(ws: Path, tmp_path: Path) -> None:
    """token set has its own JSON document; the dry run prints the plan and leaves the
    kernel's token and the store alone."""
    host = tmp_path / "q35.toml"
    host.write_text(bundled_text("q35-vmtest"))
    assert run("--host", f"sim:{host}", "detach", "0000:01:00.0")[0] == 0
    before = digest(host)
    code, out, err = run("--host", f"sim:{host}", "token", "set", "0000:01:00.0",
                         "--dry-run", "--json")
    assert (code, err) == (0, "")
    assert json.loads(out)["actions"][0]["action"] == "token-set"
    assert digest(host) == before
    assert not (host.with_name("q35.toml.state") / "vf-tokens").exists() or not any(
        (host.with_name("q35.toml.state") / "vf-tokens").iterdir())


def test_executing_a_token_plan_sets_the_planned_token(tmp_path: Path) -> None:
    import vfioctl

    spec = vfioctl.copy_simulated_host("q35-vmtest", tmp_path / "q.toml")
    with vfioctl.open(spec) as host:
        host.detach(["0000:01:00.0"])
        plan = host.plan_token_set("0000:01:00.0")
        assert plan.stage is not None
        done = host.execute(plan)
        assert done.plan is not None and done.plan.stage is not None
        assert host.get_token("0000:01:00.0") == plan.stage.token
