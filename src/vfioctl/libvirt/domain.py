"""Config: the domain XML libvirt hands its hooks, read into what vfioctl acts on.

libvirt gives a hook the domain's full XML on standard input (a live definition: with
``<uuid>``, aliases, and from ``start begin`` on, the DAC ``<seclabel>`` QEMU runs
under). vfioctl reads the PCI ``<hostdev>``s with the library's parser (other hostdev
kinds are libvirt's business and are left out before parsing), and merges vfioctl's
``<metadata>`` element (:mod:`vfioctl.libvirt.metadata`) into them: ``group='allow'``
and ``vf-token='stored'`` become the hostdev's ``driver_group`` and
:data:`~vfioctl.conf.hostdev.FROM_STORE`, as ``vfioctl start`` would read them from its
own extension. Pure: no host.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Final

from vfioctl.conf import DomainDef, HostdevDef, parse_string, validate_domain
from vfioctl.conf.hostdev import FROM_STORE
from vfioctl.errors import XmlError
from vfioctl.libvirt.metadata import DomainMeta, read_metadata

_UUID: Final = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                          r"[0-9a-fA-F]{12}")
_DAC_LABEL: Final = re.compile(r"\+?(\d+):\+?(\d+)")


@dataclass(frozen=True)
class LibvirtDomain:
    """A libvirt domain as vfioctl sees it: its identity, its PCI hostdevs with
    vfioctl's metadata merged in, and the user QEMU runs as (when libvirt said)."""

    name: str
    uuid: str
    domain: DomainDef
    meta: DomainMeta
    qemu_uid: int | None = None
    qemu_gid: int | None = None

    @property
    def owner(self) -> str:
        """Who holds the domain's devices in vfioctl's records: libvirt, the name and
        the UUID (a domain defined again under the same name is another owner)."""
        return f"libvirt:{self.name}:{self.uuid}"

    @property
    def hostdevs(self) -> tuple[HostdevDef, ...]:
        return self.domain.hostdevs

    @property
    def token_hostdevs(self) -> tuple[HostdevDef, ...]:
        """The VFs whose QEMU device the emulator wrapper must complete with a token."""
        return tuple(hd for hd in self.hostdevs if hd.token_from_store)


def _strip_other_hostdevs(root: Any) -> None:
    """Drop ``<hostdev>``s that are not PCI subsystem devices (USB, SCSI, mdev…): they
    are libvirt's alone, and the library's parser refuses what it does not handle."""
    for devices in root.findall("devices"):
        for hd in devices.findall("hostdev"):
            if hd.get("mode", "subsystem") != "subsystem" or hd.get("type") != "pci":
                devices.remove(hd)


def read_domain(xml: str | bytes, *, filename: str = "<stdin>",
                name: str | None = None) -> LibvirtDomain:
    """Read a libvirt domain XML (as a hook gets it, or as defined).

    Raises:
        XmlError: not well-formed, no ``<uuid>`` or ``<name>``, a ``name`` that is not
            the document's, invalid vfioctl metadata, metadata naming a device the
            domain has no ``<hostdev>`` for, or an invalid hostdev.
        UnsupportedConfig: a PCI hostdev vfioctl cannot handle.
    """
    from lxml import etree

    doc = parse_string(xml, filename=filename)  # well-formedness, entities, file:line
    root = doc.tree.getroot() if hasattr(doc.tree, "getroot") else doc.tree
    if not isinstance(root.tag, str) or root.tag != "domain":
        raise XmlError(f"{filename}: the document is not a libvirt <domain>")
    _strip_other_hostdevs(root)
    doc = parse_string(etree.tostring(root), filename=filename)
    validate_domain(doc.domain)
    dom_name = (root.findtext("name") or "").strip()
    uuid = (root.findtext("uuid") or "").strip()
    if not dom_name:
        raise XmlError(f"{filename}: the domain has no <name>")
    if name is not None and name != dom_name:
        raise XmlError(f"{filename}: the XML is domain '{dom_name}', not '{name}'")
    if not _UUID.fullmatch(uuid):
        raise XmlError(f"{filename}: the domain has no valid <uuid> ('{uuid}')",
                       hint="libvirt gives every defined domain one; define it first")
    meta = read_metadata(root, filename=filename)
    known = {hd.source for hd in doc.domain.hostdevs}
    for entry in meta.hostdevs:
        if entry.address not in known:
            where = f"{filename}:{entry.line}" if entry.line is not None else filename
            raise XmlError(f"{where}: vfioctl's metadata names PCI device {entry.address}, "
                           "which is not a PCI <hostdev> of this domain",
                           line=entry.line, hint="add the <hostdev>, or remove the "
                           "<vfioctl:hostdev> line")
    hostdevs = []
    for hd in doc.domain.hostdevs:
        m = meta.for_address(hd.source)
        if m is not None:
            hd = dataclasses.replace(
                hd, driver_group="allow" if m.group_allow else hd.driver_group,
                vf_token=FROM_STORE if m.token_from_store else hd.vf_token)
        hostdevs.append(hd)
    domain = dataclasses.replace(doc.domain, hostdevs=tuple(hostdevs))
    uid, gid = _dac_label(root)
    return LibvirtDomain(dom_name, uuid.lower(), domain, meta, uid, gid)


def _dac_label(root: Any) -> tuple[int | None, int | None]:
    for sec in root.findall("seclabel"):
        if sec.get("model") != "dac":
            continue
        m = _DAC_LABEL.fullmatch((sec.findtext("label") or "").strip())
        if m is not None:
            return int(m.group(1)), int(m.group(2))
    return None, None


__all__ = ["LibvirtDomain", "read_domain"]
