"""Fast checks on snapshots captured from the real kernel (tests/data/snapshots/q35-*).

``make test-vm`` boots the vmtest guest and takes these with ``vfioctl snapshot``
(tests/realkernel, ``vmtest/run.sh --update-fixtures`` copies them here), so the fast
suite sees real layouts without a VM:

- q35-initial: the coldplugged boot state;
- q35-sriov: the NVMe PF on vfio-pci (reset_method disabled, enable_sriov=Y) with 2 VFs
  captured by vfio-pci.

Checked here: the groups are the measured ones (docs/kernel.md "IOMMU groups and ACS"),
the product reads the tree the way raw sysfs reads it, lspci reads it, and the
simulator's model of this machine (``sim:q35-vmtest``) driven through the same writes gives
the same documents.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from realkernel import topology
from realkernel.checks import raw_record
from realkernel.guest_kernel import GuestKernel
from vfioctl.host.linux import LinuxHost
from vfioctl.inventory import group_records, list_records, show_record

SNAPSHOTS = Path(__file__).parent / "data" / "snapshots"
PF = topology.NVME_PF
VFS = ("0000:01:00.1", "0000:01:00.2")


class TreeFs:
    """The oracle's file interface over a snapshot directory (plain ``os`` reads)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def read_text(self, path: PurePosixPath) -> str:
        return (self.root / path).read_text()

    def readlink(self, path: PurePosixPath) -> str:
        return str((self.root / path).readlink())

    def listdir(self, path: PurePosixPath) -> list[str]:
        return [p.name for p in (self.root / path).iterdir()]

    def exists(self, path: PurePosixPath) -> bool:
        return (self.root / path).exists()

    def is_link(self, path: PurePosixPath) -> bool:
        return (self.root / path).is_symlink()


@dataclass(frozen=True)
class Fixture:
    name: str
    # writes that take sim:q35-vmtest from boot to this state, in the guest's order
    steps: tuple[tuple[str, str], ...]
    extra_groups: frozenset[frozenset[str]]


FIXTURES = (
    Fixture("q35-initial", (), frozenset()),
    Fixture(
        "q35-sriov",
        (
            (f"sys/bus/pci/devices/{PF}/driver_override", "vfio-pci"),
            (f"sys/bus/pci/devices/{PF}/driver/unbind", PF),
            ("sys/bus/pci/drivers_probe", PF),
            (f"sys/bus/pci/devices/{PF}/reset_method", "\n"),
            ("sys/module/vfio_pci/parameters/enable_sriov", "Y"),
            (f"sys/bus/pci/devices/{PF}/sriov_numvfs", "2"),
        ),
        frozenset(frozenset({vf}) for vf in VFS),
    ),
)


def root(fx: Fixture) -> Path:
    path = SNAPSHOTS / fx.name
    if not path.is_dir():
        pytest.fail(f"{path} is missing: run `vmtest/run.sh --update-fixtures` and commit it")
    return path


def norm(doc: Any) -> Any:
    return json.loads(json.dumps(doc))


def sim_in_state(fx: Fixture) -> Any:
    from vfioctl.sim.host import SimHost

    sim = SimHost.bundled("q35-vmtest", writable=True)
    if fx.steps:
        sim.load_module("vfio-pci")
    for path, value in fx.steps:
        sim.write(PurePosixPath(path), value)
    return sim


@pytest.mark.parametrize("fx", FIXTURES, ids=lambda f: f.name)
def test_groups_are_kernel_md_groups(fx: Fixture) -> None:
    groups = GuestKernel(TreeFs(root(fx))).groups()  # type: ignore[arg-type]
    assert frozenset(groups.values()) == topology.GROUP_PARTITION | fx.extra_groups


@pytest.mark.parametrize("fx", FIXTURES, ids=lambda f: f.name)
def test_list_reads_like_raw_sysfs(fx: Fixture) -> None:
    oracle = GuestKernel(TreeFs(root(fx)))  # type: ignore[arg-type]
    listed = norm(list_records(LinuxHost(root(fx))))
    assert [d["address"] for d in listed] == oracle.addresses()
    for doc in listed:
        raw = raw_record(oracle.function(doc["address"]))
        assert doc == {**doc, **{k: v for k, v in raw.items() if k in doc}}


def test_sriov_fixture_has_the_vfs_on_vfio() -> None:
    listed = {d["address"]: d for d in norm(list_records(LinuxHost(root(FIXTURES[1]))))}
    assert listed[PF]["driver"] == "vfio-pci"
    assert (listed[PF]["sriov_numvfs"], listed[PF]["virtfns"]) == (2, list(VFS))
    for vf in VFS:
        assert (listed[vf]["driver"], listed[vf]["physfn"]) == ("vfio-pci", PF)


@pytest.mark.lspci
@pytest.mark.parametrize("fx", FIXTURES, ids=lambda f: f.name)
def test_lspci_reads_the_fixture(fx: Fixture) -> None:
    if shutil.which("lspci") is None:
        pytest.skip("lspci (pciutils) is not installed")
    out = subprocess.run(
        ["lspci", "-D", "-n", "-A", "linux-sysfs", "-O",
         f"sysfs.path={root(fx)}/sys/bus/pci"],
        capture_output=True, text=True, check=True).stdout
    seen = {line.split()[0]: line.split()[2] for line in out.splitlines()}
    expected = {s.address: f"{s.vendor}:{s.device}" for s in topology.BOOT}
    expected.update({vf: f"1b36:{topology.NVME_VF_DEVICE}" for vf in VFS
                     if fx.extra_groups})
    assert seen == expected


# -- differential: the simulator's model of this machine against the captured kernel ------
@pytest.mark.parametrize("fx", FIXTURES, ids=lambda f: f.name)
def test_simulator_list_and_groups_match_the_kernel(fx: Fixture) -> None:
    real, sim = LinuxHost(root(fx)), sim_in_state(fx)
    assert norm(list_records(sim)) == norm(list_records(real))
    assert norm(group_records(sim)) == norm(group_records(real))


def show_diffs(fx: Fixture) -> list[str]:
    """Every ``show`` field of every function where the simulator and the kernel differ."""
    real, sim = LinuxHost(root(fx)), sim_in_state(fx)
    out = []
    for doc in list_records(real):
        r = norm(show_record(real, doc["address"]))
        s = norm(show_record(sim, doc["address"]))
        for key in sorted(r.keys() | s.keys()):
            if r.get(key) != s.get(key):
                out.append(f"{doc['address']}.{key}: kernel {r.get(key)!r}, "
                           f"simulator {s.get(key)!r}")
    return out


@pytest.mark.parametrize("fx", FIXTURES, ids=lambda f: f.name)
def test_simulator_show_matches_the_kernel(fx: Fixture) -> None:
    """All of ``show``: capability chains (ids, offsets, order), config size, header
    multifunction bit, PCIe port type, FLR, ACS, SR-IOV, ARI next function, reset methods."""
    assert show_diffs(fx) == []


def cap_registers(raw: bytes) -> list[tuple[Any, ...]]:
    """The capability chains in order, each with the register fields the simulator
    models (lspci and vfioctl decode them); run-time state (enable bits, addresses,
    error status) is left out."""
    def u16(off: int) -> int:
        return int.from_bytes(raw[off:off + 2], "little")

    def u32(off: int) -> int:
        return int.from_bytes(raw[off:off + 4], "little")

    out: list[tuple[Any, ...]] = []
    pos, seen = raw[0x34] if raw[0x06] & 0x10 else 0, 0
    while pos and seen < 48:
        cid = raw[pos]
        fields: tuple[Any, ...] = ()
        if cid == 0x01:                                  # PM: version, No_Soft_Reset
            fields = (u16(pos + 2) & 0x7, u16(pos + 4) & 0x8)
        elif cid == 0x05:                                # MSI: 64-bit, per-vector mask
            fields = (u16(pos + 2) & 0x180,)
        elif cid == 0x09:                                # vendor: length, virtio cfg_type
            fields = (raw[pos + 2], raw[pos + 3])
        elif cid == 0x0D:                                # bridge subsystem ids
            fields = (u32(pos + 4),)
        elif cid == 0x10:                                # PCIe: version/type/slot, FLR
            fields = (u16(pos + 2) & 0x1FF, u32(pos + 4) & (1 << 28))
        elif cid == 0x11:                                # MSI-X: size, table, PBA
            fields = (u16(pos + 2) & 0x7FF, u32(pos + 4), u32(pos + 8))
        out.append(("std", cid, pos, *fields))
        pos, seen = raw[pos + 1], seen + 1
    pos = 0x100 if len(raw) > 0x100 else 0
    while pos and u32(pos):
        hdr = u32(pos)
        cid = hdr & 0xFFFF
        fields = ()
        if cid == 0x000D:                                # ACS capability, control
            fields = (u16(pos + 4), u16(pos + 6))
        elif cid == 0x000E:                              # ARI capability register
            fields = (u16(pos + 4),)
        elif cid == 0x0010:                              # SR-IOV
            fields = (u16(pos + 8) & 0x19, *(u16(pos + o) for o in (
                0x0C, 0x0E, 0x10, 0x14, 0x16, 0x1A)))
        out.append(("ext", cid, (hdr >> 16) & 0xF, pos, *fields))
        pos = hdr >> 20
    return out


@pytest.mark.parametrize("fx", FIXTURES, ids=lambda f: f.name)
def test_simulator_capability_registers_match_the_kernel(fx: Fixture) -> None:
    real, sim = LinuxHost(root(fx)), sim_in_state(fx)
    for doc in list_records(real):
        path = PurePosixPath(f"sys/bus/pci/devices/{doc['address']}/config")
        kernel = (root(fx) / path).read_bytes()
        assert cap_registers(sim.read_bytes(path)) == cap_registers(kernel), doc["address"]
