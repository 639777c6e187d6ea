"""Interface addresses: read from the running kernel over netlink, or from a snapshot file.

procfs has no per-interface IPv4 address list (``/proc/net/route`` shows routes, and an
address added as ``/32`` or with ``noprefixroute`` has none), so the running kernel is
asked directly: one ``RTM_GETADDR`` dump and one ``RTM_GETLINK`` dump over an
``AF_NETLINK``/``NETLINK_ROUTE`` socket, through pyroute2. Dumps need no privilege. The
import is deferred to the first call, so commands that never look at addresses (``list``,
``--help``) do not pay for it.

A snapshot keeps what the live host reported in :data:`ADDRESSES_FILE` at its top level,
JSON::

    {"format": 1,
     "addresses": [{"ifname": "eth0", "family": "inet", "address": "192.0.2.2",
                    "prefixlen": 24, "scope": 0}, ...]}

``family`` is ``inet`` or ``inet6``; ``scope`` is the kernel's ``ifa_scope`` (0 global,
200 site, 253 link, 254 host). The list is in the order the kernel dumped it.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import socket
from typing import Any

from vfioctl.host.base import IfAddress

ADDRESSES_FILE = "vfioctl-addresses.json"
FORMAT = 1
_FAMILIES: dict[str, int] = {"inet": socket.AF_INET, "inet6": socket.AF_INET6}
_FAMILY_NAMES: dict[int, str] = {number: name for name, number in _FAMILIES.items()}


class NetlinkUnavailable(Exception):
    """The kernel could not be asked (no pyroute2, no netlink socket, a refused dump)."""


def read_netlink() -> list[IfAddress]:
    """Every IPv4/IPv6 address of the network namespace this process runs in.

    Raises:
        NetlinkUnavailable: pyroute2 is missing, the socket cannot be opened (a sandbox
            without netlink, a seccomp filter) or a dump failed; the caller falls back
            to what procfs shows.
    """
    import asyncio  # deferred like pyroute2 (which imports it anyway): tens of ms
    import concurrent.futures

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _dump()
    # pyroute2's synchronous IPRoute drives an event loop of its own, which cannot run
    # inside a running one (a caller inside asyncio.run): dump from a worker thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(_dump).result()


def _dump() -> list[IfAddress]:
    try:
        from pyroute2 import IPRoute  # type: ignore[import-untyped]
    except ImportError as err:
        raise NetlinkUnavailable(f"pyroute2 is not installed: {err}") from err
    try:
        with IPRoute() as ipr:
            names = {link["index"]: link.get("IFLA_IFNAME") for link in ipr.get_links()}
            messages = list(ipr.get_addr())
    # pyroute2 reports a refused socket as OSError, a refused dump as its NetlinkError
    # (an Exception, not an OSError).
    except Exception as err:
        raise NetlinkUnavailable(f"netlink address dump failed: {err}") from err
    out = []
    for msg in messages:
        addr = from_message(msg, names)
        if addr is not None:
            out.append(addr)
    return out


def from_message(msg: Any, names: dict[int, str | None]) -> IfAddress | None:
    """One ``RTM_NEWADDR`` message as an :class:`IfAddress` (None: not IPv4/IPv6, or its
    interface vanished between the two dumps).

    ``IFA_LOCAL`` is the interface's own address; on a point-to-point link
    ``IFA_ADDRESS`` is the peer's, so it is only used when ``IFA_LOCAL`` is absent (IPv6
    sends only ``IFA_ADDRESS`` unless a peer is configured), as ``ip addr`` does.
    """
    family = msg["family"]
    if family not in _FAMILY_NAMES:
        return None
    ifname = names.get(msg["index"])
    address = msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS")
    if not ifname or not address:
        return None
    return IfAddress(ifname=ifname, family=family,
                     address=str(ipaddress.ip_address(address)),
                     prefixlen=int(msg["prefixlen"]), scope=int(msg["scope"]))


def dumps(addresses: list[IfAddress]) -> str:
    """The :data:`ADDRESSES_FILE` document for ``addresses``."""
    doc = {"format": FORMAT, "addresses": [
        {"ifname": a.ifname, "family": _FAMILY_NAMES[a.family], "address": a.address,
         "prefixlen": a.prefixlen, "scope": a.scope}
        for a in addresses]}
    return json.dumps(doc, indent=2) + "\n"


def loads(text: str) -> list[IfAddress]:
    """Parse an :data:`ADDRESSES_FILE` document.

    Raises:
        OSError: EINVAL when it is not such a document (a damaged snapshot), so callers
            that treat host reads as OSError-or-data handle it like an unreadable file.
    """
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"not format {FORMAT}")
        entries = doc["addresses"]
        if not isinstance(entries, list):
            raise ValueError("'addresses' is not a list")
        return [_entry(e) for e in entries]
    except (ValueError, KeyError, TypeError) as err:
        raise OSError(errno.EINVAL, f"{ADDRESSES_FILE} is malformed: {err}") from err


def _entry(entry: Any) -> IfAddress:
    ifname, address = entry["ifname"], entry["address"]
    prefixlen, scope = entry["prefixlen"], entry["scope"]
    if not isinstance(ifname, str) or not ifname or not isinstance(address, str):
        raise ValueError(f"bad entry {entry!r}")
    if type(prefixlen) is not int or type(scope) is not int or not 0 <= scope <= 255:
        raise ValueError(f"bad entry {entry!r}")
    family = _FAMILIES[entry["family"]]
    ip = ipaddress.ip_address(address)
    if ip.version != (4 if family == socket.AF_INET else 6) or \
            not 0 <= prefixlen <= ip.max_prefixlen:
        raise ValueError(f"bad entry {entry!r}")
    return IfAddress(ifname=ifname, family=family, address=str(ip), prefixlen=prefixlen,
                     scope=scope)
