"""Persistence on the real kernel, boot 1 of 2: persist, install the boot hooks.

The story of docs/persistence.md, typed as a user would (the in-process CLI,
``--host linux``):

- ``detach --group --persist`` of the GPU-like group: the e1000e 02:00.0 alone behind
  its root port (its driver is a module, as a GPU's is);
- the NVMe PF 01:00.0: ``detach --persist``, ``token set`` (before any VF exists, so the
  PF is opened — and reset — while it has none: docs/kernel.md "The test guest"),
  ``sriov --numvfs 2 --yes``, then ``persist sriov --numvfs 2 --token``;
- a third entry, the e1000e 08:00.0 behind the switch, persisted and then "changed":
  its persisted ids are edited by hand (as if another card had been there), then
  ``persist install-boot`` (twice: the second run changes nothing) rewrites the helper's
  table from the edited file;
- ``persist list --json`` sees the edited entry as changed, the others as matching.

Boot 2 (test_81_persist_boot2.py) finds the two good entries applied by udev before
the host drivers could bind, and the edited one refused.

Starts from: the boot drivers. Leaves: the boot drivers, no VFs, enable_sriov N (the
machine as found) — and /etc/vfioctl, /etc/udev/rules.d/70-vfioctl.rules and the
initramfs hook in place for boot 2 (the tier keeps /etc across the reboot).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from .checks import restore_boot_drivers
from .guest_kernel import GuestKernel
from .vfioctl_cli import CliResult, VfioctlCli

IN_VM = os.environ.get("VFIOCTL_IN_TEST_VM") == "1"
GPU_LIKE = "0000:02:00.0"
PF = "0000:01:00.0"
VFS = ("0000:01:00.1", "0000:01:00.2")
CHANGED = "0000:08:00.0"
ETC = Path("/etc")
CONFIG = ETC / "vfioctl" / "persist.toml"
RULE = ETC / "udev" / "rules.d" / "70-vfioctl.rules"
HELPER = ETC / "vfioctl" / "udev-helper"
HOOK = ETC / "initramfs-tools" / "hooks" / "vfioctl"
TOKEN_FILE = ETC / "vfioctl" / "vf-tokens" / PF
# the e1000e's id in the guest (QEMU's e1000e is an 82574L); 10d4 is no device of it
REAL_ID, EDITED_ID = "8086:10d3", "8086:10d4"

pytestmark = pytest.mark.skipif(not IN_VM, reason="real kernel: runs in the test VM")


def ok(result: CliResult) -> CliResult:
    assert result.rc == 0, f"vfioctl exited {result.rc}: {result.stderr.strip()}"
    return result


@pytest.fixture(scope="module")
def persisted(kernel: GuestKernel, vfioctl: VfioctlCli) -> Iterator[dict[str, CliResult]]:
    done: dict[str, CliResult] = {}
    try:
        done["group"] = ok(vfioctl("detach", "--group", "--persist", GPU_LIKE))
        done["pf"] = ok(vfioctl("detach", "--persist", PF))
        done["token"] = ok(vfioctl("token", "set", PF))
        done["sriov"] = ok(vfioctl("sriov", PF, "--numvfs", "2", "--yes"))
        kernel.wait_for("VFs on vfio-pci", lambda: all(
            kernel.exists(v) and kernel.driver(v) == "vfio-pci" for v in VFS))
        done["check"] = vfioctl("token", "check", VFS[0])
        done["persist sriov"] = ok(vfioctl("persist", "sriov", PF, "--numvfs", "2",
                                           "--token"))
        done["changed"] = ok(vfioctl("detach", "--persist", CHANGED))
        text = CONFIG.read_text()
        block = text[text.index(f'address = "{CHANGED}"'):]
        edited = block.replace(f'"{REAL_ID}"', f'"{EDITED_ID}"', 2)
        CONFIG.write_text(text.replace(block, edited))
        done["install"] = ok(vfioctl("persist", "install-boot"))
        done["install again"] = ok(vfioctl("persist", "install-boot"))
        done["list"] = ok(vfioctl("persist", "list", "--json"))
        yield done
    finally:
        # the machine as found; /etc stays for boot 2
        vfioctl("sriov", PF, "--numvfs", "0", "--yes")
        vfioctl("reattach", PF, GPU_LIKE, CHANGED)
        vfioctl("reattach", GPU_LIKE)          # bound by the helper: not held, reprobed
        restore_boot_drivers(kernel, (PF, GPU_LIKE, CHANGED))
        # the simulated twin saw the raw unbinds of the helper scenario (mirrored) but
        # not the CLI's reattach on the kernel: give it its boot drivers too, so test_90
        # compares like with like
        if kernel.twin is not None:
            restore_boot_drivers(kernel.twin, (PF, GPU_LIKE, CHANGED))
        if kernel.vfio_pci_param("enable_sriov") != "N":
            kernel.set_vfio_pci_param("enable_sriov", "N")


def test_entries_are_written(persisted: dict[str, CliResult]) -> None:
    assert f"{GPU_LIKE}: persisted (vfio-pci" in persisted["group"].stdout
    assert f"{PF}: persisted (vfio-pci" in persisted["pf"].stdout
    assert persisted["check"].rc == 0, persisted["check"].stderr
    assert f"{PF}: at boot: 2 VFs, the persisted VF token" in \
        persisted["persist sriov"].stdout
    text = CONFIG.read_text()
    for addr in (GPU_LIKE, PF, CHANGED):
        assert f'address = "{addr}"' in text
    assert "numvfs = 2" in text and "token = true" in text


def test_persisted_token_is_private(persisted: dict[str, CliResult]) -> None:
    st = TOKEN_FILE.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    assert stat.S_IMODE(TOKEN_FILE.parent.stat().st_mode) == 0o700
    # never printed: no command output holds the token file's UUID
    secret = TOKEN_FILE.read_text()
    for result in persisted.values():
        assert secret.strip() not in result.stdout + result.stderr


def test_boot_hooks_installed_idempotently(persisted: dict[str, CliResult]) -> None:
    assert "written" in persisted["install"].stdout
    assert "written" not in persisted["install again"].stdout
    assert persisted["install again"].stdout.count("unchanged") >= 4
    rule = RULE.read_text()
    assert f'TEST=="{HELPER}"' in rule and f'PROGRAM="{HELPER} %k"' in rule
    assert os.access(HELPER, os.X_OK) and os.access(HOOK, os.X_OK)
    table = (ETC / "vfioctl" / "boot-overrides").read_text()
    assert f"{CHANGED} 8086 10d4 " in table           # the edited ids, as boot will see


def test_list_sees_the_edited_entry_as_changed(persisted: dict[str, CliResult]) -> None:
    doc = persisted["list"].json()
    checks = {e["address"]: e["check"] for e in doc["entries"]}
    assert checks[GPU_LIKE]["matches"] and checks[PF]["matches"]
    assert not checks[CHANGED]["matches"]
    assert f"the device is now {REAL_ID} (persisted {EDITED_ID})" in \
        checks[CHANGED]["problems"]
    assert doc["boot"] == {"udev_rule": True, "initramfs_hook": True}


def test_the_udev_helper_on_the_real_kernel(persisted: dict[str, CliResult],
                                            kernel: GuestKernel,
                                            vfioctl: VfioctlCli) -> None:
    """What udev runs at boot, run by hand on devices made unbound as at boot: another
    device's event sets the override of the persisted one (ids match) and of no other;
    the persisted device's own event binds it to vfio-pci; the changed entry is refused
    and said so in the kernel log. (Boot 2 has udev run it; this needs no reboot.)"""
    import subprocess

    ok(vfioctl("reattach", GPU_LIKE, CHANGED))
    for addr in (GPU_LIKE, CHANGED):
        kernel.unbind(addr)
        assert kernel.driver(addr) is None and kernel.function(addr).driver_override is None
    with kernel.dmesg_since() as log:
        other = subprocess.run(["sh", str(HELPER), "0000:00:10.0"], capture_output=True,
                               text=True, timeout=120)
        assert (other.returncode, other.stdout, other.stderr) == (0, "", "")
        assert kernel.function(GPU_LIKE).driver_override == "vfio-pci"
        assert kernel.function(CHANGED).driver_override is None     # its ids differ
        assert kernel.driver(GPU_LIKE) is None                      # nothing bound yet
        for addr in (GPU_LIKE, CHANGED):
            own = subprocess.run(["sh", str(HELPER), addr], capture_output=True,
                                 text=True, timeout=300)
            assert own.returncode == 0
    assert kernel.driver(GPU_LIKE) == "vfio-pci"
    assert kernel.driver(CHANGED) is None                           # left alone
    text = "\n".join(log)
    assert f"vfioctl: persist: {GPU_LIKE}: bound to vfio-pci before any host driver" in text
    assert (f"vfioctl: persist: {CHANGED}: not applied, the hardware changed: the device "
            f"is now {REAL_ID} (persisted {EDITED_ID})") in text
    assert not re.search(rf"e1000e {GPU_LIKE}", text)
