"""Config: libvirt domain XML for PCI hostdevs — parse, validate, format (pure, no host).

``lxml`` is imported only when a document is parsed, so importing this package is cheap.
"""

from __future__ import annotations

from pathlib import Path

from vfioctl.conf.hostdev import DomainDef, GuestPciAddress, HostdevDef, RomDef
from vfioctl.conf.parse import DomainDocument, parse_file, parse_string
from vfioctl.conf.validate import validate_domain


def load_domain(path: str | Path) -> DomainDocument:
    """Parse and validate a domain XML file (the two config passes, as in libvirt).

    Raises:
        XmlError: malformed or invalid XML, with file:line.
        UnsupportedConfig: a hostdev kind or backend vfioctl does not handle.
    """
    doc = parse_file(path)
    validate_domain(doc.domain)
    return doc


__all__ = [
    "DomainDef",
    "DomainDocument",
    "GuestPciAddress",
    "HostdevDef",
    "RomDef",
    "load_domain",
    "parse_file",
    "parse_string",
    "validate_domain",
]
