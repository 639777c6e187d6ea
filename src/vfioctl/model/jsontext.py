"""JSON text exactly as ``json.dumps(doc, indent=2)`` writes it, several times faster.

With ``indent`` set, the standard library falls back from its C encoder to the pure
Python one (generators and an ``isinstance`` chain per value), which cost more than all
the sysfs reads of ``list --json`` on a host with thousands of functions. The documents
here are plain trees of dicts, lists, strings, ints, bools and None, so a direct
recursive writer with the C string escaper (the one ``json.dumps`` uses with its
default ``ensure_ascii=True``) gives the same bytes. tests/unit/test_read_model.py
holds it to ``json.dumps`` on arbitrary documents.
"""

from __future__ import annotations

from json.encoder import encode_basestring_ascii as _escape
from typing import Any

_INDENT = "  "


def dumps(doc: Any) -> str:
    """``json.dumps(doc, indent=2)``; TypeError for what ``json`` cannot encode either."""
    out: list[str] = []
    _write(doc, out, "\n")
    return "".join(out)


def _scalar(value: Any) -> str | None:
    """The text of a scalar, or None when ``value`` is a container."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    kind = type(value)
    if kind is str:
        return _escape(value)
    if kind is int:
        return int.__repr__(value)
    if isinstance(value, (dict, list, tuple)):
        return None
    if isinstance(value, str):
        return _escape(value)
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return _float(value)
    raise TypeError(f"Object of type {kind.__name__} is not JSON serializable")


def _float(value: float) -> str:
    if value != value:
        return "NaN"
    if value == float("inf"):
        return "Infinity"
    if value == -float("inf"):
        return "-Infinity"
    return float.__repr__(value)


def _key(key: Any) -> str:
    """A dict key as ``json`` converts it (str as is; int, float, bool, None to text)."""
    if isinstance(key, str):
        return _escape(key)
    if key is True or key is False or key is None:
        return f'"{_scalar(key)}"'
    if isinstance(key, int):
        return f'"{int.__repr__(key)}"'
    if isinstance(key, float):
        return f'"{_float(key)}"'
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def _write(value: Any, out: list[str], newline: str) -> None:
    text = _scalar(value)
    if text is not None:
        out.append(text)
        return
    inner = newline + _INDENT
    if isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        sep = "{" + inner
        for key, item in value.items():
            text = _scalar(item)
            if text is not None:  # the common case, without a call per value
                out.append(f"{sep}{_key(key)}: {text}")
            else:
                out.append(f"{sep}{_key(key)}: ")
                _write(item, out, inner)
            sep = "," + inner
        out.append(newline + "}")
        return
    if not value:
        out.append("[]")
        return
    sep = "[" + inner
    for item in value:
        text = _scalar(item)
        if text is not None:
            out.append(sep + text)
        else:
            out.append(sep)
            _write(item, out, inner)
        sep = "," + inner
    out.append(newline + "]")


__all__ = ["dumps"]
