"""``vfioctl start`` with a real vfio-pci device: a nested QEMU inside the test VM.

The guest sees the host's ``/`` read-only, so Debian's QEMU 7.2
(``/usr/bin/qemu-system-x86_64``) runs inside it, under TCG (no nested KVM). The domain
is tiny (q35, 64 MiB, one vCPU, ``<domain type='qemu'>``) and its one ``managed='yes'``
hostdev is the guest's real e1000e at 02:00.0 (alone in its IOMMU group), at an explicit
guest address. Everything goes through the product's CLI (in-process, see
vfioctl_cli.py) and is judged from raw sysfs, ``/dev/vfio``, ``/proc/PID`` and QEMU's
own QMP answers:

1. ``start --dry-run`` changes nothing: same drivers and overrides, nothing held, no
   runtime directory, no QEMU.
2. ``start``: e1000e -> vfio-pci held for the domain's name; QEMU starts paused with
   QMP, realizes a real ``vfio-pci`` device on 02:00.0 (container, group and device
   through the guest's vfio driver and the emulated Intel IOMMU: the group node is
   busy, QEMU holds ``/dev/vfio/vfio``, the group and a vfio device fd), and ``cont``
   succeeds. ``query-pci`` shows the device at the XML's address with the real ids
   (8086:10d3), class and BAR sizes read through VFIO from the device.
3. ``release`` is refused while QEMU runs; ``release --stop`` ends it and gives the
   device back to e1000e (no ``driver_override``, nothing held, group node gone).
4. ``group='allow'`` on 04:01.0 (conventional-PCI e1000 behind the PCIe-to-PCI bridge,
   its group shared with virtio-rng 04:02.0): both endpoints to vfio-pci, the bridge
   left alone, vfio-pci realized on the e1000 (8086:100e) while its group-mate only
   sits on vfio-pci; ``release --stop`` gives back e1000 and virtio-pci.
5. Failures on the real kernel: 04:01.0 (group shared with virtio-rng 04:02.0, no
   ``group='allow'``) is refused before any change and no QEMU is run; QEMU exiting
   after it realized vfio-pci on 02:00.0 (an extra ``-device`` after ``--`` taking the
   same guest slot) rolls 02:00.0 back to e1000e.

What this tier cannot cover: QEMU 7.2 has no ``vf-token`` property (it exists from 8.1),
so the token-bearing path, where the device is hot-added with QMP ``device_add``, is not
exercised with a real vfio-pci device here. That path (QMP hot-add, function 0 last, the
token only inside the QMP message) is covered on the host with stand-in devices in
tests/launch/test_real_qemu.py; here every device is on the command line.

The simulated twin is not driven: ``start`` runs QEMU, which the simulator cannot. The
scenario returns every device to its boot driver, so test_90's end checkpoint still
compares like with like.

Starts from: the boot drivers (vfio-pci loaded). Leaves: the boot drivers, no
driver_override, nothing held, no QEMU running.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from . import topology
from .checks import boot_state, driver_state, restore_boot_drivers
from .guest_kernel import DEV_VFIO, PCI_DEVICES, GuestKernel
from .vfioctl_cli import CliResult, VfioctlCli

QEMU = "/usr/bin/qemu-system-x86_64"
NAME = "vm70"
NAME_B = "vm70b"  # the domain of 04:01.0, whose group is not viable alone
E1000E = topology.PLAIN_E1000E
BR_E1000, BR_RNG, BRIDGE = topology.BRIDGE_E1000, topology.BRIDGE_RNG, topology.BRIDGE
BOOT = topology.BOOT_DRIVER
WATCHED = (E1000E, BRIDGE, BR_E1000, BR_RNG)
GUEST_SLOT = 5  # the hostdev's guest address: 0000:00:05.0 on pcie.0

DOMAIN = """\
<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <emulator>{qemu}</emulator>
    <hostdev mode='subsystem' type='pci' managed='yes'>
      <driver name='vfio'/>
      <source>
        <address domain='0x0000' bus='0x{bus:02x}' slot='0x{slot:02x}' function='0x0'/>
      </source>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x{guest_slot:02x}' function='0x0'/>
    </hostdev>
  </devices>
</domain>
"""

pytestmark = pytest.mark.skipif(not os.access(QEMU, os.X_OK),
                                reason=f"no {QEMU} on the host (apt install qemu-system-x86)")


@dataclass(frozen=True)
class Env:
    """This module's vfioctl: its own state directory, the domain files."""

    state_dir: Path
    domain: Path       # 02:00.0 at guest 00:05.0
    not_viable: Path   # 04:01.0 at guest 00:05.0, no group='allow'
    group_allow: Path  # the same with group='allow'
    cli: VfioctlCli

    @property
    def runtime_dir(self) -> Path:
        return self.state_dir / "qemu" / NAME

    def __call__(self, *args: str) -> CliResult:
        return self.cli(*args)


def _domain(path: Path, name: str, addr: str, *, group_allow: bool = False) -> Path:
    bus, slot = int(addr[5:7], 16), int(addr[8:10], 16)
    text = DOMAIN.format(name=name, qemu=QEMU, bus=bus, slot=slot, guest_slot=GUEST_SLOT)
    if group_allow:
        text = text.replace("<driver name='vfio'/>", "<driver name='vfio' group='allow'/>")
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def env(kernel: GuestKernel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    state = tmp_path_factory.mktemp("state-70")
    files = tmp_path_factory.mktemp("domains-70")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VFIOCTL_STATE_DIR", str(state))
        # The caps probe result is cached per binary; keep it in this module's tmp dir.
        mp.setenv("VFIOCTL_CACHE_DIR", str(files / "cache"))
        e = Env(state, _domain(files / "vm70.xml", NAME, E1000E),
                _domain(files / "vm70b.xml", NAME_B, BR_E1000),
                _domain(files / "vm70b-group.xml", NAME_B, BR_E1000, group_allow=True),
                VfioctlCli("linux"))
        yield e
        _back_to_boot(e, kernel)


def _back_to_boot(env: Env, kernel: GuestKernel) -> None:
    """After a failed scenario: stop the QEMUs and give back what is held (release
    --stop), then the raw recipe for anything still off its boot driver."""
    for name in (NAME, NAME_B):
        env("release", name, "--stop")
    restore_boot_drivers(kernel, WATCHED)


# -- reading the kernel and QEMU ---------------------------------------------------------------
state = driver_state
at_boot = boot_state


def held(env: Env) -> dict[str, dict[str, Any]]:
    doc = env("status", "--json").json()
    assert doc["host"] == "linux"
    return {d["address"]: d for d in doc["devices"]}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _fds(pid: int) -> list[str]:
    """Where QEMU's open file descriptors point (``/proc/PID/fd``)."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    return out


def qmp(socket: Path, *commands: str) -> list[Any]:
    """Run QMP commands (no arguments) on QEMU's socket; their return values in order."""
    from qemu.qmp import QMPClient

    async def run() -> list[Any]:
        client = QMPClient("test_70")
        await asyncio.wait_for(client.connect(str(socket)), 30)
        try:
            return [await asyncio.wait_for(client.execute(c), 30) for c in commands]
        finally:
            await client.disconnect()

    return asyncio.run(run())


def pci_by_id(query_pci: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """qdev id -> the device's query-pci entry (bridges' buses included)."""
    out: dict[str, dict[str, Any]] = {}

    def walk(devices: list[dict[str, Any]]) -> None:
        for dev in devices:
            if dev.get("qdev_id"):
                out[dev["qdev_id"]] = dev
            walk((dev.get("pci_bridge") or {}).get("devices") or [])

    for bus in query_pci:
        walk(bus["devices"])
    return out


def bar_sizes(addr: str) -> dict[int, int]:
    """BAR index -> size (6: the expansion ROM), from the function's ``resource`` file."""
    sizes = {}
    lines = (Path("/") / PCI_DEVICES / addr / "resource").read_text().splitlines()
    for index, line in enumerate(lines[:7]):
        start, end, _flags = (int(x, 16) for x in line.split())
        if end:
            sizes[index] = end - start + 1
    return sizes


def log_of(env: Env, name: str = NAME) -> str:
    try:
        return (env.state_dir / "qemu" / name / "qemu.log").read_text(errors="replace")
    except OSError as err:
        return f"(no QEMU log: {err.strerror})"


def error_line(result: CliResult, rc: int) -> str:
    assert result.rc == rc, (result.rc, result.stdout, result.stderr)
    assert result.stdout == ""
    out = result.stderr.splitlines()
    assert len(out) == 1, out
    return out[0]


# -- the scenarios -------------------------------------------------------------------------
def test_dry_run_changes_nothing(env: Env, kernel: GuestKernel) -> None:
    assert state(kernel, *WATCHED) == at_boot(*WATCHED)
    result = env("start", str(env.domain), "--qemu", QEMU, "--dry-run")
    assert result.rc == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"domain {NAME}: devices held for owner '{NAME}' on host linux"
    assert f"  {E1000E}: e1000e -> vfio-pci (held for '{NAME}')" in lines
    assert lines[lines.index("  -device") + 1] == (
        f'  {{"driver":"vfio-pci","host":"{E1000E}","id":"hostdev0","bus":"pcie.0",'
        f'"addr":"0x{GUEST_SLOT:x}"}}')
    assert "  -S" in lines and "  tcg" in lines and "  65536k" in lines
    assert lines[lines.index(f"QMP on {env.runtime_dir / 'qmp.sock'}:") + 1] == (
        '  {"execute":"cont"}')
    # Nothing changed: drivers, overrides, records, no runtime directory, no QEMU.
    assert state(kernel, *WATCHED) == at_boot(*WATCHED)
    assert held(env) == {}
    assert not (env.state_dir / "qemu").exists()
    doc = env("start", str(env.domain), "--qemu", QEMU, "--dry-run", "--json").json()
    assert doc["dry_run"] is True and doc["prepare"] == [
        {"devices": [E1000E], "group": False, "managed": True}]
    assert state(kernel, *WATCHED) == at_boot(*WATCHED)
    assert not (env.state_dir / "qemu").exists()


def started(env: Env, xml: Path, name: str) -> tuple[dict[str, Any], int]:
    """``vfioctl start XML --json``: its document and QEMU's pid (alive)."""
    result = env("start", str(xml), "--qemu", QEMU, "--json")
    assert result.rc == 0, f"{result.stderr}\nQEMU log:\n{log_of(env, name)}"
    doc = json.loads(result.stdout)
    assert doc["qmp_socket"] == str(env.state_dir / "qemu" / name / "qmp.sock")
    assert _alive(doc["pid"]), log_of(env, name)
    return doc, doc["pid"]


def realized(kernel: GuestKernel, doc: dict[str, Any], addr: str,
             ids: tuple[int, int]) -> None:
    """QEMU has realized a real vfio-pci device on ``addr``, and the guest runs.

    The kernel side: QEMU holds the container, the group and a device fd, so a second
    open of the group is refused (EBUSY). QEMU's side (QMP): running (``cont``
    succeeded), ``hostdev0`` at the XML's guest address with the ids, class and BAR
    sizes (ROM included) that it read from the device through VFIO.
    """
    pid, group = doc["pid"], kernel.group_of(addr)
    fds = _fds(pid)
    assert "/dev/vfio/vfio" in fds, fds
    assert f"/dev/vfio/{group}" in fds, fds
    assert "anon_inode:[vfio-device]" in fds, fds
    with pytest.raises(OSError) as busy:
        os.close(os.open(f"/{DEV_VFIO}/{group}", os.O_RDWR))
    assert busy.value.errno == errno.EBUSY
    socket = Path(doc["qmp_socket"])
    status, pci = qmp(socket, "query-status", "query-pci")
    # The guest would now run SeaBIOS under nested TCG: freeze it, it costs guest time.
    qmp(socket, "stop")
    assert status["status"] == "running", status
    found = pci_by_id(pci)
    assert set(found) == {"hostdev0"}, sorted(found)
    hd = found["hostdev0"]
    assert (hd["bus"], hd["slot"], hd["function"]) == (0, GUEST_SLOT, 0)
    assert (hd["id"]["vendor"], hd["id"]["device"]) == ids
    assert hd["class_info"]["class"] == 0x0200
    assert {r["bar"]: r["size"] for r in hd["regions"]} == bar_sizes(addr), hd["regions"]


def test_start_realizes_a_real_vfio_pci_device(env: Env, kernel: GuestKernel) -> None:
    group = kernel.group_of(E1000E)
    doc, pid = started(env, env.domain, NAME)
    assert doc["actions"] == [{"address": E1000E, "kind": "detached", "before": "e1000e",
                               "after": "vfio-pci"}]
    # The kernel: the device on vfio-pci, held for the domain.
    assert state(kernel, E1000E) == {E1000E: ("vfio-pci", "vfio-pci")}
    dev = held(env)[E1000E]
    assert {k: dev[k] for k in ("owner", "driver", "original_driver", "iommu_group")} == {
        "owner": NAME, "driver": "vfio-pci", "original_driver": "e1000e",
        "iommu_group": group}
    realized(kernel, doc, E1000E, (0x8086, 0x10D3))
    # release without --stop is refused while QEMU runs, and changes nothing.
    line = error_line(env("release", NAME), 5)
    assert line.startswith(f"vfioctl: error: QEMU (pid {pid}) of domain {NAME} is still "
                           "running: its devices cannot be given back; "), line
    assert _alive(pid)
    assert state(kernel, E1000E) == {E1000E: ("vfio-pci", "vfio-pci")}


def test_release_stop_gives_the_device_back(env: Env, kernel: GuestKernel) -> None:
    record = json.loads((env.runtime_dir / "launch.json").read_text())
    pid, group = record["pid"], kernel.group_of(E1000E)
    assert _alive(pid)
    result = env("release", NAME, "--stop")
    assert result.rc == 0, result.stderr
    assert result.stdout.splitlines() == [f"stopped QEMU pid {pid} of domain {NAME}",
                                          f"{E1000E}: vfio-pci -> e1000e"]
    assert not _alive(pid)
    assert state(kernel, E1000E) == at_boot(E1000E)
    assert group not in kernel.vfio_group_nodes()
    assert held(env) == {}
    assert not (env.runtime_dir / "launch.json").exists()


def test_group_not_viable_is_refused_before_any_change(env: Env,
                                                       kernel: GuestKernel) -> None:
    result = env("start", str(env.not_viable), "--qemu", QEMU)
    line = error_line(result, 5)
    group = kernel.group_of(BR_E1000)
    # The manager's own refusal, word for word as 'vfioctl detach' gives it (test_40).
    assert line.startswith(f"vfioctl: error: cannot detach {BR_E1000} alone: IOMMU group "
                           f"{group} also holds {BR_RNG} (virtio-pci); "), line
    assert state(kernel, *WATCHED) == at_boot(*WATCHED)
    assert held(env) == {}
    assert not (env.state_dir / "qemu" / NAME_B).exists()  # no QEMU was run


def test_group_allow_takes_the_whole_group(env: Env, kernel: GuestKernel) -> None:
    members = (BRIDGE, BR_E1000, BR_RNG)
    doc, pid = started(env, env.group_allow, NAME_B)
    assert doc["actions"] == [
        {"address": BRIDGE, "kind": "left-alone", "before": None, "after": None},
        {"address": BR_E1000, "kind": "detached", "before": "e1000", "after": "vfio-pci"},
        {"address": BR_RNG, "kind": "detached", "before": "virtio-pci", "after": "vfio-pci"},
    ]
    assert state(kernel, *members) == {BRIDGE: (None, None), BR_E1000: ("vfio-pci", "vfio-pci"),
                                       BR_RNG: ("vfio-pci", "vfio-pci")}
    assert {a: d["owner"] for a, d in held(env).items()} == {BR_E1000: NAME_B, BR_RNG: NAME_B}
    # The conventional-PCI e1000 behind the PCIe-to-PCI bridge, its group shared with the
    # virtio-rng that only sits on vfio-pci: realized all the same.
    realized(kernel, doc, BR_E1000, (0x8086, 0x100E))
    result = env("release", NAME_B, "--stop")
    assert result.rc == 0, result.stderr
    assert result.stdout.splitlines() == [f"stopped QEMU pid {pid} of domain {NAME_B}",
                                          f"{BR_E1000}: vfio-pci -> e1000",
                                          f"{BR_RNG}: vfio-pci -> virtio-pci"]
    assert not _alive(pid)
    assert state(kernel, *members) == at_boot(*members)
    assert held(env) == {}


def test_qemu_failing_rolls_the_device_back(env: Env, kernel: GuestKernel) -> None:
    # A second device at the hostdev's guest address, in JSON form: QEMU 7.2 creates
    # JSON -device options in order after all key=value ones, so this one comes right
    # after vfio-pci, and its error names the realized vfio-pci device. QEMU exits 1
    # having opened the real group; start must wait for it and give 02:00.0 back.
    clash = json.dumps({"driver": "pci-testdev", "bus": "pcie.0", "addr": f"0x{GUEST_SLOT:x}"},
                       separators=(",", ":"))
    result = env("start", str(env.domain), "--qemu", QEMU, "--", "-device", clash)
    line = error_line(result, 1)
    assert line.startswith("vfioctl: error: QEMU (pid "), line
    assert "exited with status 1 before its QMP socket accepted a connection" in line
    assert (f"; QEMU said: qemu-system-x86_64: -device {clash}: PCI: slot {GUEST_SLOT} "
            "function 0 not available for pci-testdev, in use by vfio-pci,id=hostdev0; "
            "the devices were given back") in line, line
    assert state(kernel, E1000E) == at_boot(E1000E)
    assert kernel.group_of(E1000E) not in kernel.vfio_group_nodes()
    assert held(env) == {}
    assert not (env.runtime_dir / "launch.json").exists()


def test_everything_is_back_at_boot(env: Env, kernel: GuestKernel) -> None:
    assert state(kernel, *WATCHED) == at_boot(*WATCHED)
    assert held(env) == {}
