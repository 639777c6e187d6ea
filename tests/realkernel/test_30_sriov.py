"""SR-IOV on a vfio-pci PF (docs/kernel.md "vfio-pci as a PF driver"), then the
``q35-sriov`` snapshot: the PF on vfio-pci with 2 VFs captured by vfio-pci.

Starts from: the boot state with vfio-pci loaded. Leaves: the boot state (VFs removed,
the PF back on nvme), with vfio-pci's ``enable_sriov`` back at N.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import topology
from .checks import (
    assert_groups_match_sysfs,
    assert_list_matches_sysfs,
    assert_snapshot_reads_like_live,
    take_snapshot,
)
from .differential import Differential
from .guest_kernel import PCI_DEVICES, GuestKernel
from .vfioctl_cli import VfioctlCli

PF = topology.NVME_PF
NUMVFS = PCI_DEVICES / PF / "sriov_numvfs"
VFS = ("0000:01:00.1", "0000:01:00.2")  # sriov_offset 1, sriov_stride 1


@pytest.fixture(scope="module")
def pf_on_vfio(kernel: GuestKernel) -> Iterator[None]:
    """The PF bound to vfio-pci with resets disabled; torn down to the boot state."""
    kernel.modprobe("vfio-pci")
    assert kernel.bind(PF, "vfio-pci") == "vfio-pci"
    # docs/kernel.md "Reset methods", "The test guest": vfio-pci resets (FLR) the PF when
    # it is opened, and QEMU 7.2's NVMe then loses its VFs; an empty reset_method disables
    # resets. Do it before any open.
    kernel.write(PCI_DEVICES / PF / "reset_method", "\n")
    yield
    if kernel.function(PF).sriov_numvfs:
        kernel.write(NUMVFS, "0")
    kernel.set_vfio_pci_param("enable_sriov", "N")
    kernel.clear_override(PF)
    kernel.unbind(PF)
    kernel.probe(PF)
    assert kernel.driver(PF) == "nvme"


def test_reset_method_can_be_disabled(pf_on_vfio: None, kernel: GuestKernel) -> None:
    assert kernel.attr(PF, "reset_method") == ""


def test_enable_sriov_n_refuses_numvfs_with_enoent(pf_on_vfio: None,
                                                   kernel: GuestKernel) -> None:
    assert kernel.vfio_pci_param("enable_sriov") == "N"
    with pytest.raises(OSError) as exc:
        kernel.write(NUMVFS, "2")
    assert exc.value.errno == errno.ENOENT
    assert kernel.function(PF).sriov_numvfs == 0


def test_enable_sriov_y_creates_vfs_captured_by_vfio(pf_on_vfio: None,
                                                     kernel: GuestKernel) -> None:
    kernel.set_vfio_pci_param("enable_sriov", "Y")
    with kernel.dmesg_since() as log:
        kernel.write(NUMVFS, "2")
        kernel.wait_for("VFs bound to vfio-pci",
                        lambda: all(kernel.driver(vf) == "vfio-pci" for vf in VFS
                                    if kernel.exists(vf)))
    pf = kernel.function(PF)
    assert (pf.sriov_numvfs, pf.virtfns) == (2, VFS)
    groups = set()
    for vf in VFS:
        f = kernel.function(vf)
        assert (f.vendor, f.device) == ("0x1b36", "0x" + topology.NVME_VF_DEVICE)
        assert (f.driver, f.driver_override, f.physfn) == ("vfio-pci", "vfio-pci", PF)
        assert f.iommu_group is not None
        assert kernel.groups()[f.iommu_group] == {vf}, "each VF gets its own group"
        groups.add(f.iommu_group)
        assert any(f"Captured SR-IOV VF {vf} driver_override" in line for line in log), vf
    assert set(kernel.vfio_group_nodes()) >= groups | {kernel.group_of(PF)}


def test_vf_ids_come_from_sysfs_not_config(pf_on_vfio: None, kernel: GuestKernel,
                                           vfioctl: VfioctlCli) -> None:
    """A VF's config space reads ffff at the ids; the vendor/device files are right."""
    config = Path(f"/{PCI_DEVICES}/{VFS[0]}/config").read_bytes()
    assert config[:4] == b"\xff\xff\xff\xff"
    doc = vfioctl.json("show", VFS[0])
    assert (doc["vendor"], doc["device"]) == ("1b36", topology.NVME_VF_DEVICE)
    assert doc["physfn"] == PF


def test_numvfs_change_while_enabled_is_ebusy(pf_on_vfio: None, kernel: GuestKernel) -> None:
    with pytest.raises(OSError) as exc:
        kernel.write(NUMVFS, "3")
    assert exc.value.errno == errno.EBUSY
    assert kernel.function(PF).sriov_numvfs == 2


def test_documents_with_vfs_match_sysfs(pf_on_vfio: None, kernel: GuestKernel,
                                        vfioctl: VfioctlCli,
                                        differential: Differential) -> None:
    differential.checkpoint("PF on vfio-pci with 2 VFs")
    listed = vfioctl.json("list")
    assert_list_matches_sysfs(listed, kernel)
    by_addr = {d["address"]: d for d in listed}
    assert by_addr[PF]["virtfns"] == list(VFS)
    assert (by_addr[PF]["sriov_totalvfs"], by_addr[PF]["sriov_numvfs"]) == (4, 2)
    groups = vfioctl.json("groups")
    assert_groups_match_sysfs(groups, kernel)
    viable = {g["group"]: g["viable"] for g in groups}
    for g in kernel.vfio_group_nodes():
        assert viable[g] is kernel.group_viable(g), g


def test_snapshot_with_vfs_reads_back_like_live(pf_on_vfio: None, vfioctl: VfioctlCli,
                                                out_dir: Path) -> None:
    snap = take_snapshot(vfioctl, out_dir, "q35-sriov")
    assert_snapshot_reads_like_live(vfioctl, snap)


def test_vfs_go_away_with_numvfs_zero(pf_on_vfio: None, kernel: GuestKernel) -> None:
    kernel.write(NUMVFS, "0")
    assert kernel.function(PF).virtfns == ()
    assert not any(kernel.exists(vf) for vf in VFS)
