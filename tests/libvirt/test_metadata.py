"""vfioctl's <metadata> element: property tests of the parser (hypothesis), and the
rules it keeps."""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from vfioctl.address import PciAddress
from vfioctl.errors import XmlError
from vfioctl.libvirt.metadata import NAMESPACE, read_metadata

addresses = st.builds(lambda d, b, s, f: f"{d:04x}:{b:02x}:{s:02x}.{f:x}",
                      st.integers(0, 0xFFFF), st.integers(0, 0xFF), st.integers(0, 0x1F),
                      st.integers(0, 7))
entries = st.lists(st.tuples(addresses, st.booleans(), st.booleans()), max_size=6,
                   unique_by=lambda e: e[0])


def _doc(inner: str, top_attrs: str = "") -> etree._Element:
    return etree.fromstring(
        f"<domain><name>x</name><metadata><other xmlns='urn:someone-else'><a/></other>"
        f"<v:devices xmlns:v='{NAMESPACE}'{top_attrs}>{inner}</v:devices></metadata>"
        "</domain>")


def _line(addr: str, group: bool, token: bool) -> str:
    attrs = f" address={quoteattr(addr)}"
    attrs += " group='allow'" if group else ""
    attrs += " vf-token='stored'" if token else ""
    return f"<v:hostdev{attrs}/>"


@given(entries, st.booleans())
def test_valid_metadata_reads_back_what_was_written(
        items: list[tuple[str, bool, bool]], untrusted: bool) -> None:
    inner = "<!-- a comment -->".join(_line(*e) for e in items)
    top = " allow-untrusted-pf='yes'" if untrusted else ""
    meta = read_metadata(_doc(inner, top))
    assert meta.present and meta.allow_untrusted_pf is untrusted
    assert [(str(h.address), h.group_allow, h.token_from_store) for h in meta.hostdevs] == [
        (str(PciAddress.parse(a)), g, t) for a, g, t in items]


attr_values = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20)


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(["address", "group", "vf-token", "uuid", "managed"]),
                       attr_values, max_size=4))
def test_any_attributes_are_read_or_refused_with_an_xml_error(attrs: dict[str, str]) -> None:
    inner = "<v:hostdev" + "".join(f" {k}={quoteattr(v)}" for k, v in attrs.items()) + "/>"
    try:
        meta = read_metadata(_doc(inner))
    except XmlError as err:
        assert str(err).startswith("<string>:1: ")
        return
    (h,) = meta.hostdevs
    assert set(attrs) <= {"address", "group", "vf-token"}
    assert h.address == PciAddress.parse(attrs["address"])
    assert h.group_allow == (attrs.get("group") == "allow")
    assert h.token_from_store == (attrs.get("vf-token") == "stored")


@pytest.mark.parametrize("inner,message", [
    ("<v:hostdev address='0000:01:00.0'/><v:hostdev address='01:00.0'/>", "appears twice"),
    ("<v:hostdev/>", "without address"),
    ("<v:gpu address='0000:01:00.0'/>", "unknown element <gpu>"),
    ("<v:hostdev address='0000:01:00.0' vf-token='3f6c2a1e-8b4d-4c7a-9e2f-5d1b0a9c8e7f'/>",
     "a token is never written here"),
    ("<v:hostdev address='0000:01:00.0' group='yes'/>", "invalid group 'yes'"),
])
def test_refusals(inner: str, message: str) -> None:
    with pytest.raises(XmlError, match=message):
        read_metadata(_doc(inner))


def test_no_metadata_and_a_second_root() -> None:
    assert not read_metadata(etree.fromstring("<domain><name>x</name></domain>")).present
    doc = etree.fromstring(
        f"<domain><metadata><v:devices xmlns:v='{NAMESPACE}'/></metadata>"
        f"<metadata><v:devices xmlns:v='{NAMESPACE}'/></metadata></domain>")
    with pytest.raises(XmlError, match="appears twice"):
        read_metadata(doc)
    with pytest.raises(XmlError, match="invalid allow-untrusted-pf 'maybe'"):
        read_metadata(_doc("", " allow-untrusted-pf='maybe'"))
