"""HostdevManager beyond the group table: mechanics, rollback, ownership, safety, state."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pytest
from policytest import host_text, snapshot

from vfioctl.address import PciAddress
from vfioctl.errors import (
    DeviceInUse,
    DriverNotFound,
    HostError,
    OperationInvalid,
    PermissionDenied,
    ReadOnlyHost,
)
from vfioctl.host.linux import LinuxHost
from vfioctl.manager import HostdevManager
from vfioctl.pci.device import PciDevice
from vfioctl.sim.host import SimHost

GPU_GROUP = ("0000:00:01.0", "0000:01:00.0", "0000:01:00.1", "0000:01:00.2", "0000:01:00.3")
SNAPSHOT = Path(__file__).parents[1] / "data" / "snapshots" / "firecracker-noiommu"


def _lines(report: object) -> list[str]:
    return [a.describe() for a in report.actions]  # type: ignore[attr-defined]


def _writes_per_device(host: SimHost, since: int) -> dict[str, int]:
    """Writes since ``since``, per device: a path under it, or its address as data."""
    out: dict[str, int] = {}
    for w in host.writes[since:]:
        parts = w.path.split("/")
        name = parts[4] if w.path.startswith("sys/bus/pci/devices/") else w.data.strip()
        out[name] = out.get(name, 0) + 1
    return out


# -- mechanics --------------------------------------------------------------------------------


def test_at_most_three_writes_per_device(sim: Callable[[str], SimHost]) -> None:
    host = sim("policy")
    mgr = HostdevManager(host)
    first = host.write_count
    mgr.detach(["0000:01:00.1"], group=True)
    detach = _writes_per_device(host, first)
    assert detach == {"0000:01:00.0": 3, "0000:01:00.1": 3, "0000:01:00.3": 2}
    first = host.write_count
    mgr.reattach(["0000:01:00.1"], group=True)
    reattach = _writes_per_device(host, first)
    assert reattach == {"0000:01:00.0": 3, "0000:01:00.1": 3, "0000:01:00.3": 2}
    assert all(w.errno is None for w in host.writes)


def test_reattach_binds_the_original_driver_by_name(sim: Callable[[str], SimHost]) -> None:
    """01:00.0 was on nouveau; nvidia, registered first, would win a reprobe."""
    host = sim("policy")
    mgr = HostdevManager(host)
    mgr.detach(["0000:01:00.1"], group=True)
    first = host.write_count
    report = mgr.reattach(["0000:01:00.1"], group=True)
    assert _lines(report) == [
        "0000:00:01.0: left alone: pcieport",
        "0000:01:00.0: vfio-pci -> nouveau",
        "0000:01:00.1: vfio-pci -> snd_hda_intel",
        "0000:01:00.2: left alone: pci-stub",
        "0000:01:00.3: vfio-pci -> (no driver)",
    ]
    assert ("sys/bus/pci/drivers/nouveau/bind", "0000:01:00.0") in [
        (w.path, w.data) for w in host.writes[first:]]
    assert snapshot(host, GPU_GROUP) == {
        "0000:00:01.0": ("pcieport", None), "0000:01:00.0": ("nouveau", None),
        "0000:01:00.1": ("snd_hda_intel", None), "0000:01:00.2": ("pci-stub", None),
        "0000:01:00.3": (None, None)}
    assert mgr.status() == []


def test_reattach_of_a_device_vfioctl_did_not_detach_reprobes(
        sim: Callable[[str], SimHost]) -> None:
    host = sim("policy")
    report = HostdevManager(host).reattach(["0000:03:00.1"])
    assert _lines(report) == [
        "0000:03:00.1: vfio-pci -> ixgbe (not detached by vfioctl: cleared "
        "driver_override and reprobed)"]
    assert snapshot(host, ["0000:03:00.1"]) == {"0000:03:00.1": ("ixgbe", None)}


def test_reattach_clears_a_stale_override(sim: Callable[[str], SimHost]) -> None:
    host = sim("policy")
    host.write(PurePosixPath("sys/bus/pci/devices/0000:02:00.0/driver_override"), "vfio-pci")
    report = HostdevManager(host).reattach(["0000:02:00.0"])
    assert [a.kind for a in report.actions] == ["reprobed"]
    assert snapshot(host, ["0000:02:00.0"]) == {"0000:02:00.0": ("nvme", None)}


def test_reattach_of_a_device_on_its_host_driver_does_nothing(
        sim: Callable[[str], SimHost]) -> None:
    host = sim("policy")
    first = host.write_count
    report = HostdevManager(host).reattach(["0000:02:00.0"])
    assert _lines(report) == ["0000:02:00.0: nothing to do: on nvme, not detached by vfioctl"]
    assert host.write_count == first


def test_vfio_pci_is_loaded_when_missing(sim: Callable[[str], SimHost]) -> None:
    host = sim("workstation")
    drivers = PurePosixPath("sys/bus/pci/drivers/vfio-pci")
    assert not host.exists(drivers)
    report = HostdevManager(host).detach(["0000:06:00.0"])
    assert _lines(report) == ["0000:06:00.0: nvme -> vfio-pci"]
    assert host.exists(drivers)


def test_missing_driver_is_refused_before_any_write(sim: Callable[[str], SimHost]) -> None:
    host = sim("shared-group")
    first = host.write_count
    with pytest.raises(DriverNotFound) as info:
        HostdevManager(host).detach(["0000:04:00.0"], driver="pci-stub")
    assert str(info.value) == "driver pci-stub is not available on this host"
    assert info.value.exit_code == 4
    assert host.write_count == first


def test_no_iommu_group_is_refused_for_vfio_pci(tmp_path: Path) -> None:
    text = host_text("policy").replace('iommu = "intel"', 'iommu = "none"')
    host = SimHost.from_text(text, name="sim:noiommu", state_dir=tmp_path / "state")
    mgr = HostdevManager(host)
    with pytest.raises(OperationInvalid) as info:
        mgr.detach(["0000:02:00.0"])
    assert str(info.value) == ("cannot detach 0000:02:00.0 onto vfio-pci: it has no IOMMU "
                               "group")
    # pci-stub needs no IOMMU
    assert _lines(mgr.detach(["0000:02:00.0"], driver="pci-stub")) == [
        "0000:02:00.0: nvme -> pci-stub"]


# -- failures leave the host as it was ---------------------------------------------------


def test_a_refused_write_undoes_the_whole_group(sim: Callable[[str], SimHost]) -> None:
    host = sim("policy")
    before = snapshot(host)
    # the second device's probe is refused: the first must go back to nouveau
    host.faults.fail_write("sys/bus/pci/drivers_probe", errno.EBUSY, times=1, skip=1)
    mgr = HostdevManager(host)
    with pytest.raises(HostError) as info:
        mgr.detach(["0000:01:00.1"], group=True)
    assert str(info.value) == ("cannot probe drivers for 0000:01:00.1: EBUSY (Device or "
                               "resource busy)")
    assert info.value.exit_code == 6
    assert snapshot(host) == before
    assert mgr.status() == [] and mgr.recover() == []


def test_a_refused_bind_undoes_the_reattach(sim: Callable[[str], SimHost]) -> None:
    host = sim("policy")
    mgr = HostdevManager(host)
    mgr.detach(["0000:01:00.1"], group=True)
    detached, held = snapshot(host), mgr.status()
    host.faults.fail_write("sys/bus/pci/drivers/snd_hda_intel/bind", errno.EIO)
    with pytest.raises(HostError, match=r"cannot bind 0000:01:00\.1 to snd_hda_intel: EIO"):
        mgr.reattach(["0000:01:00.1"], group=True)
    assert snapshot(host) == detached
    assert mgr.status() == held and mgr.recover() == []


def test_permission_denied_is_its_own_exit_code(sim: Callable[[str], SimHost]) -> None:
    host = sim("policy")
    host.faults.fail_write("*/driver_override", errno.EACCES)
    with pytest.raises(PermissionDenied) as info:
        HostdevManager(host).detach(["0000:02:00.0"])
    assert info.value.exit_code == 77
    assert info.value.hint == "run vfioctl as root"
    assert snapshot(host, ["0000:02:00.0"]) == {"0000:02:00.0": ("nvme", None)}


# -- ownership --------------------------------------------------------------------------------


def test_a_device_held_for_one_owner_cannot_go_to_another(
        sim: Callable[[str], SimHost]) -> None:
    mgr = HostdevManager(sim("policy"))
    assert _lines(mgr.prepare("vm1", ["0000:02:00.0"])) == [
        "0000:02:00.0: nvme -> vfio-pci (held for 'vm1')"]
    assert _lines(mgr.prepare("vm1", ["0000:02:00.0"])) == [
        "0000:02:00.0: already on vfio-pci (held for 'vm1')"]
    with pytest.raises(DeviceInUse) as info:
        mgr.prepare("vm2", ["0000:02:00.0"])
    assert str(info.value) == "PCI device 0000:02:00.0 is in use by 'vm1'"
    assert info.value.owner == "vm1"
    with pytest.raises(DeviceInUse, match="in use by 'vm1'"):
        mgr.reattach(["0000:02:00.0"])
    assert _lines(mgr.reattach(["0000:02:00.0"], owner="vm1")) == [
        "0000:02:00.0: vfio-pci -> nvme"]


def test_a_group_goes_to_one_owner(sim: Callable[[str], SimHost]) -> None:
    mgr = HostdevManager(sim("policy"))
    mgr.prepare("vm1", ["0000:03:00.0"])   # its sibling is on vfio-pci: allowed alone
    with pytest.raises(DeviceInUse) as info:
        mgr.prepare("vm2", ["0000:03:00.1"])
    assert str(info.value) == ("PCI device 0000:03:00.1 shares IOMMU group 2 with "
                               "0000:03:00.0, which is in use by 'vm1'")
    assert info.value.owner == "vm1"


def test_release_gives_back_what_prepare_detached(sim: Callable[[str], SimHost]) -> None:
    host = sim("policy")
    mgr = HostdevManager(host)
    mgr.detach(["0000:02:00.0"])                         # detached by hand beforehand
    report = mgr.prepare("vm1", ["0000:02:00.0", "0000:03:00.0"], group=True)
    assert _lines(report) == [
        "0000:02:00.0: already on vfio-pci, now held for 'vm1'",
        "0000:00:02.0: left alone: pcieport",
        "0000:03:00.0: ixgbe -> vfio-pci (held for 'vm1')",
        "0000:03:00.1: already on vfio-pci, now held for 'vm1'",
    ]
    assert sorted(_lines(mgr.release("vm1"))) == [
        "0000:02:00.0: stays on vfio-pci, no longer held for 'vm1'",
        "0000:03:00.0: vfio-pci -> ixgbe",
        "0000:03:00.1: stays on vfio-pci, no longer held for 'vm1'",
    ]
    assert snapshot(host, ["0000:02:00.0", "0000:03:00.0", "0000:03:00.1"]) == {
        "0000:02:00.0": ("vfio-pci", "vfio-pci"), "0000:03:00.0": ("ixgbe", None),
        "0000:03:00.1": ("vfio-pci", None)}
    # 02:00.0 is still held (vfioctl detached it), for nobody; 03:00.1 never was
    assert [(str(s.record.addr), s.record.owner, s.record.original_driver)
            for s in mgr.status()] == [("0000:02:00.0", None, "nvme")]
    assert mgr.release("vm1").actions == ()


def test_reattach_refuses_a_group_open_by_a_vfio_user(sim: Callable[[str], SimHost]) -> None:
    host = sim("policy")
    mgr = HostdevManager(host)
    mgr.detach(["0000:02:00.0"])
    group = PciDevice(host, PciAddress.parse("0000:02:00.0")).iommu_group
    fd = host.open(PurePosixPath(f"dev/vfio/{group}"))
    with pytest.raises(DeviceInUse) as info:
        mgr.reattach(["0000:02:00.0"])
    # the holder is named (the simulator lists this process under /proc, as the kernel)
    comm = Path("/proc/self/comm").read_text().strip()
    assert str(info.value) == (f"PCI device 0000:02:00.0 is in use: IOMMU group {group} is "
                               f"open by pid {os.getpid()} ({comm})")
    host.close(fd)
    assert [a.kind for a in mgr.reattach(["0000:02:00.0"]).actions] == ["reattached"]


def test_reattach_keeps_a_group_together(sim: Callable[[str], SimHost]) -> None:
    mgr = HostdevManager(sim("policy"))
    mgr.detach(["0000:01:00.1"], group=True)
    with pytest.raises(OperationInvalid) as info:
        mgr.reattach(["0000:01:00.0"])
    assert str(info.value) == (
        "cannot reattach 0000:01:00.0 alone: vfioctl also holds 0000:01:00.1 (vfio-pci), "
        "0000:01:00.3 (vfio-pci) in IOMMU group 1")


# -- hosts that cannot change; state -----------------------------------------------------------


@pytest.mark.parametrize("spec", ["sim", "snapshot"])
def test_read_only_hosts_refuse_changes(spec: str) -> None:
    host = SimHost.bundled("workstation") if spec == "sim" else LinuxHost(SNAPSHOT)
    mgr = HostdevManager(host)
    addr = "0000:01:00.0" if spec == "sim" else "0000:00:00.0"
    with pytest.raises(ReadOnlyHost) as info:
        mgr.detach([addr])
    assert str(info.value) == f"host {host.name} is read-only: cannot detach {addr}"
    with pytest.raises(ReadOnlyHost):
        mgr.reattach([addr])
    with pytest.raises(ReadOnlyHost):
        mgr.release("vm1")
    assert mgr.status() == [] and mgr.recover() == []
    if spec == "sim":
        assert info.value.hint == ("copy it first: 'vfioctl sim copy workstation FILE', then "
                                   "use --host sim:FILE")


def test_state_directory_is_private(sim: Callable[[str], SimHost]) -> None:
    host = sim("policy")
    HostdevManager(host).detach(["0000:02:00.0"])
    assert host.state_dir is not None
    assert stat.S_IMODE(host.state_dir.stat().st_mode) == 0o700
    assert (host.state_dir / "vfioctl.db").exists()


def test_status_json_shape(sim: Callable[[str], SimHost]) -> None:
    mgr = HostdevManager(sim("policy"))
    mgr.prepare("vm1", ["0000:02:00.0"])
    [doc] = [s.to_json() for s in mgr.status()]
    assert doc.pop("since")
    assert doc == {"address": "0000:02:00.0", "iommu_group": 10, "driver": "vfio-pci",
                   "held_on": "vfio-pci", "original_driver": "nvme",
                   "detached_by_vfioctl": True, "owner": "vm1", "managed": True,
                   "present": True}
