"""A man page written from the command tree: ``python -m vfioctl.cli.manpage > vfioctl.1``.

Everything in it comes from the commands themselves (their help, arguments and options,
as ``--help`` shows them) and from the error classes (exit codes), so the page cannot
say something the program does not. The output is roff with the man(7) macros and is
the same on every run (no date: a build that packages it stays reproducible).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from importlib import metadata

import click

#: The environment variables vfioctl reads, with what for (README "Hosts", "Safety").
ENVIRONMENT = (
    ("VFIOCTL_HOST", "the host to act on, as --host takes it"),
    ("VFIOCTL_STATE_DIR", "the state directory (journal, VF tokens); default /run/vfioctl, "
     "beside FILE for sim:FILE"),
    ("VFIOCTL_LOCK_TIMEOUT", "seconds a writer waits for another one (default 10)"),
    ("VFIOCTL_CACHE_DIR", "where QEMU capability probes are cached "
     "(default $XDG_CACHE_HOME/vfioctl)"),
    ("NO_COLOR", "no colour, even on a terminal"),
)


def escape(text: str) -> str:
    """Text as roff reads it literally: backslashes, hyphens (a ``-`` is a minus sign in
    options, so every one is written ``\\-``), a leading ``.`` or ``'`` (a request), and
    characters beyond ASCII (as ``\\[uXXXX]``: "…" in a help text)."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    # groff reads bytes as Latin-1 unless preconv runs: name every other character
    text = "".join(c if ord(c) < 128 else f"\\[u{ord(c):04X}]" for c in text)
    lines = [("\\&" + line) if line[:1] in (".", "'") else line for line in text.split("\n")]
    return "\n".join(lines)


def _paragraphs(help_text: str) -> Iterator[str]:
    """click's help as paragraphs: blank-line separated, ``\\b`` blocks kept as lines."""
    for block in click.unstyle(help_text).strip().split("\n\n"):
        lines = block.strip("\n").split("\n")
        if lines and lines[0].strip() == "\b":
            yield ".nf\n" + escape("\n".join(lines[1:])) + "\n.fi"
        else:
            yield escape(" ".join(line.strip() for line in lines))


def _usage(ctx: click.Context, cmd: click.Command) -> str:
    pieces = cmd.collect_usage_pieces(ctx)
    return f".B {escape(ctx.command_path)}\n{escape(' '.join(pieces))}"


def _options(ctx: click.Context, cmd: click.Command) -> list[str]:
    out: list[str] = []
    for param in cmd.get_params(ctx):
        if not isinstance(param, click.Option) or param.name == "help":
            continue  # arguments are in the synopsis; --help is everywhere
        record = param.get_help_record(ctx)
        if record is None:
            continue
        names, help_text = record
        out.append(f".TP\n.B {escape(names)}\n{escape(help_text) if help_text else ''}".rstrip())
    return out


def _commands(ctx: click.Context, group: click.Group) -> Iterator[tuple[click.Context,
                                                                       click.Command]]:
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if cmd is None or cmd.hidden:
            continue
        sub = click.Context(cmd, info_name=name, parent=ctx)
        yield sub, cmd
        if isinstance(cmd, click.Group):
            yield from _commands(sub, cmd)


def _exit_codes() -> list[tuple[int, str]]:
    """Exit codes with what they mean: 0 and 1 (a check or QEMU failed) and those of the
    error tree, each described by the first class that has it."""
    from vfioctl import errors

    codes: dict[int, str] = {0: "success", 1: "doctor found a failing check, or QEMU failed"}
    pending = list(errors.VfioctlError.__subclasses__())
    while pending:
        cls = pending.pop(0)
        pending.extend(cls.__subclasses__())
        if cls.exit_code in codes:
            continue
        own = cls.__dict__.get("__doc__")
        if own:
            codes[cls.exit_code] = own.strip().split("\n")[0].rstrip(".")
        else:  # PermissionDenied -> "Permission denied"
            words = re.findall(r"[A-Z][a-z]*", cls.__name__)
            codes[cls.exit_code] = " ".join([words[0], *(w.lower() for w in words[1:])])
    codes.setdefault(2, "usage error")
    return sorted(codes.items())


def render(root: click.Group, prog: str = "vfioctl") -> str:
    """The man page of ROOT as roff text."""
    ctx = click.Context(root, info_name=prog)
    try:
        version = metadata.version(prog)
    except metadata.PackageNotFoundError:
        version = ""
    short = root.get_short_help_str(limit=10_000).rstrip(".")
    name_line = short.split(": ", 1)[1] if ": " in short else short
    title = escape(f"{prog} {version}".strip())
    out = [
        f'.TH {prog.upper()} 1 "" "{title}" "User Commands"',
        ".SH NAME",
        f"{escape(prog)} \\- {escape(name_line)}",
        ".SH SYNOPSIS",
        _usage(ctx, root),
        ".SH DESCRIPTION",
    ]
    for para in list(_paragraphs(root.help or ""))[1:]:  # (the first is the NAME line)
        out += [".PP", para]
    out += [".SH OPTIONS", *_options(ctx, root), ".SH COMMANDS"]
    for sub, cmd in _commands(ctx, root):
        out += [f'.SS "{escape(sub.command_path.removeprefix(prog + " "))}"', _usage(sub, cmd)]
        for para in _paragraphs(cmd.help or ""):
            out += [".PP", para]
        if isinstance(cmd, click.Group):
            names = ", ".join(cmd.list_commands(sub))
            out += [".PP", escape(f"Commands: {names}.")]
        options = _options(sub, cmd)
        if options:
            out += [".PP", "Options:", ".RS", *options, ".RE"]
        if cmd.epilog:
            for para in _paragraphs(cmd.epilog):
                out += [".PP", para]
    out.append(".SH ENVIRONMENT")
    for var, what in ENVIRONMENT:
        out += [".TP", f".B {var}", escape(what)]
    out.append(".SH EXIT STATUS")
    for code, what in _exit_codes():
        out += [".TP", f".B {code}", escape(what)]
    out += [".SH SEE ALSO", escape(f"{prog} COMMAND --help; the README and docs/ of the "
                                   "source distribution.")]
    return "\n".join(out) + "\n"


def main() -> int:
    from vfioctl.cli.main import cli

    if not isinstance(cli, click.Group):  # (it is: the type checker wants it said)
        return 70
    sys.stdout.write(render(cli))
    return 0


if __name__ == "__main__":
    sys.exit(main())
