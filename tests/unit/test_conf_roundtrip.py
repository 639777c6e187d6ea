"""conf: format_hostdev -> parse is the identity (hypothesis), and parsing details."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vfioctl.address import PciAddress
from vfioctl.conf import parse_string
from vfioctl.conf.format import format_hostdev
from vfioctl.conf.hostdev import FROM_STORE, GuestPciAddress, HostdevDef, RomDef
from vfioctl.conf.parse import _strtoul
from vfioctl.errors import XmlError
from vfioctl.secret import VfToken

tristate = st.none() | st.booleans()
hostdevs = st.builds(
    HostdevDef,
    source=st.builds(PciAddress, st.integers(0, 0xFFFF), st.integers(0, 0xFF),
                     st.integers(0, 0x1F), st.integers(0, 7)),
    managed=st.booleans(),
    driver_name=st.sampled_from([None, "vfio"]),
    driver_group=st.sampled_from([None, "allow"]),
    vf_token=st.none() | st.just(FROM_STORE) | st.uuids().map(VfToken),
    boot_order=st.none() | st.integers(1, 1000),
    alias=st.none() | st.from_regex(r"ua-[A-Za-z0-9_-]{1,12}", fullmatch=True),
    rom=st.none() | st.builds(RomDef, bar=tristate,
                              file=st.none() | st.text("ab/'&<>\" .é", min_size=1),
                              enabled=st.just(None)),
    guest_address=st.none() | st.builds(GuestPciAddress, st.just(0), st.integers(0, 0xFF),
                                        st.integers(1, 0x1F), st.integers(0, 7), tristate),
)


@settings(max_examples=60, deadline=None)
@given(hostdevs)
def test_format_then_parse_is_identity(hd: HostdevDef) -> None:
    xml = ("<domain><devices>\n" + format_hostdev(hd, indent="    ", reveal=True)
           + "\n</devices></domain>")
    parsed = parse_string(xml, filename="x.xml").domain.hostdevs[0]
    assert parsed == hd


def test_repr_hides_token() -> None:
    token = VfToken.generate()
    hd = HostdevDef(source=PciAddress(0, 6, 0x12, 5), vf_token=token)
    assert token.reveal() not in repr(hd) and token.reveal() not in str(hd)


def test_a_stored_token_is_never_written_into_xml() -> None:
    hd = HostdevDef(source=PciAddress(0, 6, 0x12, 5), vf_token=FROM_STORE)
    for reveal in (False, True):
        assert "<vf-token/>" in format_hostdev(hd, indent="", reveal=reveal)


@pytest.mark.parametrize(("text", "value"), [("0x1f", 31), ("12", 12), ("010", 8), ("0", 0)])
def test_strtoul_base0(text: str, value: int) -> None:
    assert _strtoul(text) == value


def test_unparseable_number_names_attribute() -> None:
    xml = ("<domain><devices><hostdev mode='subsystem' type='pci'><source>"
           "<address bus='zz'/></source></hostdev></devices></domain>")
    with pytest.raises(XmlError, match=r"x.xml:1: Cannot parse <address> 'bus' attribute"):
        parse_string(xml, filename="x.xml")
