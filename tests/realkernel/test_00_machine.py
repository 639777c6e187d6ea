"""The guest is the machine the scenarios assume: an IOMMU, the vmtest topology, drivers.

Starts from: the coldplugged boot state. Leaves: it unchanged.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from . import topology
from .guest_kernel import GuestKernel


def test_iommu_is_on(kernel: GuestKernel) -> None:
    cmdline = Path("/proc/cmdline").read_text().split()
    assert "intel_iommu=on" in cmdline
    assert kernel.groups(), "no IOMMU groups: the emulated intel-iommu is not active"


def test_save_raw_inventory(kernel: GuestKernel, out_dir: Path) -> None:
    """Record the raw boot state for the engineer reading a failure (facts/raw-boot.json)."""
    facts = out_dir / "facts"
    facts.mkdir(exist_ok=True)
    doc = {
        "functions": [dataclasses.asdict(f) for f in kernel.functions().values()],
        "groups": {str(g): sorted(m) for g, m in sorted(kernel.groups().items())},
    }
    (facts / "raw-boot.json").write_text(json.dumps(doc, indent=1) + "\n")


def test_functions_are_the_vmtest_topology(kernel: GuestKernel) -> None:
    expected = {s.address: (s.vendor, s.device, s.class_, s.driver) for s in topology.BOOT}
    actual = {
        f.address: (f.vendor[2:], f.device[2:], f.class_[2:], f.driver)
        for f in kernel.functions().values()
    }
    assert actual == expected


def test_groups_are_kernel_md_groups(kernel: GuestKernel) -> None:
    assert frozenset(kernel.groups().values()) == topology.GROUP_PARTITION


def test_nvme_pf_offers_vfs(kernel: GuestKernel) -> None:
    pf = kernel.function(topology.NVME_PF)
    assert (pf.sriov_totalvfs, pf.sriov_numvfs) == (topology.NVME_TOTALVFS, 0)
    # sysfs prints sriov_vf_device with "%x": "10", not "0010"
    assert kernel.attr(topology.NVME_PF, "sriov_vf_device") == "10"
    assert kernel.attr(topology.NVME_PF, "sriov_offset") == "1"
    assert kernel.attr(topology.NVME_PF, "sriov_stride") == "1"
