"""Text output people can read: names verbatim, tables that fit the terminal, colour
only on a terminal (a real pty), plain when piped or with NO_COLOR."""

from __future__ import annotations

import io
import os
import pty
import re
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from vfioctl.cli import render
from vfioctl.cli.main import main
from vfioctl.cli.render import Styled, format_table

DATA = Path(__file__).parent.parent / "data" / "cli" / "tty"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
BRACKETED = "RS4xx PCI Express Port [ext gfx]"


def test_bracketed_names_kept_verbatim() -> None:
    lines = format_table(["ADDRESS", "NAME"], [["0000:00:02.0", BRACKETED]],
                         width=80, color=True)
    assert BRACKETED in ANSI.sub("", lines[1])


def test_name_cut_with_ellipsis_never_driver_or_address() -> None:
    rows = [["0000:00:1f.3", "snd_hda_intel", "N" * 100]]
    lines = format_table(["ADDRESS", "DRIVER", "NAME"], rows, width=45)
    assert all(len(line) <= 45 for line in lines)
    assert "0000:00:1f.3  snd_hda_intel  " in lines[1] and lines[1].endswith("…")


def test_table_that_cannot_fit_keeps_drivers_whole() -> None:
    rows = [["0000:00:1f.3", "snd_hda_intel", "Intel Corporation Cannon Lake PCH cAVS"]]
    lines = format_table(["ADDRESS", "DRIVER", "NAME"], rows, width=20)
    assert "snd_hda_intel" in lines[1] and "0000:00:1f.3" in lines[1]


def test_empty_columns_dropped_only_when_narrow() -> None:
    rows = [["a", "", "x" * 30]]
    assert "SR-IOV" in format_table(["A", "SR-IOV", "NAME"], rows)[0]
    assert "SR-IOV" not in format_table(["A", "SR-IOV", "NAME"], rows, width=30)[0]


def test_colour_only_when_asked() -> None:
    cell = Styled("blocked", "red")
    assert "\x1b[31m" in format_table(["X"], [[cell]], color=True)[1]
    assert "\x1b[" not in "".join(format_table(["X"], [[cell]], color=False))


def _cli(args: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(args)
    return code, out.getvalue()


@pytest.mark.parametrize("columns", [80, 200])
@pytest.mark.parametrize("cmd", ["list", "groups", "tree"])
@pytest.mark.parametrize("host", ["workstation", "sriov-server"])
def test_terminal_goldens(cmd: str, host: str, columns: int, golden: object,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    """What a terminal COLUMNS wide shows (NO_COLOR: the layout, not the colours)."""
    monkeypatch.setattr(render, "is_tty", lambda: True)
    monkeypatch.setenv("COLUMNS", str(columns))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv("VFIOCTL_HOST", raising=False)
    code, out = _cli(["--host", f"sim:{host}", cmd])
    assert code == 0 and "\x1b[" not in out
    # Rows of a table fit; tree lines too (a table that cannot fit is the exception)
    if columns == 80:
        table = out.split("\n\n")[0].splitlines()
        rows = [ln for ln in table if not ln.startswith(("group ", "VIABLE", "*", "  "))]
        assert max(len(ln) for ln in rows) <= columns
    golden.check(DATA / f"sim-{host}-{cmd}-{columns}.out", out)  # type: ignore[attr-defined]


def test_drivers_never_cut_at_80(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "is_tty", lambda: True)
    monkeypatch.setenv("COLUMNS", "80")
    _code, out = _cli(["--host", "sim:workstation", "list"])
    assert out.count("snd_hda_intel") == 2 and "0000:06:00.0" in out


def _in_pty(args: list[str], env: dict[str, str]) -> str:
    master, slave = pty.openpty()
    code = ("import sys; from vfioctl.cli.main import main; "
            "sys.exit(main(sys.argv[1:]))")
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=slave,
                            stderr=subprocess.PIPE, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(timeout=600)
    os.close(master)
    return b"".join(chunks).decode()


@pytest.mark.parametrize("no_color", [False, True])
def test_pty_colours_verdicts_and_fits(no_color: bool) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "VFIOCTL_HOST")}
    env.update(COLUMNS="80", TERM="xterm")
    if no_color:
        env["NO_COLOR"] = "1"
    out = _in_pty(["--host", "sim:workstation", "groups"], env)
    assert ("\x1b[31mblocked" in out) is not no_color
    assert ("\x1b[32malone" in out) is not no_color
    table = [ANSI.sub("", ln) for ln in out.splitlines() if ln[:1].isdigit()
             or ln.startswith(("GROUP", "\x1b"))]
    assert table and max(len(ln) for ln in table) <= 80


def test_piped_output_has_no_colour_and_whole_names() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "VFIOCTL_HOST")}
    env.update(COLUMNS="80", TERM="xterm")
    proc = subprocess.run([sys.executable, "-c", "import sys; from vfioctl.cli.main "
                           "import main; sys.exit(main(sys.argv[1:]))",
                           "--host", "sim:workstation", "list"],
                          capture_output=True, text=True, env=env, check=True)
    assert "\x1b[" not in proc.stdout
    assert "[GeForce RTX 3060 Lite Hash Rate]" in proc.stdout
