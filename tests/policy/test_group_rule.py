"""The group rule (docs/rationale.md "The IOMMU-group rule") as a table: what detach does
or refuses, with exact messages.

Host: tests/policy/hosts/policy.toml. Group 1 = 00:01.0 (pcieport) + 01:00.0 (nouveau) +
01:00.1 (snd_hda_intel) + 01:00.2 (pci-stub) + 01:00.3 (no driver); group 2 = 00:02.0
(pcieport) + 03:00.0 (ixgbe) + 03:00.1 (vfio-pci); NVMe 02:00.0 alone.
A refused request must not write anything; a done one must leave sysfs as reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from policytest import snapshot

from vfioctl.errors import VfioctlError
from vfioctl.manager import HostdevManager
from vfioctl.sim.host import SimHost


@dataclass(frozen=True)
class Case:
    name: str
    addrs: tuple[str, ...]
    group: bool = False
    driver: str = "vfio-pci"
    force: bool = False
    setup: tuple[tuple[str, str], ...] = ()   # (sysfs path, data) written first
    out: tuple[str, ...] = ()                  # expected Action lines
    error: str | None = None                   # expected "Class: message"


GPU_GROUP_REFUSAL = (
    "GroupNotViable: cannot detach 0000:01:00.1 alone: IOMMU group 1 also holds "
    "0000:01:00.0 (nouveau)")

CASES = [
    Case("alone", ("0000:02:00.0",), out=("0000:02:00.0: nvme -> vfio-pci",)),
    Case("alone-with-group-flag", ("0000:02:00.0",), group=True,
         out=("0000:02:00.0: nvme -> vfio-pci",)),
    Case("several-without-group", ("0000:01:00.1",), error=GPU_GROUP_REFUSAL),
    Case("several-without-group-gpu", ("0000:01:00.0",), error=(
        "GroupNotViable: cannot detach 0000:01:00.0 alone: IOMMU group 1 also holds "
        "0000:01:00.1 (snd_hda_intel)")),
    # every member the host uses is named: pcieport, pci-stub and driverless are fine
    Case("several-all-used-named", ("0000:01:00.0", "0000:01:00.1"), out=(
        "0000:01:00.0: nouveau -> vfio-pci",
        "0000:01:00.1: snd_hda_intel -> vfio-pci")),
    Case("several-with-group", ("0000:01:00.1",), group=True, out=(
        "0000:00:01.0: left alone: pcieport",
        "0000:01:00.0: nouveau -> vfio-pci",
        "0000:01:00.1: snd_hda_intel -> vfio-pci",
        "0000:01:00.2: left alone: pci-stub",
        "0000:01:00.3: (no driver) -> vfio-pci")),
    Case("several-with-group-pci-stub", ("0000:01:00.1",), group=True, driver="pci-stub",
         out=(
             "0000:00:01.0: left alone: pcieport",
             "0000:01:00.0: nouveau -> pci-stub",
             "0000:01:00.1: snd_hda_intel -> pci-stub",
             "0000:01:00.2: already on pci-stub",
             "0000:01:00.3: (no driver) -> pci-stub")),
    Case("sibling-already-on-vfio", ("0000:03:00.0",), out=(
        "0000:03:00.0: ixgbe -> vfio-pci",)),
    Case("group-with-vfio-member", ("0000:03:00.0",), group=True, out=(
        "0000:00:02.0: left alone: pcieport",
        "0000:03:00.0: ixgbe -> vfio-pci",
        "0000:03:00.1: already on vfio-pci")),
    Case("group-with-vfio-member-pci-stub", ("0000:03:00.0",), group=True,
         driver="pci-stub", out=(
             "0000:00:02.0: left alone: pcieport",
             "0000:03:00.0: ixgbe -> pci-stub",
             "0000:03:00.1: already on vfio-pci")),
    # on vfio-pci already, but useless to VFIO while its sibling is on ixgbe: same rule
    Case("already-detached-in-used-group", ("0000:03:00.1",), error=(
        "GroupNotViable: cannot detach 0000:03:00.1 alone: IOMMU group 2 also holds "
        "0000:03:00.0 (ixgbe)")),
    Case("root-port", ("0000:00:01.0",), group=True, error=(
        "OperationInvalid: 0000:00:01.0 is a PCI bridge or PCIe port (driver pcieport): "
        "bridges cannot be detached")),
    Case("pf-with-vfs", ("0000:04:00.0",),
         setup=(("sys/bus/pci/devices/0000:04:00.0/sriov_numvfs", "2"),), error=(
             "VfsEnabled: cannot detach 0000:04:00.0: it is an SR-IOV PF with 2 VFs "
             "enabled and vfio-pci refuses a PF whose VFs exist")),
    Case("pf-with-vfs-pci-stub", ("0000:04:00.0",), driver="pci-stub",
         setup=(("sys/bus/pci/devices/0000:04:00.0/sriov_numvfs", "2"),), error=(
             "VfsEnabled: cannot detach 0000:04:00.0: it is an SR-IOV PF with 2 VFs "
             "enabled and unbinding igb would destroy them")),
    Case("pf-without-vfs", ("0000:04:00.0",), out=("0000:04:00.0: igb -> vfio-pci",)),
    Case("nic-up-with-routes", ("0000:05:00.0",), error=(
        "DeviceInUse: PCI device 0000:05:00.0 is in use by the host: interface enp5s0 "
        "is up with routes")),
    Case("disk-holding-root", ("0000:06:00.0",), error=(
        "DeviceInUse: PCI device 0000:06:00.0 is in use by the host: disk sda: sda1 is "
        "mounted on /boot/efi, sda2 holds the root filesystem /")),
    Case("boot-gpu", ("0000:00:03.0",), error=(
        "DeviceInUse: PCI device 0000:00:03.0 is in use by the host: it is the boot GPU "
        "(boot_vga=1) the console uses")),
    Case("several-in-use", ("0000:05:00.0", "0000:06:00.0"), error=(
        "DeviceInUse: devices are in use by the host: 0000:05:00.0 (interface enp5s0 is "
        "up with routes), 0000:06:00.0 (disk sda: sda1 is mounted on /boot/efi, sda2 "
        "holds the root filesystem /)")),
    Case("nic-forced", ("0000:05:00.0",), force=True, out=("0000:05:00.0: igb -> vfio-pci",)),
    Case("disk-forced", ("0000:06:00.0",), force=True, out=("0000:06:00.0: ahci -> vfio-pci",)),
    Case("unknown-device", ("0000:09:00.0",), error=(
        "DeviceNotFound: PCI device 0000:09:00.0 not found on this host")),
    Case("not-a-holding-driver", ("0000:02:00.0",), driver="nvidia", error=(
        "UsageError: cannot detach onto driver 'nvidia'")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_detach_table(case: Case, sim: Callable[[str], SimHost]) -> None:
    host = sim("policy")
    for path, data in case.setup:
        from pathlib import PurePosixPath
        host.write(PurePosixPath(path), data)
    before, writes = snapshot(host), host.write_count
    mgr = HostdevManager(host)
    try:
        report = mgr.detach(list(case.addrs), group=case.group, driver=case.driver,
                            force=case.force)
    except VfioctlError as err:
        assert case.error is not None, f"unexpected {type(err).__name__}: {err}"
        assert f"{type(err).__name__}: {err}" == case.error
        assert err.hint, "every refusal says what to do next"
        assert host.write_count == writes, "a refusal must not write"
        assert snapshot(host) == before
        assert mgr.status() == []
        return
    assert case.error is None, f"expected {case.error}"
    assert tuple(a.describe() for a in report.actions) == case.out
    after = snapshot(host)
    held = {str(s.record.addr): s for s in mgr.status()}
    for action in report.actions:
        name = str(action.addr)
        assert after[name][0] == action.after
        if action.kind == "detached":
            assert after[name] == (case.driver, case.driver)
            assert held[name].record.original_driver == before[name][0]
        else:
            assert after[name] == before[name]
            assert name not in held
    # the report names every device touched, and nothing else changed
    touched = {str(a.addr) for a in report.actions}
    assert {k: v for k, v in after.items() if k not in touched} == {
        k: v for k, v in before.items() if k not in touched}


def test_refusal_hint_suggests_group(sim: Callable[[str], SimHost]) -> None:
    with pytest.raises(VfioctlError) as info:
        HostdevManager(sim("policy")).detach(["0000:01:00.1"])
    assert info.value.hint == (
        "detach the whole group with 'vfioctl detach --group 0000:01:00.1', or move the "
        "device to a slot with its own group (see 'vfioctl explain 0000:01:00.1')")
    assert info.value.offenders == (("0000:01:00.0", "nouveau"),)  # type: ignore[attr-defined]
    assert info.value.group == 1  # type: ignore[attr-defined]


def test_shared_group_host_detaches_both_ports_with_group(
        sim: Callable[[str], SimHost]) -> None:
    host = sim("shared-group")
    mgr = HostdevManager(host)
    with pytest.raises(VfioctlError, match=r"also holds 0000:03:00.1 \(ixgbe\)"):
        mgr.detach(["0000:03:00.0"])
    report = mgr.detach(["0000:03:00.0"], group=True)
    assert [a.describe() for a in report.actions] == [
        "0000:00:01.0: left alone: pcieport",
        "0000:03:00.0: ixgbe -> vfio-pci",
        "0000:03:00.1: ixgbe -> vfio-pci",
    ]
