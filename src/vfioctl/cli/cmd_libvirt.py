"""CLI: ``vfioctl libvirt hook|install|uninstall|check`` (vfioctl.libvirt).

``hook`` is what libvirt runs: it reads the domain XML from standard input, prints
nothing on standard output (libvirt would take it for a new XML on migrate/restore),
and says a refusal in the one error line libvirt shows the user.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from vfioctl.cli.main import Context

_DEFAULT_CONFIG_DIR = "/etc/libvirt/qemu"


@click.group("libvirt")
def libvirt_cmd() -> None:
    """libvirt integration: the qemu hook (group rule, VF token), install, check a domain.

    The hook takes a domain's devices through vfioctl's manager at 'virsh start' and
    gives them back at stop; 'check' says what a 'virsh start' would do
    (docs/libvirt.md)."""


@libvirt_cmd.command("hook")
@click.argument("domain")
@click.argument("op")
@click.argument("subop")
@click.argument("extra", required=False)
@click.pass_obj
def hook_cmd(ctx: Context, domain: str, op: str, subop: str, extra: str | None) -> None:
    """What libvirt runs as its qemu hook: DOMAIN OP SUBOP [EXTRA], the domain XML on
    standard input. 'prepare begin' takes the domain's managed='no' PCI hostdevs (the
    group rule, with vfioctl's <metadata> opt-in), 'release end' gives them back."""
    from vfioctl import Session
    from vfioctl.libvirt import run_hook
    from vfioctl.libvirt.handoff import run_dir

    xml = sys.stdin.buffer.read()
    outcome = run_hook(lambda: Session(ctx.host), domain, op, subop, xml,
                       run_dir=run_dir())
    for line in outcome.log_lines:
        click.echo(f"vfioctl: {line}", err=True)


@libvirt_cmd.command("install")
@click.option("--hooks-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("/etc/libvirt/hooks"), show_default=True,
              help="libvirt's hooks directory (the script goes to its qemu.d/).")
@click.option("--wrapper", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("/usr/local/libexec/vfioctl-qemu"), show_default=True,
              help="Where to write the emulator wrapper (a domain's <emulator>).")
@click.option("--qemu", "qemu_bin", default="/usr/bin/qemu-system-x86_64",
              show_default=True, metavar="BIN", help="The QEMU the wrapper runs.")
@click.option("--wrapper-python", default="/usr/bin/python3", show_default=True,
              metavar="BIN", help="The Python that runs the wrapper (as QEMU's user; "
              "the standard library is enough).")
@click.pass_obj
def install_cmd(ctx: Context, hooks_dir: Path, wrapper: Path, qemu_bin: str,
                wrapper_python: str) -> None:
    """Install the qemu.d/vfioctl hook script and the emulator wrapper (again: nothing
    changes). An existing hooks/qemu script keeps working. The hook runs with the
    vfioctl settings given now (--host, VFIOCTL_STATE_DIR …): libvirt clears hooks'
    environment. Restart libvirtd after the first install."""
    import os

    from vfioctl.libvirt import install

    env = dict(os.environ)
    if ctx.host_spec:
        env["VFIOCTL_HOST"] = ctx.host_spec
    for change in install(hooks_dir, wrapper, qemu=qemu_bin, wrapper_python=wrapper_python,
                          env=env):
        click.echo(change.describe())


@libvirt_cmd.command("uninstall")
@click.option("--hooks-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("/etc/libvirt/hooks"), show_default=True,
              help="libvirt's hooks directory.")
@click.option("--wrapper", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("/usr/local/libexec/vfioctl-qemu"), show_default=True,
              help="The emulator wrapper to remove.")
def uninstall_cmd(hooks_dir: Path, wrapper: Path) -> None:
    """Remove vfioctl's hook script and emulator wrapper (nothing else)."""
    from vfioctl.libvirt import uninstall

    for change in uninstall(hooks_dir, wrapper):
        click.echo(change.describe())


@libvirt_cmd.command("check")
@click.argument("domain", metavar="DOMAIN.xml|NAME")
@click.option("--config-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path(_DEFAULT_CONFIG_DIR), show_default=True,
              help="Where libvirt keeps defined domains (NAME is read as NAME.xml there).")
@click.pass_obj
def check_cmd(ctx: Context, domain: str, config_dir: Path) -> None:
    """What the hook would do at the next 'virsh start' of a domain: the manager's
    plan, and warnings (a shared IOMMU group without the opt-in, a VF of a PF driven
    from userspace without its token, a confidential guest, managed='yes' devices).
    Exits with the refusal's code when the hook would refuse the start."""
    from vfioctl import Session
    from vfioctl.conf import parse_file
    from vfioctl.libvirt import check, read_domain

    path = Path(domain)
    if not domain.endswith(".xml") and "/" not in domain:
        path = config_dir / f"{domain}.xml"
    doc = parse_file(path)  # NotFound / PermissionDenied with the path
    dom = read_domain(doc.text, filename=str(path))
    report = check(Session(ctx.host), dom)
    for line in report.lines:
        click.echo(line)
    for warning in report.warnings:
        click.echo(f"warning: {warning}")
    if report.error is not None:
        raise report.error
