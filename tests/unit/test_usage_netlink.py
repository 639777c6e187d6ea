"""Host use of a NIC decided by its addresses (Host.ip_addresses), not only its routes.

The trees are copies of the q35-initial snapshot (the test VM's machine) with an
interface added under the e1000e 02:00.0 and the addresses written by hand in the
snapshot's documented ``vfioctl-addresses.json`` format, so each case reads like what
``ip addr`` would show on the host. The /32 and ``noprefixroute`` cases are the bug this
guards against: such an address installs no prefix route, and with routes as the only
evidence the NIC was detached without ``--force``, taking the address with it.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from vfioctl.address import PciAddress
from vfioctl.cli.main import main
from vfioctl.host.base import IfAddress
from vfioctl.host.linux import LinuxHost
from vfioctl.pci.device import PciDevice
from vfioctl.pci.usage import find_host_uses
from vfioctl.snapshot import take_snapshot

FIXTURE = Path(__file__).parents[1] / "data" / "snapshots" / "q35-initial"
NIC = "0000:02:00.0"
NIC_DIR = "sys/devices/pci0000:00/0000:00:13.0/0000:02:00.0"
ADDRESSES = "vfioctl-addresses.json"
ROUTE_HEADER = ("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\t"
                "Window\tIRTT\n")
# 10.99.3.0/24 on eth2, as the kernel lists the prefix route of 10.99.3.1/24
ROUTE_ETH2 = "eth2\t0003630A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
GLOBAL6 = "20010db8000000000000000000000001 05 40 00 80 eth2\n"


def a4(address: str, prefixlen: int, scope: int = 0, ifname: str = "eth2") -> dict[str, object]:
    return {"ifname": ifname, "family": "inet", "address": address, "prefixlen": prefixlen,
            "scope": scope}


def a6(address: str, prefixlen: int, scope: int = 0, ifname: str = "eth2") -> dict[str, object]:
    return {"ifname": ifname, "family": "inet6", "address": address, "prefixlen": prefixlen,
            "scope": scope}


LINK_LOCAL = a6("fe80::5054:ff:fe12:3456", 64, 253)


@dataclass(frozen=True)
class Case:
    name: str
    addresses: list[dict[str, object]] | None   # None: no addresses file (older snapshot)
    uses: tuple[str, ...] = ()
    up: bool = True
    virtio: bool = False        # the interface under ADDR/virtio3/net, as virtio-net has it
    files: dict[str, str] = field(default_factory=dict)
    raw: str | None = None      # the addresses file's text, verbatim


CASES = [
    Case("ipv4-slash32-no-route", [LINK_LOCAL, a4("10.99.1.1", 32)],
         ("interface eth2 is up with address 10.99.1.1/32",)),
    Case("ipv4-noprefixroute", [a4("10.99.2.1", 24), LINK_LOCAL],
         ("interface eth2 is up with address 10.99.2.1/24",)),
    Case("ipv6-global", [a6("2001:db8::1", 64), LINK_LOCAL],
         ("interface eth2 is up with address 2001:db8::1/64",)),
    Case("ipv6-site-scope", [a6("fec0::1", 10, 200)],
         ("interface eth2 is up with address fec0::1/10",)),
    Case("address-and-route", [a4("10.99.3.1", 24)],
         ("interface eth2 is up with address 10.99.3.1/24 and routes",),
         files={"proc/net/route": ROUTE_HEADER + ROUTE_ETH2}),
    Case("two-addresses", [a4("10.99.1.1", 32), a6("2001:db8::1", 64)],
         ("interface eth2 is up with addresses 10.99.1.1/32, 2001:db8::1/64",)),
    Case("five-addresses", [a4(f"10.99.1.{i}", 32) for i in range(1, 6)],
         ("interface eth2 is up with addresses 10.99.1.1/32, 10.99.1.2/32, 10.99.1.3/32 "
          "(+2 more)",)),
    Case("virtio-net-layout", [a4("10.99.1.1", 32)],
         ("interface eth2 is up with address 10.99.1.1/32",), virtio=True),
    Case("link-local-only", [LINK_LOCAL]),
    Case("host-scope-only", [a4("127.0.0.5", 8, 254)]),
    Case("down-with-address", [a4("10.99.1.1", 32), a6("2001:db8::1", 64)], up=False),
    Case("address-on-another-interface", [a4("10.99.1.1", 32, ifname="eth9")]),
    Case("no-addresses-at-all", []),
    # Without the file (a snapshot from before addresses were captured), or with a damaged
    # one, procfs is all there is: its IPv6 addresses still count, unnamed.
    Case("no-file-procfs-ipv6", None, ("interface eth2 is up with addresses",),
         files={"proc/net/if_inet6": GLOBAL6}),
    Case("damaged-file-procfs-ipv6", None, ("interface eth2 is up with addresses",),
         files={"proc/net/if_inet6": GLOBAL6}, raw="{not json"),
    Case("damaged-file-nothing-else", None, raw='{"format": 1, "addresses": [{}]}'),
]


def make_tree(root: Path, case: Case) -> Path:
    shutil.copytree(FIXTURE, root, symlinks=True)
    # the NIC's interfaces are exactly the case's: the capture's own (down) one goes
    shutil.rmtree(root / NIC_DIR / "net", ignore_errors=True)
    net = root / NIC_DIR / ("virtio3/net" if case.virtio else "net") / "eth2"
    net.mkdir(parents=True)
    (net / "operstate").write_text("up\n" if case.up else "down\n")
    (net / "flags").write_text("0x1003\n" if case.up else "0x1002\n")
    for rel, text in case.files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    if case.raw is not None:
        (root / ADDRESSES).write_text(case.raw)
    elif case.addresses is not None:
        (root / ADDRESSES).write_text(json.dumps({"format": 1, "addresses": case.addresses}))
    return root


def uses_of(host: LinuxHost) -> tuple[str, ...]:
    return tuple(u.detail for u in find_host_uses(PciDevice(host, PciAddress.parse(NIC))))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_host_use_by_address(case: Case, tmp_path: Path) -> None:
    host = LinuxHost(make_tree(tmp_path / "host", case))
    assert uses_of(host) == case.uses


@pytest.mark.parametrize("case", [c for c in CASES if c.name.startswith("ipv4-")],
                         ids=lambda c: c.name)
def test_cli_detach_refused_with_exit_5_and_nothing_changed(
        case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    root = make_tree(tmp_path / "host", case)
    # Writable, as the live host is; the refusal must come before any write.
    host = LinuxHost(root, readonly=False, state_dir=tmp_path / "state")
    # where the CLI opens its host (vfioctl.hosts once the backend registry has moved)
    target = ("vfioctl.hosts.open_host" if importlib.util.find_spec("vfioctl.hosts")
              else "vfioctl.host.open_host")
    monkeypatch.setattr(target, lambda spec=None: host)
    before = {p: (p.read_bytes() if not p.is_symlink() else p.readlink())
              for p in (root / NIC_DIR).rglob("*") if p.is_symlink() or p.is_file()}
    assert main(["detach", NIC]) == 5
    out = capsys.readouterr()
    assert out.out == ""
    address = case.uses[0].removeprefix("interface eth2 is up with address ")
    assert out.err == (f"vfioctl: error: PCI device {NIC} is in use by the host: interface "
                       f"eth2 is up with address {address}; stop using it first, or pass "
                       "--force to detach anyway\n")
    after = {p: (p.read_bytes() if not p.is_symlink() else p.readlink())
             for p in (root / NIC_DIR).rglob("*") if p.is_symlink() or p.is_file()}
    assert after == before
    assert (root / NIC_DIR / "driver").readlink().name == "e1000e"


@pytest.mark.parametrize("case", [c for c in CASES if c.addresses is not None],
                         ids=lambda c: c.name)
def test_snapshot_keeps_what_decides_host_use(case: Case, tmp_path: Path) -> None:
    """A snapshot of a host answers "in use?" as the host did: the addresses file, the
    interface state under the device and proc/net are captured."""
    source = LinuxHost(make_tree(tmp_path / "host", case))
    take_snapshot(source, tmp_path / "snap")
    snap = LinuxHost(tmp_path / "snap")
    assert uses_of(snap) == uses_of(source) == case.uses
    doc = json.loads((tmp_path / "snap" / ADDRESSES).read_text())
    assert doc == {"format": 1, "addresses": case.addresses}


def test_snapshot_of_a_tree_without_addresses_records_none(tmp_path: Path) -> None:
    take_snapshot(LinuxHost(FIXTURE), tmp_path / "snap")
    assert json.loads((tmp_path / "snap" / ADDRESSES).read_text()) == {
        "format": 1, "addresses": []}
    assert LinuxHost(tmp_path / "snap").ip_addresses() == []


class CountingHost(LinuxHost):
    """A tree whose ``ip_addresses`` answers a given list and counts the questions."""

    def __init__(self, root: Path, addresses: list[IfAddress]) -> None:
        super().__init__(root)
        self.answer = addresses
        self.asked = 0

    def ip_addresses(self) -> list[IfAddress]:
        self.asked += 1
        return self.answer


@pytest.mark.parametrize("up,asked,uses", [
    (False, 0, ()),
    (True, 1, ("interface eth2 is up with address 10.99.1.1/32",)),
], ids=["down: netlink not asked", "up: asked once"])
def test_addresses_are_asked_for_only_when_an_interface_is_up(
        up: bool, asked: int, uses: tuple[str, ...], tmp_path: Path) -> None:
    """Reading addresses imports pyroute2 and dumps every address; a NIC whose
    interfaces are all down cannot be in use, so the question is not asked."""
    root = make_tree(tmp_path / "host", Case("two-ifaces", None, up=up))
    other = root / NIC_DIR / "net" / "eth3"
    other.mkdir()
    (other / "operstate").write_text("up\n" if up else "down\n")
    host = CountingHost(root, [IfAddress("eth2", socket.AF_INET, "10.99.1.1", 32, 0)])
    assert uses_of(host) == uses
    assert host.asked == asked
