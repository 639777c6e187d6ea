"""Crash recovery on the real kernel: vfioctl killed (SIGKILL) at every sysfs write of an
operation, then the next vfioctl command puts the host right from its journal.

The kill is LinuxHost's fault-injection hook (``VFIOCTL_TEST_CRASH_AT_WRITE=N``, and
``VFIOCTL_TEST_CRASH_AFTER=1`` for "right after the write"): the process dies before
(or after) its Nth write with no ``finally`` run, as with ``kill -9`` or a power cut.
The dying process is a fork of this one running the CLI's ``main`` (a new Python
interpreter costs 1-2 s under TCG), except for the single-device case, which runs the
console script itself. After each kill:

- the kernel's half-done state is read, and must equal the simulator's after the same
  crash (``SimHost.faults.crash_at``);
- ``vfioctl status`` recovers, printing one ``vfioctl: recovered …`` line per device it
  put right, the same lines as on the simulated twin;
- raw sysfs then shows every device of the operation on one side of it — a detach
  rolled back to the original drivers, a reattach completed (its point of no return is
  its first write) — no device driverless that was not, no stale ``driver_override``;
  vfioctl's records match (held exactly when detached), and a second command finds
  nothing left to recover.

Cases: ``detach --group 04:01.0`` (e1000 + virtio-rng behind the PCIe-to-PCI bridge, 6
writes) and the matching ``reattach --group`` (6 writes), each killed before and after
every write; ``detach 02:00.0`` (3 writes) killed before each write, console script.

Starts from: the boot drivers, vfio-pci loaded. Leaves: the boot drivers, nothing held.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from . import topology
from .checks import forked_cli
from .differential import Differential
from .guest_kernel import GuestKernel
from .vfioctl_cli import CliResult, VfioctlCli

if TYPE_CHECKING:
    from vfioctl.sim.host import SimHost

E1000E = topology.PLAIN_E1000E
BRIDGE, BR_E1000, BR_RNG = topology.BRIDGE, topology.BRIDGE_E1000, topology.BRIDGE_RNG
BOOT = topology.BOOT_DRIVER
WRITES_PER_DEVICE = 3  # driver_override, unbind, drivers_probe / bind (docs/manager.md)
CRASH_AT = "VFIOCTL_TEST_CRASH_AT_WRITE"
CRASH_AFTER = "VFIOCTL_TEST_CRASH_AFTER"

State = dict[str, tuple[str | None, str | None]]


@dataclass(frozen=True)
class Case:
    name: str
    setup: tuple[str, ...] | None   # a vfioctl command run (cleanly) before the one killed
    op: tuple[str, ...]
    devices: tuple[str, ...]        # the devices the op moves, in step order
    verb: str                       # journal op as recovery names it
    start: State                    # before the op
    end: State                      # after a clean run of the op
    forward: bool                   # recovery completes it (True) or rolls it back
    exec_script: bool = False       # kill the console script instead of a fork
    after: tuple[bool, ...] = (False, True)


def _boot(*addrs: str) -> State:
    return {a: (BOOT[a], None) for a in addrs}


def _on(driver: str, *addrs: str) -> State:
    return {a: (driver, driver) for a in addrs}


PAIR = (BR_E1000, BR_RNG)
CASES = (
    Case("group-detach", None, ("detach", "--group", BR_E1000), PAIR, "detach",
         _boot(*PAIR), _on("vfio-pci", *PAIR), forward=False),
    Case("group-reattach", ("detach", "--group", BR_E1000), ("reattach", "--group", BR_E1000),
         PAIR, "reattach", _on("vfio-pci", *PAIR), _boot(*PAIR), forward=True),
    Case("single-detach", None, ("detach", E1000E), (E1000E,), "detach", _boot(E1000E),
         _on("vfio-pci", E1000E), forward=False, exec_script=True, after=(False,)),
)


def _normalize(text: str) -> str:
    """What differs between the twin and the kernel by design: the host's name and the
    time a record was made."""
    text = re.sub(r'"since": "[^"]*"', '"since": "T"', text)
    return text.replace('"host": "sim:q35-vmtest"', '"host": "linux"')


@dataclass
class Crasher:
    kernel: GuestKernel
    sim_state: Path

    def sim_host(self) -> SimHost | None:
        twin = self.kernel.twin
        if twin is None:
            return None
        from vfioctl.sim.host import SimHost

        assert isinstance(twin.fs, SimHost)
        return SimHost(twin.fs.kernel, name="sim:q35-vmtest", hardware_text="",
                       state_dir=self.sim_state)

    def sim_cli(self, host: SimHost, *args: str) -> CliResult:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("vfioctl.hosts.open_host", lambda spec=None: host)
            return VfioctlCli("sim:q35-vmtest")(*args)

    def both(self, *args: str) -> tuple[CliResult, CliResult | None]:
        """A clean vfioctl command on the twin and on the kernel."""
        host = self.sim_host()
        sim = None if host is None else self.sim_cli(host, *args)
        return VfioctlCli("linux")(*args), sim

    def crash_sim(self, case: Case, n: int, after: bool) -> bool:
        """The same op killed at write ``n`` on the twin; False without a twin."""
        from vfioctl.sim.faults import SimCrash

        host = self.sim_host()
        if host is None:
            return False
        host.faults.crash_at(n, applied=after)
        with pytest.raises(SimCrash):
            self.sim_cli(host, *case.op)
        return True

    def crash_real(self, case: Case, n: int, after: bool) -> int:
        """The op as a process of its own, killed by the hook; its exit status."""
        env = {CRASH_AT: str(n), **({CRASH_AFTER: "1"} if after else {})}
        if case.exec_script:
            script = Path(sys.executable).parent / "vfioctl"
            proc = subprocess.run([str(script), "--host", "linux", *case.op],
                                  env={**os.environ, **env}, capture_output=True,
                                  text=True, check=False, timeout=120)
            return proc.returncode
        return forked_cli(["--host", "linux", *case.op], env)


@pytest.fixture(scope="module")
def crasher(kernel: GuestKernel, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Crasher]:
    real_state = tmp_path_factory.mktemp("state-60-kernel")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VFIOCTL_STATE_DIR", str(real_state))
        mp.delenv(CRASH_AT, raising=False)
        mp.delenv(CRASH_AFTER, raising=False)
        yield Crasher(kernel, tmp_path_factory.mktemp("state-60-sim"))
        for dev in VfioctlCli("linux").json("status")["devices"]:
            VfioctlCli("linux")("reattach", "--group", dev["address"])


def state(kernel: GuestKernel, addrs: tuple[str, ...]) -> State:
    return {a: (kernel.driver(a), kernel.function(a).driver_override) for a in addrs}


def held(result: CliResult) -> dict[str, tuple[str | None, str | None]]:
    """``status --json``: address -> (held on, original driver)."""
    assert result.rc == 0, result.stderr
    return {d["address"]: (d["held_on"], d["original_driver"])
            for d in json.loads(result.stdout)["devices"]}


def _expected_lines(case: Case, n: int, kernel: GuestKernel) -> list[str]:
    """``vfioctl: recovered …`` per device: a rolled-back detach names the devices it had
    started on (the one being moved and those before it); a completed reattach names all.
    """
    touched = case.devices if case.forward else case.devices[
        :(n - 1) // WRITES_PER_DEVICE + 1]
    how = (f"completed an interrupted {case.verb}" if case.forward
           else f"rolled back an interrupted {case.verb}")
    return [f"vfioctl: recovered {a}: {how}, now on {kernel.driver(a) or '(no driver)'}"
            for a in sorted(touched)]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_killed_at_every_write_then_recovered(case: Case, crasher: Crasher,
                                              kernel: GuestKernel,
                                              differential: Differential) -> None:
    devices = case.devices
    writes = WRITES_PER_DEVICE * len(devices)
    setup_records = {a: ("vfio-pci", BOOT[a]) for a in devices}
    differences: list[str] = []
    checked = 0
    for n in range(1, writes + 1):
        for after in case.after:
            where = f"{case.name}: killed {'after' if after else 'before'} write {n}/{writes}"
            if case.setup is not None:
                real, _ = crasher.both(*case.setup)
                assert real.rc == 0, (where, real.stderr)
                assert held(crasher.both("status", "--json")[0]) == setup_records, where
            assert state(kernel, devices) == case.start, where
            rc = crasher.crash_real(case, n, after)
            assert rc == -9, f"{where}: vfioctl exited {rc}, not killed by SIGKILL"
            crashed = state(kernel, devices)
            # Killed mid-operation: the kernel shows the half-done move (nothing after the
            # first write is ever the start state, except a kill before write 1).
            if n > 1 or after:
                assert crashed != case.start, f"{where}: the kill came too late"
            has_twin = crasher.crash_sim(case, n, after)
            if has_twin:
                twin = kernel.twin
                assert twin is not None
                sim_crashed = state(twin, devices)
                if sim_crashed != crashed:
                    differences.append(f"{where}: state at the kill: kernel {crashed}, "
                                       f"simulator {sim_crashed}")
            # The next vfioctl command recovers first and says what it did.
            real, sim = crasher.both("status", "--json")
            assert real.rc == 0, (where, real.stderr)
            recovered = state(kernel, devices)
            want = case.end if case.forward else case.start
            assert recovered == want, f"{where}: recovered to {recovered}, expected {want}"
            assert real.stderr.splitlines() == _expected_lines(case, n, kernel), where
            # Records follow the devices: a rolled-back detach holds nothing, and neither
            # does a completed reattach.
            assert held(real) == {}, where
            if sim is not None:
                for name, r, s in (("rc", real.rc, sim.rc),
                                   ("stdout", _normalize(real.stdout), _normalize(sim.stdout)),
                                   ("stderr", real.stderr, sim.stderr)):
                    if r != s:
                        differences.append(f"{where}: recovery {name}: kernel {r!r}, "
                                           f"simulator {s!r}")
                twin = kernel.twin
                assert twin is not None
                if state(twin, devices) != recovered:
                    differences.append(f"{where}: after recovery: kernel {recovered}, "
                                       f"simulator {state(twin, devices)}")
            # Nothing left to recover: the journal is closed.
            again, _ = crasher.both("status")
            assert again.rc == 0 and again.stderr == "", (where, again.stderr)
            # Back to the state the next kill starts from.
            if case.setup is None and recovered != case.start:
                crasher.both("reattach", "--group", devices[0])
            checked += 1
    # The host is usable again: the op runs to its end, then back to the boot drivers.
    if case.setup is not None:
        crasher.both(*case.setup)
    real, _ = crasher.both(*case.op)
    assert real.rc == 0, real.stderr
    assert state(kernel, devices) == case.end
    if not case.forward:
        crasher.both("reattach", "--group", devices[0])
    assert state(kernel, devices) == _boot(*devices)
    assert checked == writes * len(case.after)
    differential.findings.extend(differences)
    differential.checkpoint(f"crash recovery: {case.name}")
    assert not differences, "simulator differs from the kernel:\n" + "\n".join(differences)
