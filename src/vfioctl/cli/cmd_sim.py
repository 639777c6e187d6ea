"""CLI: ``vfioctl sim list|copy|generate`` — the bundled simulated hosts."""

from __future__ import annotations

import json
from pathlib import Path

import click

from vfioctl.errors import UsageError


@click.group("sim")
def sim_cmd() -> None:
    """Simulated hosts: try vfioctl without VFIO hardware.

    Use a bundled host read-only with `--host sim:NAME`; to change it (detach, SR-IOV),
    copy it to a file and use `--host sim:FILE`: every change is written back to FILE.
    """


@sim_cmd.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_cmd(as_json: bool) -> None:
    """List the bundled simulated hosts."""
    from vfioctl.sim.loader import bundled_names, bundled_text, parse_text

    rows: list[dict[str, str | int]] = []
    for name in bundled_names():
        spec = parse_text(bundled_text(name), name)
        rows.append({"name": name, "description": spec.description,
                     "functions": len(spec.functions)})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    width = max(len(str(r["name"])) for r in rows) if rows else 0
    for r in rows:
        click.echo(f"{r['name']:<{width}}  {r['functions']:>3} functions  {r['description']}")


@sim_cmd.command("copy")
@click.argument("name")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
def copy_cmd(name: str, file: Path, force: bool) -> None:
    """Write bundled host NAME's description to FILE, to edit or use as --host sim:FILE."""
    from vfioctl.sim.loader import bundled_text

    text = bundled_text(name)
    if file.exists() and not force:
        raise UsageError(f"{file} already exists", hint="use --force to overwrite it")
    file.write_text(text)
    click.echo(f"wrote {file}; use it with: vfioctl --host sim:{file} groups")


@sim_cmd.command("generate")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--functions", type=click.IntRange(min=2), default=4096, show_default=True,
              help="Number of PCI functions.")
@click.option("--seed", type=int, default=0, show_default=True)
def generate_cmd(file: Path, functions: int, seed: int) -> None:
    """Write a synthetic host with many functions to FILE (for benchmarks)."""
    from vfioctl.sim.generator import generate_host

    file.write_text(generate_host(functions, seed))
    click.echo(f"wrote {file} ({functions} functions)")
