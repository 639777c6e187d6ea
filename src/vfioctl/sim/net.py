"""Simulator: network interfaces — their addresses, routes, and what procfs and netlink show.

A NIC function carries interfaces (``net = {...}`` in the host file) while a kernel
driver is bound. Each has a name, a MAC, whether it is up, its routes and its addresses
(``addresses = ["192.0.2.7/24", "fe80::1/64", "10.99.1.1/32 noprefixroute"]``).

What the kernel derives from them, as ``fib_add_ifaddr`` (net/ipv4/fib_frontend.c) and
``addrconf_prefix_route`` (net/ipv6/addrconf.c) do:

- an IPv4 address installs the prefix route of its network (metric 0), except with
  ``noprefixroute``, for a ``/32`` and for a network in 0.0.0.0/8; an IPv6 address
  installs its prefix route (metric 256), except with ``noprefixroute``;
- routes exist only while the interface is up: ``proc/net/route`` (IPv4, main table) and
  ``proc/net/ipv6_route`` list the declared routes plus the prefix routes;
- IPv4 addresses stay on a down interface; IPv6 ones are removed when it goes down
  (``addrconf_ifdown`` with the default ``keep_addr_on_down = 0``);
- the scope (``ifa_scope``) follows the address: 127.0.0.0/8 and ``::1`` host (254),
  ``fe80::/10`` link (253), ``fec0::/10`` site (200), everything else universe (0);
- ``lo`` (ifindex 1) always has 127.0.0.1/8 and ::1/128.

An interface whose driver was unbound is destroyed; a later bind creates it afresh, down
and without addresses (nothing in the simulator configures it again).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from vfioctl.host.base import IfAddress
from vfioctl.sim import values as v

IfAddr = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IpNet = ipaddress.IPv4Network | ipaddress.IPv6Network

RT_SCOPE_UNIVERSE, RT_SCOPE_SITE, RT_SCOPE_LINK, RT_SCOPE_HOST = 0, 200, 253, 254
# if_inet6's scope column: IPV6_ADDR_SCOPE_* bits of ipv6_addr_type()
_INET6_SCOPE_BITS = {RT_SCOPE_UNIVERSE: 0x00, RT_SCOPE_HOST: 0x10, RT_SCOPE_LINK: 0x20,
                     RT_SCOPE_SITE: 0x40}
IFA_F_PERMANENT = 0x80
RTF_UP, RTF_GATEWAY = 0x1, 0x2
IP6_RT_PRIO_ADDRCONF = 256
IP6_RT_PRIO_USER = 1024
IFNAMSIZ = 16
LOOPBACK = "lo"
ROUTE_HEADER = ("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU"
                "\tWindow\tIRTT")
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_METRIC_MAX = 0xFFFFFFFF


@dataclass(frozen=True)
class Route:
    """One route through an interface. ``gateway`` is the unspecified address (0.0.0.0,
    ``::``) for an on-link route."""

    dest: str = "0.0.0.0/0"
    gateway: str = "0.0.0.0"
    metric: int = 100

    @property
    def network(self) -> IpNet:
        return ipaddress.ip_network(self.dest)

    @property
    def version(self) -> int:
        return self.network.version


@dataclass(frozen=True)
class NetAddress:
    """An address configured on an interface (``ip addr add ADDR/LEN [noprefixroute]``)."""

    interface: IfAddr
    noprefixroute: bool = False

    @property
    def scope(self) -> int:
        ip = self.interface.ip
        if ip.is_loopback:
            return RT_SCOPE_HOST
        if ip.version == 6 and ip in _LINK6:
            return RT_SCOPE_LINK
        if ip.version == 6 and ip in _SITE6:
            return RT_SCOPE_SITE
        return RT_SCOPE_UNIVERSE

    def prefix_route(self) -> Route | None:
        """The route the kernel installs with this address, if any."""
        if self.noprefixroute:
            return None
        net = self.interface.network
        if net.version == 4:
            if net.prefixlen == 32 or net.network_address in _ZERONET:
                return None
            return Route(str(net), "0.0.0.0", 0)
        return Route(str(net), "::", IP6_RT_PRIO_ADDRCONF)

    def __str__(self) -> str:
        return str(self.interface) + (" noprefixroute" if self.noprefixroute else "")


_LINK6 = ipaddress.IPv6Network("fe80::/10")
_SITE6 = ipaddress.IPv6Network("fec0::/10")
_ZERONET = ipaddress.IPv4Network("0.0.0.0/8")


@dataclass(frozen=True)
class NetIf:
    """A network interface a NIC function carries while its kernel driver is bound."""

    name: str
    up: bool = False
    routes: tuple[Route, ...] = ()
    mac: str = "52:54:00:12:34:56"
    addresses: tuple[NetAddress, ...] = ()

    def all_routes(self) -> list[Route]:
        """Declared routes, then the addresses' prefix routes (duplicates once)."""
        out = list(self.routes)
        for addr in self.addresses:
            r = addr.prefix_route()
            if r is not None and r not in out:
                out.append(r)
        return out


# -- parsing ----------------------------------------------------------------------------------

def parse_net(t: Mapping[str, Any], where: str) -> NetIf:
    """One ``net = {...}`` table."""
    where = f"{where} net"
    v.known(t, ("name", "up", "routes", "mac", "addresses"), where)
    if "name" not in t:
        raise v.err(where, "name is required (e.g. 'enp3s0')")
    name = v.as_name(t["name"], where, "name", "network interface name",
                     max_len=IFNAMSIZ - 1)
    if name == LOOPBACK:
        raise v.err(where, "name 'lo' is the loopback interface, which every host has")
    mac = v.get_str(t, "mac", where, "52:54:00:12:34:56")
    if not _MAC.match(mac):
        raise v.err(where, f"mac = {mac!r} must look like '52:54:00:12:34:56'")
    routes = tuple(_parse_route(r, f"{where} routes[{i}]")
                   for i, r in enumerate(v.get_list(t, "routes", where, "route tables")))
    addresses: list[NetAddress] = []
    for i, raw in enumerate(v.get_list(t, "addresses", where, "address strings")):
        addr = parse_address(raw, where, f"addresses[{i}]")
        if any(a.interface.ip == addr.interface.ip for a in addresses):
            raise v.err(where, f"address {addr.interface.ip} is given twice")
        addresses.append(addr)
    return NetIf(name, v.get_bool(t, "up", where, False), routes, mac.lower(),
                 tuple(addresses))


def parse_address(raw: object, where: str, key: str) -> NetAddress:
    """``"ADDR/LEN"`` or ``"ADDR/LEN noprefixroute"`` (no ``/LEN``: a host address)."""
    text = v.as_str(raw, where, key, max_len=100)
    words = text.split()
    if not words or any(w != "noprefixroute" for w in words[1:]):
        raise v.err(where, f"{key} = {text!r} must look like '192.0.2.7/24', "
                    "'fe80::1/64' or '10.99.1.1/32 noprefixroute'")
    try:
        iface = ipaddress.ip_interface(words[0])
    except ValueError:
        raise v.err(where, f"{key} = {text!r}: {words[0]!r} is not an IPv4 or IPv6 "
                    "address with an optional /prefix length") from None
    ip = iface.ip
    if ip.is_multicast or ip.is_unspecified or (ip.version == 6 and ip.ipv4_mapped):
        raise v.err(where, f"{key} = {text!r}: a multicast, unspecified or IPv4-mapped "
                    "address cannot be configured on an interface (the kernel answers "
                    "EINVAL)")
    return NetAddress(iface, noprefixroute=len(words) > 1)


def _parse_route(r: object, where: str) -> Route:
    t = v.table(r, where, "a route")
    v.known(t, ("dest", "gateway", "metric"), where)
    dest_text = v.get_str(t, "dest", where, "0.0.0.0/0", max_len=100)
    try:
        dest = ipaddress.ip_network(dest_text)
    except ValueError:
        raise v.err(where, f"dest = {dest_text!r} is not a network like '0.0.0.0/0', "
                    "'192.168.1.0/24' or '::/0' (no host bits set)") from None
    unspec = "0.0.0.0" if dest.version == 4 else "::"
    gw_text = v.get_str(t, "gateway", where, unspec, max_len=100)
    try:
        gw = ipaddress.ip_address(gw_text)
    except ValueError:
        raise v.err(where, f"gateway = {gw_text!r} is not an IP address") from None
    if gw.version != dest.version:
        raise v.err(where, f"gateway {gw} and dest {dest} are of different families")
    metric = v.get_int(t, "metric", where, 0, _METRIC_MAX,
                       100 if dest.version == 4 else IP6_RT_PRIO_USER)
    return Route(str(dest), str(gw), metric)


# -- what the kernel shows --------------------------------------------------------------------

@dataclass(frozen=True)
class LiveIf:
    """An interface as it exists now: its index, whether it is up and configured."""

    ifindex: int
    net: NetIf
    up: bool
    configured: bool

    def addresses(self, version: int) -> list[NetAddress]:
        if not self.configured or (version == 6 and not self.up):
            return []
        return [a for a in self.net.addresses if a.interface.version == version]


def _loopback() -> LiveIf:
    lo = NetIf(LOOPBACK, True, (), "00:00:00:00:00:00", (
        NetAddress(ipaddress.ip_interface("127.0.0.1/8")),
        NetAddress(ipaddress.ip_interface("::1/128"))))
    return LiveIf(1, lo, True, True)


def ip_addresses(live: Iterable[LiveIf]) -> list[IfAddress]:
    """What an ``RTM_GETADDR`` dump returns: IPv4 for every interface, then IPv6, each
    family in ifindex order (``lo`` first)."""
    ifs = [_loopback(), *sorted(live, key=lambda i: i.ifindex)]
    out = []
    for version, family in ((4, socket.AF_INET), (6, socket.AF_INET6)):
        for i in ifs:
            for a in i.addresses(version):
                out.append(IfAddress(i.net.name, family, str(a.interface.ip),
                                     a.interface.network.prefixlen, a.scope))
    return out


def _le_hex(addr: str) -> str:
    return f"{int.from_bytes(ipaddress.IPv4Address(addr).packed, 'little'):08X}"


def proc_route(live: Iterable[LiveIf]) -> str:
    """``proc/net/route``: the IPv4 routes of the main table, of interfaces that are up."""
    lines = [f"{ROUTE_HEADER:<127}"]
    for i in sorted(live, key=lambda i: i.ifindex):
        if not i.up:
            continue
        for r in i.net.all_routes():
            if r.version != 4:
                continue
            netw = ipaddress.IPv4Network(r.dest)
            flags = RTF_UP | (RTF_GATEWAY if r.gateway != "0.0.0.0" else 0)
            row = (f"{i.net.name}\t{_le_hex(str(netw.network_address))}\t"
                   f"{_le_hex(r.gateway)}\t{flags:04X}\t0\t0\t{r.metric}\t"
                   f"{_le_hex(str(netw.netmask))}\t0\t0\t0")
            lines.append(f"{row:<127}")
    return "\n".join(lines) + "\n"


def proc_ipv6_route(live: Iterable[LiveIf]) -> str:
    """``proc/net/ipv6_route`` (``ipv6_route_native_seq_show``): dest, plen, src, plen,
    next hop, metric, refcnt, use, flags, device; of interfaces that are up."""
    lines = []
    zero = "0" * 32
    for i in sorted(live, key=lambda i: i.ifindex):
        if not i.up:
            continue
        for r in i.net.all_routes():
            if r.version != 6:
                continue
            netw = ipaddress.IPv6Network(r.dest)
            gw = ipaddress.IPv6Address(r.gateway)
            flags = RTF_UP | (RTF_GATEWAY if not gw.is_unspecified else 0)
            lines.append(f"{netw.network_address.packed.hex()} {netw.prefixlen:02x} "
                         f"{zero} 00 {gw.packed.hex()} {r.metric:08x} 00000001 00000000 "
                         f"{flags:08x} {i.net.name:>8}\n")
    return "".join(lines)


def proc_if_inet6(live: Iterable[LiveIf]) -> str:
    """``proc/net/if_inet6`` (``if6_seq_show``): address, ifindex, prefix length, scope
    bits, flags, name."""
    lines = []
    for i in [_loopback(), *sorted(live, key=lambda i: i.ifindex)]:
        for a in i.addresses(6):
            lines.append(f"{a.interface.ip.packed.hex()} {i.ifindex:02x} "
                         f"{a.interface.network.prefixlen:02x} "
                         f"{_INET6_SCOPE_BITS[a.scope]:02x} {IFA_F_PERMANENT:02x} "
                         f"{i.net.name:>8}\n")
    return "".join(lines)
