"""Snapshot of the coldplugged boot state: the ``q35-initial`` fixture of the fast suite.

Starts from: the boot state. Leaves: it unchanged (the snapshot goes to the results dir).
"""

from __future__ import annotations

from pathlib import Path

from .checks import assert_snapshot_reads_like_live, take_snapshot
from .vfioctl_cli import VfioctlCli


def test_snapshot_of_boot_state_reads_back_like_live(vfioctl: VfioctlCli,
                                                     out_dir: Path) -> None:
    snap = take_snapshot(vfioctl, out_dir, "q35-initial")
    assert_snapshot_reads_like_live(vfioctl, snap)
