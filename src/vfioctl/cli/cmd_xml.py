"""CLI: ``vfioctl validate | xml2xml | xml2argv | qemu-caps`` (libvirt hostdev XML, QEMU).

Thin wrappers: each command makes one or two library calls. lxml is imported by the
library on first parse, never at CLI start-up.
"""

from __future__ import annotations

import json
from typing import Any

import click

from vfioctl.cli.main import warn_on_success
from vfioctl.conf.dialect import DEFAULT_LIBVIRT, LIBVIRT_DIALECTS

_CAPS_OPTIONS = [
    click.option("--qemu", "qemu_bin", metavar="BIN",
                 help="QEMU binary to probe (default: the domain's <emulator>)."),
    click.option("--qemu-caps", "caps_file", metavar="FILE",
                 help="Capability file from 'vfioctl qemu-caps BIN --json'."),
    click.option("--qemu-version", metavar="X.Y",
                 help="Assume that QEMU release (built-in table); skips the probe."),
]


def _with_caps_options(fn: Any) -> Any:
    for opt in reversed(_CAPS_OPTIONS):
        fn = opt(fn)
    return fn


def _host_checks(ctx: click.Context, domain: Any, allow_untrusted_pf: bool) -> bool:
    """Run the host-aware checks only when the user named a host (--host/VFIOCTL_HOST);
    a VF token written in the file is warned about either way."""
    obj = ctx.obj
    if obj is None or obj.host_spec is None:
        for hd in domain.hostdevs:
            if hd.token_inline:
                warn_on_success(f"{hd.where}: the VF token of {hd.source} is written in the "
                                "file in clear; write <vf-token/> to use the one vfioctl "
                                "keeps (0600) on the host")
        return False
    from vfioctl.hostcheck import check_domain

    for warning in check_domain(obj.host, domain,
                                allow_untrusted_pf=allow_untrusted_pf).warnings:
        warn_on_success(warning)
    return True


libvirt_option = click.option(
    "--libvirt", "libvirt", type=click.Choice(list(LIBVIRT_DIALECTS)),
    default=DEFAULT_LIBVIRT.version, show_default=True,
    help="Read the hostdevs by this libvirt release's rules where releases differ "
    "(11.3 also takes <driver/> without a name and <driver model='vfio-pci'>; "
    "docs/hostdev-xml.md 'libvirt releases'); the QEMU arguments are the same.")

allow_untrusted_option = click.option(
    "--allow-untrusted-pf", is_flag=True,
    help="Let a confidential guest (<launchSecurity>) have a VF of a PF driven from "
    "userspace, or such a PF (an unattested driver); the opt-in is reported.")


def _echo_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2))


@click.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@libvirt_option
@allow_untrusted_option
@click.pass_context
def validate_cmd(ctx: click.Context, file: str, as_json: bool, libvirt: str,
                 allow_untrusted_pf: bool) -> None:
    """Check a libvirt domain XML's PCI hostdevs: schema, duplicates, and (with --host)
    whether each <vf-token> can work on that host. Exits 3 when invalid."""
    from vfioctl.conf import load_domain

    domain = load_domain(file, libvirt=libvirt).domain
    checked_host = _host_checks(ctx, domain, allow_untrusted_pf)
    if as_json:
        _echo_json({"file": file, "valid": True, "hostdevs": len(domain.hostdevs),
                    "host_checked": checked_host})
    else:
        suffix = f", checked against host {ctx.obj.host_spec}" if checked_host else ""
        click.echo(f"{file}: valid ({len(domain.hostdevs)} PCI hostdevs{suffix})")


@click.command("xml2xml")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--reveal", is_flag=True,
              help="Write VF tokens written in the file instead of '<vf-token redacted>' "
              "(a stored token, <vf-token/>, is never written).")
@libvirt_option
def xml2xml_cmd(file: str, reveal: bool, libvirt: str) -> None:
    """Print the domain XML with its PCI hostdevs in libvirt's canonical form; everything
    else is copied verbatim."""
    from vfioctl.conf import load_domain
    from vfioctl.conf.format import format_document

    click.echo(format_document(load_domain(file, libvirt=libvirt), reveal=reveal), nl=False)


@click.command("xml2argv")
@click.argument("file", type=click.Path(dir_okay=False))
@_with_caps_options
@click.option("--reveal", is_flag=True,
              help="Print VF tokens instead of '<vf-token redacted>' (a stored one, "
              "<vf-token/>, needs --host).")
@click.option("--json", "as_json", is_flag=True, help="Print the devices as JSON.")
@libvirt_option
@allow_untrusted_option
@click.pass_context
def xml2argv_cmd(ctx: click.Context, file: str, qemu_bin: str | None, caps_file: str | None,
                 qemu_version: str | None, reveal: bool, as_json: bool, libvirt: str,
                 allow_untrusted_pf: bool) -> None:
    """Print the QEMU arguments for the domain's PCI hostdevs, one per line, as libvirt 9.0
    writes them (JSON -device). They are the same bytes as libvirt 11.3's; --libvirt
    chooses whose rules read the file. VF tokens are redacted unless --reveal."""
    from vfioctl.conf import load_domain
    from vfioctl.qemu.argv import build_hostdev_devices, format_props_json
    from vfioctl.qemu.caps import resolve_caps

    domain = load_domain(file, libvirt=libvirt).domain
    if _host_checks(ctx, domain, allow_untrusted_pf) and reveal:
        from vfioctl.hostcheck import resolve_vf_tokens

        domain = resolve_vf_tokens(ctx.obj.host, domain)  # asked for: print the secret
    if not domain.hostdevs:
        caps = None
        devices = []
    else:
        caps = resolve_caps(caps_file=caps_file, version=qemu_version, binary=qemu_bin,
                            emulator=domain.emulator)
        devices = build_hostdev_devices(domain, caps, reveal=reveal)
    if as_json:
        _echo_json({
            "file": file,
            "libvirt": libvirt,
            "qemu": None if caps is None else {"version": caps.version_str,
                                               "source": caps.source},
            "devices": [{"props": d.props, "has_vf_token": d.has_token} for d in devices],
        })
        return
    for dev in devices:
        click.echo("-device")
        click.echo(format_props_json(dev.props))


@click.command("qemu-caps")
@click.argument("binary", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True,
              help="Print a capability file for --qemu-caps.")
@click.option("--no-cache", is_flag=True, help="Probe again even if a cached result exists.")
def qemu_caps_cmd(binary: str, as_json: bool, no_cache: bool) -> None:
    """Probe a QEMU binary: its version and the properties of its vfio-pci device."""
    from vfioctl.qemu.caps import VF_TOKEN_MIN, probe

    caps = probe(binary, use_cache=not no_cache)
    if as_json:
        _echo_json(caps.to_json(note=f"recorded with 'vfioctl qemu-caps {binary} --json'"))
        return
    support = "yes" if caps.has("vf-token") else (
        f"no (needs QEMU >= {VF_TOKEN_MIN[0]}.{VF_TOKEN_MIN[1]})")
    click.echo(f"binary:    {binary}")
    click.echo(f"version:   {caps.version_str}")
    click.echo(f"vfio-pci:  {'yes' if caps.has('host') else 'no'}")
    click.echo(f"vf-token:  {support}")  # whether QEMU has the property, no secret
    click.echo(f"properties: {', '.join(sorted(caps.vfio_pci_props))}")
