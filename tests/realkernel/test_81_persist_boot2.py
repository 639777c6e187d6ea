"""Persistence on the real kernel, boot 2 of 2: what boot 1 persisted is applied by udev.

The tier rebooted the guest keeping /etc (vmtest/init.sh) and started the real
``systemd-udevd``, which replayed every device's add event: vfioctl's rule
(/etc/udev/rules.d/70-vfioctl.rules, before 80-drivers.rules) ran its helper, which set
the persisted overrides before any module was loaded and ran ``vfioctl persist apply
--boot --device ADDRESS`` for each persisted device. Checked here:

- 02:00.0 and 01:00.0 are on vfio-pci. Where e1000e and nvme are modules (Debian's
  kernel), the kernel log shows that neither ever bound them (dmesg has no line of those
  drivers about them); where they are built in (the tier's 7.3) they bound both devices
  while the kernel booted, before any udev rule could run, and the helper's ``persist
  apply`` detached them onto vfio-pci (the kernel log says so);
- 01:00.0 has its 2 VFs, on vfio-pci; ``token check`` opens a VF with the runtime
  store's token, which is the persisted one, and the kernel accepts exactly that token;
- 08:00.0, whose persisted ids boot 1 edited, was refused: the kernel log says so, it
  is on its host driver, and ``persist list``/``status``/``doctor`` report it.

Leaves: the boot drivers, no VFs, enable_sriov N, nothing persisted, no boot hooks.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .checks import restore_boot_drivers, token_open_path
from .guest_kernel import GuestKernel
from .vfioctl_cli import CliResult, VfioctlCli

IN_VM = os.environ.get("VFIOCTL_IN_TEST_VM") == "1"
GPU_LIKE = "0000:02:00.0"
PF = "0000:01:00.0"
VFS = ("0000:01:00.1", "0000:01:00.2")
CHANGED = "0000:08:00.0"

pytestmark = [pytest.mark.boot2,
              pytest.mark.skipif(not IN_VM, reason="real kernel: runs in the test VM")]


def dmesg() -> str:
    return subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout


def built_in(module: str) -> bool:
    """Is ``module`` built into this kernel (kmod's ``modules.builtin``)?"""
    path = Path(f"/lib/modules/{os.uname().release}/modules.builtin")
    return path.is_file() and any(line.rsplit("/", 1)[-1] == f"{module}.ko"
                                  for line in path.read_text().split())


@pytest.fixture(scope="module")
def booted(kernel: GuestKernel, vfioctl: VfioctlCli) -> Iterator[dict[str, CliResult]]:
    # udev may still be creating the VFs' devices when pytest starts
    kernel.wait_for("the persisted VFs", lambda: all(
        kernel.exists(v) and kernel.driver(v) == "vfio-pci" for v in VFS), timeout_s=600)
    done = {"list": vfioctl("persist", "list", "--json"),
            "status": vfioctl("status"), "doctor": vfioctl("doctor"),
            "check": vfioctl("token", "check", VFS[0]),
            "apply": vfioctl("persist", "apply", "--json")}
    try:
        yield done
    finally:
        vfioctl("token", "forget", PF)
        vfioctl("sriov", PF, "--numvfs", "0", "--yes")
        vfioctl("reattach", PF, GPU_LIKE)
        vfioctl("persist", "remove", PF, GPU_LIKE, CHANGED)
        vfioctl("persist", "uninstall-boot")
        restore_boot_drivers(kernel, (PF, GPU_LIKE, CHANGED))
        if kernel.vfio_pci_param("enable_sriov") != "N":
            kernel.set_vfio_pci_param("enable_sriov", "N")


def test_on_vfio_pci_before_any_host_use(
        booted: dict[str, CliResult], kernel: GuestKernel) -> None:
    assert kernel.driver(GPU_LIKE) == "vfio-pci"
    assert kernel.driver(PF) == "vfio-pci"
    log = dmesg()
    assert "e1000e 0000:00:10.0" in log          # the driver did bind 00:10.0
    if built_in("e1000e"):
        assert built_in("nvme")
        assert re.search(r"e1000e 0000:02:00\.0", log), "a built-in e1000e binds at boot"
        for addr, driver in ((GPU_LIKE, "e1000e"), (PF, "nvme")):
            assert f"vfioctl: persist: {addr}: detached from {driver} onto vfio-pci (a " \
                "driver had bound it first)" in log
        return
    assert not re.search(r"e1000e 0000:02:00\.0", log), "e1000e bound 02:00.0"
    assert not re.search(r"nvme.*0000:01:00\.0", log), "nvme bound 01:00.0"
    assert f"vfioctl: persist: {GPU_LIKE}: bound to vfio-pci before any host driver" in log


def test_vfs_and_the_persisted_token(booted: dict[str, CliResult], kernel: GuestKernel,
                                     vfioctl: VfioctlCli) -> None:
    import vfioctl as api
    from vfioctl.persist import require_etc
    from vfioctl.persist.store import load_token

    assert kernel.virtfns(PF) == VFS
    assert booted["check"].rc == 0, booted["check"].stderr
    assert f"VF {VFS[0]}: opened through VFIO ({token_open_path()} path) with the stored " \
        "VF token" in booted["check"].stdout
    with api.open("linux") as host:
        persisted = load_token(require_etc(host.host, "read"), api.parse_address(PF))
        assert persisted is not None
        assert host.get_token(PF) == persisted
        with host.open_vf(VFS[1], token=persisted):
            pass


def test_the_changed_device_is_refused_and_reported(
        booted: dict[str, CliResult], kernel: GuestKernel) -> None:
    assert kernel.driver(CHANGED) == "e1000e"
    assert f"vfioctl: persist: {CHANGED}: not applied, the hardware changed" in dmesg()
    entries = {e["address"]: e for e in booted["list"].json()["entries"]}
    assert not entries[CHANGED]["check"]["matches"]
    assert f"persisted {CHANGED}: not applied, the hardware changed" in \
        booted["status"].stdout
    assert f"persisted {CHANGED}" in booted["doctor"].stdout


def test_apply_again_changes_nothing(booted: dict[str, CliResult]) -> None:
    doc = booted["apply"]
    assert doc.rc == 5                                   # the changed entry is refused
    import json
    results = {e["address"]: e["result"] for e in json.loads(doc.stdout)["entries"]}
    assert results == {GPU_LIKE: "unchanged", PF: "unchanged", CHANGED: "refused"}


def test_etc_survived(booted: dict[str, CliResult]) -> None:
    assert Path("/etc/udev/rules.d/70-vfioctl.rules").is_file()
