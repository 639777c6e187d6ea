"""Secrecy, tested (issue 5, docs/rationale.md "The VF token is a secret").

Every token-related command runs as its own ``vfioctl --debug`` process on a copy of
``sim:sriov-server`` (a file host, so state lands on disk as on a real host), under a
``sys.addaudithook`` that records the argv of every process it would start
(``subprocess.Popen``, ``os.exec``, ``os.posix_spawn``, ``os.spawn``, ``os.system``).
The token is known to the test (given through ``--uuid-file -``) and also read back from
a fresh random one. Then it is searched for, in every spelling (lower/upper case, no
dashes, the raw bytes):

- in stdout and stderr of every command, except stdout of ``token show --reveal``;
- in every spawned process's argv;
- in every file under the temporary directory (the host file, its state directory with
  journal, lock and token store): a file holding it must be mode 0600 inside 0700
  directories (the sim host file stores the kernel's token as kernel memory: 0600 too).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

PF, VF = "0000:03:00.0", "0000:03:02.0"
KNOWN = "5ec2e7a1-0b1d-4c3e-9f2a-7d6e5c4b3a21"

HARNESS = r"""
import json, os, sys
LOG = os.environ["SECRECY_AUDIT_LOG"]
EVENTS = ("subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "os.system",
          "os.fork", "os.forkpty")
def hook(event, args):
    if event in EVENTS:
        with open(LOG, "a") as f:
            f.write(json.dumps([event, repr(args)]) + "\n")
sys.addaudithook(hook)
if os.environ.get("SECRECY_SPAWN_CONTROL"):
    import subprocess
    subprocess.run(["true", os.environ["SECRECY_SPAWN_CONTROL"]], check=False)
from vfioctl.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def spellings(token: str) -> list[str]:
    u = uuid.UUID(token)
    return [str(u), str(u).upper(), u.hex, u.hex.upper()]


class Runner:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.host = tmp / "h.toml"
        self.audit = tmp / "audit.log"
        self.outputs: list[tuple[str, str, str]] = []   # (label, stdout, stderr)

    def __call__(self, *args: str, stdin: str | None = None, expect: int = 0,
                 reveal: bool = False, env: dict[str, str] | None = None) -> str:
        full_env = {**os.environ, "SECRECY_AUDIT_LOG": str(self.audit),
                    "VFIOCTL_HOST": f"sim:{self.host}", **(env or {})}
        full_env.pop("VFIOCTL_STATE_DIR", None)
        proc = subprocess.run([sys.executable, "-c", HARNESS, "--debug", *args],
                              input=stdin, capture_output=True, text=True, env=full_env,
                              cwd=self.tmp, check=False, timeout=120)
        assert proc.returncode == expect, (args, proc.stdout, proc.stderr)
        label = " ".join(args)
        self.outputs.append((label, "" if reveal else proc.stdout, proc.stderr))
        return proc.stdout


@pytest.fixture
def run(tmp_path: Path) -> Runner:
    r = Runner(tmp_path)
    r("sim", "copy", "sriov-server", str(r.host))
    r("detach", PF)
    r("sriov", PF, "--numvfs", "2", "--yes")
    return r


def assert_nowhere(r: Runner, token: str) -> None:
    words = spellings(token)
    for label, out, err in r.outputs:
        for w in words:
            assert w not in out, f"token in stdout of '{label}'"
            assert w not in err, f"token in stderr of '{label}'"
    audit = r.audit.read_text() if r.audit.exists() else ""
    for w in words:
        assert w not in audit, "token in the argv of a spawned process"
    raw = uuid.UUID(token).bytes
    holders = []
    for path in r.tmp.rglob("*"):
        if path.is_dir() or path == r.audit:
            continue
        data = path.read_bytes()
        if any(w.encode() in data for w in words) or raw in data:
            holders.append(path)
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, f"{path} holds the token"
            for parent in path.relative_to(r.tmp).parents:
                if str(parent) != ".":
                    mode = stat.S_IMODE((r.tmp / parent).stat().st_mode)
                    assert mode == 0o700, f"{parent} holds a token file, mode {mode:o}"
    names = sorted(p.name for p in holders)
    assert names == [PF, "h.toml"], names      # the store, and the kernel's memory


def test_token_commands_never_leak_the_token(run: Runner) -> None:
    r = run
    r("token", "set", PF, "--uuid-file", "-", stdin=KNOWN + "\n")
    r("token", "show", PF)
    r("token", "show", PF, "--json")
    r("token", "check", VF)
    r("token", "check", VF, "--json")
    r("token", "check", VF, "--no-token", expect=6)
    r("token", "set", VF, expect=5)
    r("token", "set", PF, "--uuid-file", "-", stdin=KNOWN[:-1] + "x\n", expect=2)
    r("sriov", PF, "--numvfs", "3", expect=5)
    r("sriov", PF, "--json")
    shown = r("token", "show", PF, "--reveal", reveal=True)
    assert shown.strip() == KNOWN                   # --reveal is the one way out
    assert_nowhere(r, KNOWN)


def test_generated_token_never_leaks(run: Runner) -> None:
    r = run
    r("token", "set", PF)
    r("token", "set", PF, "--json")
    r("token", "check", VF)
    token = json.loads(r("token", "show", PF, "--json", "--reveal", reveal=True))["vf_token"]
    r("token", "show", PF)
    r("token", "check", VF, "--no-token", expect=6)
    assert_nowhere(r, token)


def test_uuid_on_argv_warns(run: Runner) -> None:
    r = run
    r("token", "set", PF, "--uuid", KNOWN)
    _, _, err = r.outputs[-1]
    assert "on the command line: shell history and 'ps' can show it" in err
    r.outputs[-1] = ("token set --uuid", "", err)   # argv is the user's choice here
    assert KNOWN not in err


def test_malformed_uuid_is_not_echoed(run: Runner) -> None:
    near = KNOWN[:-1] + "z"
    r = run
    r("token", "set", PF, "--uuid-file", "-", stdin=near, expect=2)
    _, out, err = r.outputs[-1]
    assert near not in out + err and "not a UUID in canonical form" in err


def test_audit_hook_sees_spawned_processes(tmp_path: Path) -> None:
    """Control: the harness does record a process start (with its argv)."""
    r = Runner(tmp_path)
    r("--help", env={"SECRECY_SPAWN_CONTROL": "marker-argv-42"})
    assert "marker-argv-42" in r.audit.read_text()
