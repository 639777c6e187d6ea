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
        return owner(self.name, self.uuid)

    @property
    def hostdevs(self) -> tuple[HostdevDef, ...]:
        return self.domain.hostdevs

    @property
    def token_hostdevs(self) -> tuple[HostdevDef, ...]:
        """The VFs whose QEMU device the emulator wrapper must complete with a token."""
        return tuple(hd for hd in self.hostdevs if hd.token_from_store)


def owner(name: str, uuid: str) -> str:
    """The owner of a libvirt domain's devices in vfioctl's records."""
    return f"libvirt:{name}:{uuid}"


def _as_defined(root: Any) -> None:
    """Make a live definition read like a defined one: drop ``<hostdev>``s that are not
    PCI subsystem devices (USB, SCSI, mdev…: libvirt's alone, and the library's parser
    refuses what it does not handle), and the aliases libvirt assigned at start
    (``hostdev0``, ``pci.1``: a definition may carry only ``ua-`` ones)."""
    for devices in root.findall("devices"):
        for hd in devices.findall("hostdev"):
            if hd.get("mode", "subsystem") != "subsystem" or hd.get("type") != "pci":
                devices.remove(hd)
        for dev in devices:
            for alias in dev.findall("alias"):
                if not (alias.get("name") or "").startswith("ua-"):
                    dev.remove(alias)


def _parse(xml: str | bytes, filename: str) -> Any:
    """The ``<domain>`` element, parsed as the library's parser does (no entities, no
    network), with its syntax errors as :class:`XmlError` with file:line."""
    from lxml import etree

    data = xml.encode() if isinstance(xml, str) else xml
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as err:
        line = err.lineno or None
        msg = err.msg.rsplit(", line ", 1)[0] if err.msg else "not well-formed"
        where = f"{filename}:{line}" if line else filename
        raise XmlError(f"{where}: XML syntax error: {msg}", line=line) from None
    if not isinstance(root.tag, str) or root.tag != "domain":
        raise XmlError(f"{filename}: the document is not a libvirt <domain>")
    return root


def _identity(root: Any, filename: str, name: str | None) -> tuple[str, str]:
    dom_name = (root.findtext("name") or "").strip()
    uuid = (root.findtext("uuid") or "").strip()
    if not dom_name:
        raise XmlError(f"{filename}: the domain has no <name>")
    if name is not None and name != dom_name:
        raise XmlError(f"{filename}: the XML is domain '{dom_name}', not '{name}'")
    if not _UUID.fullmatch(uuid):
        raise XmlError(f"{filename}: the domain has no valid <uuid> ('{uuid}')",
                       hint="libvirt gives every defined domain one; define it first")
    return dom_name, uuid.lower()


def read_identity(xml: str | bytes, *, filename: str = "<stdin>",
                  name: str | None = None) -> tuple[str, str]:
    """Only the domain's name and UUID — all that giving its devices back needs, so
    that no hostdev vfioctl cannot read ever keeps them from going back.

    Raises:
        XmlError: not well-formed, not a domain, no name or UUID, another name.
    """
    return _identity(_parse(xml, filename), filename, name)


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

    root = _parse(xml, filename)
    dom_name, uuid = _identity(root, filename, name)
    _as_defined(root)
    doc = parse_string(etree.tostring(root), filename=filename)
    validate_domain(doc.domain)
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
    return LibvirtDomain(dom_name, uuid, domain, meta, uid, gid)


def _dac_label(root: Any) -> tuple[int | None, int | None]:
    for sec in root.findall("seclabel"):
        if sec.get("model") != "dac":
            continue
        m = _DAC_LABEL.fullmatch((sec.findtext("label") or "").strip())
        if m is not None:
            return int(m.group(1)), int(m.group(2))
    return None, None


__all__ = ["LibvirtDomain", "owner", "read_domain", "read_identity"]
