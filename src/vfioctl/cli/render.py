"""CLI rendering: JSON documents, text tables, and colour for verdicts.

Tables are laid out here, not by a library: device names come from pci.ids and are
printed verbatim (a markup library would read ``[ext gfx]`` as a tag and drop it), and
the layout must be the same in a test as on a terminal. On a terminal a table fits its
width: only the columns named ``shrink`` (the NAME column) are cut, with ``…``, never
addresses or drivers; piped output (``grep``, ``awk``, tests) keeps every cell whole.
Colour is used only on a terminal and never when ``NO_COLOR`` is set
(https://no-color.org) or ``TERM=dumb``; it never changes the text, only wraps it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import click

ELLIPSIS = "…"
#: The NAME column keeps at least this many characters (ellipsis included).
MIN_SHRUNK = 12
_SGR = {"green": "32", "red": "31", "yellow": "33", "blue": "34", "magenta": "35",
        "cyan": "36", "bold": "1", "dim": "2"}


@dataclass(frozen=True, slots=True)
class Styled:
    """A table cell with a colour for terminals (``green``, ``red``, ...)."""

    text: str
    style: str | None = None

    def __len__(self) -> int:
        return len(self.text)


Cell = str | Styled


def is_tty() -> bool:
    """Whether stdout is a terminal (the rendering of tables and colour depends on it)."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def use_color() -> bool:
    """Colour only for a terminal, and never with ``NO_COLOR`` (any value) or a dumb one."""
    if "NO_COLOR" in os.environ or os.environ.get("TERM") == "dumb":
        return False
    return is_tty()


def terminal_width() -> int | None:
    """The terminal's width (``COLUMNS`` first, as the shell sets it), or None when
    piped: piped output is never cut."""
    if not is_tty():
        return None
    return shutil.get_terminal_size((80, 24)).columns


def paint(text: str, style: str | None, color: bool) -> str:
    """``text`` in ``style`` (space-separated names of :data:`_SGR`) when ``color``."""
    if not color or not style or not text:
        return text
    codes = ";".join(_SGR[s] for s in style.split() if s in _SGR)
    return f"\x1b[{codes}m{text}\x1b[0m" if codes else text


def shorten(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, the last one ``…`` when anything was cut."""
    if len(text) <= width:
        return text
    return text[:max(width - 1, 0)] + ELLIPSIS if width > 0 else ""


def _text(cell: Cell) -> str:
    return cell.text if isinstance(cell, Styled) else cell


def _style(cell: Cell) -> str | None:
    return cell.style if isinstance(cell, Styled) else None


Shrink = Sequence[tuple[str, int]]
#: By default only the NAME column gives way, down to :data:`MIN_SHRUNK` characters.
NAME_SHRINKS: Shrink = (("NAME", MIN_SHRUNK),)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Cell]], *,
                 width: int | None = None, color: bool = False,
                 shrink: Shrink = NAME_SHRINKS) -> list[str]:
    """The table as lines: columns two spaces apart, no trailing blanks.

    With ``width``, columns empty in every row are dropped, then each ``(column,
    minimum)`` of ``shrink`` in turn gives up characters (never below its minimum or
    its header) until the table fits. A table that still does not fit is printed
    wider than ``width`` rather than cutting an address or a driver.
    """
    cols = list(range(len(headers)))
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(_text(c))) for w, c in zip(widths, row, strict=True)]

    def total() -> int:
        return sum(widths[i] for i in cols) + 2 * (len(cols) - 1)

    if width is not None and total() > width:
        cols = [i for i in cols if any(_text(r[i]) for r in rows)] or cols
        for column, minimum in shrink:
            if column not in headers:
                continue
            i = headers.index(column)
            excess = total() - width
            if excess > 0 and i in cols:
                widths[i] = max(widths[i] - excess, min(minimum, widths[i]),
                                len(headers[i]))

    def line(cells: Sequence[Cell], head: bool) -> str:
        parts = []
        for n, i in enumerate(cols):
            text = shorten(_text(cells[i]), widths[i])
            pad = "" if n == len(cols) - 1 else " " * (widths[i] - len(text))
            parts.append(paint(text, "bold" if head else _style(cells[i]), color) + pad)
        return "  ".join(parts).rstrip()

    return [line(headers, True)] + [line(r, False) for r in rows]


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Cell]],
                title: str | None = None, shrink: Shrink = NAME_SHRINKS) -> None:
    """Print a table: fitted and coloured on a terminal, whole cells when piped."""
    if title:
        click.echo(title)
    for text in format_table(headers, rows, width=terminal_width(), color=use_color(),
                             shrink=shrink):
        click.echo(text)


def print_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, sort_keys=False))


def dash(value: object) -> str:
    return "-" if value is None or value == "" else str(value)
