"""Interface addresses from netlink (pyroute2) and from a snapshot's addresses file.

The live reads are judged against iproute2 (``ip -json addr``), a netlink client that
shares no code with vfioctl; they only read this machine's network state.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vfioctl.host import ifaddr
from vfioctl.host.base import IfAddress
from vfioctl.host.linux import LinuxHost

# iproute2 prints these scopes by name (rt_scope_tables); others as numbers.
SCOPES = {"global": 0, "site": 200, "link": 253, "host": 254, "nowhere": 255}


def _ip_json_addresses() -> set[tuple[str, int, str, int, int]]:
    ip = shutil.which("ip")
    if ip is None:
        pytest.skip("no ip (iproute2) to compare with")
    proc = subprocess.run([ip, "-json", "addr", "show"], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        pytest.skip(f"ip -json addr failed here: {proc.stderr.strip()}")
    out = set()
    for link in json.loads(proc.stdout):
        for info in link.get("addr_info", []):
            family = {"inet": socket.AF_INET, "inet6": socket.AF_INET6}.get(info["family"])
            if family is None:
                continue
            scope = info.get("scope", "global")
            out.add((link["ifname"], family, str(ipaddress.ip_address(info["local"])),
                     int(info["prefixlen"]),
                     SCOPES[scope] if scope in SCOPES else int(scope)))
    return out


def _as_set(addresses: list[IfAddress]) -> set[tuple[str, int, str, int, int]]:
    return {(a.ifname, a.family, a.address, a.prefixlen, a.scope) for a in addresses}


def _netlink_or_skip() -> list[IfAddress]:
    try:
        return ifaddr.read_netlink()
    except ifaddr.NetlinkUnavailable as err:
        pytest.skip(f"no netlink here: {err}")


def test_live_host_reports_what_iproute2_reports() -> None:
    _netlink_or_skip()
    assert _as_set(LinuxHost("/").ip_addresses()) == _ip_json_addresses()


def test_live_read_works_inside_a_running_event_loop() -> None:
    """pyroute2's synchronous API runs an event loop of its own; a caller already inside
    asyncio.run (the QMP client's side of vfioctl) must still get the addresses."""
    plain = _netlink_or_skip()

    async def inside() -> list[IfAddress]:
        return LinuxHost("/").ip_addresses()

    assert _as_set(asyncio.run(inside())) == _as_set(plain)


def test_no_pyroute2_means_no_addresses_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyroute2", None)  # import pyroute2 -> ImportError
    with pytest.raises(ifaddr.NetlinkUnavailable, match="pyroute2 is not installed"):
        ifaddr.read_netlink()
    assert LinuxHost("/").ip_addresses() == []


@pytest.mark.parametrize("error", [OSError(errno.EPERM, "Operation not permitted"),
                                   OSError(errno.EAFNOSUPPORT, "no AF_NETLINK")],
                         ids=["EPERM", "EAFNOSUPPORT"])
def test_netlink_socket_refused_means_no_addresses(
        error: OSError, monkeypatch: pytest.MonkeyPatch) -> None:
    pyroute2 = pytest.importorskip("pyroute2")

    class Refused:
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise error

    monkeypatch.setattr(pyroute2, "IPRoute", Refused)
    assert LinuxHost("/").ip_addresses() == []


def test_netlink_dump_refused_means_no_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    pyroute2 = pytest.importorskip("pyroute2")
    from pyroute2.netlink.exceptions import NetlinkError

    class DumpRefused:
        def __enter__(self) -> DumpRefused:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def get_links(self) -> list[Any]:
            raise NetlinkError(errno.EPERM, "dump refused")

    monkeypatch.setattr(pyroute2, "IPRoute", DumpRefused)
    assert LinuxHost("/").ip_addresses() == []


# -- one RTM_NEWADDR message -------------------------------------------------------------
NAMES: dict[int, str | None] = {1: "lo", 4: "eth2"}


def msg(family: int, index: int, prefixlen: int, scope: int, **nla: str) -> dict[str, Any]:
    return {"family": family, "index": index, "prefixlen": prefixlen, "scope": scope, **nla}


@pytest.mark.parametrize("message,expected", [
    (msg(socket.AF_INET, 4, 32, 0, IFA_ADDRESS="10.99.1.1", IFA_LOCAL="10.99.1.1"),
     IfAddress("eth2", socket.AF_INET, "10.99.1.1", 32, 0)),
    # point-to-point: IFA_ADDRESS is the peer, IFA_LOCAL ours
    (msg(socket.AF_INET, 4, 32, 0, IFA_ADDRESS="10.99.9.9", IFA_LOCAL="10.99.1.1"),
     IfAddress("eth2", socket.AF_INET, "10.99.1.1", 32, 0)),
    # IPv6 sends IFA_ADDRESS only; the text is normalized to the compressed form
    (msg(socket.AF_INET6, 4, 64, 253, IFA_ADDRESS="FE80:0:0::1"),
     IfAddress("eth2", socket.AF_INET6, "fe80::1", 64, 253)),
    (msg(socket.AF_INET, 9, 24, 0, IFA_LOCAL="10.0.0.1"), None),  # link gone meanwhile
    (msg(socket.AF_PACKET, 4, 0, 0, IFA_ADDRESS="x"), None),
    (msg(socket.AF_INET, 4, 24, 0), None),  # no address attribute
], ids=["ipv4", "ipv4-peer", "ipv6", "vanished-link", "not-ip", "no-address"])
def test_from_message(message: dict[str, Any], expected: IfAddress | None) -> None:
    assert ifaddr.from_message(message, NAMES) == expected


# -- the snapshot file -------------------------------------------------------------------
def test_documented_format_is_read() -> None:
    text = json.dumps({"format": 1, "addresses": [
        {"ifname": "eth2", "family": "inet", "address": "10.99.1.1", "prefixlen": 32,
         "scope": 0},
        {"ifname": "eth2", "family": "inet6", "address": "2001:db8:0::1", "prefixlen": 64,
         "scope": 0}]})
    assert ifaddr.loads(text) == [IfAddress("eth2", socket.AF_INET, "10.99.1.1", 32, 0),
                                  IfAddress("eth2", socket.AF_INET6, "2001:db8::1", 64, 0)]


@pytest.mark.parametrize("text", [
    "", "[]", '{"format": 2, "addresses": []}', '{"format": 1}',
    '{"format": 1, "addresses": {}}', '{"format": 1, "addresses": ["eth0"]}',
    '{"format": 1, "addresses": [{"ifname": "eth0", "family": "inet", "address": "::1", '
    '"prefixlen": 8, "scope": 0}]}',
    '{"format": 1, "addresses": [{"ifname": "eth0", "family": "inet", "address": '
    '"10.0.0.1", "prefixlen": 33, "scope": 0}]}',
    '{"format": 1, "addresses": [{"ifname": "eth0", "family": "ipx", "address": '
    '"10.0.0.1", "prefixlen": 8, "scope": 0}]}',
    '{"format": 1, "addresses": [{"ifname": "eth0", "family": "inet", "address": '
    '"10.0.0.1", "prefixlen": true, "scope": 0}]}',
    '{"format": 1, "addresses": [{"ifname": "", "family": "inet", "address": '
    '"10.0.0.1", "prefixlen": 8, "scope": 0}]}',
], ids=lambda t: t[:40] or "empty")
def test_malformed_file_is_einval(text: str) -> None:
    with pytest.raises(OSError) as info:
        ifaddr.loads(text)
    assert info.value.errno == errno.EINVAL


@given(st.text())
def test_any_text_parses_or_is_einval(text: str) -> None:
    try:
        result = ifaddr.loads(text)
    except OSError as err:
        assert err.errno == errno.EINVAL
    else:
        assert all(isinstance(a, IfAddress) for a in result)


_v4 = st.builds(lambda ip, n: (socket.AF_INET, str(ip), n),
                st.ip_addresses(v=4), st.integers(0, 32))
_v6 = st.builds(lambda ip, n: (socket.AF_INET6, str(ip), n),
                st.ip_addresses(v=6), st.integers(0, 128))
_addr = st.builds(lambda name, fam, scope: IfAddress(name, fam[0], fam[1], fam[2], scope),
                  st.text(st.characters(codec="utf-8", exclude_characters="\x00"),
                          min_size=1, max_size=15),
                  st.one_of(_v4, _v6), st.integers(0, 255))


@given(st.lists(_addr, max_size=8))
def test_written_file_reads_back(addresses: list[IfAddress]) -> None:
    assert ifaddr.loads(ifaddr.dumps(addresses)) == addresses


def test_tree_without_file_has_no_addresses(tmp_path: Path) -> None:
    assert LinuxHost(tmp_path).ip_addresses() == []


def test_tree_with_damaged_file_raises_oserror(tmp_path: Path) -> None:
    (tmp_path / ifaddr.ADDRESSES_FILE).write_text("{")
    with pytest.raises(OSError) as info:
        LinuxHost(tmp_path).ip_addresses()
    assert info.value.errno == errno.EINVAL


# -- cost --------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [["--help"], ["--host", "sim:q35-vmtest", "list"],
                                  ["--host", "sim:q35-vmtest", "groups"]])
def test_commands_that_need_no_addresses_do_not_import_pyroute2(argv: list[str]) -> None:
    code = ("import sys, io, contextlib; from vfioctl.cli.main import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    rc = main({argv!r})\n"
            "print(rc, 'pyroute2' in sys.modules, 'asyncio' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["0", "False", "False"]
