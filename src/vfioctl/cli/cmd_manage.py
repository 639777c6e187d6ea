"""CLI host-changing commands: detach, reattach, status (each one manager call).

Devices are named by selectors (:mod:`vfioctl.select`: addresses, globs, ids, class
names, interfaces, disks), resolved to addresses before the manager sees them.

Like every command, each first lets the manager recover an unfinished journal left by a
vfioctl that died (cli.main prints one ``vfioctl: recovered …`` line per device to
stderr); then it runs the operation and prints one line per device saying exactly what
happened. ``--dry-run`` prints the manager's plan instead — the same lines (or the same
refusal, with the same exit code) that the run would give — and changes nothing.

``detach --force`` on devices the host uses (its network, disks, console) has a human
in the loop: it first says on stderr what it is taking, one line per device and use,
then asks on a terminal (default no); without a terminal it needs ``--yes``. A dry run
never asks; it refuses without ``--yes`` where the run would, so that it stays what the
run does.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import click

from vfioctl.cli.main import Context
from vfioctl.cli.render import dash, print_json, print_table

if TYPE_CHECKING:
    from vfioctl.address import PciAddress
    from vfioctl.manager import DeviceStatus, HostdevManager, Plan, Report
    from vfioctl.pci.usage import HostUse

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


def selected(ctx: Context, selectors: Sequence[str]) -> list[PciAddress]:
    """The addresses the selectors name on this host (vfioctl.select), each once.

    An exact address goes to the manager as it is, present or not: the manager checks
    it in its own order, so that a change this user may not make is refused as such
    (exit 77) before any device is looked up, as it was before selectors.
    """
    from vfioctl.address import PciAddress
    from vfioctl.errors import UsageError
    from vfioctl.select import resolve

    out: dict[PciAddress, None] = {}
    for selector in selectors:
        try:
            out.setdefault(PciAddress.parse(selector), None)
        except UsageError:
            out.update(dict.fromkeys(resolve(ctx.host, [selector])))
    return list(out)


def run_or_plan(ctx: Context, dry_run: bool, as_json: bool, plan_fn: Callable[[], Plan],
                run_fn: Callable[[], Report]) -> None:
    """``--dry-run``: the plan; otherwise the run, printed from the plan it executed."""
    if dry_run:
        show_outcome(ctx, plan_fn(), None, as_json)
        return
    report = run_fn()
    assert report.plan is not None
    show_outcome(ctx, report.plan, report, as_json)


def _interactive() -> bool:
    """A person can answer: stdin and stderr (where the question goes) are terminals."""
    try:
        return sys.stdin.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError, OSError):  # closed or replaced streams
        return False


def _taken_from_host(mgr: HostdevManager, plan: Plan) -> list[tuple[PciAddress, HostUse]]:
    """What the plan takes that the host uses: (device, use), in the plan's order."""
    from vfioctl.pci.device import PciDevice
    from vfioctl.pci.usage import find_host_uses

    moving = list(dict.fromkeys(step.addr for step in plan.steps))
    return [(addr, use) for addr in moving
            for use in find_host_uses(PciDevice(mgr.host, addr))]


def confirm_force(mgr: HostdevManager, plan: Plan, *, yes: bool, dry_run: bool) -> None:
    """The human in the loop of ``detach --force``: say what is taken from the host and
    have it confirmed (a terminal's y, or ``--yes``) before anything changes.

    Raises:
        UsageError: no terminal to ask on and no ``--yes`` (a dry run too: it shows
            what the run would do, and the run would stop here).
        OperationInvalid: the person answered no (nothing changed).
    """
    from vfioctl.errors import OperationInvalid, UsageError

    if not plan.ok:
        return  # refused anyway: the run says why, taking nothing
    taken = _taken_from_host(mgr, plan)
    if not taken:
        return
    devices = list(dict.fromkeys(addr for addr, _ in taken))
    if not yes and not _interactive():
        them = "it" if len(devices) == 1 else "them"
        raise UsageError(
            f"--force would take {_count(devices)} the host uses "
            f"({', '.join(str(a) for a in devices)}) and there is no terminal to "
            f"confirm on", hint=f"pass --yes to take {them} anyway")
    verb = "would take" if dry_run else "taking"
    for addr, use in taken:
        click.echo(f"vfioctl: --force: {verb} {addr} from the host: {use.detail}",
                   err=True)
    if yes or dry_run:
        return
    if not click.confirm(f"Detach {_count(devices)} the host uses?", default=False,
                         err=True):
        raise OperationInvalid("not confirmed: nothing was detached",
                               hint="answer y to take them, or pass --yes")


def _count(devices: Sequence[object]) -> str:
    return "1 device" if len(devices) == 1 else f"{len(devices)} devices"


@click.command("detach")
@click.argument("selectors", nargs=-1, required=True, metavar="SELECTOR...")
@click.option("--group", is_flag=True,
              help="Also detach every other member of the devices' IOMMU groups "
              "(pcieport and pci-stub members are left alone).")
@click.option("--driver", type=click.Choice(["vfio-pci", "pci-stub"]), default="vfio-pci",
              show_default=True,
              help="Driver to park the devices on; pci-stub keeps the host off a group "
              "member nobody means to use.")
@click.option("--force", is_flag=True,
              help="Detach even devices the host is using (an up interface with routes "
              "or addresses, a mounted disk, the boot GPU): says what it takes and asks "
              "first.")
@click.option("--yes", is_flag=True,
              help="With --force: take devices the host uses without asking (needed "
              "where there is no terminal to ask on).")
@click.option("--owner", metavar="NAME", default=None,
              help="Hold the devices for NAME (a guest); no other owner can take them.")
@click.option("--persist", is_flag=True,
              help="Also bind the same devices again at every boot (kept in "
              "/etc/vfioctl, checked against the hardware; docs/persistence.md).")
@dry_run_option
@json_option
@click.pass_obj
def detach_cmd(ctx: Context, selectors: tuple[str, ...], group: bool, driver: str,
               force: bool, yes: bool, owner: str | None, persist: bool, dry_run: bool,
               as_json: bool) -> None:
    """Detach PCI devices from their host drivers onto vfio-pci (or pci-stub).

    SELECTOR is an address (0000:01:00.0, 01:00.0, a glob such as '01:00.*'), a
    vendor:device id (10de:2504, '10de:*'), a class (gpu, audio, network, nvme,
    storage, usb, ...), an interface (enp4s0) or a block device (sda, /dev/nvme0n1).

    A device that shares its IOMMU group with devices the host uses is refused unless
    --group is given. The original driver is remembered for 'vfioctl reattach'.
    """
    args = selected(ctx, selectors)
    mgr = manager(ctx)
    if force:
        confirm_force(mgr, mgr.plan_detach(args, group=group, driver=driver, force=True,
                                           owner=owner), yes=yes, dry_run=dry_run)
    if persist:
        _detach_persist(ctx, mgr, args, group=group, driver=driver, force=force,
                        owner=owner, dry_run=dry_run, as_json=as_json)
        return
    run_or_plan(ctx, dry_run, as_json,
                lambda: mgr.plan_detach(args, group=group, driver=driver, force=force,
                                        owner=owner),
                lambda: mgr.detach(args, group=group, driver=driver, force=force,
                                   owner=owner))


def _detach_persist(ctx: Context, mgr: HostdevManager, args: list[PciAddress], *,
                    group: bool, driver: str, force: bool, owner: str | None,
                    dry_run: bool, as_json: bool) -> None:
    """``detach --persist``: everything that could refuse the persisting is checked
    before the detach runs (vfioctl.persist.record), so a refusal changes nothing."""
    from vfioctl.persist import require_etc
    from vfioctl.persist.record import check_persistable, persist_detached, targets

    paths = require_etc(ctx.host, "persist into")
    plan = mgr.plan_detach(args, group=group, driver=driver, force=force, owner=owner)
    config = check_persistable(ctx.host, paths, plan)
    if dry_run:
        show_outcome(ctx, plan, None, as_json)
        if not as_json:
            for addr in targets(plan):
                click.echo(f"{addr}: would be persisted ({driver})")
        return
    report = mgr.detach(args, group=group, driver=driver, force=force, owner=owner)
    assert report.plan is not None
    show_outcome(ctx, report.plan, report, as_json)
    for entry in persist_detached(ctx.host, paths, config, report.plan, driver):
        if not as_json:
            click.echo(f"{entry.address}: persisted ({driver}, IOMMU group "
                       f"{dash(entry.iommu_group)}, {len(entry.members)} members)")


@click.command("reattach")
@click.argument("selectors", nargs=-1, required=True, metavar="SELECTOR...")
@click.option("--group", is_flag=True,
              help="Also give back every member of the groups that vfioctl holds.")
@click.option("--owner", metavar="NAME", default=None,
              help="The owner the devices are held for (needed for held devices).")
@dry_run_option
@json_option
@click.pass_obj
def reattach_cmd(ctx: Context, selectors: tuple[str, ...], group: bool,
                 owner: str | None, dry_run: bool, as_json: bool) -> None:
    """Give PCI devices back to the host, each to the driver it had before detach.

    SELECTOR names devices as for 'vfioctl detach' (address, glob, id, class,
    interface, block device). driver_override is cleared. A device vfioctl did not
    detach is reprobed instead (the kernel picks its driver), and the output says so.
    """
    args = selected(ctx, selectors)
    mgr = manager(ctx)
    run_or_plan(ctx, dry_run, as_json,
                lambda: mgr.plan_reattach(args, group=group, owner=owner),
                lambda: mgr.reattach(args, group=group, owner=owner))


@click.command("status")
@click.option("--json", "as_json", is_flag=True,
              help="Print the documented JSON document instead of a table.")
@click.pass_obj
def status_cmd(ctx: Context, as_json: bool) -> None:
    """Show what vfioctl holds on this host, for whom, and each device's original driver."""
    from vfioctl.persist.summary import summarize

    states = manager(ctx).status()
    persisted = summarize(ctx.host)
    if as_json:
        doc: dict[str, object] = {"host": ctx.host.name,
                                  "devices": [s.to_json() for s in states]}
        if persisted.verdicts or persisted.error:
            doc["persisted"] = {"error": persisted.error, "entries": [
                {"address": str(v.entry.address), "matches": v.ok,
                 "renumbered": v.renumbered, "problems": list(v.problems)}
                for v in persisted.verdicts]}
        print_json(doc)
        return
    if not states:
        click.echo("vfioctl holds no devices on this host")
    else:
        _status_table(states)
    if persisted.error:
        click.echo(f"persisted: cannot read the configuration: {persisted.error}")
    for v in persisted.changed + persisted.renumbered:
        click.echo(f"persisted {v.describe()}")


def _status_table(states: list[DeviceStatus]) -> None:
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
