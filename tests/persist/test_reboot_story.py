"""The whole persistence story on the simulated test VM: persist, reboot, find it again.

The simulated reboot (vfioctl.sim.reboot) logs every bind in order, as the kernel log
would, so "the host driver never bound it" is asserted on that log, not inferred from
the final state.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from persisttest import SimFile, cli

import vfioctl
from vfioctl.persist.paths import sim_etc
from vfioctl.persist.store import load_token
from vfioctl.sim.reboot import reboot

GPU_LIKE, PF, VFS = "0000:02:00.0", "0000:01:00.0", ("0000:01:00.1", "0000:01:00.2")
BRIDGE_E1000, BRIDGE_RNG = "0000:04:01.0", "0000:04:02.0"


def reboot_json(host: SimFile) -> dict[str, Any]:
    r = cli("sim", "reboot", str(host.path), "--json")
    assert r.rc == 0, r.err
    doc: dict[str, Any] = json.loads(r.out)
    return doc


def bound(doc: dict[str, Any]) -> list[tuple[str, str]]:
    binds = doc["binds"]
    assert isinstance(binds, list)
    return [(b["address"], b["driver"]) for b in binds]


def driver(host: SimFile, addr: str) -> str | None:
    with vfioctl.open(host.spec) as s:
        return s.device(addr).driver


def persist_story(host: SimFile) -> None:
    host.ok("detach", "--group", "--persist", GPU_LIKE)
    host.ok("detach", "--persist", PF)
    host.ok("token", "set", PF)
    host.ok("sriov", PF, "--numvfs", "2", "--yes")
    host.ok("persist", "sriov", PF, "--numvfs", "2", "--token")
    host.ok("persist", "install-boot")


def test_persisted_group_and_vfs_come_back_without_host_drivers(q35: SimFile) -> None:
    persist_story(q35)
    with vfioctl.open(q35.spec) as s:
        token_before = s.get_token(PF)
    doc = reboot_json(q35)
    log = bound(doc)
    for addr in (GPU_LIKE, PF, *VFS):
        assert (addr, "vfio-pci") in log
    assert (GPU_LIKE, "e1000e") not in log and (PF, "nvme") not in log
    assert ("0000:00:10.0", "e1000e") in log          # the module loaded, for others
    with vfioctl.open(q35.spec) as s:
        assert [str(v.addr) for v in s.sriov(PF).vfs] == list(VFS)
        persisted = load_token(sim_etc(q35.path), vfioctl.parse_address(PF))
        assert persisted is not None and s.get_token(PF) == persisted == token_before
        result = s.check_vf(VFS[0])
        assert result.with_token
    assert q35("token", "check", VFS[1]).rc == 0
    assert q35("token", "check", VFS[1], "--no-token").rc == 6   # the kernel wants it


def test_without_the_boot_hooks_a_reboot_forgets(q35: SimFile) -> None:
    q35.ok("detach", "--group", "--persist", GPU_LIKE)
    log = bound(reboot_json(q35))
    assert (GPU_LIKE, "e1000e") in log and (GPU_LIKE, "vfio-pci") not in log
    assert "boot: no udev rule" in q35.ok("persist", "list").out
    doctor = q35("doctor").out
    assert "vfioctl's udev rule is not installed" in doctor


def test_reboot_clears_runtime_state(q35: SimFile) -> None:
    q35.ok("detach", "0000:08:00.0")                  # not persisted
    q35.ok("sriov", PF, "--numvfs", "1")
    state = q35.path.parent / (q35.path.name + ".state")
    assert state.is_dir()
    reboot_json(q35)
    assert not state.exists() or not (state / "vfioctl.db").exists()
    assert driver(q35, "0000:08:00.0") == "e1000e"
    assert driver(q35, PF) == "nvme"
    assert q35.ok("status").out.startswith("vfioctl holds no devices")
    with vfioctl.open(q35.spec) as s:
        assert s.sriov(PF).sriov_numvfs == 0


def test_changed_ids_are_refused_and_reported(q35: SimFile) -> None:
    q35.ok("detach", "--persist", GPU_LIKE)
    q35.ok("persist", "install-boot")
    q35.edit('id = "8086:10d3"', 'id = "8086:10d4"', after=f'addr = "{GPU_LIKE}"')
    doc = reboot_json(q35)
    assert (GPU_LIKE, "vfio-pci") not in bound(doc)
    [outcome] = doc["persist"]
    assert outcome["result"] == "refused"
    assert outcome["messages"] == [
        f"{GPU_LIKE}: not applied, the hardware changed: the device is now 8086:10d4 "
        "(persisted 8086:10d3)"]
    assert driver(q35, GPU_LIKE) is None              # no host driver for 10d4 either
    listed = q35.ok("persist", "list").out
    assert "CHANGED: not applied" in listed
    status = q35.ok("status").out
    assert f"persisted {GPU_LIKE}: not applied, the hardware changed" in status
    doctor = q35("doctor")
    assert f"persisted {GPU_LIKE}" in doctor.out and "WARN" in doctor.out
    assert q35("persist", "apply").rc == 5


def test_changed_group_membership_is_refused(q35: SimFile) -> None:
    q35.ok("detach", "--group", "--persist", BRIDGE_E1000)
    q35.ok("persist", "install-boot")
    text = q35.path.read_text()
    start = text.index(f'addr = "{BRIDGE_RNG}"')
    block_start = text.rindex("[[device]]", 0, start)
    block_end = text.index("[[device]]", start)
    q35.path.write_text(text[:block_start] + text[block_end:])   # the RNG is unplugged
    doc = reboot_json(q35)
    results = {o["address"]: o for o in doc["persist"]}
    assert results[BRIDGE_E1000]["result"] == "refused"
    assert f"{BRIDGE_RNG} (1af4:1005) left" in results[BRIDGE_E1000]["messages"][0]
    assert (BRIDGE_E1000, "vfio-pci") not in bound(doc)
    assert driver(q35, BRIDGE_E1000) == "e1000"


def test_renumbered_group_is_applied_and_reported(q35: SimFile) -> None:
    q35.ok("detach", "--persist", GPU_LIKE)
    q35.ok("persist", "install-boot")
    text = q35.path.read_text()
    start = text.index('addr = "0000:00:10.0"')
    block_start = text.rindex("[[device]]", 0, start)
    block_end = text.index("[[device]]", start)
    q35.path.write_text(text[:block_start] + text[block_end:])   # one group fewer before
    doc = reboot_json(q35)
    [outcome] = doc["persist"]
    assert outcome["renumbered"] is True and outcome["result"] == "applied"
    assert outcome["messages"][0] == (f"{GPU_LIKE}: IOMMU group renumbered 12 -> 11 "
                                      "(same members): applied")
    assert (GPU_LIKE, "e1000e") not in bound(doc)
    assert "renumbered (now 11)" in q35.ok("persist", "list").out


@pytest.mark.parametrize("hook", [False, True])
def test_initramfs_drivers_need_the_hook(q35: SimFile, hook: bool) -> None:
    """A driver the host file forces binds from the initramfs, before udev: only the
    initramfs hook's rule keeps it off; without it vfioctl detaches it later."""
    q35.edit('id = "1b36:0010"', 'driver = "nvme"\nid = "1b36:0010"',
             after=f'addr = "{PF}"')
    q35.ok("detach", "--persist", PF)
    if hook:
        q35.ok("persist", "install-boot")
    else:
        q35.ok("persist", "install-boot", "--no-initramfs")
    doc = reboot_json(q35)
    assert driver(q35, PF) == "vfio-pci"
    [outcome] = doc["persist"]
    if hook:
        assert (PF, "nvme") not in bound(doc)
        assert outcome["messages"] == [f"{PF}: bound to vfio-pci before any host driver"]
    else:
        assert bound(doc).index((PF, "nvme")) < bound(doc).index((PF, "vfio-pci"))
        assert outcome["messages"] == [
            f"{PF}: detached from nvme onto vfio-pci (a driver had bound it first)"]
        with vfioctl.open(q35.spec) as s:
            [st] = s.status()
            assert st.record.original_driver == "nvme"      # reattach gives nvme back


def test_reboot_api_logs_every_bind_in_order(q35: SimFile) -> None:
    log = reboot(q35.path)
    assert log.bound_ever("0000:00:12.0", "pcieport")
    stages = {a: st for a, _, st in log.binds}
    assert stages["0000:00:12.0"] == "kernel" and stages[GPU_LIKE] == "modalias (e1000e)"


def test_without_the_helper_the_rule_does_nothing(q35: SimFile) -> None:
    """vfioctl removed (its helper gone, the rule and /etc/vfioctl left behind): the
    boot is the one without persistence."""
    q35.ok("detach", "--persist", GPU_LIKE)
    q35.ok("persist", "install-boot", "--no-initramfs")
    (q35.etc / "vfioctl" / "udev-helper").unlink()
    doc = reboot_json(q35)
    assert (GPU_LIKE, "e1000e") in bound(doc) and doc["persist"] == []
