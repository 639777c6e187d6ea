"""libvirt users keep virsh: Debian's libvirtd (11.3) inside the test VM calls vfioctl's
installed hook, and ``virsh define``/``start``/``destroy`` tiny TCG guests (QEMU 10,
``<domain type='qemu'>``, 64 MiB, no disk) whose hostdevs are the guest's real devices.

1. A shared group without vfioctl's opt-in (04:01.0 e1000, whose group holds virtio-rng
   04:02.0 behind the PCIe-to-PCI bridge): ``virsh start`` fails with the hook's line,
   and raw sysfs shows nothing changed.
2. The same with ``group='allow'`` in vfioctl's ``<metadata>``: both endpoints on vfio-pci
   (the bridge left alone), held for ``libvirt:NAME:UUID``; the guest's QEMU has the
   e1000 (``query-pci`` over ``virsh qemu-monitor-command``, the device's real ids);
   ``virsh destroy`` gives every device back to its boot driver.
3. A VF of the NVMe PF 01:00.0 driven from userspace (vfio-pci, one VF, a stored VF
   token): the domain names vfioctl's emulator wrapper, the VF's ``<hostdev>`` is
   libvirt's own (libvirt sets up /dev/vfio, cgroup, DAC labels and memory locking for
   it) and ``vf-token='stored'`` in the metadata; QEMU realizes it (``query-pci``), and
   the token is in none of ``virsh dumpxml``, any process's ``/proc/PID/cmdline`` or
   ``environ``, libvirt's logs, or the handoff directory once the guest runs.
4. The hook SIGKILLed in the middle of ``prepare`` (LinuxHost's fault injection, only
   for that call): the start fails, and libvirt's own ``release`` call — the next vfioctl
   command — rolls the half-done detach back from the journal.

libvirtd runs with the hook installed under /etc/libvirt/hooks (the tier's /etc and /var
are RAM overlays) and is stopped at the end; the hook and wrapper are uninstalled.

Starts from: the boot drivers, vfio-pci loaded. Leaves: the boot drivers, no VFs,
enable_sriov N, nothing held, no token stored, no libvirtd running.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from . import topology
from .checks import boot_state, driver_state, restore_boot_drivers
from .guest_kernel import PCI_DEVICES, GuestKernel
from .vfioctl_cli import VfioctlCli

QEMU = "/usr/bin/qemu-system-x86_64"
BR_E1000, BR_RNG, BRIDGE = topology.BRIDGE_E1000, topology.BRIDGE_RNG, topology.BRIDGE
PF = topology.NVME_PF
VF = "0000:01:00.1"
WATCHED = (BRIDGE, BR_E1000, BR_RNG, PF)
WORK = Path("/var/lib/vfioctl-test75")
HOOK = Path("/etc/libvirt/hooks/qemu.d/vfioctl")
NS = "urn:vfioctl:libvirt:1"
QEMU_CONF = Path("/etc/libvirt/qemu.conf")
QEMU_CONF_TEXT = QEMU_CONF.read_text() if QEMU_CONF.exists() else ""

pytestmark = pytest.mark.skipif(
    not (os.access(QEMU, os.X_OK) and shutil.which("libvirtd") and shutil.which("virsh")),
    reason="needs QEMU, libvirtd and virsh")

DOMAIN = """\
<domain type='qemu'>
  <name>{name}</name>
  <metadata>{metadata}</metadata>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <emulator>{emulator}</emulator>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
    <hostdev mode='subsystem' type='pci' managed='no'>
      <source>
        <address domain='0x0000' bus='0x{bus:02x}' slot='0x{slot:02x}' function='0x{fn:x}'/>
      </source>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/>
    </hostdev>
  </devices>
</domain>
"""


def _metadata(*lines: str) -> str:
    return f"<vfioctl:devices xmlns:vfioctl='{NS}'>{''.join(lines)}</vfioctl:devices>"


@dataclass
class Lv:
    cli: VfioctlCli
    wrapper: Path
    state_dir: Path

    def virsh(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["virsh", "-q", "-c", "qemu:///system", *args],
                              capture_output=True, text=True, timeout=timeout, check=False)

    def define(self, name: str, addr: str, metadata: str = "") -> str:
        bus, slot, fn = int(addr[5:7], 16), int(addr[8:10], 16), int(addr[11], 16)
        path = WORK / f"{name}.xml"
        path.write_text(DOMAIN.format(name=name, metadata=metadata, emulator=self.wrapper,
                                      bus=bus, slot=slot, fn=fn))
        done = self.virsh("define", str(path))
        assert done.returncode == 0, done.stderr
        return self.virsh("domuuid", name).stdout.strip()

    def held(self) -> dict[str, str | None]:
        """vfioctl's records: address -> owner (None: detached, held for nobody)."""
        doc = self.cli("status", "--json").json()
        return {d["address"]: d["owner"] for d in doc["devices"]}

    def query_pci(self, name: str) -> dict[str, dict[str, Any]]:
        done = self.virsh("qemu-monitor-command", name, "--pretty",
                          '{"execute":"query-pci"}')
        assert done.returncode == 0, done.stderr
        out: dict[str, dict[str, Any]] = {}
        for bus in json.loads(done.stdout)["return"]:
            for dev in bus["devices"]:
                if dev.get("qdev_id"):
                    out[dev["qdev_id"]] = dev
        return out


def _pid(path: str) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(Path(path).read_text().strip())
    return None


def _stop(pidfile: str) -> None:
    pid = _pid(pidfile)
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    for _ in range(200):
        if not Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.05)


@pytest.fixture(scope="module")
def lv(kernel: GuestKernel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lv]:
    state = tmp_path_factory.mktemp("state-75")
    WORK.mkdir(mode=0o755, parents=True, exist_ok=True)
    wrapper = WORK / "vfioctl-qemu"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VFIOCTL_STATE_DIR", str(state))
        cli = VfioctlCli("linux")
        # The tier's guest runs chrooted: libvirt's private /dev for QEMU comes up without
        # the /dev/vfio/N nodes there (measured: "Could not open '/dev/vfio/12'"), so QEMU
        # shares the guest's /dev here. On a real host libvirt's namespace is kept.
        QEMU_CONF.write_text(QEMU_CONF_TEXT + "\nnamespaces = [ ]\n")
        done = cli("libvirt", "install", "--wrapper", str(wrapper), "--qemu", QEMU)
        assert done.rc == 0, done.stderr
        for daemon in ("virtlogd", "libvirtd"):
            subprocess.run([daemon, "-d"], check=True, timeout=60)
        deadline = time.monotonic() + 120
        while not Path("/run/libvirt/libvirt-sock").exists():
            assert time.monotonic() < deadline, "libvirtd did not come up"
            time.sleep(0.2)
        env = Lv(cli, wrapper, state)
        try:
            yield env
        finally:
            for name in ("vm75a", "vm75b", "vm75c"):
                env.virsh("destroy", name)
                env.virsh("undefine", name)
            _stop("/run/libvirtd.pid")
            _stop("/run/virtlogd.pid")
            cli("libvirt", "uninstall", "--wrapper", str(wrapper))
            QEMU_CONF.write_text(QEMU_CONF_TEXT)
            _pf_back(cli, kernel)
            restore_boot_drivers(kernel, WATCHED)


def _pf_back(cli: VfioctlCli, kernel: GuestKernel) -> None:
    cli("token", "forget", PF)
    if kernel.exists(PF) and kernel.read(PCI_DEVICES / PF / "sriov_numvfs") != "0":
        cli("sriov", PF, "--numvfs", "0", "--yes")
    if kernel.driver(PF) == "vfio-pci":
        cli("reattach", PF)
    if kernel.vfio_pci_param("enable_sriov") != "N":
        kernel.set_vfio_pci_param("enable_sriov", "N")


def test_a_shared_group_without_the_opt_in_fails_with_the_hooks_line(
        lv: Lv, kernel: GuestKernel) -> None:
    lv.define("vm75a", BR_E1000)
    done = lv.virsh("start", "vm75a")
    assert done.returncode != 0
    assert (f"vfioctl: error: cannot detach {BR_E1000} alone: IOMMU group") in done.stderr
    assert "group='allow'" in done.stderr
    assert driver_state(kernel, *WATCHED) == boot_state(*WATCHED)
    assert lv.held() == {}


def test_a_shared_group_with_the_opt_in_runs_and_comes_back(
        lv: Lv, kernel: GuestKernel) -> None:
    uuid = lv.define("vm75b", BR_E1000, _metadata(
        f"<vfioctl:hostdev address='{BR_E1000}' group='allow'/>"))
    done = lv.virsh("start", "vm75b")
    assert done.returncode == 0, done.stderr
    try:
        owner = f"libvirt:vm75b:{uuid}"
        assert kernel.driver(BR_E1000) == kernel.driver(BR_RNG) == "vfio-pci"
        assert kernel.driver(BRIDGE) is None            # left alone, as at boot
        assert lv.held() == {BR_E1000: owner, BR_RNG: owner}
        dev = lv.query_pci("vm75b")["hostdev0"]
        assert (dev["id"]["vendor"], dev["id"]["device"]) == (0x8086, 0x100E)
        assert dev["slot"] == 5
    finally:
        done = lv.virsh("destroy", "vm75b")
    assert done.returncode == 0, done.stderr
    assert driver_state(kernel, *WATCHED) == boot_state(*WATCHED)
    assert lv.held() == {}


def _needle_everywhere(token: str) -> list[str]:
    """Where the token is found: process command lines and environments, libvirt's
    logs and the handoff directory."""
    found = []
    needle = token.encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        for part in ("cmdline", "environ"):
            with contextlib.suppress(OSError):
                if needle in Path(f"/proc/{pid}/{part}").read_bytes():
                    found.append(f"/proc/{pid}/{part}")
    for root in (Path("/var/log/libvirt"), Path("/run/vfioctl-libvirt"),
                 Path("/etc/libvirt"), Path("/run/libvirt")):
        for path in root.rglob("*") if root.exists() else ():
            with contextlib.suppress(OSError):
                if path.is_file() and needle in path.read_bytes():
                    found.append(str(path))
    return found


def test_a_vf_of_a_userspace_pf_gets_the_stored_token_and_nobody_sees_it(
        lv: Lv, kernel: GuestKernel) -> None:
    import vfioctl

    assert lv.cli("detach", PF).rc == 0
    kernel.write(PCI_DEVICES / PF / "reset_method", "\n")   # docs/kernel.md "The test guest"
    done = lv.cli("sriov", PF, "--numvfs", "1", "--yes")
    assert done.rc == 0, done.stderr
    kernel.wait_for("the VF on vfio-pci",
                    lambda: kernel.exists(VF) and kernel.driver(VF) == "vfio-pci")
    assert lv.cli("token", "set", PF).rc == 0
    with vfioctl.open("linux") as host:
        token = host.get_token(PF).reveal()
    uuid = lv.define("vm75c", VF, _metadata(
        f"<vfioctl:hostdev address='{VF}' vf-token='stored'/>"))
    done = lv.virsh("start", "vm75c")
    log = Path("/var/log/libvirt/qemu/vm75c.log")
    assert done.returncode == 0, done.stderr + (log.read_text() if log.exists() else "")
    try:
        # the PF was detached by hand (held for nobody); the VF is the domain's
        assert lv.held() == {PF: None, VF: f"libvirt:vm75c:{uuid}"}
        dev = lv.query_pci("vm75c")["hostdev0"]
        assert (dev["id"]["vendor"], dev["id"]["device"]) == (0x1B36, 0x0010)
        xml = lv.virsh("dumpxml", "vm75c").stdout + \
            lv.virsh("dumpxml", "--inactive", "vm75c").stdout
        assert token not in xml
        assert _needle_everywhere(token) == []
        assert not any(Path("/run/vfioctl-libvirt").glob("*.json"))
        qemu_pid = int(Path("/run/libvirt/qemu/vm75c.pid").read_text())
        assert os.readlink(f"/proc/{qemu_pid}/exe") == os.path.realpath(QEMU)
        assert "-readconfig" in Path(f"/proc/{qemu_pid}/cmdline").read_text()
    finally:
        done = lv.virsh("destroy", "vm75c")
    assert done.returncode == 0, done.stderr
    assert _needle_everywhere(token) == []
    assert lv.held() == {PF: None}
    assert kernel.driver(VF) == "vfio-pci"      # it was on vfio-pci before the start
    _pf_back(lv.cli, kernel)
    assert driver_state(kernel, *WATCHED) == boot_state(*WATCHED)


def test_a_hook_killed_mid_prepare_is_rolled_back_by_the_next_call(
        lv: Lv, kernel: GuestKernel) -> None:
    original = HOOK.read_text()
    crashing = original.replace(
        "#!/bin/sh\n", "#!/bin/sh\n[ \"$2\" = prepare ] && { VFIOCTL_TEST_CRASH_AT_WRITE=3; "
        "export VFIOCTL_TEST_CRASH_AT_WRITE; }\n", 1)
    assert crashing != original
    HOOK.write_text(crashing)
    try:
        done = lv.virsh("start", "vm75b")
    finally:
        HOOK.write_text(original)
    assert done.returncode != 0
    assert "Hook script execution failed" in done.stderr, done.stderr
    # libvirt called release (the next vfioctl command): it rolled the detach back
    assert driver_state(kernel, *WATCHED) == boot_state(*WATCHED)
    assert lv.held() == {}
    status = lv.cli("status")
    assert status.rc == 0 and "recovered" not in status.stderr   # nothing left to do
    done = lv.virsh("start", "vm75b")
    assert done.returncode == 0, done.stderr
    assert kernel.driver(BR_E1000) == "vfio-pci"
    assert lv.virsh("destroy", "vm75b").returncode == 0
    assert driver_state(kernel, *WATCHED) == boot_state(*WATCHED)
