"""CLI host-changing commands: detach, reattach, status (each one HostdevManager call).

Like every command, each first lets the manager recover an unfinished journal left by a
vfioctl that died (cli.main prints one ``vfioctl: recovered …`` line per device to
stderr); then it runs the operation and prints one line per device saying exactly what happened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from vfioctl.cli.main import Context
from vfioctl.cli.render import dash, print_json, print_table

if TYPE_CHECKING:
    from vfioctl.manager import HostdevManager, Report


def _manager(ctx: Context) -> HostdevManager:
    from vfioctl.manager import HostdevManager

    # ctx.host has already recovered an unfinished journal (cli.main._recover_first)
    return HostdevManager(ctx.host)


def _print_report(report: Report) -> None:
    for rec in report.recovered:
        click.echo(f"vfioctl: {rec.describe()}", err=True)
    for action in report.actions:
        click.echo(action.describe())


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
              help="Detach even devices the host is using (an up interface with routes, "
              "a mounted disk, the boot GPU).")
@click.option("--owner", metavar="NAME", default=None,
              help="Hold the devices for NAME (a guest); no other owner can take them.")
@click.pass_obj
def detach_cmd(ctx: Context, addresses: tuple[str, ...], group: bool, driver: str,
               force: bool, owner: str | None) -> None:
    """Detach PCI devices from their host drivers onto vfio-pci (or pci-stub).

    A device that shares its IOMMU group with devices the host uses is refused unless
    --group is given. The original driver is remembered for 'vfioctl reattach'.
    """
    report = _manager(ctx).detach(list(addresses), group=group, driver=driver,
                                  force=force, owner=owner)
    _print_report(report)


@click.command("reattach")
@click.argument("addresses", nargs=-1, required=True, metavar="ADDR...")
@click.option("--group", is_flag=True,
              help="Also give back every member of the groups that vfioctl holds.")
@click.option("--owner", metavar="NAME", default=None,
              help="The owner the devices are held for (needed for held devices).")
@click.pass_obj
def reattach_cmd(ctx: Context, addresses: tuple[str, ...], group: bool,
                 owner: str | None) -> None:
    """Give PCI devices back to the host, each to the driver it had before detach.

    driver_override is cleared. A device vfioctl did not detach is reprobed instead
    (the kernel picks its driver), and the output says so.
    """
    report = _manager(ctx).reattach(list(addresses), group=group, owner=owner)
    _print_report(report)


@click.command("status")
@click.option("--json", "as_json", is_flag=True,
              help="Print the documented JSON document instead of a table.")
@click.pass_obj
def status_cmd(ctx: Context, as_json: bool) -> None:
    """Show what vfioctl holds on this host, for whom, and each device's original driver."""
    states = _manager(ctx).status()
    if as_json:
        print_json({"host": ctx.host.name, "devices": [s.to_json() for s in states]})
        return
    if not states:
        click.echo("vfioctl holds no devices on this host")
        return
    rows = []
    for st in states:
        doc = st.to_json()
        original = dash(doc["original_driver"]) if st.record.moved else "(unknown)"
        if st.record.moved and st.record.original_driver is None:
            original = "(no driver)"
        drift = "" if st.driver == st.record.driver else f" (expected {st.record.driver})"
        rows.append([str(doc["address"]), dash(doc["iommu_group"]),
                     f"{dash(st.driver)}{drift}", original, dash(doc["owner"]),
                     str(doc["since"])])
    print_table(["ADDRESS", "GROUP", "DRIVER", "ORIGINAL", "OWNER", "SINCE"], rows)
