"""conf.format: the text scanner that finds hostdevs for xml2xml agrees with lxml even
when a DOCTYPE's internal subset hides something that looks like a hostdev."""

from __future__ import annotations

import pytest

from vfioctl.conf import parse_string, validate_domain
from vfioctl.conf.format import format_document

BODY = """<domain type='kvm'>
  <name>d</name>
  <devices>
    <hostdev mode='subsystem' type='pci' managed='yes'>
      <source>
        <address domain='0x0000' bus='0x06' slot='0x00' function='0x0'/>
      </source>
    </hostdev>
  </devices>
</domain>
"""


@pytest.mark.parametrize("doctype", [
    "<!DOCTYPE domain [<!-- ]><domain><devices><hostdev/> -->]>\n",
    "<!DOCTYPE domain [<?pi ]><domain><devices><hostdev/> ?>]>\n",
    "<!DOCTYPE domain [<!ATTLIST x y CDATA ']>'><!ELEMENT x ANY>]>\n",
    "<!DOCTYPE domain SYSTEM 'a>b.dtd'>\n",
])
def test_doctype_contents_are_not_hostdevs(doctype: str) -> None:
    text = doctype + BODY.replace("managed='yes'", "managed='no'")
    doc = parse_string(text, filename="d.xml")
    validate_domain(doc.domain)
    out = format_document(doc)
    # the one real hostdev is rewritten (managed='no' is canonical), the DOCTYPE kept
    assert out == text
    assert len(doc.domain.hostdevs) == 1
