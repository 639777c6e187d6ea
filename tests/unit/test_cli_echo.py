"""Echoed values are safe to print: whatever a user passes, an error is one line with no
terminal control characters and a bounded length (property tests through the CLI)."""

from __future__ import annotations

import io
import unicodedata
from contextlib import redirect_stderr, redirect_stdout

from hypothesis import given, settings
from hypothesis import strategies as st

from vfioctl.cli.echo import MAX_LINE, MAX_RUN, one_line
from vfioctl.cli.main import main

EXIT_CODES = {0, 1, 2, 3, 4, 5, 6, 77}


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def printable_line(text: str) -> bool:
    return all(ch == " " or (ch.isprintable() and unicodedata.category(ch) not in
                             ("Cf", "Zl", "Zp")) for ch in text)


def test_known_hostile_inputs() -> None:
    assert one_line("0000:01:00.\x1b[2J\n0") == "0000:01:00.\\x1b[2J\\x0a0"
    assert one_line("evil\u202etxt.exe") == "evil\\u202etxt.exe"
    shortened = one_line("a" * 200_000)
    assert len(shortened) < 200 and "199904 more characters" in shortened
    assert one_line("plain text stays") == "plain text stays"


@given(st.text(max_size=400))
def test_one_line_is_one_printable_bounded_line(text: str) -> None:
    out = one_line(text)
    assert "\n" not in out and "\r" not in out
    assert printable_line(out)
    assert len(out) <= MAX_LINE
    assert all(len(run) <= MAX_RUN + 60 for run in out.split(" "))


@settings(max_examples=60, deadline=None)
@given(address=st.one_of(st.text(max_size=60), st.from_regex(
    r"[0-9a-fA-F]{0,5}:?[0-9a-fA-F]{0,3}:[0-9a-fA-F]{0,3}\.[0-9a-f]{0,2}", fullmatch=True)),
    command=st.sampled_from(["show", "explain", "sriov"]))
def test_any_address_gives_one_line_or_an_answer(address: str, command: str) -> None:
    if address.startswith("-"):
        address = "x" + address
    code, _out, err = run("--host", "sim:workstation", command, address)
    assert code in EXIT_CODES, err
    assert "Traceback" not in err
    if code != 0:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("vfioctl: error: "), err
        assert printable_line(lines[0])


@settings(max_examples=60, deadline=None)
@given(text=st.one_of(st.text(max_size=80), st.uuids().map(str),
                      st.uuids().map(lambda u: u.hex)))
def test_any_uuid_argument_is_refused_or_taken_without_echoing_it(text: str) -> None:
    if text.startswith("-"):
        text = "x" + text
    code, _out, err = run("--host", "sim:workstation", "token", "set", "0000:01:00.0",
                         "--uuid", text)
    assert code in EXIT_CODES and "Traceback" not in err
    lines = [ln for ln in err.splitlines() if not ln.startswith("vfioctl: warning:")]
    assert len(lines) == 1
    if len(text.strip()) >= 8:
        assert text.strip() not in lines[0], "a near-miss token is never echoed"
