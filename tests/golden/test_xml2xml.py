"""Golden: libvirt domain XML -> the same document with canonical hostdevs (xml2xml).

``<case>.out.xml`` holds the expected output; without one the output must equal the
input byte for byte. VF tokens are redacted in the output unless revealed. Outputs of
documents that use no vfioctl extension must also pass libvirt's ``virt-xml-validate``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from vfioctl.conf import parse_string, validate_domain
from vfioctl.conf.format import format_document

DATA = Path(__file__).parent.parent / "data" / "xml2xml"
CASES = sorted(p.stem for p in DATA.glob("*.xml") if not p.name.endswith(".out.xml"))
REGENERATE = os.environ.get("VFIOCTL_TEST_REGENERATE") == "1"


def convert(case: str, *, reveal: bool = False) -> str:
    src = DATA / f"{case}.xml"
    doc = parse_string(src.read_bytes(), filename=src.name)
    validate_domain(doc.domain)
    return format_document(doc, reveal=reveal)


@pytest.mark.parametrize("case", CASES)
def test_xml2xml(case: str) -> None:
    src = DATA / f"{case}.xml"
    out = DATA / f"{case}.out.xml"
    actual = convert(case)
    if REGENERATE:
        if actual == src.read_text():
            out.unlink(missing_ok=True)
        else:
            out.write_text(actual)
        return
    expected = out.read_text() if out.exists() else src.read_text()
    assert actual == expected, (
        f"{case}: output differs from {out.name if out.exists() else src.name}; "
        "VFIOCTL_TEST_REGENERATE=1 rewrites it")


@pytest.mark.parametrize("case", CASES)
def test_xml2xml_is_a_fixed_point(case: str) -> None:
    once = convert(case, reveal=True)
    doc = parse_string(once, filename=f"{case}.out.xml")
    assert format_document(doc, reveal=True) == once


def test_vf_token_redacted_unless_revealed() -> None:
    assert "00112233-4455-6677-8899-aabbccddeeff" not in convert("hostdev-vfio-vf-token")
    assert "<vf-token uuid='00112233-4455-6677-8899-aabbccddeeff'/>" in convert(
        "hostdev-vfio-vf-token", reveal=True)


# virt-xml-validate is a shell script around xmllint (Debian: libvirt-clients and
# libxml2-utils); without both there is no oracle to ask.
VIRT_XML_VALIDATE = shutil.which("virt-xml-validate") if shutil.which("xmllint") else None


@pytest.mark.skipif(VIRT_XML_VALIDATE is None,
                    reason="virt-xml-validate/xmllint not installed "
                    "(Debian: libvirt-clients, libxml2-utils)")
@pytest.mark.parametrize("case", [c for c in CASES
                                  if "vf-token" not in c and "group-allow" not in c])
def test_output_passes_virt_xml_validate(case: str, tmp_path: Path) -> None:
    assert VIRT_XML_VALIDATE is not None
    out = tmp_path / f"{case}.xml"
    out.write_text(convert(case))
    proc = subprocess.run([VIRT_XML_VALIDATE, str(out), "domain"], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(VIRT_XML_VALIDATE is None,
                    reason="virt-xml-validate/xmllint not installed "
                    "(Debian: libvirt-clients, libxml2-utils)")
@pytest.mark.parametrize("case", ["hostdev-vfio-vf-token", "hostdev-vfio-group-allow"])
def test_extensions_are_not_upstream_libvirt(case: str, tmp_path: Path) -> None:
    """vf-token and group='allow' are vfioctl extensions: libvirt's schema rejects them."""
    assert VIRT_XML_VALIDATE is not None
    out = tmp_path / f"{case}.xml"
    out.write_text(convert(case, reveal=True))
    proc = subprocess.run([VIRT_XML_VALIDATE, str(out), "domain"], capture_output=True,
                          text=True, check=False)
    assert proc.returncode != 0
