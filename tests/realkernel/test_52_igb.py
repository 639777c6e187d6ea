"""The DPDK user's case on the real kernel: QEMU's igb (an Intel 82576, the NIC the VF
token was first tested on) as a PF driven from userspace, with its VFs and their token.

Every command runs on the simulated twin first and then on the kernel
(test_40_detach_reattach.Pair): return code, output and every driver/override must
match, and the kernel's answers are judged from raw sysfs:

0. The kernel-driver case first: with the PF on ``igb``, ``sriov --numvfs 2`` gives VFs
   that ``igbvf`` binds; one VF is detached to vfio-pci and opened *without* a token (its
   PF is a kernel driver's: nothing to present) and given back to igbvf.
1. At boot the PF is on ``igb`` and ``sriov_totalvfs`` reads 7: igb limits the 82576's 8
   VFs (``pci_sriov_set_totalvfs`` in its probe).
2. ``detach`` → vfio-pci; ``sriov_totalvfs`` now reads the capability's 8 (the PCI core
   drops a driver's limit when it unbinds, ``pci_iov_remove``).
3. ``sriov --numvfs 2 --yes``: the VFs appear at offset 128, stride 2 (09:10.0, 09:10.2,
   device 8086:10ca), captured by vfio-pci (``driver_override``), each in its own group.
4. ``token set``; ``token check`` opens a VF with the stored token (the cdev path where the
   kernel checks tokens there, else the group path);
   ``--no-token`` is refused with the explained EACCES (exit 6).
5. ``sriov --numvfs 0``, ``reattach``: back on igb, ``sriov_totalvfs`` 7 again.

The PF's ``reset_method`` is emptied before its first open: a PF FLR makes QEMU disable
SR-IOV (docs/kernel.md "The test guest"; the same holds for its NVMe).

Starts from: the boot drivers. Leaves: the PF on igb, no VFs, enable_sriov N, nothing
held, no token stored.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import topology
from .differential import Differential
from .guest_kernel import PCI_DEVICES, GuestKernel
from .test_40_detach_reattach import Pair, paired
from .vfioctl_cli import VfioctlCli

PF = topology.IGB_PF
VFS = ("0000:09:10.0", "0000:09:10.2")


@pytest.fixture(scope="module")
def run(kernel: GuestKernel, differential: Differential,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    with paired(kernel, differential, tmp_path_factory, "52") as pair:
        try:
            yield pair
        finally:
            cli = VfioctlCli("linux")
            cli("token", "forget", PF)
            cli("sriov", PF, "--numvfs", "0", "--yes")
            cli("reattach", PF)
            if kernel.vfio_pci_param("enable_sriov") != "N":
                kernel.set_vfio_pci_param("enable_sriov", "N")


def test_igb_pf_on_its_kernel_driver_gives_igbvf_vfs(run: Pair, kernel: GuestKernel) -> None:
    from .checks import token_open_path

    assert kernel.driver(PF) == "igb"
    # what udev does when a VF appears (built into the tier's 7.3: nothing to load); the
    # first boot has no udev
    kernel.modprobe("igbvf")
    try:
        r = run("sriov", PF, "--numvfs", "2", "--yes")
        assert r.rc == 0, r.stderr
        kernel.wait_for("igb VFs on igbvf", lambda: all(
            kernel.exists(v) and kernel.driver(v) == "igbvf" for v in VFS))
        r = run("detach", VFS[1])
        assert r.rc == 0, r.stderr
        assert kernel.driver(VFS[1]) == "vfio-pci"
        assert kernel.driver(VFS[0]) == "igbvf", "the other VF stays with the host"
        r = run("token", "check", VFS[1], "--no-token")
        assert r.rc == 0, r.stderr
        assert f"VF {VFS[1]}: opened through VFIO ({token_open_path()} path)" in r.stdout
        r = run("reattach", VFS[1])
        assert r.rc == 0, r.stderr
        assert kernel.driver(VFS[1]) == "igbvf"
    finally:
        r = run("sriov", PF, "--numvfs", "0", "--yes")
    assert r.rc == 0, r.stderr
    kernel.wait_for("igb VFs gone", lambda: not any(kernel.exists(v) for v in VFS))
    assert kernel.driver(PF) == "igb"
    run.agree()


def _totalvfs(kernel: GuestKernel) -> int:
    return int(kernel.read(PCI_DEVICES / PF / "sriov_totalvfs").strip())


def _group(addr: str) -> str:
    return os.path.basename(os.readlink(f"/sys/bus/pci/devices/{addr}/iommu_group"))


def test_igb_pf_from_userspace_with_vfs_and_token(run: Pair, kernel: GuestKernel,
                                                  differential: Differential) -> None:
    from .checks import token_open_path

    assert kernel.driver(PF) == "igb"
    assert _totalvfs(kernel) == topology.IGB_DRIVER_VFS
    r = run("detach", PF)
    assert r.rc == 0, r.stderr
    assert kernel.driver(PF) == "vfio-pci"
    assert _totalvfs(kernel) == topology.IGB_TOTALVFS
    kernel.write(PCI_DEVICES / PF / "reset_method", "\n")
    r = run("sriov", PF, "--numvfs", "2", "--yes")
    assert r.rc == 0, r.stderr
    kernel.wait_for("igb VFs on vfio-pci", lambda: all(
        kernel.exists(v) and kernel.driver(v) == "vfio-pci" for v in VFS))
    for vf in VFS:
        assert vf in r.stdout
        assert kernel.read(PCI_DEVICES / vf / "device").strip() == "0x" + topology.IGB_VF_DEVICE
        assert kernel.function(vf).driver_override == "vfio-pci"
    groups = {_group(a) for a in (PF, *VFS)}
    assert len(groups) == 3, "the PF and each VF in a group of its own"
    differential.checkpoint("igb PF on vfio-pci with 2 VFs")
    r = run("token", "set", PF)
    assert r.rc == 0, r.stderr
    r = run("token", "check", VFS[0])
    assert r.rc == 0, r.stderr
    assert f"VF {VFS[0]}: opened through VFIO ({token_open_path()} path) with the stored " \
        "VF token" in r.stdout
    r = run("token", "check", VFS[0], "--no-token")
    assert r.rc == 6, (r.rc, r.stderr)
    assert f"VF token required for {VFS[0]}; its PF {PF} is driven from userspace" in r.stderr
    assert run("token", "forget", PF).rc == 0
    r = run("sriov", PF, "--numvfs", "0", "--yes")
    assert r.rc == 0, r.stderr
    assert not any(Path(f"/sys/bus/pci/devices/{v}").exists() for v in VFS)
    r = run("reattach", PF)
    assert r.rc == 0, r.stderr
    kernel.set_vfio_pci_param("enable_sriov", "N")
    assert kernel.driver(PF) == "igb"
    assert _totalvfs(kernel) == topology.IGB_DRIVER_VFS
    run.agree()
