"""CLI: ``vfioctl snapshot DIR``."""

from __future__ import annotations

from pathlib import Path

import click

from vfioctl.cli.main import Context


@click.command("snapshot")
@click.argument("directory", type=click.Path(path_type=Path))
@click.pass_obj
def snapshot_cmd(ctx: Context, directory: Path) -> None:
    """Capture this host's PCI and IOMMU sysfs into DIRECTORY (read-only on the host).

    The copy holds ids, config space, drivers, IOMMU groups, SR-IOV links, vfio module
    parameters and the kernel command line; read it back with
    `vfioctl --host linux:DIRECTORY list`, or with
    `lspci -A linux-sysfs -O sysfs.path=DIRECTORY/sys/bus/pci`. Attach it to bug reports.
    """
    from vfioctl.snapshot import take_snapshot

    manifest = take_snapshot(ctx.host, directory)
    click.echo(f"snapshot of {manifest['source']}: {manifest['files']} files in {directory}")
