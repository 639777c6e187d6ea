"""conf.numbers: numbers read the way libvirt 9.0 reads them.

The tables come from libvirt 9.0.0 itself (Debian 12's virsh with the in-process test
driver, ``virsh -c test:///default define``; test_libvirt_oracle.py repeats such
runs live when virsh is installed): which attribute texts it accepts and what it
makes of them. The properties check the shapes on generated numbers.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vfioctl.conf.numbers import INT_MAX, UINT_MAX, parse_int, parse_uint, unit_scale

# <hostdev><source><address bus='…'>: virXMLPropUInt(…, base 0) in libvirt 9.0.
PCI_FIELD = [
    ("0x06", 6), (" 0x06", 6), ("+6", 6), ("0X6", 6), ("010", 8), ("4294967295", UINT_MAX),
    ("0x06 ", None), ("-0", None), ("-1", None), ("4294967296", None), ("00x6", None),
    ("09", None), ("６", None), ("0x", None), ("", None),
]
# <controller index='…'>: virXMLPropInt(…, base 10); negatives are refused later.
CONTROLLER_INDEX = [
    ("01", 1), ("010", 10), (" 1", 1), ("+1", 1), ("-0", 0), ("-1", -1),
    ("0x1", None), ("1 ", None), ("2147483648", None), ("", None), ("１", None),
]
# <memory>N</memory>: virStrToLong_ullp(…, base 10).
MEMORY = [
    (" 64", 64), ("+64", 64), ("0064", 64), ("9007199254740991", 9007199254740991),
    ("0x10", None), ("64 ", None), ("-1", None), ("6²", None), ("１２", None),
    ("99999999999999999999999", None),
]


@pytest.mark.parametrize(("text", "value"), PCI_FIELD)
def test_pci_address_fields_like_libvirt(text: str, value: int | None) -> None:
    assert parse_uint(text, 0) == value


@pytest.mark.parametrize(("text", "value"), CONTROLLER_INDEX)
def test_controller_index_like_libvirt(text: str, value: int | None) -> None:
    assert parse_int(text, 10) == value


@pytest.mark.parametrize(("text", "value"), MEMORY)
def test_memory_text_like_libvirt(text: str, value: int | None) -> None:
    assert parse_uint(text, 10, maximum=2**64 - 1) == value


@pytest.mark.parametrize(("unit", "scale"), [
    (None, 1024), ("", 1024), ("b", 1), ("byte", 1), ("BYTES", 1), ("k", 1024),
    ("KIB", 1024), ("kB", 1000), ("Kb", 1000), ("M", 1024**2), ("MB", 1000**2),
    ("GiB", 1024**3), ("TiB", 1024**4), ("PiB", 1024**5), ("EiB", 1024**6), ("E", 1024**6),
    (" k", None), ("parsecs", None), ("KiBs", None), ("x", None), ("\u212aiB", None),
])
def test_units_like_libvirt(unit: str | None, scale: int | None) -> None:
    assert unit_scale(unit, 1024) == scale


def test_thousands_of_digits_are_out_of_range_not_a_crash() -> None:
    # int() refuses more than 4300 digits with ValueError; libvirt says "out of range".
    assert parse_uint("9" * 5000) is None
    assert parse_int("-" + "9" * 5000) is None
    assert parse_uint("0" * 5000 + "7", 10) == 7


C_SPACE = st.text(alphabet=" \t\n\v\f\r", max_size=3)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(n=st.integers(0, 2**40), fmt=st.sampled_from(["{:d}", "0x{:x}", "0X{:X}", "0{:o}"]),
       lead=C_SPACE)
def test_written_numbers_read_back(n: int, fmt: str, lead: str) -> None:
    text = fmt.format(n)
    expected = n if n <= UINT_MAX else None
    assert parse_uint(lead + text, 0) == expected
    assert parse_uint(lead + "+" + text, 0) == expected
    assert parse_uint(text + " ", 0) is None  # trailing characters: never a number
    assert parse_uint("-" + text, 0) is None  # unsigned: a sign is refused, even -0


@settings(max_examples=200, deadline=None, derandomize=True)
@given(n=st.integers(-(2**40), 2**40))
def test_signed_decimal_read_back(n: int) -> None:
    assert parse_int(str(n)) == (n if -INT_MAX - 1 <= n <= INT_MAX else None)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(text=st.text(max_size=30))
def test_any_text_is_a_number_or_none(text: str) -> None:
    for value in (parse_uint(text, 0), parse_uint(text, 10), parse_int(text, 0)):
        assert value is None or isinstance(value, int)
    digits = text.strip(" \t\n\v\f\r+-")
    if not digits.isascii():
        # only ASCII digits count: '²', '６' and friends are never digits here
        assert parse_uint(text, 10) is None
