"""Config: numbers in domain XML, read the way libvirt's ``virStrToLong_*`` read them.

libvirt hands every numeric attribute and element to C's ``strtol``/``strtoul``
family: leading C-locale whitespace and a ``+`` are accepted, anything after the
digits (trailing blanks included) is not, only ASCII digits count, and a value beyond
the C type is an error. Python's ``int()`` differs on each point (it strips trailing
and Unicode whitespace, reads Unicode digits such as ``²`` or ``６``, and refuses
strings of thousands of digits with a ``ValueError``), so none of the parsing below
calls ``int()`` on anything that has not been checked first.

Functions return None for "not a number of that kind"; callers word the error.
"""

from __future__ import annotations

INT_MAX = 2**31 - 1
INT_MIN = -(2**31)
UINT_MAX = 2**32 - 1
ULLONG_MAX = 2**64 - 1
LLONG_MAX = 2**63 - 1

_C_SPACE = " \t\n\v\f\r"
_DIGITS = {8: frozenset("01234567"), 10: frozenset("0123456789"),
           16: frozenset("0123456789abcdefABCDEF")}
# More significant digits than any 64-bit value has in base 8: past this the value
# overflows whatever C type libvirt reads it into.
_MAX_DIGITS = 23


def _strto(text: str, base: int, *, lowest: int, highest: int, minus: bool) -> int | None:
    s = text.lstrip(_C_SPACE)
    negative = s[:1] == "-"
    if s[:1] in ("+", "-"):
        s = s[1:]
    if negative and not minus:
        return None
    if base in (0, 16) and s[:2] in ("0x", "0X") and s[2:3] and s[2] in _DIGITS[16]:
        s, base = s[2:], 16
    elif base == 0:
        base = 8 if s[:1] == "0" else 10
    digits = _DIGITS[base]
    if not s or any(c not in digits for c in s):
        return None
    significant = s.lstrip("0") or "0"
    if len(significant) > _MAX_DIGITS:
        return None
    value = int(significant, base)
    if negative:
        value = -value
    return value if lowest <= value <= highest else None


def parse_uint(text: str, base: int = 0, *, maximum: int = UINT_MAX) -> int | None:
    """An unsigned number as ``virStrToLong_uip`` reads it (a minus sign is refused).

    Args:
        text: the attribute value or element text, as the document has it.
        base: 0 (``0x`` hex, leading-``0`` octal, else decimal), 8, 10 or 16.
        maximum: the largest value the C type holds (``UINT_MAX`` by default).
    """
    return _strto(text, base, lowest=0, highest=maximum, minus=False)


def parse_int(text: str, base: int = 10) -> int | None:
    """A signed ``int`` as ``virStrToLong_i`` reads it (``INT_MIN`` … ``INT_MAX``)."""
    return _strto(text, base, lowest=INT_MIN, highest=INT_MAX, minus=True)


# libvirt's virScaleInteger: the unit is case-insensitive; a bare letter or a letter
# followed by "iB" is a power of 1024, a letter followed by "B" a power of 1000.
_UNIT_POWER = {"k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6}
_BINARY = {letter: 1 << (10 * power) for letter, power in _UNIT_POWER.items()}
_DECIMAL = {letter: int(10 ** (3 * power)) for letter, power in _UNIT_POWER.items()}


def unit_scale(unit: str | None, default: int) -> int | None:
    """Bytes per unit for a ``unit='…'`` attribute; ``default`` when it is absent or
    empty; None for a unit libvirt does not know."""
    if not unit:
        return default
    if not unit.isascii():  # C's tolower: 'K' (U+212A KELVIN SIGN) is not 'k'
        return None
    low = unit.lower()
    if low in ("b", "byte", "bytes"):
        return 1
    letter, rest = low[0], low[1:]
    if letter not in _UNIT_POWER:
        return None
    if rest in ("", "ib"):
        return _BINARY[letter]
    if rest == "b":
        return _DECIMAL[letter]
    return None
