"""CLI rendering: JSON documents and text tables.

Tables are drawn with rich when stdout is a terminal and as plain aligned columns
otherwise (pipes, tests, ``grep``): rich is imported only on the first path.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import click


def print_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, sort_keys=False))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]],
                title: str | None = None) -> None:
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(*headers, title=title, box=None, header_style="bold")
        for row in rows:
            table.add_row(*row)
        Console().print(table)
        return
    if title:
        click.echo(title)
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    click.echo(fmt.format(*headers).rstrip())
    for row in rows:
        click.echo(fmt.format(*row).rstrip())


def dash(value: object) -> str:
    return "-" if value is None or value == "" else str(value)
