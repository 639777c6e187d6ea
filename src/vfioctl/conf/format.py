"""Config: :class:`HostdevDef` -> libvirt-style XML, and whole documents (xml2xml).

A hostdev is written the way libvirt 9.0's ``virDomainHostdevDefFormat`` writes it:
single-quoted attributes, children in the order driver, source, boot, alias, rom,
address, numbers as ``0x%04x``/``0x%02x``. Everything outside ``<hostdev>`` elements is
copied byte for byte from the input text (lxml would re-quote attributes and lose the
author's layout), so a document round-trips unless one of its hostdevs was not already
canonical.
"""

from __future__ import annotations

import re

from vfioctl.conf.hostdev import GuestPciAddress, HostdevDef
from vfioctl.conf.parse import DomainDocument
from vfioctl.errors import InternalError
from vfioctl.secret import REDACTED, VfToken

"""What a VF token is replaced by unless the caller asks to reveal it."""

_INDENT = "  "


def _q(value: str) -> str:
    """An attribute value in single quotes, escaped like libvirt's virBufferEscapeString."""
    out = (value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
           .replace("'", "&apos;").replace('"', "&quot;"))
    return f"'{out}'"


def _guest_address(addr: GuestPciAddress) -> str:
    text = (f"<address type='pci' domain='0x{addr.domain:04x}' bus='0x{addr.bus:02x}' "
            f"slot='0x{addr.slot:02x}' function='0x{addr.function:x}'")
    if addr.multifunction is not None:
        text += f" multifunction='{'on' if addr.multifunction else 'off'}'"
    return text + "/>"


def format_hostdev(hd: HostdevDef, *, indent: str = "", reveal: bool = False) -> str:
    """One ``<hostdev>`` element as libvirt would format it, without a trailing newline.

    Args:
        hd: the hostdev.
        indent: the indentation of the ``<hostdev>`` line; children get two more spaces.
        reveal: write the VF token itself instead of :data:`REDACTED`.
    """
    i1, i2, i3 = indent + _INDENT, indent + 2 * _INDENT, indent + 3 * _INDENT
    lines = [f"<hostdev mode='subsystem' type='pci' managed='{'yes' if hd.managed else 'no'}'>"]
    if hd.driver_name is not None or hd.driver_model is not None or hd.driver_group is not None:
        attrs = ""
        if hd.driver_name is not None:
            attrs += f" name={_q(hd.driver_name)}"
        if hd.driver_model is not None:
            attrs += f" model={_q(hd.driver_model)}"
        if hd.driver_group is not None:
            attrs += f" group={_q(hd.driver_group)}"
        lines.append(f"{i1}<driver{attrs}/>")
    src = hd.source
    addr = (f"<address domain='0x{src.domain:04x}' bus='0x{src.bus:02x}' "
            f"slot='0x{src.slot:02x}' function='0x{src.function:x}'")
    lines.append(f"{i1}<source>")
    if hd.vf_token is None:
        lines.append(f"{i2}{addr}/>")
    elif isinstance(hd.vf_token, VfToken):
        # A secret the file already had in clear: printed back only on request.
        token = hd.vf_token.reveal() if reveal else REDACTED
        lines += [f"{i2}{addr}>", f"{i3}<vf-token uuid={_q(token)}/>", f"{i2}</address>"]
    else:
        # A reference stays a reference: a stored token is never written into XML.
        lines += [f"{i2}{addr}>", f"{i3}<vf-token/>", f"{i2}</address>"]
    lines.append(f"{i1}</source>")
    if hd.boot_order is not None:
        lines.append(f"{i1}<boot order='{hd.boot_order}'/>")
    if hd.alias is not None:
        lines.append(f"{i1}<alias name={_q(hd.alias)}/>")
    if hd.rom is not None:
        rom = hd.rom
        attrs = ""
        if rom.enabled is not None:
            attrs += f" enabled='{'yes' if rom.enabled else 'no'}'"
        if rom.bar is not None:
            attrs += f" bar='{'on' if rom.bar else 'off'}'"
        if rom.file is not None:
            attrs += f" file={_q(rom.file)}"
        lines.append(f"{i1}<rom{attrs}/>")
    if hd.guest_address is not None:
        lines.append(f"{i1}{_guest_address(hd.guest_address)}")
    lines.append(f"{indent}</hostdev>")
    return "\n".join(lines)


# A small XML tokenizer, enough to find where each <domain><devices><hostdev> starts and
# ends in the original text: comments, CDATA, PIs and the DOCTYPE are skipped whole, and
# quoted attribute values may contain '>'. The DOCTYPE's internal subset may hold
# comments, PIs and quoted literals with ']' or '>' in them (the text is well-formed:
# lxml parsed it first, so the first way to match is the right one).
_INTERNAL_SUBSET = r"""\[(?:<!--.*?-->|<\?.*?\?>|"[^"]*"|'[^']*'|[^\]"'])*\]"""
_TOKEN = re.compile(
    r"<!--.*?-->"
    r"|<!\[CDATA\[.*?\]\]>"
    r"|<\?.*?\?>"
    r"""|<!DOCTYPE(?:[^\[>"']|"[^"]*"|'[^']*'|""" + _INTERNAL_SUBSET + r")*>"
    r"|</\s*(?P<end>[^\s>]+)\s*>"
    r"|<(?P<start>[^\s/>!?]+)(?:[^>\"']|\"[^\"]*\"|'[^']*')*?(?P<empty>/?)>",
    re.S,
)


def _hostdev_spans(text: str) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    stack: list[str] = []
    begin = -1
    for m in _TOKEN.finditer(text):
        if m.group("start"):
            name = m.group("start")
            is_hostdev = name == "hostdev" and stack == ["domain", "devices"]
            if m.group("empty"):
                if is_hostdev:
                    spans.append((m.start(), m.end()))
                continue
            if is_hostdev:
                begin = m.start()
            stack.append(name)
        elif m.group("end"):
            if stack:
                stack.pop()
            if m.group("end") == "hostdev" and stack == ["domain", "devices"] and begin >= 0:
                spans.append((begin, m.end()))
                begin = -1
    return spans


def format_document(doc: DomainDocument, *, reveal: bool = False) -> str:
    """The domain document with every PCI hostdev rewritten canonically.

    Args:
        doc: the parsed document.
        reveal: keep VF tokens instead of writing :data:`REDACTED`.

    Raises:
        InternalError: if the hostdevs found in the text do not match the parsed ones.
    """
    source_text = doc.text
    spans = _hostdev_spans(source_text)
    if len(spans) != len(doc.domain.hostdevs):
        raise InternalError(
            f"found {len(spans)} <hostdev> elements in the text of {doc.domain.file} but "
            f"parsed {len(doc.domain.hostdevs)}")
    out: list[str] = []
    pos = 0
    for (start, end), hd in zip(spans, doc.domain.hostdevs, strict=True):
        line_start = source_text.rfind("\n", 0, start) + 1
        prefix = source_text[line_start:start]
        indent = prefix if prefix.strip() == "" else ""
        out.append(source_text[pos:start])
        out.append(format_hostdev(hd, indent=indent, reveal=reveal))
        pos = end
    out.append(source_text[pos:])
    return "".join(out)
