"""The manager on the real devices: ``vfioctl --host linux detach/reattach/status``.

Every command runs twice, on the simulated twin (``sim:q35-vmtest``, the same in-memory
kernel conftest's twin mirrors the raw writes onto, with a state directory of its own)
and on the guest's kernel, through the same CLI code; exit status, stdout and stderr must
be identical, and so must every function's driver and ``driver_override`` afterwards. A
difference fails the scenario and is added to the differential's findings
(``facts/differential.txt``). The kernel side is then judged on its own: the driver
links, ``driver_override``, ``/dev/vfio/N`` and ``VFIO_GROUP_GET_STATUS``.

Scenarios (each starts from and returns to the boot drivers):

- 02:00.0 e1000e alone in its group -> vfio-pci, ``status --json``, reattach -> e1000e;
- 04:01.0 e1000 behind the PCIe-to-PCI bridge: refused alone (naming 04:02.0 and
  virtio-pci, not the driverless bridge); ``--group`` detaches both endpoints and leaves
  the bridge; the group is viable; reattach of one member refused; ``reattach --group``
  gives back e1000 and virtio-pci;
- 07:00.0 under switch port dn1 detached alone, the port stays on pcieport; 08:00.0 with
  ``--group``: the port is reported as left alone;
- the multifunction pair 00:11.0/.1: refused alone, ``--group`` works;
- the NVMe PF 01:00.0 -> vfio-pci and back to nvme (bound by name; nvme probes its
  controller asynchronously, the driver link must still be there when reattach returns);
- refusals: the driverless bridge, a root port, a switch port, an unknown driver name;
- ``--driver pci-stub`` (Debian ships pci-stub as a module: loaded by the manager):
  the bridge group parked on pci-stub, then 04:01.0 alone to vfio-pci beside a pci-stub
  member: viable per the kernel; reattach restores both original drivers.

Starts from: the boot drivers (vfio-pci may be loaded). Leaves: the boot drivers, no
driver_override set, nothing held by vfioctl; vfio-pci and pci-stub loaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from . import topology
from .checks import boot_state, driver_state, restore_boot_drivers
from .differential import Differential
from .guest_kernel import DEV_VFIO, PCI_DEVICES, GuestKernel
from .vfioctl_cli import CliResult, VfioctlCli

if TYPE_CHECKING:
    from vfioctl.sim.host import SimHost

E1000E = topology.PLAIN_E1000E
BRIDGE, BR_E1000, BR_RNG = topology.BRIDGE, topology.BRIDGE_E1000, topology.BRIDGE_RNG
DN1, SW_RNG = "0000:06:00.0", "0000:07:00.0"
DN2, SW_E1000E = topology.DOWNSTREAM_DN2, topology.SWITCH_E1000E
MF_NET, MF_RNG = topology.MF_NET, topology.MF_RNG
PF = topology.NVME_PF
ROOT_PORT = "0000:00:13.0"
BOOT = topology.BOOT_DRIVER
# Every function a scenario may move; the 9p devices are never touched.
WATCHED = tuple(a for a in BOOT if a not in topology.NEVER_TOUCH)


def _normalize(text: str) -> str:
    """What may differ between the twin and the kernel by design: the host's name and
    the time a record was made."""
    text = re.sub(r'"since": "[^"]*"', '"since": "T"', text)
    return text.replace('"host": "sim:q35-vmtest"', '"host": "linux"')


@dataclass
class Pair:
    """The same vfioctl command line on the twin, then on the kernel, compared."""

    kernel: GuestKernel
    differential: Differential
    sim_state: Path
    differences: list[str] = field(default_factory=list)

    def sim_host(self) -> SimHost | None:
        twin = self.kernel.twin
        if twin is None:
            return None
        from vfioctl.sim.host import SimHost

        base = twin.fs
        assert isinstance(base, SimHost)
        # A second SimHost over the twin's kernel object: same devices and drivers, plus
        # a state directory (the bundled twin has none, so it cannot hold devices).
        return SimHost(base.kernel, name="sim:q35-vmtest", hardware_text="",
                       state_dir=self.sim_state)

    def sim(self, *args: str) -> CliResult | None:
        host = self.sim_host()
        if host is None:
            return None
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("vfioctl.hosts.open_host", lambda spec=None: host)
            return VfioctlCli("sim:q35-vmtest")(*args)

    def __call__(self, *args: str) -> CliResult:
        sim = self.sim(*args)
        real = VfioctlCli("linux")(*args)
        if sim is not None:
            self.compare(" ".join(args), real, sim)
        return real

    def compare(self, what: str, real: CliResult, sim: CliResult) -> None:
        found = []
        real_state = os.environ.get("VFIOCTL_STATE_DIR", "")
        for name in ("rc", "stdout", "stderr"):
            r, s = getattr(real, name), getattr(sim, name)
            if isinstance(r, str):
                # each side has its own state directory, which some lines name
                if real_state:
                    r = r.replace(real_state, "STATE")
                s = s.replace(str(self.sim_state), "STATE")
                r, s = _normalize(r), _normalize(s)
            if r != s:
                found.append(f"vfioctl {what}: {name}: kernel {r!r}, simulator {s!r}")
        twin = self.kernel.twin
        assert twin is not None
        for addr in WATCHED:
            r_state = (self.kernel.driver(addr), self.kernel.function(addr).driver_override)
            s_state = (twin.driver(addr), twin.function(addr).driver_override)
            if r_state != s_state:
                found.append(f"after vfioctl {what}: {addr} (driver, override): "
                             f"kernel {r_state}, simulator {s_state}")
        self.differences += found
        self.differential.findings += found

    def agree(self) -> None:
        """The twin and the kernel gave the same answers so far (checked at test ends)."""
        assert not self.differences, "simulator differs from the kernel:\n" + "\n".join(
            self.differences)


@contextlib.contextmanager
def paired(kernel: GuestKernel, differential: Differential,
           tmp_path_factory: pytest.TempPathFactory, tag: str) -> Iterator[Pair]:
    """A :class:`Pair` whose two sides each have a fresh state directory."""
    real_state = tmp_path_factory.mktemp(f"state-{tag}-kernel")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VFIOCTL_STATE_DIR", str(real_state))
        yield Pair(kernel, differential, tmp_path_factory.mktemp(f"state-{tag}-sim"))


@pytest.fixture(scope="module")
def run(kernel: GuestKernel, differential: Differential,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """``run(ARGS…)``: vfioctl on both hosts, each with a fresh state directory."""
    with paired(kernel, differential, tmp_path_factory, "40") as pair:
        yield pair
        _back_to_boot(pair)


def _back_to_boot(pair: Pair) -> None:
    """After a failed scenario: give back what vfioctl holds, then the raw recipe."""
    for dev in VfioctlCli("linux").json("status")["devices"]:
        pair("reattach", "--group", dev["address"])
    kernel = pair.kernel
    restore_boot_drivers(kernel, WATCHED)


state = driver_state
at_boot = boot_state


def on(driver: str, *addrs: str) -> dict[str, tuple[str | None, str | None]]:
    return {a: (driver, driver) for a in addrs}


def group_of(kernel: GuestKernel, addr: str) -> int:
    group = kernel.group_of(addr)
    assert group is not None, f"{addr} has no IOMMU group"
    return group


def lines(result: CliResult) -> list[str]:
    assert result.rc == 0, f"vfioctl exited {result.rc}: {result.stderr.strip()}"
    return result.stdout.splitlines()


def error(result: CliResult, rc: int) -> str:
    """The one error line (the message and its hint) of a refused command."""
    assert result.rc == rc, (result.rc, result.stdout, result.stderr)
    assert result.stdout == ""
    out = result.stderr.splitlines()
    assert len(out) == 1, out
    return out[0]


def held(run: Pair) -> dict[str, dict[str, object]]:
    doc = json.loads(run("status", "--json").stdout)
    assert doc["host"] == "linux"
    return {d["address"]: d for d in doc["devices"]}


def test_e1000e_alone_to_vfio_pci_and_back(run: Pair, kernel: GuestKernel) -> None:
    assert state(kernel, E1000E) == at_boot(E1000E)
    assert lines(run("detach", E1000E)) == [f"{E1000E}: e1000e -> vfio-pci"]
    assert state(kernel, E1000E) == on("vfio-pci", E1000E)
    group = group_of(kernel, E1000E)
    assert group in kernel.vfio_group_nodes()
    assert kernel.group_viable(group) is True
    doc = held(run)
    assert set(doc) == {E1000E}
    assert {k: doc[E1000E][k] for k in ("iommu_group", "driver", "held_on", "original_driver",
                                        "detached_by_vfioctl", "owner")} == {
        "iommu_group": group, "driver": "vfio-pci", "held_on": "vfio-pci",
        "original_driver": "e1000e", "detached_by_vfioctl": True, "owner": None}
    assert lines(run("reattach", E1000E)) == [f"{E1000E}: vfio-pci -> e1000e"]
    assert state(kernel, E1000E) == at_boot(E1000E)
    assert group not in kernel.vfio_group_nodes()
    assert held(run) == {}
    run.agree()


def test_bridge_group_refused_without_group(run: Pair, kernel: GuestKernel) -> None:
    members = (BRIDGE, BR_E1000, BR_RNG)
    line = error(run("detach", BR_E1000), 5)
    group = group_of(kernel, BR_E1000)
    # The driverless bridge does not force --group; the virtio-rng on virtio-pci does.
    assert line.startswith(f"vfioctl: error: cannot detach {BR_E1000} alone: IOMMU group "
                           f"{group} also holds {BR_RNG} (virtio-pci); ")
    assert f"'vfioctl detach --group {BR_E1000}'" in line
    assert BRIDGE not in line
    assert state(kernel, *members) == at_boot(*members)
    assert held(run) == {}
    run.agree()


def test_bridge_group_detached_and_reattached_as_a_whole(
        run: Pair, kernel: GuestKernel, differential: Differential) -> None:
    members = (BRIDGE, BR_E1000, BR_RNG)
    assert lines(run("detach", "--group", BR_E1000)) == [
        f"{BRIDGE}: left alone: (no driver)",
        f"{BR_E1000}: e1000 -> vfio-pci",
        f"{BR_RNG}: virtio-pci -> vfio-pci",
    ]
    assert state(kernel, *members) == {BRIDGE: (None, None),
                                       **on("vfio-pci", BR_E1000, BR_RNG)}
    group = group_of(kernel, BR_E1000)
    # docs/kernel.md "DMA ownership and group viability": {driverless bridge, both
    # endpoints on vfio-pci} is what the kernel accepts
    assert kernel.group_viable(group) is True
    doc = held(run)
    assert {a: d["original_driver"] for a, d in doc.items()} == {BR_E1000: "e1000",
                                                                BR_RNG: "virtio-pci"}
    differential.checkpoint("manager: bridge group detached")
    line = error(run("reattach", BR_E1000), 5)
    assert line.startswith(f"vfioctl: error: cannot reattach {BR_E1000} alone: vfioctl "
                           f"also holds {BR_RNG} (vfio-pci) in IOMMU group {group}; ")
    assert state(kernel, BR_E1000, BR_RNG) == on("vfio-pci", BR_E1000, BR_RNG)
    assert lines(run("reattach", "--group", BR_E1000)) == [
        f"{BRIDGE}: left alone: (no driver)",
        f"{BR_E1000}: vfio-pci -> e1000",
        f"{BR_RNG}: vfio-pci -> virtio-pci",
    ]
    assert state(kernel, *members) == at_boot(*members)
    assert group not in kernel.vfio_group_nodes()
    assert held(run) == {}
    run.agree()


def test_switch_endpoint_alone_keeps_its_port_on_pcieport(
        run: Pair, kernel: GuestKernel) -> None:
    assert lines(run("detach", SW_RNG)) == [f"{SW_RNG}: virtio-pci -> vfio-pci"]
    assert state(kernel, DN1, SW_RNG) == {DN1: ("pcieport", None), **on("vfio-pci", SW_RNG)}
    assert kernel.group_viable(group_of(kernel, SW_RNG)) is True
    assert lines(run("reattach", SW_RNG)) == [f"{SW_RNG}: vfio-pci -> virtio-pci"]
    assert state(kernel, DN1, SW_RNG) == at_boot(DN1, SW_RNG)
    # With --group the port is reported, and still left on pcieport.
    assert lines(run("detach", "--group", SW_E1000E)) == [
        f"{DN2}: left alone: pcieport", f"{SW_E1000E}: e1000e -> vfio-pci"]
    assert state(kernel, DN2, SW_E1000E) == {DN2: ("pcieport", None),
                                             **on("vfio-pci", SW_E1000E)}
    assert kernel.group_viable(group_of(kernel, SW_E1000E)) is True
    assert lines(run("reattach", "--group", SW_E1000E)) == [
        f"{DN2}: left alone: pcieport", f"{SW_E1000E}: vfio-pci -> e1000e"]
    assert state(kernel, DN2, SW_E1000E) == at_boot(DN2, SW_E1000E)
    run.agree()


def test_multifunction_pair_needs_group(run: Pair, kernel: GuestKernel) -> None:
    group = group_of(kernel, MF_RNG)
    line = error(run("detach", MF_RNG), 5)
    assert line.startswith(f"vfioctl: error: cannot detach {MF_RNG} alone: IOMMU group "
                           f"{group} also holds {MF_NET} (virtio-pci); ")
    assert state(kernel, MF_NET, MF_RNG) == at_boot(MF_NET, MF_RNG)
    assert lines(run("detach", "--group", MF_RNG)) == [
        f"{MF_NET}: virtio-pci -> vfio-pci", f"{MF_RNG}: virtio-pci -> vfio-pci"]
    assert state(kernel, MF_NET, MF_RNG) == on("vfio-pci", MF_NET, MF_RNG)
    assert kernel.group_viable(group) is True
    assert lines(run("reattach", "--group", MF_NET)) == [
        f"{MF_NET}: vfio-pci -> virtio-pci", f"{MF_RNG}: vfio-pci -> virtio-pci"]
    assert state(kernel, MF_NET, MF_RNG) == at_boot(MF_NET, MF_RNG)
    run.agree()


def test_nvme_pf_to_vfio_pci_and_back_to_nvme(run: Pair, kernel: GuestKernel) -> None:
    assert kernel.function(PF).sriov_numvfs == 0
    assert lines(run("detach", PF)) == [f"{PF}: nvme -> vfio-pci"]
    assert state(kernel, PF) == on("vfio-pci", PF)
    assert held(run)[PF]["original_driver"] == "nvme"
    assert lines(run("reattach", PF)) == [f"{PF}: vfio-pci -> nvme"]
    # Read at once: bound by name, the link is there when reattach returns, although
    # nvme sets the controller up asynchronously; its controller node follows.
    assert state(kernel, PF) == at_boot(PF)
    kernel.wait_for("the nvme controller under the PF", lambda: any(
        e.startswith("nvme") for e in os.listdir(f"/{PCI_DEVICES / PF}/nvme")))
    assert held(run) == {}
    run.agree()


@pytest.mark.parametrize(("addr", "driver"), [
    (BRIDGE, "no driver"), (ROOT_PORT, "driver pcieport"), (DN1, "driver pcieport")])
def test_bridges_and_ports_are_refused(run: Pair, kernel: GuestKernel, addr: str,
                                       driver: str) -> None:
    for args in (("detach", addr), ("detach", "--group", addr)):
        line = error(run(*args), 5)
        assert line.startswith(f"vfioctl: error: {addr} is a PCI bridge or PCIe port ("
                               f"{driver}): bridges cannot be detached; "), line
        assert state(kernel, addr) == at_boot(addr)
    run.agree()


def test_unknown_driver_is_refused(run: Pair, kernel: GuestKernel) -> None:
    from vfioctl.errors import DriverNotFound, UsageError
    from vfioctl.host.linux import LinuxHost
    from vfioctl.manager import HostdevManager
    from vfioctl.pci.driver import ensure_driver

    result = run("detach", "--driver", "nosuch", E1000E)
    assert result.rc == 2
    assert "'nosuch' is not one of 'vfio-pci', 'pci-stub'" in result.stderr
    with pytest.raises(UsageError, match="cannot detach onto driver 'nosuch'"):
        HostdevManager(LinuxHost("/")).detach([E1000E], driver="nosuch")
    # A holding driver that is missing and cannot be loaded: modprobe fails for real.
    name = "vfioctl-no-such-driver"
    with pytest.raises(DriverNotFound) as real:
        ensure_driver(LinuxHost("/"), name)
    assert not os.path.exists(f"/sys/bus/pci/drivers/{name}")
    assert "not found" in (real.value.hint or ""), real.value.hint
    sim_host = run.sim_host()
    if sim_host is not None:
        with pytest.raises(DriverNotFound) as sim:
            ensure_driver(sim_host, name)
        assert str(sim.value) == str(real.value)
    assert state(kernel, E1000E) == at_boot(E1000E)
    assert held(run) == {}
    run.agree()


def test_pci_stub_parks_a_group_member(run: Pair, kernel: GuestKernel,
                                       differential: Differential) -> None:
    members = (BRIDGE, BR_E1000, BR_RNG)
    assert lines(run("detach", "--group", "--driver", "pci-stub", BR_RNG)) == [
        f"{BRIDGE}: left alone: (no driver)",
        f"{BR_E1000}: e1000 -> pci-stub",
        f"{BR_RNG}: virtio-pci -> pci-stub",
    ]
    assert os.path.isdir("/sys/bus/pci/drivers/pci-stub")  # loaded by the manager
    assert state(kernel, BR_E1000, BR_RNG) == on("pci-stub", BR_E1000, BR_RNG)
    group = group_of(kernel, BR_E1000)
    assert group not in kernel.vfio_group_nodes()   # no vfio-pci member yet
    # The member meant for a guest goes to vfio-pci alone: pci-stub does not force --group.
    assert lines(run("detach", BR_E1000)) == [f"{BR_E1000}: pci-stub -> vfio-pci"]
    assert state(kernel, BR_E1000, BR_RNG) == {**on("vfio-pci", BR_E1000),
                                               **on("pci-stub", BR_RNG)}
    # docs/kernel.md "DMA ownership and group viability": pci-stub does not claim DMA
    # ownership, so the kernel accepts the group.
    assert kernel.group_viable(group) is True
    assert kernel.vfio_group_nodes() == [group]
    assert os.path.exists(f"/{DEV_VFIO}/{group}")
    doc = held(run)
    assert {a: (d["held_on"], d["original_driver"]) for a, d in doc.items()} == {
        BR_E1000: ("vfio-pci", "e1000"), BR_RNG: ("pci-stub", "virtio-pci")}
    differential.checkpoint("manager: e1000 on vfio-pci beside virtio-rng on pci-stub")
    assert lines(run("reattach", "--group", BR_E1000)) == [
        f"{BRIDGE}: left alone: (no driver)",
        f"{BR_E1000}: vfio-pci -> e1000",
        f"{BR_RNG}: pci-stub -> virtio-pci",
    ]
    assert state(kernel, *members) == at_boot(*members)
    assert held(run) == {}
    run.agree()


def test_everything_is_back_at_boot(run: Pair, kernel: GuestKernel,
                                    differential: Differential) -> None:
    assert state(kernel, *WATCHED) == at_boot(*WATCHED)
    assert kernel.vfio_group_nodes() == []
    assert held(run) == {}
    differential.checkpoint("manager scenarios done")
    run.agree()
