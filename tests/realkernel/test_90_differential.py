"""Differential: the simulated twin (``sim:q35-vmtest``) against the real kernel.

Every write of the earlier scenarios was also made on the twin (guest_kernel.py), and
the product's documents and VFIO_GROUP_GET_STATUS were compared at each checkpoint
(differential.py). Any difference is a simulator bug; the list is written to
OUT/facts/differential.txt and fails this test with every entry spelled out.

Starts from and leaves: whatever the earlier modules left (nothing is changed here).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .differential import Differential


def test_simulator_agrees_with_the_kernel(differential: Differential, out_dir: Path) -> None:
    if not differential.enabled:
        pytest.skip("vfioctl.sim is not importable: no simulated twin to compare")
    differential.checkpoint("end of the scenarios")
    report = differential.report()
    facts = out_dir / "facts"
    facts.mkdir(exist_ok=True)
    (facts / "differential.txt").write_text(
        f"checkpoints: {', '.join(differential.checkpoints)}\n"
        + "".join(f"{line}\n" for line in report))
    assert not report, "simulator differs from the kernel:\n" + "\n".join(report)
