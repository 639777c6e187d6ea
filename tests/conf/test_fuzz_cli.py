"""Fuzz: mutated domain XML through the CLI, in-process, for every XML-reading command.

Two valid domains (data/fuzz-*.xml, both start cleanly on a copy of sim:sriov-server)
are mutated the way an adversarial reviewer would: odd, huge and Unicode numbers in
every numeric attribute and element, control characters and entities around values,
duplicated, removed and unknown elements and attributes, foreign namespaces,
comments/PIs/CDATA in odd places, and DOCTYPEs carrying entity bombs, external
entities and tricky internal subsets. Each document goes through ``validate``,
``xml2xml``, ``xml2argv --qemu-version 8.1`` and ``start --dry-run`` on a simulated
host, and must give:

* an exit code from the documented set (0, 2 usage, 3 config/XML, 4 not found,
  5 refused by state), never 70 (internal error) or anything else;
* on failure exactly one line on stderr, starting ``vfioctl: error:``, no traceback;
* for ``start --dry-run``, a host file byte-identical afterwards, and no state or
  runtime directory.

Deterministic (derandomize, no example database) and bounded in time.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from vfioctl.cli.main import main
from vfioctl.sim.loader import bundled_text

HERE = Path(__file__).parent
BASES = [p.read_text() for p in sorted((HERE / "data").glob("fuzz-*.xml"))]
HOST_TEXT = bundled_text("sriov-server")
ALLOWED_EXIT = {0, 2, 3, 4, 5}

# Attributes and element texts that hold numbers, by element name.
NUMERIC_ATTRS = {
    "address": ("domain", "bus", "slot", "function"),
    "boot": ("order",),
    "controller": ("index",),
    "target": ("chassisNr", "chassis", "port"),
    "vcpu": ("current",),
}
NUMERIC_TEXT = ("memory", "currentMemory", "vcpu")
WORD_ATTRS = {
    "domain": ("type",),
    "type": ("arch", "machine"),
    "hostdev": ("mode", "type", "managed"),
    "driver": ("name", "group"),
    "vf-token": ("uuid",),
    "alias": ("name",),
    "rom": ("bar", "enabled", "file"),
    "address": ("type", "multifunction"),
    "memory": ("unit",),
    "controller": ("type", "model"),
}
WORD_TEXT = ("name", "emulator")

# Raw XML text spliced into a value: character references, entities, raw control
# characters (not well-formed: a syntax error is a fine answer), bidi overrides.
DECOR = st.sampled_from(["", "", "", " ", "\t", "&#10;", "&#9;", "&#13;", "&#x85;",
                         "&#x2028;", "&#x202e;", "\u202e", "&amp;", "&lt;", "&#0;",
                         "\x01", "\x7f", "&undefined;", "&#xFFFE;"])
NUMBERS = st.one_of(
    st.sampled_from(["0", "1", "01", "010", "09", "0x", "0X1f", "00x6", "+1", "-0", "-1",
                     " 1", "1 ", "", "0x100000000", "4294967295", "4294967296",
                     "2147483647", "2147483648", "9223372036854775807",
                     "18446744073709551616", "1e3", "1.0", "0b1", "0o7", "1_000"]),
    st.integers(-(2**70), 2**70).map(str),
    st.integers(0, 2**40).map(hex),
    st.integers(20, 6000).map(lambda n: "9" * n),       # thousands of digits
    st.integers(1, 6000).map(lambda n: "0" * n + "7"),  # long, but a small value
    st.text(alphabet="0123456789²³¹٣६６𝟗x", min_size=1, max_size=6),  # Unicode digits
)
WORDS = st.one_of(
    st.sampled_from(["", "yes", "no", "on", "off", "YES", "pci", "usb", "vfio", "kvm",
                     "allow", "subsystem", "capabilities", "pc", "q35", "virt", "x86_64",
                     "qemu", "xen", "ua-x", "ua-", "hostdev0", "KiB", "MiB", "parsecs",
                     "\u212aiB", "pci-bridge", "pcie-root-port", "pci-root",
                     "bd3c9d7a-2fbb-4c1e-9c2e-6b6a2f3c1d10",
                     "{bd3c9d7a-2fbb-4c1e-9c2e-6b6a2f3c1d10}",
                     "bd3c9d7a2fbb4c1e9c2e6b6a2f3c1d10", "/usr/bin/qemu-system-x86_64",
                     "a/b", ".", ".."]),
    st.text(alphabet="aZ09-_./ é\u202e", max_size=8),
)
RAW_VALUES = st.tuples(DECOR, NUMBERS | WORDS, DECOR).map("".join)

PROLOGUES = [
    "",
    "<?xml version='1.0' encoding='UTF-8'?>\n",
    "<?xml version='1.0' encoding='ISO-8859-1'?>\n",
    "<!DOCTYPE domain>\n",
    "<!DOCTYPE domain SYSTEM 'file:///etc/passwd'>\n",
    "<!DOCTYPE domain [<!ENTITY x SYSTEM 'file:///etc/passwd'>]>\n",
    "<!DOCTYPE domain [<!ENTITY % p SYSTEM 'file:///etc/passwd'> %p;]>\n",
    "<!DOCTYPE domain [<!ENTITY n '64'>]>\n",
    "<!DOCTYPE domain [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;&a;&a;&a;&a;'>"
    "<!ENTITY c '&b;&b;&b;&b;&b;&b;&b;&b;'><!ENTITY d '&c;&c;&c;&c;&c;&c;&c;&c;'>"
    "<!ENTITY e '&d;&d;&d;&d;&d;&d;&d;&d;'><!ENTITY f '&e;&e;&e;&e;&e;&e;&e;&e;'>]>\n",
    "<!DOCTYPE domain [<!-- ]><domain><devices><hostdev/> -->]>\n",
    "<!DOCTYPE domain [<?pi ]><domain><devices><hostdev/> ?>]>\n",
    "<!DOCTYPE domain [<!ATTLIST hostdev managed CDATA 'yes'>]>\n",
]
# Entity uses that go with the DOCTYPEs above (also tried without them).
ENTITY_USES = ["&x;", "&n;", "&f;", "&p;"]

Draw = Callable[[st.SearchStrategy[Any]], Any]


class Doc:
    """A document being mutated: the lxml tree, raw text to splice in for markers, and
    text-level edits applied after serialisation."""

    def __init__(self, text: str) -> None:
        self.root = etree.fromstring(text.encode())
        self.raw: dict[str, str] = {}
        self.edits: list[tuple[str, str]] = []

    def marker(self, raw: str) -> str:
        key = f"@@{len(self.raw)}@@"
        self.raw[key] = raw
        return key

    def elements(self) -> list[Any]:
        return [el for el in self.root.iter() if isinstance(el.tag, str)]

    def serialise(self) -> str:
        text = etree.tostring(self.root, encoding="unicode")
        for key, raw in self.raw.items():
            text = text.replace(key, raw)
        for old, new in self.edits:
            text = text.replace(old, new, 1)
        return text


def _pick(draw: Draw, items: list[Any]) -> Any:
    return items[draw(st.integers(0, len(items) - 1))] if items else None


def _set_value(draw: Draw, doc: Doc, attrs: dict[str, tuple[str, ...]],
               texts: tuple[str, ...], values: st.SearchStrategy[str]) -> None:
    slots = [(el, a) for el in doc.elements() for a in attrs.get(el.tag, ())]
    slots += [(el, None) for el in doc.elements() if el.tag in texts]
    slot = _pick(draw, slots)
    if slot is None:
        return
    el, attr = slot
    value = doc.marker(draw(values))
    if attr is None:
        for child in list(el):
            el.remove(child)
        el.text = value
    else:
        el.set(attr, value)


def m_number(draw: Draw, doc: Doc) -> None:
    _set_value(draw, doc, NUMERIC_ATTRS, NUMERIC_TEXT, RAW_VALUES)


def m_word(draw: Draw, doc: Doc) -> None:
    _set_value(draw, doc, WORD_ATTRS, WORD_TEXT, RAW_VALUES)


def m_duplicate(draw: Draw, doc: Doc) -> None:
    el = _pick(draw, doc.elements()[1:])
    if el is not None:
        el.addnext(copy.deepcopy(el))


def m_remove_element(draw: Draw, doc: Doc) -> None:
    el = _pick(draw, doc.elements()[1:])
    if el is not None:
        el.getparent().remove(el)


def m_remove_attr(draw: Draw, doc: Doc) -> None:
    slot = _pick(draw, [(el, a) for el in doc.elements() for a in el.attrib])
    if slot is not None:
        del slot[0].attrib[slot[1]]


def m_unknown(draw: Draw, doc: Doc) -> None:
    el = _pick(draw, doc.elements())
    kind = draw(st.sampled_from(["attr", "nsattr", "child", "text", "comment", "pi",
                                 "cdata", "entity"]))
    if kind == "attr":
        el.set(draw(st.sampled_from(["bogus", "index", "unit", "current", "group"])),
               doc.marker(draw(RAW_VALUES)))
    elif kind == "nsattr":
        el.set("{urn:x}a", "1")
    elif kind == "child":
        el.insert(0, etree.Element(draw(st.sampled_from(
            ["bogus", "source", "address", "vf-token", "teaming", "model", "target",
             "hostdev", "devices", "memory"]))))
    elif kind == "text":
        el.text = doc.marker(draw(RAW_VALUES)) + (el.text or "")
    elif kind == "comment":
        el.insert(0, etree.Comment(" ]]> <hostdev/> "))
    elif kind == "pi":
        el.insert(0, etree.ProcessingInstruction("pi", "]><hostdev>"))
    elif kind == "cdata":
        el.text = etree.CDATA("<hostdev mode='subsystem' type='pci'/>]]")
    else:
        el.text = doc.marker(draw(st.sampled_from(ENTITY_USES))) + (el.text or "")


def m_namespace(draw: Draw, doc: Doc) -> None:
    el = _pick(draw, [el for el in doc.elements() if not el.tag.startswith("{")])
    if el is None:
        return
    tag = el.tag
    if draw(st.booleans()):
        doc.edits.append((f"<{tag}", f"<{tag} xmlns='urn:x'"))
    else:
        el.tag = etree.QName("urn:x", tag).text


MUTATIONS: list[Callable[[Draw, Doc], None]] = [
    m_number, m_number, m_number, m_word, m_word, m_duplicate, m_duplicate,
    m_remove_element, m_remove_attr, m_unknown, m_namespace,
]


@st.composite
def documents(draw: Draw) -> bytes:
    doc = Doc(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 3))):
        draw(st.sampled_from(MUTATIONS))(draw, doc)
    prologue = draw(st.just("") | st.sampled_from(PROLOGUES))
    text = prologue + doc.serialise()
    return text.encode()


def _run(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(args)
    return rc, out.getvalue(), err.getvalue()


def _check(what: str, rc: int, err: str, xml: bytes) -> None:
    shown = xml.decode("utf-8", "replace")[:3000]
    assert rc in ALLOWED_EXIT, f"{what}: exit {rc}\n{err}\n{shown}"
    assert "Traceback" not in err, f"{what}: traceback\n{err}\n{shown}"
    if rc != 0:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("vfioctl: error: "), (
            f"{what}: exit {rc}, stderr is not one error line: {err!r}\n{shown}")


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(xml=documents())
def test_mutated_domain_xml_is_one_line_error_or_success(xml: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        src = tmp / "guest.xml"
        src.write_bytes(xml)
        host = tmp / "h.toml"
        host.write_text(HOST_TEXT)
        before = host.read_bytes()
        runtime = tmp / "xdg"
        runtime.mkdir(mode=0o700)
        env = {"XDG_RUNTIME_DIR": str(runtime), "VFIOCTL_CACHE_DIR": str(tmp / "cache")}
        with mock.patch.dict(os.environ, env):
            os.environ.pop("VFIOCTL_HOST", None)
            for args in (["validate", str(src)],
                         ["xml2xml", str(src)],
                         ["xml2argv", str(src), "--qemu-version", "8.1"],
                         ["--host", f"sim:{host}", "start", str(src), "--dry-run",
                          "--qemu", "/usr/bin/qemu-system-x86_64", "--qemu-version", "8.1"]):
                rc, _, err = _run(args)
                _check(args[2] if args[0] == "--host" else args[0], rc, err, xml)
        assert host.read_bytes() == before, "start --dry-run changed the host file"
        assert not (tmp / "h.toml.state").exists(), "start --dry-run made a state dir"
        assert not any(runtime.iterdir()), "start --dry-run made a runtime dir"


def test_bases_are_valid_everywhere() -> None:
    """The fuzz bases themselves pass every command (else mutations test little)."""
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        host = tmp / "h.toml"
        host.write_text(HOST_TEXT)
        with mock.patch.dict(os.environ, {"XDG_RUNTIME_DIR": tmp_name}):
            for i, text in enumerate(BASES):
                src = tmp / f"base{i}.xml"
                src.write_text(text)
                for args in (["validate", str(src)], ["xml2xml", str(src)],
                             ["xml2argv", str(src), "--qemu-version", "8.1"],
                             ["--host", f"sim:{host}", "start", str(src), "--dry-run",
                              "--qemu-version", "8.1", "--ignore-untranslated"]):
                    rc, _, err = _run(args)
                    # a VF token written in the file is warned about, nothing else said
                    assert rc == 0 and all(
                        ln.startswith("vfioctl: warning: ") and "written in the file" in ln
                        for ln in err.splitlines()), (args, err)
