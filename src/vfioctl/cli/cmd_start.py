"""CLI: ``vfioctl start DOMAIN.xml`` and ``vfioctl release DOMAIN`` (vfioctl.launch).

Thin wrappers: parse the domain, pick the QEMU and its capabilities, make one library
call, print what happened. ``qemu.qmp``/``asyncio`` are imported by the library only
when QEMU is really started.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from vfioctl.cli.main import Context, warn_on_success
from vfioctl.cli.render import print_json

if TYPE_CHECKING:
    from vfioctl.launch.untranslated import Untranslated
    from vfioctl.qemu.caps import QemuCaps


def _caps(binary: str, caps_file: str | None, qemu_version: str | None) -> QemuCaps:
    from vfioctl.errors import UsageError
    from vfioctl.qemu.caps import caps_for_version, load_caps_file, probe

    if caps_file and qemu_version:
        raise UsageError("--qemu-caps and --qemu-version cannot be used together",
                         hint="name one source of QEMU capabilities")
    if caps_file:
        return load_caps_file(caps_file)
    if qemu_version:
        return caps_for_version(qemu_version)
    return probe(binary)


@click.command("start")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--qemu", "qemu_bin", metavar="BIN",
              help="QEMU to run (default: the domain's <emulator>); probed for its "
              "capabilities unless --qemu-caps/--qemu-version is given.")
@click.option("--qemu-caps", "caps_file", metavar="FILE",
              help="Capabilities of BIN from 'vfioctl qemu-caps BIN --json' (no probe).")
@click.option("--qemu-version", metavar="X.Y",
              help="Take BIN to be that QEMU release (built-in table; no probe).")
@click.option("--dry-run", is_flag=True,
              help="Print the plan (manager actions, QEMU command line, QMP commands with "
              "tokens redacted) and change nothing.")
@click.option("--timeout", type=float, default=30.0, show_default=True,
              help="Seconds for QEMU's QMP socket to come up, and for each QMP command.")
@click.option("--standin", metavar="DRIVER", default=None,
              help="Testing/demo: give QEMU a DRIVER device (e.g. pci-testdev) at each "
              "hostdev's id/bus/addr instead of vfio-pci; the devices are still taken.")
@click.option("--allow-untrusted-pf", is_flag=True,
              help="Let a confidential guest (<launchSecurity>) have a VF of a PF driven "
              "from userspace, or such a PF: an unattested driver that can reset the VF "
              "or see its data. Reported, and kept in the launch record.")
@click.option("--ignore-untranslated", is_flag=True,
              help="Start even though the domain has elements start does not translate "
              "(disks, interfaces, <cpu>…): the guest will not have them unless you pass "
              "them after '--'.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.argument("extra", nargs=-1, type=click.UNPROCESSED, metavar="[-- EXTRA QEMU ARGS]")
@click.pass_obj
def start_cmd(ctx: Context, file: str, qemu_bin: str | None, caps_file: str | None,
              qemu_version: str | None, dry_run: bool, timeout: float, standin: str | None,
              allow_untrusted_pf: bool, ignore_untranslated: bool, as_json: bool,
              extra: tuple[str, ...]) -> None:
    """Start a domain's QEMU with its PCI hostdevs: take the devices for the domain's
    <name>, run QEMU paused with a QMP socket, add VF-token devices over QMP (never on
    the command line), then continue. QEMU keeps running on its own; give the devices
    back with 'vfioctl release NAME' once it has exited.

    Only the guest's machine, memory, vCPUs, the hostdevs and their PCI controllers
    come from the XML; any other element is refused (naming it) unless
    --ignore-untranslated: then put what the guest needs after '--'.
    """
    from vfioctl.conf import load_domain
    from vfioctl.errors import UsageError
    from vfioctl.launch import check_start, describe_start, standin_device, start

    doc = load_domain(file)
    binary = qemu_bin or doc.domain.emulator
    if not binary:
        raise UsageError("the domain has no <emulator> and no QEMU was named",
                         hint="pass --qemu BIN")
    caps = _caps(binary, caps_file, qemu_version)
    host = ctx.host
    untranslated: Untranslated = "ignore" if ignore_untranslated else "refuse"
    if dry_run:
        plan = check_start(host, doc, caps, binary=binary, extra_args=extra,
                           allow_untrusted_pf=allow_untrusted_pf, untranslated=untranslated)
        for warning in plan.warnings:
            warn_on_success(warning)
        if as_json:
            print_json({
                "domain": plan.name, "host": host.name, "dry_run": True,
                "prepare": [{"devices": [str(a) for a in c.addrs], "group": c.group,
                             "managed": c.managed} for c in plan.prepare],
                "argv": list(plan.argv), "qmp_socket": str(plan.qmp_socket),
                "qmp": plan.qmp_commands(),
            })
            return
        for line in describe_start(host, plan):
            click.echo(line)
        return
    launch = start(host, doc, caps, binary=binary, extra_args=extra, timeout=timeout,
                   standin=standin_device(standin) if standin else None,
                   allow_untrusted_pf=allow_untrusted_pf, untranslated=untranslated)
    for warning in launch.plan.warnings:
        warn_on_success(warning)
    if as_json:
        print_json({"domain": launch.name, "host": host.name, "pid": launch.pid,
                    "qmp_socket": str(launch.qmp_socket), "log": str(launch.log_file),
                    "actions": [{"address": str(a.addr), "kind": a.kind, "before": a.before,
                                 "after": a.after} for a in launch.actions]})
        return
    for action in launch.actions:
        click.echo(action.describe())
    click.echo(f"started domain {launch.name}: QEMU pid {launch.pid}, "
               f"QMP socket {launch.qmp_socket}")


@click.command("release")
@click.argument("domain", metavar="NAME|DOMAIN.xml")
@click.option("--stop", is_flag=True,
              help="If the domain's QEMU still runs, end it first (SIGTERM, then SIGKILL).")
@click.pass_obj
def release_cmd(ctx: Context, domain: str, stop: bool) -> None:
    """Give back the devices 'vfioctl start' took for a domain: managed ones return to
    their original drivers, unmanaged ones stay on vfio-pci. Refused while the
    domain's QEMU still runs, unless --stop."""
    from vfioctl.launch import release

    name = domain
    if domain.endswith(".xml") and Path(domain).is_file():
        from vfioctl.conf import load_domain
        from vfioctl.launch.plan import check_domain_name

        name = check_domain_name(load_domain(domain).domain)
    result = release(ctx.host, name, stop=stop)
    if result.stopped_pid is not None:
        click.echo(f"stopped QEMU pid {result.stopped_pid} of domain {name}")
    for rec in result.report.recovered:
        click.echo(f"vfioctl: {rec.describe()}", err=True)
    for action in result.report.actions:
        click.echo(action.describe())
    if not result.report.actions:
        click.echo(f"domain {name} held no devices")
