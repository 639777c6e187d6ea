"""lspci (pciutils) as the independent oracle for the read model.

On every captured tree (tests/data/snapshots/*, real kernels and simulator exports),
`lspci -A linux-sysfs -O sysfs.path=…` must agree with vfioctl on ids, class, driver,
IOMMU group, capability offsets and the ACS / SR-IOV decode.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from vfioctl.host.linux import LinuxHost
from vfioctl.inventory import list_records, show_record

SNAPSHOTS = sorted(p for p in (Path(__file__).parent / "data" / "snapshots").iterdir()
                   if (p / "sys" / "bus" / "pci").is_dir())
LSPCI = shutil.which("lspci")
pytestmark = pytest.mark.skipif(LSPCI is None, reason="lspci (Debian pciutils) not installed")


@dataclass
class LspciFunc:
    address: str
    cls: str
    vendor: str
    device: str
    prog_if: str | None = None
    driver: str | None = None
    group: int | None = None
    caps: dict[str, str] = field(default_factory=dict)  # offset -> name
    lines: list[str] = field(default_factory=list)


_HEAD = re.compile(r"^(\S+) .*\[([0-9a-f]{4})\]: .*\[([0-9a-f]{4}):([0-9a-f]{4})\]")


def run_lspci(root: Path) -> dict[str, LspciFunc]:
    out = subprocess.run(
        [str(LSPCI), "-A", "linux-sysfs", "-O", f"sysfs.path={root}/sys/bus/pci",
         "-D", "-nn", "-k", "-vvv"],
        capture_output=True, text=True, check=True).stdout
    funcs: dict[str, LspciFunc] = {}
    cur: LspciFunc | None = None
    for line in out.splitlines():
        m = _HEAD.match(line)
        if m:
            cur = LspciFunc(m.group(1), m.group(2), m.group(3), m.group(4))
            pm = re.search(r"\(prog-if ([0-9a-f]{2})", line)
            cur.prog_if = pm.group(1) if pm else None
            funcs[cur.address] = cur
            continue
        if cur is None:
            continue
        cur.lines.append(line.strip())
        s = line.strip()
        if s.startswith("Kernel driver in use:"):
            cur.driver = s.split(":", 1)[1].strip()
        elif s.startswith("IOMMU group:"):
            cur.group = int(s.split(":", 1)[1])
        cm = re.match(r"Capabilities: \[([0-9a-f]+)(?: v\d+)?\] (.*)", s)
        if cm and "access denied" not in cm.group(2):
            cur.caps[cm.group(1)] = cm.group(2)
    return funcs


def _flags(line: str) -> set[str]:
    names = {"SrcValid": "SV", "TransBlk": "TB", "ReqRedir": "RR", "CmpltRedir": "CR",
             "UpstreamFwd": "UF", "EgressCtrl": "EC", "DirectTrans": "DT"}
    return {names[k] for k, v in re.findall(r"(\w+)([+-])", line) if v == "+" and k in names}


@pytest.mark.parametrize("snap", SNAPSHOTS, ids=[p.name for p in SNAPSHOTS])
def test_lspci_agrees(snap: Path) -> None:
    host = LinuxHost(snap)
    ours = {r["address"]: r for r in list_records(host)}
    theirs = run_lspci(snap)
    assert sorted(ours) == sorted(theirs)
    for addr, r in ours.items():
        lf = theirs[addr]
        assert (r["vendor"], r["device"]) == (lf.vendor, lf.device), addr
        assert r["class"][:4] == lf.cls, addr
        if lf.prog_if is not None:
            assert r["class"][4:] == lf.prog_if, addr
        assert r["driver"] == lf.driver, addr
        assert r["iommu_group"] == lf.group, addr
        doc = show_record(host, addr)
        our_caps = {c["offset"].lstrip("0") or "0": c["name"] for c in doc["capabilities"]}
        their_caps = {k.lstrip("0") or "0": v for k, v in lf.caps.items()}
        assert set(our_caps) == set(their_caps), addr
        if doc["acs"] is not None:
            cap = next(x for x in lf.lines if x.startswith("ACSCap:"))
            ctl = next(x for x in lf.lines if x.startswith("ACSCtl:"))
            assert set(doc["acs"]["capability"]) == _flags(cap), addr
            assert set(doc["acs"]["control"]) == _flags(ctl), addr
        if doc["sriov"] is not None:
            text = " ".join(lf.lines)
            m = re.search(r"Total VFs: (\d+), Number of VFs: (\d+)", text)
            assert m, addr
            assert (doc["sriov"]["total_vfs"], doc["sriov"]["num_vfs"]) == (
                int(m.group(1)), int(m.group(2))), addr
            m = re.search(r"VF offset: (\d+), stride: (\d+), Device ID: ([0-9a-f]{4})", text)
            assert m, addr
            assert (doc["sriov"]["vf_offset"], doc["sriov"]["vf_stride"],
                    doc["sriov"]["vf_device"]) == (int(m.group(1)), int(m.group(2)),
                                                   m.group(3)), addr
