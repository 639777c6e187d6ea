"""CLI host-changing commands: detach, reattach, status (each one manager call).

Like every command, each first lets the manager recover an unfinished journal left by a
vfioctl that died (cli.main prints one ``vfioctl: recovered …`` line per device to
stderr); then it runs the operation and prints one line per device saying exactly what
happened. ``--dry-run`` prints the manager's plan instead — the same lines (or the same
refusal, with the same exit code) that the run would give — and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from vfioctl.cli.main import Context
from vfioctl.cli.render import dash, print_json, print_table

if TYPE_CHECKING:
    from vfioctl.manager import HostdevManager, Plan, Report

dry_run_option = click.option(
    "--dry-run", is_flag=True,
    help="Print what would be done (or why it would be refused) and change nothing.")
json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print the documented JSON document (docs/manager.md).")


def manager(ctx: Context) -> HostdevManager:
    from vfioctl.manager import HostdevManager

    # ctx.host has already recovered an unfinished journal (cli.main._recover_first)
    return HostdevManager(ctx.host)


def show_outcome(ctx: Context, plan: Plan, report: Report | None, as_json: bool) -> None:
    """Print a plan (``report`` None: a dry run) or what a run did, one way for both."""
    from vfioctl.manager import plan_json

    if report is None:
        plan.check()  # a refused dry run fails exactly as the run would
    else:
        for rec in report.recovered:
            click.echo(f"vfioctl: {rec.describe()}", err=True)
    if as_json:
        print_json(plan_json(plan, host=ctx.host.name, dry_run=report is None))
        return
    for line in plan.describe():
        click.echo(line)


def run_or_plan(ctx: Context, dry_run: bool, as_json: bool, plan_fn: Callable[[], Plan],
                run_fn: Callable[[], Report]) -> None:
    """``--dry-run``: the plan; otherwise the run, printed from the plan it executed."""
    if dry_run:
        show_outcome(ctx, plan_fn(), None, as_json)
        return
    report = run_fn()
    assert report.plan is not None
    show_outcome(ctx, report.plan, report, as_json)


@click.command("detach")
@click.argument("addresses", nargs=-1, required=True, metavar="ADDR...")
@click.option("--group", is_flag=True,
              help="Also detach every other member of the devices' IOMMU groups "
              "(pcieport and pci-stub members are left alone).")
@click.option("--driver", type=click.Choice(["vfio-pci", "pci-stub"]), default="vfio-pci",
              show_default=True,
              help="Driver to park the devices on; pci-stub keeps the host off a group "
              "member nobody means to use.")
@click.option("--force", is_flag=True,
              help="Detach even devices the host is using (an up interface with routes "
              "or addresses, a mounted disk, the boot GPU).")
@click.option("--owner", metavar="NAME", default=None,
              help="Hold the devices for NAME (a guest); no other owner can take them.")
@dry_run_option
@json_option
@click.pass_obj
def detach_cmd(ctx: Context, addresses: tuple[str, ...], group: bool, driver: str,
               force: bool, owner: str | None, dry_run: bool, as_json: bool) -> None:
    """Detach PCI devices from their host drivers onto vfio-pci (or pci-stub).

    A device that shares its IOMMU group with devices the host uses is refused unless
    --group is given. The original driver is remembered for 'vfioctl reattach'.
    """
    mgr = manager(ctx)
    args = list(addresses)
    run_or_plan(ctx, dry_run, as_json,
                lambda: mgr.plan_detach(args, group=group, driver=driver, force=force,
                                        owner=owner),
                lambda: mgr.detach(args, group=group, driver=driver, force=force,
                                   owner=owner))


@click.command("reattach")
@click.argument("addresses", nargs=-1, required=True, metavar="ADDR...")
@click.option("--group", is_flag=True,
              help="Also give back every member of the groups that vfioctl holds.")
@click.option("--owner", metavar="NAME", default=None,
              help="The owner the devices are held for (needed for held devices).")
@dry_run_option
@json_option
@click.pass_obj
def reattach_cmd(ctx: Context, addresses: tuple[str, ...], group: bool,
                 owner: str | None, dry_run: bool, as_json: bool) -> None:
    """Give PCI devices back to the host, each to the driver it had before detach.

    driver_override is cleared. A device vfioctl did not detach is reprobed instead
    (the kernel picks its driver), and the output says so.
    """
    mgr = manager(ctx)
    args = list(addresses)
    run_or_plan(ctx, dry_run, as_json,
                lambda: mgr.plan_reattach(args, group=group, owner=owner),
                lambda: mgr.reattach(args, group=group, owner=owner))


@click.command("status")
@click.option("--json", "as_json", is_flag=True,
              help="Print the documented JSON document instead of a table.")
@click.pass_obj
def status_cmd(ctx: Context, as_json: bool) -> None:
    """Show what vfioctl holds on this host, for whom, and each device's original driver."""
    states = manager(ctx).status()
    if as_json:
        print_json({"host": ctx.host.name, "devices": [s.to_json() for s in states]})
        return
    if not states:
        click.echo("vfioctl holds no devices on this host")
        return
    rows = []
    for st in states:
        rec = st.record
        original = dash(rec.original_driver) if rec.moved else "(unknown)"
        if rec.moved and rec.original_driver is None:
            original = "(no driver)"
        if not st.present:
            driver = "(device gone)"
        else:
            drift = "" if st.driver == rec.driver else f" (expected {rec.driver})"
            driver = f"{dash(st.driver)}{drift}"
        rows.append([str(rec.addr), dash(rec.group), driver, original, dash(rec.owner),
                     rec.since])
    print_table(["ADDRESS", "GROUP", "DRIVER", "ORIGINAL", "OWNER", "SINCE"], rows)
