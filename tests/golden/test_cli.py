"""CLI golden cases: tests/data/cli/<case>.cmd (arguments) -> <case>.out.

A ``.cmd`` file holds one command line (shell quoting) without the program name;
``@data/`` is replaced by the path of tests/data. The ``.out`` golden holds the exit
code, stdout and stderr. Add a case by writing a ``.cmd`` and running with
VFIOCTL_TEST_REGENERATE=1, then review the new ``.out``.
"""

from __future__ import annotations

import io
import shlex
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from vfioctl.cli.main import main

DATA = Path(__file__).parent.parent / "data"
CASES = sorted(p.stem for p in (DATA / "cli").glob("*.cmd"))


def run_cli(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("case", CASES)
def test_cli_case(case: str, golden: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VFIOCTL_HOST", raising=False)
    cmd = (DATA / "cli" / f"{case}.cmd").read_text().strip()
    args = [a.replace("@data/", f"{DATA}/") for a in shlex.split(cmd)]
    code, out, err = run_cli(args)
    text = f"exit: {code}\n--- stdout\n{out}--- stderr\n{err}".replace(str(DATA), "@data")
    golden.check(DATA / "cli" / f"{case}.out", text)  # type: ignore[attr-defined]


def test_no_traceback_on_internal_paths(tmp_path: Path) -> None:
    code, _out, err = run_cli(["--host", f"linux:{tmp_path}", "list"])
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1
