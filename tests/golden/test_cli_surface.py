"""Every subcommand in the table resolves, has help text, and `--help` stays light."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

from vfioctl.cli.main import COMMANDS, cli


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_resolves_and_has_help(name: str) -> None:
    ctx = click.Context(cli)
    cmd = cli.get_command(ctx, name)
    assert cmd is not None and cmd.name == name
    assert (cmd.help or "").strip(), f"{name} has no help text"
    assert COMMANDS[name][1].strip()


def test_help_does_not_import_heavy_modules() -> None:
    code = ("import sys; from vfioctl.cli.main import main; rc = main(['--help']); "
            "heavy = [m for m in ('lxml', 'rich', 'sqlite3', 'qemu', 'vfioctl.sim', "
            "'hypothesis') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
