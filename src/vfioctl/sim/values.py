"""Simulator: typed reads of host-file values, each error naming the key and what it takes.

A host file is user input, often hand-edited and sometimes hostile: TOML hands back
whatever it was given (a datetime where a name belongs, ``nan`` or ``1e400`` where a
number belongs, a table where a list belongs). Every value the loader uses goes through
one of these readers, so a wrong one becomes a :class:`ConfigError` (exit 3) that says
where it is, which key, what it got and what is allowed — never a ``TypeError`` deep in
the kernel model.

``where`` names the entry (``device #4 (0000:03:00.0)``, ``[state] devices.0000:03:00.0``)
and is the start of the message.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping, Sequence
from typing import Any

from vfioctl.errors import ConfigError

HINT = "see docs/simulator.md for the host format"
MISSING: Any = object()

# A name the kernel uses as one path component (driver, interface, block device, module):
# no '/', no whitespace or control characters, not '.' or '..'.
_COMPONENT = re.compile(r"^[A-Za-z0-9_.:+@-]+$")


def err(where: str, msg: str, hint: str = HINT) -> ConfigError:
    return ConfigError(f"{where}: {msg}", hint=hint)


def describe(value: object) -> str:
    """How a wrong value is shown: its TOML type and a short repr."""
    kind = {bool: "a boolean", int: "an integer", float: "a float", str: "a string",
            list: "an array", dict: "a table"}.get(type(value))
    if kind is None and isinstance(value, (datetime.date, datetime.time)):
        kind = "a date/time"
    text = value.isoformat() if isinstance(value, (datetime.date, datetime.time)) \
        else repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{kind or type(value).__name__} {text}" if kind != "a table" else "a table"


def table(value: object, where: str, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise err(where, f"{what} must be a table, got {describe(value)}")
    return value


def known(t: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    unknown = sorted(set(t) - set(allowed))
    if unknown:
        raise err(where, f"unknown key(s) {', '.join(unknown)} (allowed: "
                  f"{', '.join(allowed)})")


def get_bool(t: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
    value = t.get(key, default)
    if not isinstance(value, bool):
        raise err(where, f"{key} must be true or false, got {describe(value)}")
    return value


def as_int(value: object, where: str, key: str, lo: int, hi: int) -> int:
    """An integer in ``lo..hi`` (booleans and floats are not integers here)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise err(where, f"{key} must be an integer {lo}..{hi}, got {describe(value)}")
    if not lo <= value <= hi:
        raise err(where, f"{key} = {value} is out of range (allowed: {lo}..{hi})")
    return value


def get_int(t: Mapping[str, Any], key: str, where: str, lo: int, hi: int,
            default: int = MISSING) -> int:
    if key not in t:
        if default is MISSING:
            raise err(where, f"{key} is required (an integer {lo}..{hi})")
        return int(default)
    return as_int(t[key], where, key, lo, hi)


def as_str(value: object, where: str, key: str, *, max_len: int = 4096,
           one_line: bool = True) -> str:
    """A string without NUL (and, ``one_line``, without newlines or other control
    characters), at most ``max_len`` characters."""
    if not isinstance(value, str):
        raise err(where, f"{key} must be a string, got {describe(value)}")
    if len(value) > max_len:
        raise err(where, f"{key} is {len(value)} characters long (at most {max_len})")
    if "\0" in value or (one_line and any(ord(c) < 0x20 or ord(c) == 0x7F
                                          for c in value)):
        raise err(where, f"{key} = {value!r} contains control characters")
    return value


def get_str(t: Mapping[str, Any], key: str, where: str, default: str = MISSING, *,
            max_len: int = 4096, one_line: bool = True) -> str:
    if key not in t:
        if default is MISSING:
            raise err(where, f"{key} is required (a string)")
        return str(default)
    return as_str(t[key], where, key, max_len=max_len, one_line=one_line)


def as_name(value: object, where: str, key: str, what: str, *, max_len: int = 64,
            empty: bool = False) -> str:
    """A kernel object name used as one path component (``e1000e``, ``enp3s0``)."""
    s = as_str(value, where, key, max_len=max_len)
    if s == "" and empty:
        return s
    if not _COMPONENT.match(s) or s in (".", ".."):
        raise err(where, f"{key} = {s!r} is not a valid {what} (letters, digits and "
                  f"_.:+@-, at most {max_len} characters)")
    return s


def get_list(t: Mapping[str, Any], key: str, where: str, what: str) -> list[Any]:
    value = t.get(key, [])
    if not isinstance(value, list):
        raise err(where, f"{key} must be an array of {what}, got {describe(value)}")
    return value


def str_list(t: Mapping[str, Any], key: str, where: str, what: str) -> list[str]:
    out = []
    for i, item in enumerate(get_list(t, key, where, what)):
        out.append(as_str(item, where, f"{key}[{i}]"))
    return out


def tables(value: object, where: str, key: str) -> list[Mapping[str, Any]]:
    """A table or an array of tables (``net = {...}`` or ``net = [{...}, {...}]``)."""
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
        return value
    raise err(where, f"{key} must be a table or an array of tables, got {describe(value)}")
