"""The chain the VF token exists for, for real: a VF of a userspace-driven PF handed to a
guest's QEMU with its token — a nested QEMU >= 8.1 in the test VM realizes ``vfio-pci``
with ``vf-token`` on the real kernel, the token travelling only inside QMP.

The guest runs the host's userspace, so its QEMU is the system one: QEMU 10 from
bookworm-backports (tools/setup.sh). Debian 12's own QEMU 7.2, kept by tools/qemu72.sh,
stands for a QEMU without ``vf-token``. Everything goes through the product's CLI
(in-process, vfioctl_cli.py) and is judged from raw sysfs, ``/proc/PID`` and QEMU's own
QMP answers:

1. Setup as the README's walk-through: the NVMe PF 01:00.0 to vfio-pci, two VFs, ``token
   set`` (a random token, stored 0600 by vfioctl).
2. ``start`` of a domain whose hostdev is VF 01:00.1 with ``<vf-token/>`` (the stored
   token), behind a pcie-root-port (q35's pcie.0 cannot hot-add): QEMU starts paused
   with QMP and gets the VF by ``device_add`` carrying ``vf-token``; ``query-pci`` shows
   it behind the root port at the XML's guest address with the VF's ids
   (1b36:0010, read from sysfs: a VF's config space has no ids of its own) and QEMU holds
   the VF's group; the token is on no command line (QEMU's ``/proc/PID/cmdline``), in no
   environment (``/proc/PID/environ``) and in no file of the runtime directory (the QMP
   log is written with the token redacted). ``release --stop``: nothing held.
3. The kernel's token changed behind vfioctl's back (the PF opened and given another
   UUID with ``VFIO_DEVICE_FEATURE``, as any PF user may while no VF is open): vfioctl's
   copy is now wrong yet looks current, so ``start`` hands it to QEMU, whose
   ``device_add`` the kernel refuses (EACCES in vfio_pci_validate_vf_token()). That is one
   clear error line (exit 1), QEMU is stopped and the VF given back — nothing held, no
   QEMU left.
4. QEMU 7.2 (no ``vf-token``): ``start`` is refused before anything changes (exit 3),
   no QEMU is run.
5. The iommufd backend, on a kernel with ``/dev/iommu`` and the vfio cdev (the tier's
   7.3): QEMU 10 with ``-object iommufd`` and the VF, with the right token, none and a
   wrong one: all three are refused by the kernel (QEMU's bind carries no token), QEMU
   holds nothing; asserted and written to ``facts/qemu-iommufd-vf-token.json``
   (docs/kernel.md "The cdev path and iommufd").
   vfioctl itself always hands devices to QEMU by ``host=`` (the group path), which
   carries the token on every kernel — checked in 2 by QEMU holding ``/dev/vfio/N`` and
   not ``/dev/iommu``.

Starts from: the boot drivers. Leaves: the PF back on nvme, no VFs, enable_sriov N,
nothing held, no token stored, no QEMU running. The simulated twin is not driven
(start runs QEMU, which the simulator cannot); the scenario returns every device to its
boot driver, so test_90's end checkpoint still compares like with like.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from . import topology
from .checks import QEMU72
from .guest_kernel import PCI_DEVICES, GuestKernel
from .test_70_start import _alive, _fds, pci_by_id
from .vfioctl_cli import CliResult, VfioctlCli

QEMU = "/usr/bin/qemu-system-x86_64"
PF = topology.NVME_PF
VF = "0000:01:00.1"
VF2 = "0000:01:00.2"
NAME = "vm72"
GUEST_SLOT = 6
OTHER = uuid.UUID("0badc0de-0000-4000-8000-000000000072")

DOMAIN = """\
<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <emulator>{qemu}</emulator>
    <controller type='pci' index='0' model='pcie-root'/>
    <controller type='pci' index='1' model='pcie-root-port'>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x{slot:02x}' function='0x0'/>
    </controller>
    <hostdev mode='subsystem' type='pci' managed='yes'>
      <driver name='vfio'/>
      <source>
        <address domain='0x0000' bus='0x01' slot='0x00' function='0x1'>
          <vf-token/>
        </address>
      </source>
      <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
    </hostdev>
  </devices>
</domain>
"""


def _qemu_version(binary: str | Path) -> tuple[int, int]:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    major, minor = out.split("version ", 1)[1].split(".")[:2]
    return int(major), int(minor)


pytestmark = pytest.mark.skipif(
    not os.access(QEMU, os.X_OK) or _qemu_version(QEMU) < (8, 1),
    reason=f"needs QEMU >= 8.1 at {QEMU} (tools/setup.sh --test installs QEMU 10 from "
    "bookworm-backports)")


@dataclass(frozen=True)
class Env:
    state_dir: Path
    domain: Path
    cli: VfioctlCli

    def __call__(self, *args: str) -> CliResult:
        return self.cli(*args)

    @property
    def runtime_dir(self) -> Path:
        return self.state_dir / "qemu" / NAME


@pytest.fixture(scope="module")
def env(kernel: GuestKernel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    state = tmp_path_factory.mktemp("state-72")
    files = tmp_path_factory.mktemp("domains-72")
    domain = files / "vm72.xml"
    domain.write_text(DOMAIN.format(name=NAME, qemu=QEMU, slot=GUEST_SLOT))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VFIOCTL_STATE_DIR", str(state))
        mp.setenv("VFIOCTL_CACHE_DIR", str(files / "cache"))
        e = Env(state, domain, VfioctlCli("linux"))
        r = e("detach", PF)
        assert r.rc == 0, r.stderr
        # docs/kernel.md "The test guest": no resets of QEMU's NVMe PF (its VFs go on FLR)
        kernel.write(PCI_DEVICES / PF / "reset_method", "\n")
        try:
            r = e("sriov", PF, "--numvfs", "2", "--yes")
            assert r.rc == 0, r.stderr
            kernel.wait_for("VFs on vfio-pci", lambda: all(
                kernel.exists(v) and kernel.driver(v) == "vfio-pci" for v in (VF, VF2)))
            r = e("token", "set", PF)
            assert r.rc == 0, r.stderr
            yield e
        finally:
            e("release", NAME, "--stop")
            e("token", "forget", PF)
            e("sriov", PF, "--numvfs", "0", "--yes")
            e("reattach", PF)
            if kernel.vfio_pci_param("enable_sriov") != "N":
                kernel.set_vfio_pci_param("enable_sriov", "N")


def _token(env: Env) -> str:
    r = env("token", "show", PF, "--reveal")
    assert r.rc == 0, r.stderr
    found = [w for w in r.stdout.split() if len(w) == 36 and w.count("-") == 4]
    assert found, r.stdout
    return found[0]


def _qmp(socket: Path, command: str, arguments: dict[str, Any] | None = None) -> Any:
    from qemu.qmp import QMPClient

    async def run() -> Any:
        client = QMPClient("test_72")
        await asyncio.wait_for(client.connect(str(socket)), 30)
        try:
            return await asyncio.wait_for(client.execute(command, arguments), 30)
        finally:
            await client.disconnect()

    return asyncio.run(run())


def _listed(socket: Path, qdev_id: str, timeout_s: float = 120.0) -> dict[str, Any]:
    """The device's query-pci entry. A device hot-added behind a root port is listed
    once the guest's firmware has numbered the port's bus (SeaBIOS, after ``cont``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = pci_by_id(_qmp(socket, "query-pci"))
        if qdev_id in found or time.monotonic() > deadline:
            assert qdev_id in found, f"{qdev_id} not in query-pci: {sorted(found)}"
            return found[qdev_id]
        time.sleep(1.0)


def _held(env: Env) -> dict[str, Any]:
    return {d["address"]: d for d in env("status", "--json").json()["devices"]
            if d.get("owner")}


def _group(kernel: GuestKernel, addr: str) -> str:
    return os.path.basename(os.readlink(f"/sys/bus/pci/devices/{addr}/iommu_group"))


def test_start_realizes_the_vf_with_its_token_over_qmp(env: Env, kernel: GuestKernel) -> None:
    token = _token(env)
    result = env("start", str(env.domain), "--json")
    assert result.rc == 0, result.stderr
    launch = result.json()
    pid = launch["pid"] if "pid" in launch else launch["launch"]["pid"]
    try:
        assert _alive(pid)
        sock = env.runtime_dir / "qmp.sock"
        path = "/machine/peripheral/hostdev0"
        assert _qmp(sock, "qom-get", {"path": path, "property": "realized"}) is True
        assert VF[5:] in str(_qmp(sock, "qom-get", {"path": path, "property": "host"}))
        info = _listed(sock, "hostdev0")
        assert info["slot"] == 0 and info["function"] == 0, info
        ids = info["id"]
        sysfs = Path("/sys/bus/pci/devices") / VF
        assert f"{ids['vendor']:04x}" == (sysfs / "vendor").read_text().strip()[2:]
        assert f"{ids['device']:04x}" == (sysfs / "device").read_text().strip()[2:]
        # the group path: QEMU holds the VF's group node, not /dev/iommu
        fds = _fds(pid)
        assert f"/dev/vfio/{_group(kernel, VF)}" in fds, fds
        assert "/dev/iommu" not in fds
        # the token: nowhere but inside the QMP message
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            assert token.encode() not in f.read()
        with open(f"/proc/{pid}/environ", "rb") as f:
            assert token.encode() not in f.read()
        for path in env.runtime_dir.rglob("*"):
            if path.is_file():
                assert token.encode() not in path.read_bytes(), path
        assert token not in result.stdout + result.stderr
        assert _held(env)[VF]["owner"] == NAME
    finally:
        stop = env("release", NAME, "--stop")
    assert stop.rc == 0, stop.stderr
    assert not _alive(pid)
    assert VF not in _held(env)
    assert kernel.driver(VF) == "vfio-pci"  # a VF of a vfio-pci PF stays captured


def test_a_token_the_kernel_refuses_is_one_error_and_a_rollback(
        env: Env, kernel: GuestKernel) -> None:
    from vfioctl.host.linux import LinuxHost
    from vfioctl.secret import VfToken
    from vfioctl.vfio.device import VfioSession

    before = _token(env)
    # another PF user sets another token (allowed: no VF is open)
    s = VfioSession(LinuxHost("/"))
    try:
        s.open_device(PF).set_vf_token(VfToken(OTHER))
    finally:
        s.close()
    try:
        result = env("start", str(env.domain))
        assert result.rc == 1, (result.rc, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith("vfioctl: error: "), lines
        assert VF in lines[0] and "QEMU" in lines[0], lines
        assert before not in result.stderr and str(OTHER) not in result.stderr
        # rolled back: nothing held, no QEMU of this domain left
        assert VF not in _held(env)
        record = env.runtime_dir / "launch.json"
        if record.exists():
            doc = json.loads(record.read_text())
            assert not _alive(int(doc["pid"]))
    finally:
        # give the kernel vfioctl's token back, for the cleanup and test_90
        s = VfioSession(LinuxHost("/"))
        try:
            s.open_device(PF).set_vf_token(VfToken(uuid.UUID(before)))
        finally:
            s.close()


@pytest.mark.skipif(not os.access(QEMU72, os.X_OK),
                    reason=f"no Debian 12 QEMU 7.2 at {QEMU72} (tools/qemu72.sh)")
def test_qemu_without_vf_token_is_refused_before_anything_changes(
        env: Env, kernel: GuestKernel) -> None:
    before = {a: kernel.driver(a) for a in (PF, VF, VF2)}
    held = _held(env)
    result = env("start", str(env.domain), "--qemu", str(QEMU72))
    assert result.rc == 3, (result.rc, result.stdout, result.stderr)
    assert "needs QEMU >= 8.1, found QEMU 7.2" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert {a: kernel.driver(a) for a in (PF, VF, VF2)} == before
    assert _held(env) == held
    assert not env.runtime_dir.exists() or not (env.runtime_dir / "qmp.sock").exists()


def _iommufd_device_add(token: str | None) -> dict[str, Any]:
    """One QEMU with ``-object iommufd``: ``device_add vfio-pci`` of the VF over QMP
    (with ``vf-token`` when given). What came back, and which VFIO nodes QEMU held
    afterwards (``/proc/PID/fd``)."""
    args: dict[str, Any] = {"driver": "vfio-pci", "host": VF, "iommufd": "iommufd0",
                            "id": "t72", "bus": "rp72"}
    if token is not None:
        args["vf-token"] = token
    proc = subprocess.Popen(
        [QEMU, "-machine", "q35", "-accel", "tcg", "-m", "64", "-nodefaults", "-display",
         "none", "-S", "-object", "iommufd,id=iommufd0", "-device",
         "pcie-root-port,id=rp72,chassis=72,slot=0", "-qmp", "stdio"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None

    def ask(command: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        assert proc.stdin is not None and proc.stdout is not None
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        proc.stdin.write(json.dumps(msg) + "\n")
        proc.stdin.flush()
        while True:
            answer: dict[str, Any] = json.loads(proc.stdout.readline())
            if "return" in answer or "error" in answer:
                return answer

    try:
        json.loads(proc.stdout.readline())                      # the greeting
        ask("qmp_capabilities")
        added = ask("device_add", args)
        held = sorted({os.readlink(f"/proc/{proc.pid}/fd/{fd}")
                       for fd in os.listdir(f"/proc/{proc.pid}/fd")
                       if os.readlink(f"/proc/{proc.pid}/fd/{fd}").startswith(
                           ("/dev/vfio", "/dev/iommu"))})
        ask("quit")
    finally:
        try:
            proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
    return {"device_add": "ok" if "return" in added else added["error"]["desc"],
            "held": held}


@pytest.mark.skipif(not os.path.exists("/dev/iommu"),
                    reason=f"kernel {os.uname().release} has no /dev/iommu (Debian builds "
                    "without CONFIG_IOMMUFD; the tier kernel has it)")
def test_what_qemu_does_with_iommufd_and_a_token(env: Env, kernel: GuestKernel,
                                                  out_dir: Path) -> None:
    """Measured, then asserted: QEMU 10.0's iommufd backend opens the VF's cdev and
    binds it without ``VFIO_DEVICE_BIND_FLAG_TOKEN``, whatever ``vf-token`` says, so the
    kernel (7.3: token rules on the cdev, ``vfio_df_check_token()``) refuses the right
    token exactly like none or a wrong one (EACCES: "Permission denied"), and QEMU holds
    nothing afterwards. The token cannot travel that way: vfioctl hands devices to QEMU
    by ``host=`` on the group path (checked in test 2), never with ``iommufd``."""
    token = _token(env)
    wrong = str(uuid.UUID(int=uuid.UUID(token).int ^ 1))
    facts = {"kernel": os.uname().release,
             "qemu": ".".join(map(str, _qemu_version(QEMU))),
             "with the token": _iommufd_device_add(token),
             "without a token": _iommufd_device_add(None),
             "with a wrong token": _iommufd_device_add(wrong)}
    (out_dir / "facts").mkdir(exist_ok=True)
    (out_dir / "facts" / "qemu-iommufd-vf-token.json").write_text(json.dumps(facts) + "\n")
    print("FACT", json.dumps(facts))
    for case in ("with the token", "without a token", "with a wrong token"):
        answer = facts[case]
        assert isinstance(answer, dict)
        assert "error bind device" in answer["device_add"], facts
        assert "Permission denied" in answer["device_add"], facts
        assert answer["held"] == [], facts
    assert token not in json.dumps(facts)
    time.sleep(0.5)
    assert kernel.driver(VF) == "vfio-pci"
