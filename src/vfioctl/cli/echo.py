"""Making echoed values safe to print: one line, no terminal control, bounded length.

Error messages quote what the user gave (an address, an attribute value, a file name).
Printed verbatim, a newline would turn one error into several lines that scripts and
libvirt (which shows a hook's first line) misread, an ESC sequence or a bidi override
(U+202E) would rewrite what the terminal shows, and a 200,000-character argument would
make a 200 KB line. Every error line goes through :func:`one_line` before it is printed.
"""

from __future__ import annotations

import unicodedata
from typing import Final

#: A run of non-blank characters longer than this is cut in the middle.
MAX_RUN: Final = 120
#: The whole line is never longer than this.
MAX_LINE: Final = 2000
_KEEP: Final = 48


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _shorten(run: str) -> str:
    if len(run) <= MAX_RUN:
        return run
    return f"{run[:_KEEP]}…[{len(run) - 2 * _KEEP} more characters]…{run[-_KEEP:]}"


def one_line(text: str) -> str:
    """``text`` with control and format characters escaped (``\\x1b``, ``\\u202e``;
    newlines too) and over-long runs shortened; plain text is returned unchanged."""
    if text.isascii() and text.isprintable() and len(text) <= MAX_RUN:
        return text
    chars = []
    for ch in text:
        if ch == " " or (ch.isprintable() and unicodedata.category(ch) not in
                         ("Cf", "Zl", "Zp")):
            chars.append(ch)
        else:
            chars.append(_escape(ch))
    out = " ".join(_shorten(run) for run in "".join(chars).split(" "))
    if len(out) > MAX_LINE:
        out = out[:MAX_LINE - 1] + "…"
    return out
