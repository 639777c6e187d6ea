"""Config: libvirt domain XML for PCI hostdevs — parse, validate, format (pure, no host).

``lxml`` is imported only when a document is parsed, so importing this package is cheap.
"""

from __future__ import annotations

from pathlib import Path

from vfioctl.conf.dialect import (
    DEFAULT_LIBVIRT,
    LIBVIRT_DIALECTS,
    LibvirtDialect,
    libvirt_dialect,
)
from vfioctl.conf.hostdev import DomainDef, GuestPciAddress, HostdevDef, RomDef
from vfioctl.conf.parse import DomainDocument, parse_file, parse_string
from vfioctl.conf.validate import validate_domain


def load_domain(path: str | Path, *,
                libvirt: str | LibvirtDialect | None = None) -> DomainDocument:
    """Parse and validate a domain XML file (the two config passes, as in libvirt),
    by the rules of libvirt release ``libvirt`` (None: the newest measured one).

    Raises:
        XmlError: malformed or invalid XML, with file:line.
        UnsupportedConfig: a hostdev kind or backend vfioctl does not handle.
    """
    doc = parse_file(path, libvirt=libvirt)
    validate_domain(doc.domain)
    return doc


__all__ = [
    "DEFAULT_LIBVIRT",
    "LIBVIRT_DIALECTS",
    "DomainDef",
    "DomainDocument",
    "GuestPciAddress",
    "HostdevDef",
    "LibvirtDialect",
    "RomDef",
    "libvirt_dialect",
    "load_domain",
    "parse_file",
    "parse_string",
    "validate_domain",
]
