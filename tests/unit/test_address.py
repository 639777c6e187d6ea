"""PciAddress parsing and formatting (property-based)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vfioctl.address import PciAddress
from vfioctl.errors import UsageError

addresses = st.builds(
    PciAddress,
    domain=st.integers(0, 0xFFFF),
    bus=st.integers(0, 0xFF),
    slot=st.integers(0, 0x1F),
    function=st.integers(0, 7),
)


@given(addresses)
def test_format_parse_round_trip(addr: PciAddress) -> None:
    text = str(addr)
    assert len(text) == 12 and text == text.lower()
    assert PciAddress.parse(text) == addr
    assert PciAddress.parse(text.upper()) == addr


@given(addresses)
def test_nodedev_name_parses(addr: PciAddress) -> None:
    name = f"pci_{addr.domain:04x}_{addr.bus:02x}_{addr.slot:02x}_{addr.function}"
    assert PciAddress.parse(name) == addr


@given(addresses, addresses)
def test_order_is_numeric(a: PciAddress, b: PciAddress) -> None:
    key = lambda x: (x.domain, x.bus, x.slot, x.function)  # noqa: E731
    assert (a < b) == (key(a) < key(b))


def test_short_form_means_domain_zero() -> None:
    assert str(PciAddress.parse("1:0.0")) == "0000:01:00.0"


@pytest.mark.parametrize(
    "text",
    ["", "zz", "0000:zz:00.0", "0000:00:20.0", "0000:00:00.8", "00:00", "0000:00:00.0 ",
     "x0000:00:00.0", "0000:000:00.0", "pci_0000_00_00_8"],
)
def test_bad_addresses_are_usage_errors(text: str) -> None:
    if text.endswith(" "):  # surrounding blanks are forgiven, as shells leave them
        assert str(PciAddress.parse(text)) == "0000:00:00.0"
        return
    with pytest.raises(UsageError, match="is not a PCI address"):
        PciAddress.parse(text)


@given(st.text(max_size=20))
def test_parse_never_raises_anything_but_usage_error(text: str) -> None:
    try:
        addr = PciAddress.parse(text)
    except UsageError:
        return
    assert PciAddress.parse(str(addr)) == addr
