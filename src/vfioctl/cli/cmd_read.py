"""CLI read commands: list, groups, show, explain (each a thin library call)."""

from __future__ import annotations

import click

from vfioctl.address import PciAddress
from vfioctl.cli.main import Context
from vfioctl.cli.render import dash, print_json, print_table

json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print the documented JSON document instead of a table.")


def _echo_json(doc: object) -> None:
    """The document as ``json.dumps(doc, indent=2)`` would print it, written faster."""
    from vfioctl.model.jsontext import dumps

    click.echo(dumps(doc))


def _hex(value: int | None, width: int) -> str:
    return "-" if value is None else f"{value:0{width}x}"


@click.command("list")
@json_option
@click.pass_obj
def list_cmd(ctx: Context, as_json: bool) -> None:
    """List PCI functions: ids, class, driver, IOMMU group, SR-IOV links."""
    from vfioctl.model.device import list_devices, list_json_text

    devices = list_devices(ctx.host)
    if as_json:
        click.echo(list_json_text(devices))
        return
    from vfioctl.pci.ids import class_name, load_pci_ids

    ids = load_pci_ids()
    rows = []
    for d in devices:
        name = ids.describe(d.vendor, d.device) if ids else ""
        sriov = ""
        if d.physfn is not None:
            sriov = f"VF of {d.physfn}"
        elif d.sriov_totalvfs:
            sriov = f"PF {d.sriov_numvfs}/{d.sriov_totalvfs} VFs"
        rows.append([str(d.address), f"{d.vendor:04x}:{d.device:04x}",
                     class_name(d.class_code), dash(d.driver), dash(d.iommu_group),
                     sriov, name])
    print_table(["ADDRESS", "ID", "CLASS", "DRIVER", "GROUP", "SR-IOV", "NAME"], rows)


@click.command("groups")
@json_option
@click.pass_obj
def groups_cmd(ctx: Context, as_json: bool) -> None:
    """Show IOMMU groups, their members, and whether VFIO can use each group.

    A group is viable when every member is driverless or bound to vfio-pci, a vfio
    variant driver, pci-stub or pcieport (the kernel's DMA-ownership rule).
    """
    from vfioctl.model.groups import list_groups
    from vfioctl.pci.iommu import iommu_status

    groups = list_groups(ctx.host)
    if not groups:
        status = iommu_status(ctx.host)
        if as_json:
            print_json([])
        click.echo(f"no IOMMU groups on this host: {status.reason}",
                   err=as_json)
        return
    if as_json:
        _echo_json([g.to_json() for g in groups])
        return
    rows = []
    for g in groups:
        members = ", ".join(f"{m.address} ({m.driver or 'no driver'})" for m in g.members)
        rows.append([str(g.number), "yes" if g.viable else "no", members])
    print_table(["GROUP", "VIABLE", "DEVICES (DRIVER)"], rows)


@click.command("show")
@click.argument("address")
@json_option
@click.pass_obj
def show_cmd(ctx: Context, address: str, as_json: bool) -> None:
    """Everything known about one PCI function: ids, driver, group, path, capabilities."""
    from vfioctl.model.detail import get_device_info

    addr = PciAddress.parse(address)
    d = get_device_info(ctx.host, addr)
    if as_json:
        _echo_json(d.to_json())
        return
    from vfioctl.pci.ids import class_name, load_pci_ids

    ids = load_pci_ids()
    ident = f"{d.vendor:04x}:{d.device:04x}"
    lines = [
        ("address", str(d.address)),
        ("name", ids.describe(d.vendor, d.device) if ids else ident),
        ("ids", f"{ident} subsystem "
                f"{_hex(d.subsystem_vendor, 4)}:{_hex(d.subsystem_device, 4)} "
                f"rev {_hex(d.revision, 2)}"),
        ("class", f"{d.class_code:06x} ({class_name(d.class_code)})"),
        ("driver", dash(d.driver)),
        ("driver_override", dash(d.driver_override)),
        ("iommu_group", dash(d.iommu_group)),
        ("group peers", ", ".join(map(str, d.group_peers)) or "-"),
        ("numa_node", dash(d.numa_node)),
        ("path to root", " > ".join(map(str, d.path)) or "(root bus)"),
        ("pcie", dash(d.pcie_port_type)),
        ("reset_method", " ".join(d.reset_method or ()) or "-"),
    ]
    if d.acs is not None:
        lines.append(("acs", f"cap {' '.join(sorted(d.acs.capability)) or '-'}; "
                             f"ctrl {' '.join(sorted(d.acs.control)) or '-'}"))
    if d.sriov_totalvfs is not None:
        lines.append(("sr-iov", f"{d.sriov_numvfs}/{d.sriov_totalvfs} VFs: "
                                f"{', '.join(map(str, d.virtfns)) or 'none'}"))
    if d.physfn is not None:
        lines.append(("physfn", str(d.physfn)))
    if d.physfn is not None or d.sriov_totalvfs:
        from vfioctl.explain import userspace_pf_lines
        from vfioctl.pci.device import PciDevice

        lines += [("trust", line) for line in userspace_pf_lines(
            ctx.host, PciDevice(ctx.host, d.address))]
    caps = ", ".join(c.name for c in d.capabilities)
    lines.append(("capabilities", caps or "-"))
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        click.echo(f"{key:<{width}}  {value}")


@click.command("explain")
@click.argument("address")
@click.pass_obj
def explain_cmd(ctx: Context, address: str) -> None:
    """Explain why a device's IOMMU group is what it is (ACS along its PCI path)."""
    from vfioctl.explain import explain_device

    ex = explain_device(ctx.host, PciAddress.parse(address))
    click.echo(f"{ex.addr}: IOMMU group {dash(ex.group)}")
    if ex.peers:
        click.echo("shares it with: " + ", ".join(
            f"{a} ({d or 'no driver'})" for a, d in ex.peers))
    if ex.path:
        click.echo("path from the root:")
        for step in ex.path:
            click.echo(f"  {step}")
    click.echo("why:")
    for reason in ex.reasons:
        click.echo(f"  - {reason}")
    if ex.trust:
        click.echo("trust:")
    for reason in ex.trust:
        click.echo(f"  - {reason}")
