"""CLI: ``vfioctl sriov PF [--numvfs N] [--yes] [--dry-run] [--json]`` — show and change a
PF's VFs."""

from __future__ import annotations

import click

from vfioctl.cli.cmd_manage import dry_run_option, manager, show_outcome
from vfioctl.cli.main import Context
from vfioctl.cli.render import dash, print_json, print_table
from vfioctl.pci.sriov import ENABLE_SRIOV_NOTICE, SriovInfo
from vfioctl.select import resolve_one


def _print_info(info: SriovInfo) -> None:
    who = "userspace (vfio-pci)" if info.userspace_pf else dash(info.driver)
    click.echo(f"PF {info.pf}: driver {who}, {info.sriov_numvfs} of "
               f"{info.sriov_totalvfs} VFs enabled")
    if info.userspace_pf:
        state = {True: "Y", False: "N", None: "vfio-pci not loaded"}[info.enable_sriov]
        click.echo(f"vfio-pci enable_sriov: {state}; its VFs open only with the PF's VF "
                   f"token ('vfioctl token set {info.pf}')")
    if info.vfs:
        print_table(["VF", "GROUP", "DRIVER", "OVERRIDE"],
                    [[str(v.addr), dash(v.iommu_group), dash(v.driver),
                      dash(v.driver_override)] for v in info.vfs])


@click.command("sriov", epilog=ENABLE_SRIOV_NOTICE)
@click.argument("selector", metavar="PF")
@click.option("--numvfs", type=click.IntRange(min=0), default=None, metavar="N",
              help="Set the number of VFs (0 removes them; the kernel changes the count "
              "only from or to 0).")
@click.option("--yes", is_flag=True,
              help="Agree to turn on vfio-pci's enable_sriov when the PF is bound to "
              "vfio-pci (see below).")
@dry_run_option
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document.")
@click.pass_obj
def sriov_cmd(ctx: Context, selector: str, numvfs: int | None, yes: bool, dry_run: bool,
              as_json: bool) -> None:
    """Show a PF's VFs (addresses, IOMMU groups, drivers), or change how many it has.

    PF is one device, named as for 'vfioctl detach' (an address, an interface such as
    enp3s0f0, an id or a class that matches only it).

    Changes are journaled like detach and reattach, and refused while vfioctl holds a
    VF or a VFIO user has one open.
    """
    from vfioctl.pci.sriov import EnableSriovRequired

    if numvfs is None and dry_run:
        raise click.UsageError("--dry-run needs --numvfs N")
    address = resolve_one(ctx.host, selector)
    mgr = manager(ctx)
    if numvfs is None:
        info = mgr.sriov(address)
        if as_json:
            print_json(info.to_json())
        else:
            _print_info(info)
        return
    try:
        if dry_run:
            plan = mgr.plan_numvfs(address, numvfs, allow_enable_sriov=yes)
            for notice in plan.notices if plan.ok else ():
                click.echo(f"vfioctl: {notice}", err=True)
            show_outcome(ctx, plan, None, as_json)
            return
        change = mgr.set_numvfs(address, numvfs, allow_enable_sriov=yes)
    except EnableSriovRequired as err:
        click.echo(f"vfioctl: {err.notice}", err=True)
        raise
    for rec in change.report.recovered:
        click.echo(f"vfioctl: {rec.describe()}", err=True)
    if change.enabled_sriov_param:
        click.echo("vfioctl: turned on vfio-pci's enable_sriov (it stays on: vfio-pci also "
                   "needs it to remove the VFs)", err=True)
    if as_json:
        doc = change.after.to_json()
        doc["changed"] = change.before.sriov_numvfs != change.after.sriov_numvfs
        doc["enabled_vfio_pci_enable_sriov"] = change.enabled_sriov_param
        assert change.report.plan is not None
        doc["actions"] = [a.to_json() for a in change.report.actions]
        print_json(doc)
        return
    if change.before.sriov_numvfs == change.after.sriov_numvfs:
        click.echo(f"PF {change.after.pf} already has {numvfs} VFs")
    _print_info(change.after)
