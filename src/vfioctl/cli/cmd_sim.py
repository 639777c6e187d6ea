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


@sim_cmd.command("reboot")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def reboot_cmd(file: Path, as_json: bool) -> None:
    """Reboot simulated host FILE, then apply its persisted bindings as boot would.

    Forgets what a reboot forgets: every bind and driver_override, VFs, VF tokens,
    other processes' VFIO files and vfioctl's runtime state (FILE.state, the host's
    /run). Keeps the hardware and FILE.etc (the host's /etc, where 'detach --persist'
    writes). The boot then runs as on Linux: built-in drivers, the initramfs (with
    vfioctl's hook, if installed), then udev device by device — vfioctl's rule, if
    installed, before each device's modules load. Prints every bind in order.
    """
    from vfioctl.persist import boot, load
    from vfioctl.persist.apply import Outcome, apply
    from vfioctl.persist.paths import sim_etc
    from vfioctl.sim.host import SimHost
    from vfioctl.sim.reboot import reboot

    if not file.is_file():
        from vfioctl.sim.loader import read_host_file

        read_host_file(file)           # the loader's own NotFound / ConfigError
    paths = sim_etc(file)
    config = load(paths)
    early_rules = {str(e.address): e for e in config.entries} \
        if boot.hook_installed(paths) else {}
    helper = boot.helper_runs(paths)
    lines: list[str] = []
    outcomes: list[Outcome] = []

    def early(addr: str, ident: str, subsystem: str) -> str | None:
        e = early_rules.get(addr)
        return e.driver if e is not None and (e.id, e.subsystem) == (ident, subsystem) \
            else None

    def on_add(host: SimHost, addr: str) -> None:
        from vfioctl.manager import HostdevManager

        if not helper:
            return
        now = load(paths)
        boot.early_overrides(host, now)     # the helper's shell part
        entries = [e for e in now.entries if str(e.address) == addr]
        if entries:
            outcomes.extend(apply(HostdevManager(host), paths, entries,
                                  others=now.entries,
                                  log=lambda line, problem: lines.append(
                                      f"persist: {line}")))

    log = reboot(file, early=early if early_rules else None, on_add=on_add)
    if as_json:
        click.echo(json.dumps({
            "host": f"sim:{file}",
            "binds": [{"address": a, "driver": d, "stage": st} for a, d, st in log.binds],
            "persist": [o.to_json() for o in outcomes]}, indent=2))
        return
    click.echo(f"rebooted sim:{file}")
    for addr, driver, stage in log.binds:
        click.echo(f"bound {addr} to {driver} ({stage})")
    for line in lines:
        click.echo(line)
