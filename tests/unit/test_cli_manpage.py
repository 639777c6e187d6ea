"""The generated man page: every command and option in it, and roff that renders cleanly."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vfioctl.cli.main import cli
from vfioctl.cli.manpage import escape, render

assert isinstance(cli, click.Group)
PAGE = render(cli)


def _walk(group: click.Group, ctx: click.Context) -> Iterator[tuple[str, click.Command]]:
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None
        sub = click.Context(cmd, info_name=name, parent=ctx)
        yield sub.command_path.removeprefix("vfioctl "), cmd
        if isinstance(cmd, click.Group):
            yield from _walk(cmd, sub)


COMMANDS = list(_walk(cli, click.Context(cli, info_name="vfioctl")))


def _rendered() -> str:
    groff = shutil.which("groff")
    if groff is None:
        pytest.skip("groff is not installed (Debian: groff-base)")
    done = subprocess.run([groff, "-man", "-Tutf8", "-ww", "-rLL=200n", "-P-c", "-P-b",
                           "-P-u"], input=PAGE, capture_output=True, text=True, check=True)
    assert done.stderr == "", f"groff warns: {done.stderr}"
    return done.stdout


def test_sections_in_order() -> None:
    sections = re.findall(r"^\.SH (.+)$", PAGE, re.M)
    assert sections == ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "COMMANDS",
                        "ENVIRONMENT", "EXIT STATUS", "SEE ALSO"]
    assert PAGE.startswith(".TH VFIOCTL 1 ")


def test_every_command_has_its_section() -> None:
    titles = re.findall(r'^\.SS "(.+)"$', PAGE, re.M)
    assert titles == [escape(path) for path, _ in COMMANDS]


def test_renders_without_warnings_and_shows_every_option() -> None:
    text = _rendered()
    # Split the rendered page at the command headings, then look for each option there.
    for path, cmd in COMMANDS:
        start = text.index(f"\n   {path}\n")
        section = text[start:start + 20_000]
        assert f"vfioctl {path}" in section
        for param in cmd.params:
            if isinstance(param, click.Option) and param.name != "help":
                assert param.opts[0] in section, f"{path}: {param.opts[0]} missing"


def test_exit_codes_are_the_documented_ones() -> None:
    text = _rendered()
    codes = re.findall(r"^ {7}(\d+)\s", text.partition("EXIT STATUS")[2].partition(
        "SEE ALSO")[0], re.M)
    assert [int(c) for c in codes] == [0, 1, 2, 3, 4, 5, 6, 70, 77]


def test_man_reads_it(tmp_path: Path) -> None:
    man = shutil.which("man")
    if man is None:
        pytest.skip("man is not installed (Debian: man-db)")
    path = tmp_path / "vfioctl.1"
    path.write_text(PAGE)
    done = subprocess.run([man, "-l", str(path)], capture_output=True, text=True,
                          check=False, env={"MANWIDTH": "80", "PATH": "/usr/bin:/bin",
                                            "MANPAGER": "cat", "PAGER": "cat"})
    assert done.returncode == 0 and "vfioctl - safe, explainable" in done.stdout


def test_module_entry_point_is_the_same_page() -> None:
    out = subprocess.run([sys.executable, "-m", "vfioctl.cli.manpage"], capture_output=True,
                         text=True, check=True).stdout
    assert out == PAGE


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")) | st.just("\n")))
def test_escape_leaves_no_request_and_no_lone_backslash(text: str) -> None:
    out = escape(text)
    for line in out.split("\n"):
        assert not line.startswith((".", "'"))
    assert out.isascii()
    assert re.search(r"\\(?![e\-&]|\[u[0-9A-F]{4,6}\])", out) is None
    plain = re.sub(r"\\\[u([0-9A-F]+)\]", lambda m: chr(int(m.group(1), 16)), out)
    assert plain.replace("\\e", "\\").replace("\\-", "-").replace("\n\\&", "\n").removeprefix(
        "\\&") == text
