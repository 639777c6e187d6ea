"""Host use of a NIC decided by its addresses, on the real kernel: ``detach`` refuses.

The root-bus e1000e 00:10.0 (alone in its IOMMU group, touched by no other scenario) is
brought up with an IPv4 address that installs no prefix route, the case routes cannot
show: ``ip addr add 10.99.1.1/32`` and, separately, ``10.99.2.1/24 noprefixroute``. The
addresses are added and checked with iproute2 (``ip``, the guest runs the host's
userspace), not with vfioctl's own netlink reader. Then:

1. ``vfioctl detach 00:10.0`` (a fresh process, as typed) exits 5 with one line naming
   the interface and the address; the address is still there, the function is still on
   e1000e with no ``driver_override``, nothing is held.
2. The product's view equals the kernel's: ``LinuxHost("/").ip_addresses()`` = ``ip
   -json addr``, and a ``vfioctl snapshot`` taken now answers "in use?" the same way.
3. /32: ``detach --force`` moves it to vfio-pci (the address goes with the netdev),
   ``reattach`` gives it back to e1000e.
4. noprefixroute: refused the same way; with the address deleted the interface is still
   up (link-local only) and ``detach`` without ``--force`` succeeds: the refusal was the
   address, not the interface being up. ``reattach`` gives it back.

The simulated twin is not driven (its addresses are not this kernel's); the function
ends on its boot driver, so test_90's end checkpoint still compares like with like.

Starts from: the boot drivers (vfio-pci loaded). Leaves: the boot drivers, no
driver_override, nothing held by vfioctl, 00:10.0's (new) interface down with no
address.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from vfioctl.address import PciAddress
from vfioctl.host.linux import LinuxHost
from vfioctl.pci.device import PciDevice
from vfioctl.pci.usage import find_host_uses
from vfioctl.snapshot import take_snapshot

from .checks import boot_state, driver_state, restore_boot_drivers
from .guest_kernel import PCI_DEVICES, GuestKernel
from .vfioctl_cli import CliResult, VfioctlCli

NIC = "0000:00:10.0"
IP = "/usr/sbin/ip" if os.access("/usr/sbin/ip", os.X_OK) else "/sbin/ip"
SLASH32 = ("10.99.1.1/32", ())
NOPREFIXROUTE = ("10.99.2.1/24", ("noprefixroute",))

pytestmark = pytest.mark.skipif(not os.access(IP, os.X_OK),
                                reason="no ip (iproute2) on the host: apt install iproute2")


def ip(*args: str) -> str:
    proc = subprocess.run([IP, *args], capture_output=True, text=True, check=False,
                          timeout=60)
    assert proc.returncode == 0, f"ip {' '.join(args)}: {proc.stderr.strip()}"
    return proc.stdout


def iface(kernel: GuestKernel) -> str:
    """The NIC's interface name now (no udev: eth<N> by probe order, new on each bind)."""
    net = PCI_DEVICES / NIC / "net"
    kernel.wait_for(f"an interface under {net}", lambda: bool(kernel.fs.exists(net) and
                                                               kernel.fs.listdir(net)))
    names = kernel.fs.listdir(net)
    assert len(names) == 1, names
    return names[0]


def addresses_of(ifname: str) -> list[str]:
    """``ADDR/PREFIX`` of every IPv4 address on ``ifname``, from iproute2."""
    doc = json.loads(ip("-json", "-4", "addr", "show", "dev", ifname))
    return [f"{a['local']}/{a['prefixlen']}" for link in doc for a in link["addr_info"]]


def main_table_routes(ifname: str) -> list[str]:
    """The lines of /proc/net/route (the main table) through ``ifname``."""
    lines = Path("/proc/net/route").read_text().splitlines()[1:]
    return [line for line in lines if line.split()[:1] == [ifname]]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``vfioctl --host linux ARGS`` as a subprocess, as the user types it."""
    return subprocess.run([sys.executable, "-m", "vfioctl.cli.main", "--host", "linux",
                           *args], capture_output=True, text=True, check=False, timeout=300)


def refused_line(rc: int, stdout: str, stderr: str) -> str:
    assert rc == 5, (rc, stdout, stderr)
    assert stdout == ""
    lines = stderr.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def expected_refusal(ifname: str, address: str) -> str:
    return (f"vfioctl: error: PCI device {NIC} is in use by the host: interface {ifname} "
            f"is up with address {address}; stop using it first, or pass --force to "
            "detach anyway")


def ok(result: CliResult) -> list[str]:
    assert result.rc == 0, f"vfioctl exited {result.rc}: {result.stderr.strip()}"
    return result.stdout.splitlines()


@pytest.fixture(scope="module")
def cli(kernel: GuestKernel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VfioctlCli]:
    """vfioctl on the live kernel with this module's own state directory; afterwards the
    boot state whatever happened (addresses removed, held devices given back)."""
    state = tmp_path_factory.mktemp("state-45")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VFIOCTL_STATE_DIR", str(state))
        cli = VfioctlCli("linux")
        yield cli
        for dev in cli.json("status")["devices"]:
            cli("reattach", "--group", dev["address"])
        restore_boot_drivers(kernel, (NIC,))
        if kernel.driver(NIC) == "e1000e":
            ifname = iface(kernel)
            ip("addr", "flush", "dev", ifname)
            ip("link", "set", ifname, "down")


@pytest.fixture
def up_with_address(request: pytest.FixtureRequest, kernel: GuestKernel
                    ) -> Iterator[tuple[str, str]]:
    """00:10.0's interface up with one IPv4 address and no main-table route for it."""
    address, flags = request.param
    assert driver_state(kernel, NIC) == boot_state(NIC)
    ifname = iface(kernel)
    ip("link", "set", ifname, "up")
    ip("addr", "add", address, "dev", ifname, *flags)
    assert addresses_of(ifname) == [address]
    # the case this scenario exists for: the routes show nothing of the address
    assert main_table_routes(ifname) == []
    yield ifname, address
    if kernel.driver(NIC) == "e1000e" and iface(kernel) == ifname:
        ip("addr", "flush", "dev", ifname)
        ip("link", "set", ifname, "down")


def assert_refused_and_untouched(kernel: GuestKernel, cli: VfioctlCli, ifname: str,
                                 address: str, rc: int, stdout: str, stderr: str) -> None:
    assert refused_line(rc, stdout, stderr) == expected_refusal(ifname, address)
    assert addresses_of(ifname) == [address]
    assert driver_state(kernel, NIC) == boot_state(NIC)
    assert iface(kernel) == ifname
    assert cli.json("status")["devices"] == []


@pytest.mark.parametrize("up_with_address", [SLASH32], indirect=True, ids=["slash32"])
def test_slash32_address_refused_then_forced(
        up_with_address: tuple[str, str], kernel: GuestKernel, cli: VfioctlCli) -> None:
    ifname, address = up_with_address
    proc = run_cli("detach", NIC)
    assert_refused_and_untouched(kernel, cli, ifname, address,
                                 proc.returncode, proc.stdout, proc.stderr)

    # vfioctl's reader against iproute2's, and a snapshot's verdict against the live one
    live = LinuxHost("/")
    got = {(a.ifname, f"{a.address}/{a.prefixlen}") for a in live.ip_addresses()}
    want = set()
    for link in json.loads(ip("-json", "addr", "show")):
        for a in link["addr_info"]:
            want.add((link["ifname"], f"{a['local']}/{a['prefixlen']}"))
    assert got == want
    snap = Path(tempfile.mkdtemp(prefix="vmtest-45-")) / "snap"
    take_snapshot(live, snap)
    frozen = LinuxHost(snap)
    assert frozen.ip_addresses() == live.ip_addresses()
    pci = PciAddress.parse(NIC)
    assert [u.detail for u in find_host_uses(PciDevice(frozen, pci))] == \
        [u.detail for u in find_host_uses(PciDevice(live, pci))] == \
        [f"interface {ifname} is up with address {address}"]

    assert ok(cli("detach", NIC, "--force", "--yes")) == [f"{NIC}: e1000e -> vfio-pci"]
    assert driver_state(kernel, NIC) == {NIC: ("vfio-pci", "vfio-pci")}
    assert not kernel.fs.exists(PCI_DEVICES / NIC / "net")
    assert ok(cli("reattach", NIC)) == [f"{NIC}: vfio-pci -> e1000e"]
    assert driver_state(kernel, NIC) == boot_state(NIC)
    assert addresses_of(iface(kernel)) == []  # a new netdev: the address went with --force


@pytest.mark.parametrize("up_with_address", [NOPREFIXROUTE], indirect=True,
                         ids=["noprefixroute"])
def test_noprefixroute_address_refused_until_removed(
        up_with_address: tuple[str, str], kernel: GuestKernel, cli: VfioctlCli) -> None:
    ifname, address = up_with_address
    refused = cli("detach", NIC)
    assert_refused_and_untouched(kernel, cli, ifname, address,
                                 refused.rc, refused.stdout, refused.stderr)

    ip("addr", "del", address, "dev", ifname)
    assert addresses_of(ifname) == []
    flags = int(kernel.read(PCI_DEVICES / NIC / "net" / ifname / "flags"), 16)
    assert flags & 0x1, "the interface must still be up for this to mean anything"
    assert ok(cli("detach", NIC)) == [f"{NIC}: e1000e -> vfio-pci"]
    assert driver_state(kernel, NIC) == {NIC: ("vfio-pci", "vfio-pci")}
    assert ok(cli("reattach", NIC)) == [f"{NIC}: vfio-pci -> e1000e"]
    assert driver_state(kernel, NIC) == boot_state(NIC)

