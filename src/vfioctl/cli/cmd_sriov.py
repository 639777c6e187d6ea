"""CLI: ``vfioctl sriov PF [--numvfs N] [--yes] [--json]`` — show and change a PF's VFs."""

from __future__ import annotations

import click

from vfioctl.cli.main import Context
from vfioctl.cli.render import dash, print_json, print_table
from vfioctl.pci.sriov import ENABLE_SRIOV_NOTICE, SriovInfo


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
@click.argument("address", metavar="PF")
@click.option("--numvfs", type=int, default=None, metavar="N",
              help="Set the number of VFs (0 removes them; the kernel changes the count "
              "only from or to 0).")
@click.option("--yes", is_flag=True,
              help="Agree to turn on vfio-pci's enable_sriov when the PF is bound to "
              "vfio-pci (see below).")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document.")
@click.pass_obj
def sriov_cmd(ctx: Context, address: str, numvfs: int | None, yes: bool,
              as_json: bool) -> None:
    """Show a PF's VFs (addresses, IOMMU groups, drivers), or change how many it has.

    Changes run under vfioctl's host lock and are refused while vfioctl holds a VF for
    a guest or a VF's IOMMU group is open.
    """
    from vfioctl.pci.sriov import EnableSriovRequired, change_numvfs, get_sriov

    if numvfs is None:
        info = get_sriov(ctx.host, address)
        if as_json:
            print_json(info.to_json())
        else:
            _print_info(info)
        return
    from vfioctl.manager import HostdevManager

    for rec in HostdevManager(ctx.host).recover():
        click.echo(f"vfioctl: {rec.describe()}", err=True)
    try:
        change = change_numvfs(ctx.host, address, numvfs, allow_enable_sriov=yes)
    except EnableSriovRequired as err:
        click.echo(f"vfioctl: {err.notice}", err=True)
        raise
    if change.enabled_sriov_param:
        click.echo("vfioctl: turned on vfio-pci's enable_sriov (it stays on: vfio-pci also "
                   "needs it to remove the VFs)", err=True)
    if as_json:
        doc = change.after.to_json()
        doc["changed"] = change.before.sriov_numvfs != change.after.sriov_numvfs
        doc["enabled_vfio_pci_enable_sriov"] = change.enabled_sriov_param
        print_json(doc)
        return
    if change.before.sriov_numvfs == change.after.sriov_numvfs:
        click.echo(f"PF {change.after.pf} already has {numvfs} VFs")
    _print_info(change.after)
