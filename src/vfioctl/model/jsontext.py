"""JSON text exactly as ``json.dumps(doc, indent=2)`` writes it, in about half the time.

With ``indent`` set, the standard library falls back from its C encoder to the pure
Python one (generators and an ``isinstance`` chain per value): about a tenth of the
time of ``list --json`` on a host with thousands of functions. The documents here are
plain trees of dicts, lists, strings, ints, bools and None, so a direct recursive
writer with the C string escaper (the one ``json.dumps`` uses with its default
``ensure_ascii=True``) gives the same bytes. tests/unit/test_read_model.py
holds it to ``json.dumps`` on arbitrary documents.
"""

from __future__ import annotations

from json.encoder import encode_basestring_ascii as _escape
from typing import Any

_INDENT = "  "
# Escaped keys: documents repeat the same few keys thousands of times.
_KEYS: dict[str, str] = {}
_KEYS_MAX = 256


def dumps(doc: Any) -> str:
    """``json.dumps(doc, indent=2)``; TypeError for what ``json`` cannot encode either."""
    out: list[str] = []
    _write(doc, out, "\n")
    return "".join(out)


def _other(value: Any) -> str | None:
    """The text of a scalar the fast paths did not take, or None for a container."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (dict, list, tuple)):
        return None
    if isinstance(value, str):
        return _escape(value)
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return _float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


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
        return f'"{"true" if key else "false" if key is False else "null"}"'
    if isinstance(key, int):
        return f'"{int.__repr__(key)}"'
    if isinstance(key, float):
        return f'"{_float(key)}"'
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def _write(value: Any, out: list[str], newline: str) -> None:
    # Exact-type tests first (str, None, int, empty list: nearly every value of the
    # documents), the isinstance() chain of json's encoder only for the rest.
    kind = type(value)
    inner = newline + _INDENT
    if kind is dict:
        if not value:
            out.append("{}")
            return
        keys = _KEYS
        sep = "{" + inner
        for key, item in value.items():
            k = keys.get(key) if type(key) is str else None
            if k is None:
                k = _key(key)
                if type(key) is str and len(keys) < _KEYS_MAX:
                    keys[key] = k
            t = type(item)
            if t is str:
                out.append(f"{sep}{k}: {_escape(item)}")
            elif item is None:
                out.append(f"{sep}{k}: null")
            elif t is int:
                out.append(f"{sep}{k}: {int.__repr__(item)}")
            elif (t is list or t is tuple) and not item:
                out.append(f"{sep}{k}: []")
            else:
                text = _other(item)
                if text is not None:
                    out.append(f"{sep}{k}: {text}")
                else:
                    out.append(f"{sep}{k}: ")
                    _write(item, out, inner)
            sep = "," + inner
        out.append(newline + "}")
        return
    if kind is list or kind is tuple or isinstance(value, (list, tuple)):
        if not value:
            out.append("[]")
            return
        sep = "[" + inner
        for item in value:
            t = type(item)
            if t is str:
                out.append(sep + _escape(item))
            elif t is dict or t is list:
                out.append(sep)
                _write(item, out, inner)
            elif item is None:
                out.append(sep + "null")
            else:
                text = _other(item)
                if text is not None:
                    out.append(sep + text)
                else:
                    out.append(sep)
                    _write(item, out, inner)
            sep = "," + inner
        out.append(newline + "]")
        return
    if isinstance(value, dict):
        _write(dict(value), out, newline)
        return
    if value is None:
        out.append("null")
        return
    if kind is str:
        out.append(_escape(value))
        return
    if kind is int:
        out.append(int.__repr__(value))
        return
    text = _other(value)
    if text is None:  # a tuple or list subclass the checks above let through
        _write(list(value), out, newline)
        return
    out.append(text)


__all__ = ["dumps"]
