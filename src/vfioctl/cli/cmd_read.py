"""CLI read commands: list, groups, show, explain (each a thin library call)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from vfioctl.cli.main import Context
from vfioctl.cli.render import Cell, Styled, dash, print_json, print_table, terminal_width
from vfioctl.errors import UsageError

if TYPE_CHECKING:
    from vfioctl.address import PciAddress
    from vfioctl.model.device import DeviceInfo

json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print the documented JSON document instead of a table.")


def _echo_json(doc: object) -> None:
    """The document as ``json.dumps(doc, indent=2)`` would print it, written faster."""
    from vfioctl.model.jsontext import dumps

    click.echo(dumps(doc))


def _hex(value: int | None, width: int) -> str:
    return "-" if value is None else f"{value:0{width}x}"


def _device_arg(ctx: Context, text: str) -> PciAddress:
    """One device from a selector (address, id, class, interface, disk)."""
    from vfioctl.select import resolve_one

    return resolve_one(ctx.host, text)


def _id_filter(text: str) -> Callable[[DeviceInfo], bool]:
    import fnmatch

    vendor, sep, device = text.lower().partition(":")
    if not vendor or len(vendor) > 4 or len(device) > 4:
        raise UsageError(f"'{text}' is not a vendor:device id",
                         hint="write it as 10de:2504, 10de:* or 10de")
    pattern = f"{vendor}:{device if sep else '*'}"
    return lambda d: fnmatch.fnmatchcase(f"{d.vendor:04x}:{d.device:04x}", pattern)


def _class_filter(text: str) -> Callable[[DeviceInfo], bool]:
    from vfioctl.pci.ids import class_name
    from vfioctl.select import CLASS_NAMES

    key = text.strip().lower()
    prefixes = CLASS_NAMES.get(key)
    if prefixes is not None:
        return lambda d: f"{d.class_code:06x}".startswith(prefixes)
    # a name as the CLASS column prints it ("Host bridge", "Mass storage")
    known = {class_name(c << 8).lower() for c in range(0x10000)
             if class_name(c << 8) != "Unknown"}
    if key in known:
        return lambda d: class_name(d.class_code).lower() == key
    raise UsageError(f"'{text}' is not a device class",
                     hint="use one of " + ", ".join(sorted(CLASS_NAMES)))


def _in_use(host: object, d: DeviceInfo) -> bool:
    from vfioctl.pci.device import PciDevice
    from vfioctl.pci.usage import find_host_uses

    return bool(find_host_uses(PciDevice(host, d.address)))  # type: ignore[arg-type]


@click.command("list")
@click.option("--id", "id_", metavar="VENDOR:DEVICE",
              help="Only functions with this id (10de:2504; 10de:* or 10de: the vendor).")
@click.option("--class", "class_", metavar="NAME",
              help="Only functions of this class (gpu, audio, network, nvme, usb, ...).")
@click.option("--driver", metavar="NAME",
              help="Only functions bound to this driver ('none': no driver).")
@click.option("--in-use", is_flag=True, help="Only functions the host uses now.")
@json_option
@click.pass_obj
def list_cmd(ctx: Context, id_: str | None, class_: str | None, driver: str | None,
             in_use: bool, as_json: bool) -> None:
    """List PCI functions: ids, class, driver, IOMMU group, SR-IOV links.

    The text also names each function's network interfaces and disks (IF/DISK),
    marked * when the host uses the function (network up with addresses, a mounted
    disk, the boot GPU): what detach refuses without --force.
    """
    from vfioctl.model.device import list_devices, list_json_text

    devices = list_devices(ctx.host)
    tests: list[Callable[[DeviceInfo], bool]] = []
    if id_ is not None:
        tests.append(_id_filter(id_))
    if class_ is not None:
        tests.append(_class_filter(class_))
    if driver is not None:
        wanted = None if driver in ("none", "-") else driver
        tests.append(lambda d: d.driver == wanted)
    devices = [d for d in devices if all(t(d) for t in tests)]
    if in_use:
        devices = [d for d in devices if _in_use(ctx.host, d)]
    if as_json:
        click.echo(list_json_text(devices))
        return
    from vfioctl.model.attached import attached
    from vfioctl.pci.ids import class_name, load_pci_ids

    ids = load_pci_ids()
    names = attached(ctx.host, [d.address for d in devices])
    rows: list[list[Cell]] = []
    marked = False
    for d in devices:
        name = ids.describe(d.vendor, d.device) if ids else ""
        sriov = ""
        if d.physfn is not None:
            pf = str(d.physfn)
            # the PF's short form when it is in domain 0000, as lspci prints it
            sriov = f"VF of {pf[5:] if pf.startswith('0000:') else pf}"
        elif d.sriov_totalvfs:
            sriov = f"PF {d.sriov_numvfs}/{d.sriov_totalvfs} VFs"
        held = ",".join(names[d.address])
        if in_use or _in_use(ctx.host, d):
            held, marked = held + "*", True
        rows.append([str(d.address), f"{d.vendor:04x}:{d.device:04x}",
                     class_name(d.class_code), dash(d.driver), dash(d.iommu_group),
                     sriov, Styled(held, "yellow" if held.endswith("*") else None), name])
    print_table(["ADDRESS", "ID", "CLASS", "DRIVER", "GROUP", "SR-IOV", "IF/DISK", "NAME"],
                rows, shrink=LIST_SHRINK)
    if marked:
        click.echo("* in use by the host (see 'vfioctl show ADDR'; detach refuses it)")


#: At 80 columns the name gives way first, then the class name, then the name again.
LIST_SHRINK = (("NAME", 20), ("CLASS", 8), ("NAME", 10), ("CLASS", 6), ("NAME", 6))

_VERDICT_STYLES = {"alone": "green", "blocked": "red", "stays": "dim",
                   "nothing to assign": "dim"}


@click.command("groups")
@json_option
@click.pass_obj
def groups_cmd(ctx: Context, as_json: bool) -> None:
    """Show IOMMU groups: what each hands to a guest, and the kernel's viability.

    ASSIGN answers "can I give this device away, and what goes with it?" by detach's
    rules: "alone", "with N others" (the whole group goes to the guest), "blocked" (a
    member the host uses would have to move) or "stays" (bridges, ports and members on
    pcieport or pci-stub stay on the host). VIABLE is the kernel's verdict on the group
    as it is bound now: yes when every member is driverless or bound to vfio-pci, a
    vfio variant driver, pci-stub or pcieport (the DMA-ownership rule); detaching a
    group is what makes it viable.
    """
    from vfioctl.model.assign import assess
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
    verdicts = [assess(ctx.host, g) for g in groups]
    if as_json:
        _echo_json([{**g.to_json(), **a.to_json()} for g, a in zip(groups, verdicts,
                                                                 strict=True)])
        return
    from vfioctl.pci.device import PciDevice
    from vfioctl.pci.ids import load_pci_ids

    ids = load_pci_ids()
    rows: list[list[Cell]] = []
    notes: list[str] = []
    for g, a in zip(groups, verdicts, strict=True):
        viable = Styled("yes" if g.viable else "no", None)
        used = {u.address for u in a.host_uses}
        for m in g.members:
            word = "stays" if m.address not in a.together else a.verdict
            if m.address in used:
                word = "blocked"
            dev = PciDevice(ctx.host, m.address)
            name = ids.describe(dev.vendor, dev.device) if ids else ""
            rows.append([str(g.number), viable,
                         Styled(word, _VERDICT_STYLES.get(word.split(" ")[0], "green")),
                         str(m.address), m.driver or "-", name])
        if a.host_uses or (len(a.together) > 1):
            notes.append(a.sentence())
    print_table(["GROUP", "VIABLE", "ASSIGN", "DEVICE", "DRIVER", "NAME"], rows)
    if any(not g.viable and a.assignable for g, a in zip(groups, verdicts, strict=True)):
        notes.append("VIABLE is the kernel's verdict now; ASSIGN is what 'vfioctl detach' "
                     "hands over (it makes the group viable)")
    width = terminal_width()
    for note in notes:
        if width is None:
            click.echo(note)
            continue
        import textwrap

        for line in textwrap.wrap(note, width, subsequent_indent="  ",
                                  break_on_hyphens=False):
            click.echo(line)


@click.command("show")
@click.argument("address", metavar="DEVICE")
@json_option
@click.pass_obj
def show_cmd(ctx: Context, address: str, as_json: bool) -> None:
    """Everything known about one PCI function: ids, driver, group, path, capabilities.

    DEVICE is an address (0000:01:00.0 or 01:00.0), a vendor:device id, a class name, an
    interface or a block device that names exactly one function.
    """
    from vfioctl.model.detail import get_device_info

    addr = _device_arg(ctx, address)
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
@click.argument("address", metavar="DEVICE")
@json_option
@click.pass_obj
def explain_cmd(ctx: Context, address: str, as_json: bool) -> None:
    """Explain why a device's IOMMU group is what it is (ACS along its PCI path).

    DEVICE is anything `show` takes. With --json: {address, group, peers: [{address,
    driver}], path, reasons, trust} (README "JSON output").
    """
    from vfioctl.explain import explain_device

    ex = explain_device(ctx.host, _device_arg(ctx, address))
    if as_json:
        _echo_json(ex.to_json())
        return
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
