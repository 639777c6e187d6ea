"""Inventory: ``vfioctl list/groups/show --json`` against the kernel's own sysfs and lspci.

Starts from: the coldplugged boot state. Leaves: it unchanged.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from . import topology
from .checks import (
    assert_doc_matches_sysfs,
    assert_groups_match_sysfs,
    assert_list_matches_sysfs,
)
from .differential import Differential
from .guest_kernel import GuestKernel
from .vfioctl_cli import VfioctlCli


def test_list_json_matches_sysfs(vfioctl: VfioctlCli, kernel: GuestKernel,
                                 differential: Differential) -> None:
    differential.checkpoint("boot")
    assert_list_matches_sysfs(vfioctl.json("list"), kernel)


@pytest.mark.parametrize("slot", topology.BOOT, ids=lambda s: s.address)
def test_show_json_matches_sysfs(slot: topology.Slot, vfioctl: VfioctlCli,
                                 kernel: GuestKernel) -> None:
    assert_doc_matches_sysfs(vfioctl.json("show", slot.address), kernel)


def test_groups_json_matches_sysfs(vfioctl: VfioctlCli, kernel: GuestKernel) -> None:
    assert_groups_match_sysfs(vfioctl.json("groups"), kernel)


def test_boot_viability(vfioctl: VfioctlCli) -> None:
    """At boot only groups of bridges on pcieport, or driverless, are viable."""
    viable = {frozenset(g["devices"]) for g in vfioctl.json("groups") if g["viable"]}
    assert viable == {
        frozenset({"0000:00:00.0"}),  # host bridge: no driver
        *(frozenset({port}) for port in ("0000:00:12.0", "0000:00:13.0", "0000:00:14.0",
                                         "0000:00:15.0", "0000:00:16.0", "0000:05:00.0")),
    }


def test_console_script_prints_the_same(vfioctl: VfioctlCli) -> None:
    """The installed ``vfioctl`` entry point, as a user runs it, in a fresh process."""
    script = Path(sys.executable).parent / "vfioctl"
    proc = subprocess.run([str(script), "list", "--json"], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == vfioctl.json("list")


# -- show --json against lspci (pciutils reads config space its own way) -------------------
ACS_LSPCI = {"SrcValid": "SV", "TransBlk": "TB", "ReqRedir": "RR", "CmpltRedir": "CR",
             "UpstreamFwd": "UF", "EgressCtrl": "EC", "DirectTrans": "DT"}


def lspci_blocks() -> dict[str, str]:
    text = subprocess.run(["lspci", "-D", "-vvv"], capture_output=True, text=True,
                          check=True).stdout
    blocks = {}
    for block in text.strip().split("\n\n"):
        blocks[block.split()[0]] = block
    return blocks


def lspci_acs(block: str, reg: str) -> list[str] | None:
    m = re.search(rf"{reg}:\s+(.*)", block)
    if m is None:
        return None
    return sorted(ACS_LSPCI[flag[:-1]] for flag in m.group(1).split() if flag.endswith("+"))


@pytest.fixture(scope="module")
def lspci() -> dict[str, str]:
    return lspci_blocks()


@pytest.mark.parametrize("slot", topology.BOOT, ids=lambda s: s.address)
def test_show_acs_matches_lspci(slot: topology.Slot, vfioctl: VfioctlCli,
                                lspci: dict[str, str]) -> None:
    doc = vfioctl.json("show", slot.address)
    cap = lspci_acs(lspci[slot.address], "ACSCap")
    if cap is None:
        assert doc["acs"] is None
    else:
        assert doc["acs"] is not None
        assert doc["acs"]["capability"] == cap
        assert doc["acs"]["control"] == lspci_acs(lspci[slot.address], "ACSCtl")


def test_show_sriov_matches_lspci(vfioctl: VfioctlCli, lspci: dict[str, str]) -> None:
    doc = vfioctl.json("show", topology.NVME_PF)
    block = lspci[topology.NVME_PF]
    m = re.search(r"Initial VFs: (\d+), Total VFs: (\d+), Number of VFs: (\d+)", block)
    n = re.search(r"VF offset: (\d+), stride: (\d+), Device ID: ([0-9a-f]{4})", block)
    assert m is not None and n is not None
    assert doc["sriov"] == {
        "initial_vfs": int(m[1]), "total_vfs": int(m[2]), "num_vfs": int(m[3]),
        "vf_offset": int(n[1]), "vf_stride": int(n[2]), "vf_device": n[3],
        "vf_enable": False,
    }
