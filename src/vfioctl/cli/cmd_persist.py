"""CLI: ``vfioctl persist list|remove|apply|sriov|install-boot|uninstall-boot``.

What is persisted is made by ``vfioctl detach … --persist`` (cmd_manage) and lives in the
host's ``/etc/vfioctl`` (docs/persistence.md); these commands show it (with the
hardware check of every entry against the host now), forget entries, apply them (by
hand, or ``--boot`` from the udev helper), opt a persisted PF into VFs and a persisted
VF token, and install the boot integration. A persisted token is never printed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from vfioctl.cli.main import Context
from vfioctl.cli.render import dash, print_json, print_table
from vfioctl.errors import OperationInvalid

if TYPE_CHECKING:
    from vfioctl.address import PciAddress
    from vfioctl.persist import EtcPaths

json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print the documented JSON document (docs/persistence.md).")


@click.group("persist")
def persist_cmd() -> None:
    """Bindings that survive a reboot: list, remove, apply, install the boot hooks.

    Persist with 'vfioctl detach SELECTOR... --persist' (with --group for a whole
    IOMMU group). Entries are kept in /etc/vfioctl (a simulated host FILE: FILE.etc),
    keyed by address and ids, with the group's members as they were; at boot an entry
    whose hardware changed is not applied and is reported.
    """


def _paths(ctx: Context, what: str) -> EtcPaths:
    from vfioctl.persist import require_etc

    return require_etc(ctx.host, what)


def _addresses(ctx: Context, selectors: tuple[str, ...]) -> list[PciAddress]:
    from vfioctl.cli.cmd_manage import selected

    return selected(ctx, selectors)


@persist_cmd.command("list")
@json_option
@click.pass_obj
def list_cmd(ctx: Context, as_json: bool) -> None:
    """Show the persisted entries and whether each still matches the hardware."""
    from vfioctl.persist import boot, check, load

    paths = _paths(ctx, "list")
    config = load(paths)
    verdicts = [check(ctx.host, e) for e in config.entries]
    boot_doc = {"udev_rule": boot.installed(paths),
                "initramfs_hook": boot.hook_installed(paths)}
    if as_json:
        print_json({
            "host": ctx.host.name, "config": paths.on_host(paths.config),
            "boot": boot_doc,
            "entries": [{**v.entry.to_toml(), "numvfs": v.entry.numvfs,
                         "token": v.entry.token, "iommu_group": v.entry.iommu_group,
                         "check": {"matches": v.ok, "renumbered": v.renumbered,
                                   "iommu_group_now": v.group_now,
                                   "problems": list(v.problems)}}
                        for v in verdicts]})
        return
    if not config.entries:
        click.echo("nothing is persisted on this host")
    else:
        rows = []
        for v in verdicts:
            e = v.entry
            sriov = [f"{e.numvfs} VFs"] if e.numvfs else []
            if e.token:
                sriov.append("token")
            state = "matches" if v.ok and not v.renumbered else (
                f"renumbered (now {v.group_now})" if v.ok else "CHANGED: not applied")
            rows.append([str(e.address), e.id, e.subsystem, e.driver,
                         dash(e.iommu_group), str(len(e.members)),
                         ", ".join(sriov) or "-", state])
        print_table(["ADDRESS", "ID", "SUBSYSTEM", "DRIVER", "GROUP", "MEMBERS",
                     "SR-IOV", "HARDWARE"], rows)
        for v in verdicts:
            if not v.ok:
                click.echo(v.describe())
    parts = []
    parts.append(f"udev rule {paths.on_host(paths.rule)}" if boot_doc["udev_rule"]
                 else "no udev rule")
    parts.append("initramfs-tools hook" if boot_doc["initramfs_hook"]
                 else "no initramfs hook")
    hint = "" if boot_doc["udev_rule"] else " (vfioctl persist install-boot)"
    click.echo(f"boot: {', '.join(parts)}{hint}")


@persist_cmd.command("remove")
@click.argument("selectors", nargs=-1, required=True, metavar="SELECTOR...")
@json_option
@click.pass_obj
def remove_cmd(ctx: Context, selectors: tuple[str, ...], as_json: bool) -> None:
    """Forget persisted entries (and their persisted VF tokens); the devices stay as
    they are now: use 'vfioctl reattach' to give them back to the host."""
    from vfioctl.persist.record import remove

    paths = _paths(ctx, "change")
    gone = remove(paths, _addresses(ctx, selectors))
    if as_json:
        print_json({"host": ctx.host.name, "removed": [str(e.address) for e in gone]})
        return
    for e in gone:
        click.echo(f"{e.address}: no longer persisted")


@persist_cmd.command("apply")
@click.option("--boot", is_flag=True,
              help="As at boot (what the udev helper runs): report to the kernel log "
              "too, and exit 0 even when an entry is refused.")
@click.option("--device", "device", metavar="ADDRESS", default=None,
              help="Only the entry of this device (the udev helper's add event).")
@json_option
@click.pass_obj
def apply_cmd(ctx: Context, boot: bool, device: str | None, as_json: bool) -> None:
    """Apply the persisted entries now: hardware check, binding, VF token, VFs.

    An entry whose device, ids or group changed is not applied and is reported. Exit
    status 5 when an entry was refused (0 with --boot).
    """
    from vfioctl.address import PciAddress
    from vfioctl.manager import HostdevManager
    from vfioctl.persist import apply, load
    from vfioctl.persist.kmsg import kernel_log

    paths = _paths(ctx, "apply")
    config = load(paths)
    entries = list(config.entries)
    if device is not None:
        addr = PciAddress.parse(device)
        entries = [e for e in entries if e.address == addr]
        if not entries and not boot:
            from vfioctl.errors import NotFound

            raise NotFound(f"{addr} is not persisted",
                           hint="'vfioctl persist list' shows what is")
    host = ctx.host

    def log(line: str, problem: bool) -> None:
        if boot:
            kernel_log(host, f"persist: {line}", problem=problem)
        if problem or (boot and not as_json):
            click.echo(f"vfioctl: persist: {line}", err=True)

    others = config.entries if boot and device is not None else ()
    outcomes = apply(HostdevManager(host), paths, entries, log=log, others=others)
    if as_json:
        print_json({"host": host.name, "boot": boot,
                    "entries": [o.to_json() for o in outcomes]})
    else:
        if not outcomes and device is None:
            click.echo("nothing is persisted on this host")
        for o in outcomes:
            for line in o.messages:
                click.echo(line)
    refused = [o for o in outcomes if o.result == "refused"]
    if refused and not boot:
        raise OperationInvalid(
            f"{len(refused)} persisted {'entry was' if len(refused) == 1 else 'entries were'}"
            f" not applied ({', '.join(str(o.address) for o in refused)})",
            hint="see the lines above; 'vfioctl persist list' shows what changed")


@persist_cmd.command("sriov")
@click.argument("pf", metavar="PF")
@click.option("--numvfs", type=click.IntRange(min=0), default=None,
              help="VFs to create at boot (0: none). Implies vfio-pci's enable_sriov "
              "at boot.")
@click.option("--token/--no-token", default=None,
              help="Persist the PF's current VF token (kept 0600 in /etc/vfioctl, "
              "never printed), or forget the persisted one.")
@json_option
@click.pass_obj
def sriov_cmd(ctx: Context, pf: str, numvfs: int | None, token: bool | None,
              as_json: bool) -> None:
    """Opt a persisted vfio-pci PF into VFs and/or its VF token at boot.

    Boot then sets the persisted token (VFIO_DEVICE_FEATURE, as 'vfioctl token set'
    does) before it creates the VFs, so VF consumers find the same token after a
    reboot.
    """
    from vfioctl.manager import HostdevManager
    from vfioctl.persist.record import set_sriov
    from vfioctl.select import resolve_one

    if numvfs is None and token is None:
        from vfioctl.errors import UsageError

        raise UsageError("nothing to persist", hint="give --numvfs N and/or --token")
    paths = _paths(ctx, "change")
    addr = resolve_one(ctx.host, pf)
    entry = set_sriov(HostdevManager(ctx.host), paths, addr, numvfs, token)
    if as_json:
        print_json({"host": ctx.host.name, "pf": str(entry.address),
                    "numvfs": entry.numvfs, "token": entry.token})
        return
    vfs = f"{entry.numvfs} VFs" if entry.numvfs else "no VFs"
    tok = "the persisted VF token" if entry.token else "no persisted token"
    click.echo(f"{entry.address}: at boot: {vfs}, {tok}")


@persist_cmd.command("install-boot")
@click.option("--no-initramfs", is_flag=True,
              help="Only the udev rule (no initramfs-tools hook).")
@click.pass_obj
def install_boot_cmd(ctx: Context, no_initramfs: bool) -> None:
    """Install the udev rule (and its helper) and the initramfs-tools hook; idempotent.

    After installing or changing entries, run 'update-initramfs -u' so that the
    initramfs holds the current rule (drivers loaded from the initramfs: GPU, NVMe).
    """
    from vfioctl.persist import boot, load

    paths = _paths(ctx, "install boot integration into")
    changes = boot.install(paths, load(paths), initramfs=not no_initramfs)
    for c in changes:
        click.echo(f"{paths.on_host(c.path)}: {c.what}")
    if not no_initramfs and any(c.what == "written" for c in changes):
        click.echo("run 'update-initramfs -u' so the initramfs has the current rule")


@persist_cmd.command("uninstall-boot")
@click.pass_obj
def uninstall_boot_cmd(ctx: Context) -> None:
    """Remove the udev rule, its helper and the initramfs hook (entries stay)."""
    from vfioctl.persist import boot

    paths = _paths(ctx, "remove boot integration from")
    for c in boot.uninstall(paths):
        click.echo(f"{paths.on_host(c.path)}: {c.what}")
