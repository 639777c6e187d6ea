"""SR-IOV and VF-token changes on the real kernel: vfioctl killed (SIGKILL) at every
sysfs write of ``sriov --numvfs`` and at every VFIO ioctl of ``token set``, then the
next command recovers from the journal; and the unbinds that would block are refused
before they are written.

Kills (LinuxHost's hooks, ``VFIOCTL_TEST_CRASH_AT_WRITE`` / ``…_AT_IOCTL``, before and
after the call, in a forked vfioctl):

- ``sriov PF --numvfs 2 --yes`` on the NVMe PF bound to vfio-pci (enable_sriov N -> Y,
  then the count): a creation is rolled back until its journal is closed, so recovery
  leaves no VFs and enable_sriov N wherever the kill fell — never VFs the journal does
  not know;
- ``sriov PF --numvfs 0``: completed (removed VFs cannot come back as they were);
- ``token set PF --uuid-file`` replacing a stored token: whatever the moment, after
  recovery ``token check VF`` opens the VF with the token vfioctl holds (the kernel and
  the store agree) and no journal is left.

Blocking unbinds (docs/kernel.md, "Unbinds that block"): with a VF open by another
process, ``reattach PF`` and ``sriov PF --numvfs 0`` are refused at once with exit 5,
naming the holder's pid — the kernel would otherwise wait until that process closes it.

Starts from: the boot drivers, vfio-pci loaded, enable_sriov N. Leaves: the same.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import topology
from .checks import QEMU72, forked_cli
from .guest_kernel import PCI_DEVICES, GuestKernel
from .vfioctl_cli import VfioctlCli

PF = topology.NVME_PF
VF, VF2 = "0000:01:00.1", "0000:01:00.2"
CRASH_AT_WRITE = "VFIOCTL_TEST_CRASH_AT_WRITE"
CRASH_AT_IOCTL = "VFIOCTL_TEST_CRASH_AT_IOCTL"
CRASH_AFTER = "VFIOCTL_TEST_CRASH_AFTER"
TOK = "11111111-2222-3333-4444-555555555555"
TOK2 = "66666666-7777-8888-9999-000000000000"
MAX_POINTS = 40  # a bound on the loop: every op here has far fewer calls


@pytest.fixture(scope="module")
def cli(kernel: GuestKernel, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[VfioctlCli]:
    state = tmp_path_factory.mktemp("state-65")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VFIOCTL_STATE_DIR", str(state))
        for var in (CRASH_AT_WRITE, CRASH_AT_IOCTL, CRASH_AFTER):
            mp.delenv(var, raising=False)
        run = VfioctlCli("linux")
        assert run("detach", PF).rc == 0
        # QEMU 7.2's NVMe model does not survive a function reset (docs/kernel.md "The
        # test guest"): no resets while VFIO opens it.
        kernel.write(PCI_DEVICES / PF / "reset_method", "\n")
        try:
            yield run
        finally:
            run("token", "forget", PF)
            run("sriov", PF, "--numvfs", "0", "--yes")
            run("reattach", PF)
            if kernel.vfio_pci_param("enable_sriov") != "N":
                kernel.set_vfio_pci_param("enable_sriov", "N")


def numvfs(kernel: GuestKernel) -> int:
    return int(kernel.read(PCI_DEVICES / PF / "sriov_numvfs").strip())


def journal_clean(cli: VfioctlCli, where: str) -> None:
    again = cli("status")
    assert again.rc == 0 and again.stderr == "", (where, again.stderr)


def kill_points(argv: list[str], env_var: str, reset: object) -> Iterator[tuple[int, bool]]:
    """(n, after) for every call the hook can kill ``argv`` at, until a run completes."""
    for n in range(1, MAX_POINTS + 1):
        for after in (False, True):
            assert callable(reset)
            reset()
            rc = forked_cli(["--host", "linux", *argv],
                            {env_var: str(n), **({CRASH_AFTER: "1"} if after else {})})
            if rc == 0:
                return               # fewer than n calls: the op ran to its end
            assert rc == -9, f"{argv} at {n}: exited {rc}, not killed"
            yield n, after
    raise AssertionError(f"{argv}: more than {MAX_POINTS} calls")


def test_sriov_create_killed_at_every_write(cli: VfioctlCli, kernel: GuestKernel) -> None:
    def reset() -> None:
        if numvfs(kernel):
            assert cli("sriov", PF, "--numvfs", "0").rc == 0
        kernel.set_vfio_pci_param("enable_sriov", "N")

    at_kill = set()
    for n, after in kill_points(["sriov", PF, "--numvfs", "2", "--yes"], CRASH_AT_WRITE,
                                reset):
        where = f"sriov create killed {'after' if after else 'before'} write {n}"
        at_kill.add((numvfs(kernel), kernel.vfio_pci_param("enable_sriov")))
        status = cli("status")           # the next command recovers
        assert status.rc == 0, (where, status.stderr)
        # a creation is rolled back until its journal is closed: no VFs the user did not
        # see created, and enable_sriov back to N
        count, param = numvfs(kernel), kernel.vfio_pci_param("enable_sriov")
        assert (count, param) == (0, "N"), f"{where}: {count} VFs, enable_sriov {param}"
        assert "rolled back an interrupted sriov" in status.stderr, (where, status.stderr)
        journal_clean(cli, where)
    # the kills fell before the parameter, between it and the count, and after the count
    assert at_kill == {(0, "N"), (0, "Y"), (2, "Y")}, at_kill
    reset()
    assert cli("sriov", PF, "--numvfs", "2", "--yes").rc == 0   # and it runs to its end
    kernel.wait_for("VFs on vfio-pci", lambda: all(
        kernel.driver(v) == "vfio-pci" for v in (VF, VF2)))
    reset()


def test_sriov_remove_killed_at_every_write(cli: VfioctlCli, kernel: GuestKernel) -> None:
    def reset() -> None:
        if not numvfs(kernel):
            assert cli("sriov", PF, "--numvfs", "2", "--yes").rc == 0

    for n, after in kill_points(["sriov", PF, "--numvfs", "0"], CRASH_AT_WRITE, reset):
        where = f"sriov remove killed {'after' if after else 'before'} write {n}"
        assert cli("status").rc == 0, where
        assert numvfs(kernel) == 0, f"{where}: recovery completes a removal"
        journal_clean(cli, where)


def test_token_set_killed_at_every_ioctl(cli: VfioctlCli, kernel: GuestKernel,
                                         tmp_path: Path) -> None:
    if not numvfs(kernel):
        assert cli("sriov", PF, "--numvfs", "2", "--yes").rc == 0
    first, second = tmp_path / "tok1", tmp_path / "tok2"
    first.write_text(TOK + "\n")
    second.write_text(TOK2 + "\n")
    for path in (first, second):
        path.chmod(0o600)

    def reset() -> None:
        assert cli("token", "set", PF, "--uuid-file", str(first)).rc == 0

    outcomes = set()
    for n, after in kill_points(["token", "set", PF, "--uuid-file", str(second)],
                                CRASH_AT_IOCTL, reset):
        where = f"token set killed {'after' if after else 'before'} ioctl {n}"
        assert cli("status").rc == 0, where
        check = cli("token", "check", VF)
        assert check.rc == 0, f"{where}: the VF does not open with the stored token: " \
                              f"{check.stderr}"
        shown = cli("token", "show", PF, "--reveal")
        assert shown.rc == 0, where
        outcomes.add(str(uuid.UUID(shown.stdout.strip())))
        journal_clean(cli, where)
    assert outcomes <= {TOK, TOK2} and TOK2 in outcomes


HOLDER = """
import sys, time
from vfioctl.host.linux import LinuxHost
from vfioctl.manager import HostdevManager
with HostdevManager(LinuxHost("/")).open_vf(sys.argv[1]):
    print("open", flush=True)
    time.sleep(600)
"""


def test_unbinds_that_would_block_are_refused(cli: VfioctlCli, kernel: GuestKernel) -> None:
    if not numvfs(kernel):
        assert cli("sriov", PF, "--numvfs", "2", "--yes").rc == 0
    assert cli("token", "set", PF).rc == 0
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, VF], stdout=subprocess.PIPE,
                              text=True, env=os.environ.copy())
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        for argv, what in ((["reattach", PF], "reattach"),
                           (["sriov", PF, "--numvfs", "0"], "remove the VFs of")):
            started = time.monotonic()
            proc = subprocess.run([sys.executable, "-m", "vfioctl", "--host", "linux",
                                   *argv], capture_output=True, text=True, timeout=300,
                                  check=False)
            took = time.monotonic() - started
            assert proc.returncode == 5, (argv, proc.stderr)
            assert f"cannot {what} PF {PF}: its VF {VF} is in use" in proc.stderr
            assert f"open by pid {holder.pid} " in proc.stderr, proc.stderr
            assert numvfs(kernel) == 2 and kernel.driver(PF) == "vfio-pci"
            print(f"{argv[0]} refused in {took:.1f} s")
    finally:
        holder.kill()
        holder.wait(timeout=60)
    assert cli("sriov", PF, "--numvfs", "0").rc == 0   # released: it goes through


def _vf_domain(tmp_path: Path, token: str, extra: str = "") -> Path:
    path = tmp_path / f"vf-{abs(hash((token, extra)))}.xml"
    path.write_text(f"""<domain type='qemu'>
  <name>vm65</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>{extra}
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <hostdev mode='subsystem' type='pci' managed='yes'>
      <source>
        <address domain='0x0000' bus='0x01' slot='0x00' function='0x1'>{token}</address>
      </source>
    </hostdev>
  </devices>
</domain>
""")
    return path


def test_vf_token_reference_on_the_real_kernel(cli: VfioctlCli, kernel: GuestKernel,
                                               tmp_path: Path) -> None:
    """``<vf-token/>`` for a real VF of the userspace PF: resolved from the store (the
    domain XML holds no secret), checked before any change; QEMU 7.2 (no vf-token) is
    refused before anything changes (QEMU 10, the guest's, plans it); a confidential
    guest is refused."""
    if not numvfs(kernel):
        assert cli("sriov", PF, "--numvfs", "2", "--yes").rc == 0
    assert cli("token", "set", PF).rc == 0
    shown = cli("token", "show", PF, "--reveal")
    token = shown.stdout.strip()
    assert shown.rc == 0 and len(token) == 36
    before = {a: kernel.driver(a) for a in (PF, VF, VF2)}
    ref = _vf_domain(tmp_path, "<vf-token/>")
    valid = cli("validate", str(ref))
    assert valid.rc == 0 and valid.stderr == "", valid.stderr
    planned = cli("start", str(ref), "--dry-run", "--qemu-version", "8.1")
    assert planned.rc == 0, planned.stderr
    assert f'"host":"{VF}","vf-token":"<vf-token redacted>"' in planned.stdout
    assert token not in planned.stdout + planned.stderr
    probed = cli("start", str(ref), "--dry-run")        # the guest's QEMU 10, probed
    assert probed.rc == 0 and "<vf-token redacted>" in probed.stdout, probed.stderr
    assert token not in probed.stdout + probed.stderr
    if QEMU72.exists():                                # Debian 12's own, kept by setup
        old = cli("start", str(ref), "--dry-run", "--qemu", str(QEMU72))
        assert old.rc == 3 and "needs QEMU >= 8.1" in old.stderr, old.stderr
    missing = cli("validate", str(_vf_domain(tmp_path, "")))
    assert missing.rc == 3 and f"VF {VF} has no <vf-token>" in missing.stderr
    wrong = cli("validate", str(_vf_domain(
        tmp_path, "<vf-token uuid='00000000-1111-2222-3333-444444444444'/>")))
    assert wrong.rc == 3 and "is not the token vfioctl holds" in wrong.stderr
    secret = cli("validate", str(_vf_domain(tmp_path, "<vf-token/>",
                                            "\n  <launchSecurity type='sev-snp'/>")))
    assert secret.rc == 3 and "is a confidential guest" in secret.stderr
    assert {a: kernel.driver(a) for a in (PF, VF, VF2)} == before, "nothing changed"
    assert cli("status", "--json").json()["devices"][0]["address"] == PF
