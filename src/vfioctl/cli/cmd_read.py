"""CLI read commands: list, groups, show, explain (each a thin library call)."""

from __future__ import annotations

import click

from vfioctl.address import PciAddress
from vfioctl.cli.main import Context
from vfioctl.cli.render import dash, print_json, print_table

json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print the documented JSON document instead of a table.")


@click.command("list")
@json_option
@click.pass_obj
def list_cmd(ctx: Context, as_json: bool) -> None:
    """List PCI functions: ids, class, driver, IOMMU group, SR-IOV links."""
    from vfioctl.inventory import list_records

    records = list_records(ctx.host)
    if as_json:
        print_json(records)
        return
    from vfioctl.pci.ids import class_name, load_pci_ids

    ids = load_pci_ids()
    rows = []
    for r in records:
        vendor, device = int(r["vendor"], 16), int(r["device"], 16)
        name = ids.describe(vendor, device) if ids else ""
        sriov = ""
        if r["physfn"]:
            sriov = f"VF of {r['physfn']}"
        elif r["sriov_totalvfs"]:
            sriov = f"PF {r['sriov_numvfs']}/{r['sriov_totalvfs']} VFs"
        rows.append([r["address"], f"{r['vendor']}:{r['device']}",
                     class_name(int(r["class"], 16)), dash(r["driver"]),
                     dash(r["iommu_group"]), sriov, name])
    print_table(["ADDRESS", "ID", "CLASS", "DRIVER", "GROUP", "SR-IOV", "NAME"], rows)


@click.command("groups")
@json_option
@click.pass_obj
def groups_cmd(ctx: Context, as_json: bool) -> None:
    """Show IOMMU groups, their members, and whether VFIO can use each group.

    A group is viable when every member is driverless or bound to vfio-pci, a vfio
    variant driver, pci-stub or pcieport (the kernel's DMA-ownership rule).
    """
    from vfioctl.inventory import group_records
    from vfioctl.pci.iommu import iommu_status

    records = group_records(ctx.host)
    if not records:
        status = iommu_status(ctx.host)
        if as_json:
            print_json([])
        click.echo(f"no IOMMU groups on this host: {status.reason}",
                   err=as_json)
        return
    if as_json:
        print_json(records)
        return
    from vfioctl.pci.device import PciDevice

    rows = []
    for g in records:
        members = []
        for name in g["devices"]:
            drv = PciDevice(ctx.host, _addr(name)).driver
            members.append(f"{name} ({drv or 'no driver'})")
        verdict = "yes" if g["viable"] else "no"
        rows.append([str(g["group"]), verdict, ", ".join(members)])
    print_table(["GROUP", "VIABLE", "DEVICES (DRIVER)"], rows)


def _addr(name: str) -> PciAddress:
    return PciAddress.parse(name)


@click.command("show")
@click.argument("address")
@json_option
@click.pass_obj
def show_cmd(ctx: Context, address: str, as_json: bool) -> None:
    """Everything known about one PCI function: ids, driver, group, path, capabilities."""
    from vfioctl.inventory import show_record

    addr = PciAddress.parse(address)
    doc = show_record(ctx.host, addr)
    if as_json:
        print_json(doc)
        return
    from vfioctl.pci.ids import class_name, load_pci_ids

    ids = load_pci_ids()
    vendor, device = int(doc["vendor"], 16), int(doc["device"], 16)
    lines = [
        ("address", doc["address"]),
        ("name", ids.describe(vendor, device) if ids else f"{doc['vendor']}:{doc['device']}"),
        ("ids", f"{doc['vendor']}:{doc['device']} subsystem "
                f"{dash(doc['subsystem_vendor'])}:{dash(doc['subsystem_device'])} "
                f"rev {dash(doc['revision'])}"),
        ("class", f"{doc['class']} ({class_name(int(doc['class'], 16))})"),
        ("driver", dash(doc["driver"])),
        ("driver_override", dash(doc["driver_override"])),
        ("iommu_group", dash(doc["iommu_group"])),
        ("group peers", ", ".join(doc["group_peers"]) or "-"),
        ("numa_node", dash(doc["numa_node"])),
        ("path to root", " > ".join(doc["path"]) or "(root bus)"),
        ("pcie", dash(doc["pcie_port_type"])),
        ("reset_method", " ".join(doc["reset_method"] or []) or "-"),
    ]
    if doc["acs"]:
        acs = doc["acs"]
        lines.append(("acs", f"cap {' '.join(acs['capability']) or '-'}; "
                             f"ctrl {' '.join(acs['control']) or '-'}"))
    if doc["sriov_totalvfs"] is not None:
        lines.append(("sr-iov", f"{doc['sriov_numvfs']}/{doc['sriov_totalvfs']} VFs: "
                                f"{', '.join(doc['virtfns']) or 'none'}"))
    if doc["physfn"]:
        lines.append(("physfn", doc["physfn"]))
    caps = ", ".join(c["name"] for c in doc["capabilities"])
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
