"""Snapshots of every bundled host are read by the real ``lspci`` and by ``linux:DIR``,
and both agree with the simulator: ids, class, driver (-k), ACS and SR-IOV decode (-vvv),
groups and links resolved by the real filesystem."""

from __future__ import annotations

import posixpath
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from simtest import DEV

from vfioctl.host.linux import LinuxHost
from vfioctl.sim.device import BOOT_ACS_CTRL
from vfioctl.sim.host import SimHost
from vfioctl.sim.loader import bundled_names
from vfioctl.snapshot import take_snapshot

pytestmark = pytest.mark.lspci
LSPCI = shutil.which("lspci")
ACS_NAMES = [("SrcValid", 0x01), ("TransBlk", 0x02), ("ReqRedir", 0x04), ("CmpltRedir", 0x08),
             ("UpstreamFwd", 0x10), ("EgressCtrl", 0x20), ("DirectTrans", 0x40)]
VFS = {"q35-vmtest": ("0000:01:00.0", 2), "sriov-server": ("0000:03:00.1", 3)}


def lspci(snap: Path, *args: str) -> str:
    assert LSPCI is not None
    out = subprocess.run([LSPCI, "-A", "linux-sysfs", "-O",
                          f"sysfs.path={snap}/sys/bus/pci", "-D", *args],
                         capture_output=True, text=True, check=True)
    return out.stdout


def blocks(text: str) -> dict[str, str]:
    """lspci output split per device (a device starts at column 0)."""
    out: dict[str, str] = {}
    current = ""
    for line in text.splitlines():
        if line and not line[0].isspace():
            current = line.split()[0]
            out[current] = ""
        if current:
            out[current] += line + "\n"
    return out


def flags(line: str) -> int:
    return sum(bit for name, bit in ACS_NAMES if f"{name}+" in line)


@pytest.fixture(scope="module", params=bundled_names())
def snap(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> tuple[SimHost, Path]:
    name = request.param
    host = SimHost.bundled(name, writable=True)
    if name in VFS:
        pf, n = VFS[name]
        host.write(DEV / pf / "sriov_numvfs", str(n))
    dest = tmp_path_factory.mktemp(name) / "snap"
    take_snapshot(host, dest)
    return host, dest


@pytest.mark.skipif(LSPCI is None, reason="needs lspci (pciutils)")
def test_lspci_ids_class_driver(snap: tuple[SimHost, Path]) -> None:
    host, dest = snap
    got = {}
    for line in lspci(dest, "-n").splitlines():
        m = re.match(r"^(\S+) ([0-9a-f]{4}): ([0-9a-f]{4}):([0-9a-f]{4})", line)
        assert m, line
        got[m.group(1)] = (m.group(2), m.group(3) + m.group(4))
    want = {}
    for name in host.listdir(DEV):
        cls = host.read_text(DEV / name / "class")[2:6]
        ids = host.read_text(DEV / name / "vendor")[2:6] + host.read_text(
            DEV / name / "device")[2:6]
        want[name] = (cls, ids)
    assert got == want
    for addr, block in blocks(lspci(dest, "-k")).items():
        m = re.search(r"Kernel driver in use: (\S+)", block)
        link = DEV / addr / "driver"
        expected = posixpath.basename(host.readlink(link)) if host.is_link(link) else None
        assert (m.group(1) if m else None) == expected, addr


@pytest.mark.skipif(LSPCI is None, reason="needs lspci (pciutils)")
def test_lspci_decodes_acs_and_sriov(snap: tuple[SimHost, Path]) -> None:
    host, dest = snap
    k = host.kernel
    decoded = blocks(lspci(dest, "-vvv"))
    for name, dev in k.devices.items():
        block = decoded[name]
        if dev.fn.acs is None:
            assert "Access Control Services" not in block
        else:
            cap = re.search(r"ACSCap:(.*)", block)
            ctl = re.search(r"ACSCtl:(.*)", block)
            assert cap and ctl, name
            assert flags(cap.group(1)) == dev.fn.acs
            assert flags(ctl.group(1)) == dev.fn.acs & BOOT_ACS_CTRL
        if dev.fn.sriov is not None and not dev.is_vf:
            m = re.search(r"Total VFs: (\d+), Number of VFs: (\d+)", block)
            o = re.search(r"VF offset: (\d+), stride: (\d+), Device ID: ([0-9a-f]{4})", block)
            assert m and o, name
            assert (int(m.group(1)), int(m.group(2))) == (dev.fn.sriov.total_vfs, dev.numvfs)
            assert (int(o.group(1)), int(o.group(2)), int(o.group(3), 16)) == (
                dev.fn.sriov.offset, dev.fn.sriov.stride, dev.fn.sriov.vf_device)
        else:
            assert "SR-IOV" not in block
        port = re.search(r"Express \(v2\) ([A-Za-z ]+?)(?: \(|,)", block)
        if dev.pcie_type is None:
            assert port is None, name


def test_linux_reader_sees_the_same_groups_and_links(snap: tuple[SimHost, Path]) -> None:
    host, dest = snap
    linux = LinuxHost(dest)
    assert sorted(linux.listdir(DEV)) == sorted(host.listdir(DEV))
    for name in host.listdir(DEV):
        for link in ("iommu_group", "driver", "physfn"):
            if host.is_link(DEV / name / link):
                assert linux.readlink(DEV / name / link) == host.readlink(DEV / name / link)
                # the kernel's relative link resolves on a real filesystem
                assert (dest / "sys/bus/pci/devices" / name / link).resolve().is_dir()
        assert linux.read_bytes(DEV / name / "config") == host.read_bytes(
            DEV / name / "config")
