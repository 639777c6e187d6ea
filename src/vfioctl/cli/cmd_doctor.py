"""CLI: ``vfioctl doctor``."""

from __future__ import annotations

from dataclasses import asdict

import click

from vfioctl.cli.main import Context
from vfioctl.cli.render import print_json


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@click.pass_obj
def doctor_cmd(ctx: Context, as_json: bool) -> None:
    """Check whether this host is ready for VFIO: IOMMU, interrupt remapping, modules,
    /dev/vfio, IOMMU groups, iommufd, KVM, memlock limit, hugepages, device resets.
    Exits 1 when a check fails."""
    from vfioctl.doctor import FAIL, run_checks

    checks = run_checks(ctx.host)
    if as_json:
        print_json([asdict(c) for c in checks])
    else:
        width = max(len(c.name) for c in checks)
        for c in checks:
            click.echo(f"{c.name:<{width}}  {c.status.upper():<4}  {c.detail}")
            if c.fix and c.status not in ("pass", "info"):
                click.echo(f"{'':<{width}}        fix: {c.fix}")
    if any(c.status == FAIL for c in checks):
        raise click.exceptions.Exit(1)
