"""CLI: ``vfioctl token set|show|check|forget`` — the VF token of a userspace PF.

The token is a secret (docs/rationale.md "The VF token is a secret"): it is printed only
by ``token show --reveal``. It is read from a file or stdin (``--uuid-file FILE|-``)
rather than from the command line, where shell history and ``ps`` would keep it;
``--uuid`` exists for scripts and warns.
"""

from __future__ import annotations

import sys

import click

from vfioctl.cli.cmd_manage import dry_run_option, manager, show_outcome
from vfioctl.cli.main import Context
from vfioctl.cli.render import print_json
from vfioctl.errors import HostError, UsageError
from vfioctl.secret import REDACTED, VfToken
from vfioctl.select import resolve_one

_ARGV_WARNING = ("vfioctl: warning: a VF token given with --uuid is on the command line: "
                 "shell history and 'ps' can show it; prefer --uuid-file FILE or "
                 "--uuid-file - (stdin)")


@click.group("token")
def token_cmd() -> None:
    """The VF token of an SR-IOV PF driven from userspace (bound to vfio-pci).

    VFs of such a PF open only for whoever presents the PF's token. vfioctl sets it,
    keeps it in its state directory (0600) and never prints it unless asked to with
    'token show --reveal'. PF and VF each name one device, as for 'vfioctl detach'
    (an address, an interface, an id or a class that matches only it).
    """


_MAX_TOKEN_FILE = 4096


def _read_token_file(source: str) -> VfToken:
    """The token from FILE or stdin (``-``), read the same way for both: the whole input
    (up to 4 KiB), UTF-8, one UUID with optional surrounding whitespace."""
    try:
        if source == "-":
            data = sys.stdin.buffer.read(_MAX_TOKEN_FILE + 1)
        else:
            with open(source, "rb") as f:
                data = f.read(_MAX_TOKEN_FILE + 1)
    except OSError as err:
        raise HostError(f"cannot read the VF token from {source}",
                        errno=err.errno) from err
    where = "stdin" if source == "-" else source
    if len(data) > _MAX_TOKEN_FILE:
        raise UsageError(f"{where} is too large to hold a VF token",
                         hint="give a file that holds only the UUID")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{where} is not UTF-8 text (the value is not shown)",
                         hint="give a file that holds only the UUID") from None
    return VfToken.parse(text)


@token_cmd.command("set")
@click.argument("pf", metavar="PF")
@click.option("--uuid-file", "uuid_file", metavar="FILE|-", default=None,
              help="Read the token (a UUID) from FILE, or from stdin with '-'.")
@click.option("--uuid", "uuid_text", metavar="UUID", default=None,
              help="The token on the command line (visible in shell history and ps: "
              "prefer --uuid-file).")
@click.option("--force", is_flag=True,
              help="Set it even while a VF is open: its user keeps working until its next "
              "open, which then needs the new token.")
@dry_run_option
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document.")
@click.pass_obj
def token_set_cmd(ctx: Context, pf: str, uuid_file: str | None, uuid_text: str | None,
                  force: bool, dry_run: bool, as_json: bool) -> None:
    """Set the VF token of PF (default: a fresh random UUID) and store it (0600).

    VFs already open keep working; new VF opens need the new token.
    """
    if uuid_file is not None and uuid_text is not None:
        raise UsageError("give the token with --uuid-file or --uuid, not both")
    token: VfToken | None = None
    if uuid_text is not None:
        click.echo(_ARGV_WARNING, err=True)
        token = VfToken.parse(uuid_text)
    elif uuid_file is not None:
        token = _read_token_file(uuid_file)
    addr = resolve_one(ctx.host, pf)
    mgr = manager(ctx)
    if dry_run:
        show_outcome(ctx, mgr.plan_token_set(addr, token, force=force), None, as_json)
        return
    done = mgr.set_token(addr, token, force=force)
    for rec in done.report.recovered:
        click.echo(f"vfioctl: {rec.describe()}", err=True)
    stored, path = done.stored, done.file
    if as_json:
        print_json({"pf": str(stored.pf), "set_at": stored.set_at, "file": str(path),
                    "generated": token is None,
                    "actions": [a.to_json() for a in done.report.actions]})
        return
    made = "a new random VF token" if token is None else "the given VF token"
    click.echo(f"PF {stored.pf}: set {made}; stored in {path} (mode 0600)")
    click.echo(f"VFs of {stored.pf} now open only with it: 'vfioctl token check VF' "
               f"proves it; 'vfioctl token show {stored.pf} --reveal' prints it")


@token_cmd.command("show")
@click.argument("pf", metavar="PF")
@click.option("--reveal", is_flag=True,
              help="Print the token itself (it is a secret: mind where the output goes).")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document.")
@click.pass_obj
def token_show_cmd(ctx: Context, pf: str, reveal: bool, as_json: bool) -> None:
    """Show whether vfioctl has PF's VF token and whether it is still current."""
    status = manager(ctx).token_status(resolve_one(ctx.host, pf))
    if as_json:
        print_json(status.to_json(reveal=reveal))
        return
    st = status.stored
    if st is None:
        click.echo(f"PF {status.pf}: no VF token stored (driver: {status.driver or 'none'})")
        return
    if reveal:
        # The one place the secret is printed, on explicit request.
        click.echo(st.token.reveal())
        return
    state = f"STALE: {status.stale}" if status.stale else "current"
    click.echo(f"PF {status.pf}: VF token {REDACTED} (set {st.set_at}; {state})")
    click.echo(f"file: {status.file}; --reveal prints it")


@token_cmd.command("check")
@click.argument("vf", metavar="VF")
@click.option("--no-token", "no_token", is_flag=True,
              help="Open the VF without any token, as a user who was not given it would.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document.")
@click.pass_obj
def token_check_cmd(ctx: Context, vf: str, no_token: bool, as_json: bool) -> None:
    """Open VF through VFIO with its PF's stored token, read its info, close it."""
    result = manager(ctx).check_vf(resolve_one(ctx.host, vf), use_token=not no_token)
    if as_json:
        print_json(result.to_json())
        return
    how = "with the stored VF token of PF " + str(result.pf) if result.with_token \
        else "without a VF token"
    info = result.info
    click.echo(f"VF {result.vf}: opened through VFIO ({result.path} path) {how}: "
               f"{info.num_regions} regions, {info.num_irqs} irqs, flags {info.flags:#x}")


@token_cmd.command("forget")
@click.argument("pf", metavar="PF")
@click.pass_obj
def token_forget_cmd(ctx: Context, pf: str) -> None:
    """Delete vfioctl's copy of PF's token (the kernel keeps its token)."""
    addr = resolve_one(ctx.host, pf)
    gone = manager(ctx).forget_token(addr)
    click.echo(f"PF {addr}: " + ("stored VF token deleted" if gone else "no VF token stored"))
