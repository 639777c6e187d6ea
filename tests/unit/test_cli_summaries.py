"""`vfioctl --help` lists each command with its own first sentence, without importing it.

The summaries live in ``COMMANDS`` (``vfioctl.cli.main``) so that ``--help`` stays light;
this test is what keeps them from drifting from the commands' docstrings: change a
command's first sentence and the table must change with it.
"""

from __future__ import annotations

import io
from contextlib import redirect_stdout

import click
import pytest

from vfioctl.cli.main import COMMANDS, cli, main


def _own_short_help(name: str) -> str:
    cmd = cli.get_command(click.Context(cli), name)
    assert cmd is not None
    # The first sentence of the command's help, as click would shorten it (no limit).
    return cmd.get_short_help_str(limit=10_000)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_summary_is_the_commands_own_first_sentence(name: str) -> None:
    assert COMMANDS[name][1] == _own_short_help(name), (
        f"COMMANDS[{name!r}] in vfioctl/cli/main.py differs from {name}'s own help; "
        "copy the command's first sentence into the table")


def test_help_lists_every_command_with_its_summary() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["--help"]) == 0
    # (help wraps lines, also after a hyphen: compare with whitespace collapsed)
    def flat(text: str) -> str:
        return " ".join(text.split()).replace("- ", "-")

    listing = flat(out.getvalue().partition("Commands:")[2])
    for name in COMMANDS:
        assert flat(f"{name} {_own_short_help(name)}") in listing
