"""Interface addresses: ``Host.ip_addresses`` on a simulated host, and that
``proc/net/route``, ``ipv6_route`` and ``if_inet6`` agree with them as the kernel's
prefix-route rules say (checked here with :mod:`ipaddress`, not with the simulator's
own helpers)."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from simtest import DEV, DRV

from vfioctl.cli.main import main
from vfioctl.host.base import IfAddress
from vfioctl.sim.host import SimHost
from vfioctl.sim.loader import bundled_text

NIC = "0000:01:00.0"
HOST = """
[host]
iommu = "intel"

[[driver]]
name = "pcieport"
module = ""
classes = ["060400/ffff00"]

[[driver]]
name = "e1000e"
ids = ["8086:10d3"]

[[device]]
addr = "0000:00:00.0"
kind = "host-bridge"
id = "8086:29c0"

[[device]]
addr = "0000:00:01.0"
kind = "root-port"
id = "8086:1901"

[[device]]
addr = "0000:01:00.0"
parent = "0000:00:01.0"
id = "8086:10d3"
class = "020000"
net = {{ name = "eth0", up = {up}, addresses = {addresses}, routes = {routes} }}
"""


def host_with(addresses: list[str], *, up: bool = True, routes: str = "[]") -> SimHost:
    text = HOST.format(up="true" if up else "false",
                       addresses="[" + ", ".join(f'"{a}"' for a in addresses) + "]",
                       routes=routes)
    return SimHost.from_text(text)


def route4(host: SimHost) -> set[tuple[str, str, str, int]]:
    """(iface, dest/len, gateway, metric) from proc/net/route (little-endian hex)."""
    def ip(h: str) -> ipaddress.IPv4Address:
        return ipaddress.IPv4Address(int(h, 16).to_bytes(4, "little"))
    out = set()
    for line in host.read_text("proc/net/route").splitlines()[1:]:
        f = line.split()
        net = ipaddress.IPv4Network(f"{ip(f[1])}/{ip(f[7])}")
        out.add((f[0], str(net), str(ip(f[2])), int(f[6])))
    return out


def route6(host: SimHost) -> set[tuple[str, str, str, int]]:
    out = set()
    for line in host.read_text("proc/net/ipv6_route").splitlines():
        f = line.split()
        assert len(f) == 10
        dest = ipaddress.IPv6Address(bytes.fromhex(f[0]))
        gw = ipaddress.IPv6Address(bytes.fromhex(f[4]))
        out.add((f[9], f"{dest}/{int(f[1], 16)}", str(gw), int(f[5], 16)))
    return out


def inet6(host: SimHost) -> set[tuple[str, str, int, int]]:
    """(iface, address, prefixlen, scope bits) from proc/net/if_inet6."""
    out = set()
    for line in host.read_text("proc/net/if_inet6").splitlines():
        f = line.split()
        out.add((f[5], str(ipaddress.IPv6Address(bytes.fromhex(f[0]))), int(f[2], 16),
                 int(f[3], 16)))
    return out


LO = [IfAddress("lo", socket.AF_INET, "127.0.0.1", 8, 254),
      IfAddress("lo", socket.AF_INET6, "::1", 128, 254)]


def test_addresses_scopes_and_dump_order() -> None:
    host = host_with(["10.99.1.1/32", "2001:db8::5/64", "fe80::1/64", "10.98.0.5/24",
                      "fec0::7/64", "127.0.0.2/8", "10.97.0.1/24 noprefixroute"])
    assert host.ip_addresses() == [
        LO[0],
        IfAddress("eth0", socket.AF_INET, "10.99.1.1", 32, 0),
        IfAddress("eth0", socket.AF_INET, "10.98.0.5", 24, 0),
        IfAddress("eth0", socket.AF_INET, "127.0.0.2", 8, 254),
        IfAddress("eth0", socket.AF_INET, "10.97.0.1", 24, 0),
        LO[1],
        IfAddress("eth0", socket.AF_INET6, "2001:db8::5", 64, 0),
        IfAddress("eth0", socket.AF_INET6, "fe80::1", 64, 253),
        IfAddress("eth0", socket.AF_INET6, "fec0::7", 64, 200),
    ]
    # fib_add_ifaddr: a prefix route per address, but not for /32 or noprefixroute
    assert route4(host) == {("eth0", "10.98.0.0/24", "0.0.0.0", 0),
                            ("eth0", "127.0.0.0/8", "0.0.0.0", 0)}
    assert route6(host) == {("eth0", "2001:db8::/64", "::", 256),
                            ("eth0", "fe80::/64", "::", 256),
                            ("eth0", "fec0::/64", "::", 256)}
    assert inet6(host) == {("lo", "::1", 128, 0x10), ("eth0", "2001:db8::5", 64, 0x00),
                           ("eth0", "fe80::1", 64, 0x20), ("eth0", "fec0::7", 64, 0x40)}


def test_declared_routes_ipv6_too() -> None:
    host = host_with(["2001:db8::5/64"], routes='[{ dest = "::/0", gateway = "fe80::1" }, '
                     '{ dest = "0.0.0.0/0", gateway = "192.0.2.1", metric = 50 }]')
    assert ("eth0", "::/0", "fe80::1", 1024) in route6(host)
    assert route4(host) == {("eth0", "0.0.0.0/0", "192.0.2.1", 50)}
    line = next(ln for ln in host.read_text("proc/net/ipv6_route").splitlines()
                if ln.startswith("0" * 32 + " 00"))
    assert line.split()[8] == "00000003"                        # RTF_UP | RTF_GATEWAY


def test_a_down_interface_keeps_ipv4_addresses_only_and_has_no_routes() -> None:
    host = host_with(["192.0.2.7/24", "2001:db8::5/64"], up=False)
    assert host.ip_addresses() == [LO[0], IfAddress("eth0", socket.AF_INET,
                                                     "192.0.2.7", 24, 0), LO[1]]
    assert route4(host) == set() and route6(host) == set()


def test_unbind_destroys_the_interface_and_rebind_brings_it_back_bare(tmp_path: Path
                                                                      ) -> None:
    path = tmp_path / "h.toml"
    path.write_text(HOST.format(up="true", addresses='["192.0.2.7/24"]', routes="[]"))
    host = SimHost.from_file(path)
    host.write(DRV / "e1000e/unbind", NIC)
    assert host.ip_addresses() == LO and route4(host) == set()
    host.write(DRV / "e1000e/bind", NIC)
    assert host.exists(DEV / NIC / "net/eth0")
    assert host.read_text(DEV / NIC / "net/eth0/operstate") == "down\n"
    again = SimHost.from_file(path)                           # saved: down, unconfigured
    assert again.ip_addresses() == LO and route4(again) == set()


def test_bundled_nics_in_use_have_their_addresses() -> None:
    for name, ifname, addr in (("workstation", "enp4s0", "192.168.1.23/24"),
                               ("sriov-server", "eno1", "10.0.0.10/24")):
        host = SimHost.bundled(name)
        got = {(a.ifname, f"{a.address}/{a.prefixlen}", a.scope)
               for a in host.ip_addresses()}
        assert (ifname, addr, 0) in got
        # the address's network is routed through the interface, as on the real host
        net = str(ipaddress.ip_interface(addr).network)
        assert any(r[0] == ifname and r[1] == net for r in route4(host))


@pytest.mark.parametrize(("addresses", "words"), [
    ('["224.0.0.1/4"]', "multicast"),
    ('["10.0.0.1/33"]', "is not an IPv4 or IPv6 address"),
    ('["10.0.0.1/24 noprefix"]', "must look like"),
    ('["10.0.0.1/24", "10.0.0.1/16"]', "given twice"),
    ('"10.0.0.1/24"', "addresses must be an array"),
    ('[1]', "addresses[0] must be a string"),
    ('["::ffff:10.0.0.1/96"]', "IPv4-mapped"),
])
def test_bad_addresses_are_config_errors(tmp_path: Path, addresses: str, words: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "h.toml"
    path.write_text(HOST.format(up="true", addresses=addresses, routes="[]"))
    assert main(["--host", f"sim:{path}", "list"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err and "0000:01:00.0" in err


_v4 = st.builds(lambda a, p: f"{ipaddress.IPv4Address(a)}/{p}",
                st.integers(0x01000000, 0xDFFFFFFF), st.integers(1, 32))
_v6 = st.builds(lambda a, p: f"{ipaddress.IPv6Address(a)}/{p}",
                st.integers(1 << 125, (1 << 128) - (1 << 120) - 1), st.integers(1, 128))


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.one_of(_v4, _v6), st.booleans()), max_size=6,
                unique_by=lambda t: ipaddress.ip_interface(t[0]).ip))
def test_procfs_agrees_with_the_addresses(entries: list[tuple[str, bool]]) -> None:
    addrs = [a + (" noprefixroute" if npr else "") for a, npr in entries]
    host = host_with(addrs)
    mine = [a for a in host.ip_addresses() if a.ifname == "eth0"]
    assert [(a.address, a.prefixlen) for a in mine] == sorted(
        ((str(ipaddress.ip_interface(a).ip), ipaddress.ip_interface(a).network.prefixlen)
         for a, _ in entries), key=lambda t: ipaddress.ip_address(t[0]).version)
    expect4, expect6 = set(), set()
    for a, npr in entries:
        iface = ipaddress.ip_interface(a)
        if npr:
            continue
        if iface.version == 4 and iface.network.prefixlen < 32 and \
                iface.network.network_address not in ipaddress.ip_network("0.0.0.0/8"):
            expect4.add(("eth0", str(iface.network), "0.0.0.0", 0))
        if iface.version == 6:
            expect6.add(("eth0", str(iface.network), "::", 256))
    assert route4(host) == expect4 and route6(host) == expect6
    assert {(n, a, p) for n, a, p, _ in inet6(host) if n == "eth0"} == {
        ("eth0", a.address, a.prefixlen) for a in mine if a.family == socket.AF_INET6}


def test_state_remembers_unconfigured_interfaces(tmp_path: Path) -> None:
    path = tmp_path / "ws.toml"
    path.write_text(bundled_text("workstation"))
    host = SimHost.from_file(path)
    host.write(DRV / "igb/unbind", "0000:04:00.0")
    assert "net_configured = false" in path.read_text()
