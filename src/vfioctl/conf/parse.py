"""Config: libvirt domain XML -> :class:`DomainDef` (lxml, with line numbers).

Parsing is strict about ``<hostdev>``: every element and attribute inside one is either
understood or an :class:`XmlError` naming it and its line, because libvirt's habit of
ignoring what it does not know (an unmerged ``<vf-token>``, a non-``ua-`` alias) makes
the user believe something happens that does not. Outside hostdevs, the few settings
``vfioctl start`` translates (memory, vCPUs, PCI controllers) are read into typed
fields with libvirt's number rules (:mod:`vfioctl.conf.numbers`), every other device is
only summarised (for guest PCI address assignment and duplicate checks), and the text
is kept verbatim for :mod:`vfioctl.conf.format`. What would make vfioctl read less than
libvirt does is refused: a second copy of an element libvirt allows once, XML entities,
libvirt element names in a foreign namespace.

The only I/O here is reading the file the caller names.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from vfioctl.address import PciAddress
from vfioctl.conf.dialect import DEFAULT_LIBVIRT, LibvirtDialect, libvirt_dialect
from vfioctl.conf.hostdev import (
    FROM_STORE,
    LAUNCH_SECURITY_TYPES,
    DomainDef,
    ElementDef,
    GuestPciAddress,
    HostdevDef,
    Location,
    MemoryDef,
    OtherDeviceDef,
    PciControllerDef,
    RomDef,
    StoredTokenRef,
)
from vfioctl.conf.numbers import LLONG_MAX, ULLONG_MAX, parse_int, parse_uint, unit_scale
from vfioctl.errors import NotFound, PermissionDenied, UnsupportedConfig, XmlError
from vfioctl.secret import VfToken

# What a PCI <hostdev> may contain; anything else is an error, never ignored.
_HOSTDEV_ATTRS = frozenset({"mode", "type", "managed"})
_CHILD_ATTRS: dict[str, frozenset[str]] = {
    "driver": frozenset({"name", "group"}),
    "source": frozenset(),
    "boot": frozenset({"order"}),
    "alias": frozenset({"name"}),
    "rom": frozenset({"bar", "file", "enabled"}),
    "address": frozenset({"type", "domain", "bus", "slot", "function", "multifunction"}),
}
_SOURCE_ADDRESS_ATTRS = frozenset({"domain", "bus", "slot", "function"})
# libvirt knows these inside a PCI hostdev; vfioctl does not model them (yet).
_LIBVIRT_ONLY_CHILDREN = frozenset({"teaming", "acpi"})
_OTHER_HOSTDEV_TYPES = frozenset({"usb", "scsi", "scsi_host", "mdev"})
# libvirt >= 10.0's <driver model>: a host driver name (basictypes.rng genericName).
_DRIVER_MODEL_RE = re.compile(r"[a-zA-Z0-9_+-]+")
# Hostdev attributes a newer libvirt knows (vfioctl.conf.dialect), for the hint.
_NEWER_ATTRS = {("driver", "model"): "libvirt >= 10.0", ("hostdev", "display"): "libvirt 11.3",
                ("hostdev", "ramfb"): "libvirt 11.3"}
# Attributes refused with their reason rather than the generic hint.
_REFUSED_ATTRS = {("driver", "iommufd"): (
    "vfioctl hands devices to QEMU on the group path (/dev/vfio/N), which every kernel "
    "and QEMU has and which carries a VF token; QEMU's iommufd backend binds without the "
    "token (docs/kernel.md \"The cdev path and iommufd\"): remove the attribute")}
# The driver vfioctl binds; a <driver model> naming it changes nothing.
_VFIO_PCI = "vfio-pci"
# Used with fullmatch: "$" would also match before a trailing newline ("&#10;").
_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_ALIAS_RE = re.compile(r"ua-[A-Za-z0-9_-]+")

# Elements libvirt's domain schema (domaincommon.rng) allows at most once: in <domain>,
# in <devices>, and the <type> of <os> (9.0's, plus what 11.3's adds: throttlegroups,
# pstore; 11.3 allows several watchdogs, see vfioctl.conf.dialect). libvirt's parser
# reads the first one of each (and merges every <devices>), so a second one would be
# silently ignored by libvirt and by vfioctl; libvirt's schema refuses it, and so does
# vfioctl.
_DOMAIN_SINGLETONS = frozenset({
    "name", "uuid", "genid", "title", "description", "metadata", "cpu", "bootloader",
    "bootloader_args", "os", "clock", "memory", "maxMemory", "currentMemory",
    "memoryBacking", "vcpu", "vcpus", "iothreads", "iothreadids", "defaultiothread",
    "blkiotune", "memtune", "cputune", "numatune", "resource", "features", "on_reboot",
    "on_poweroff", "on_crash", "on_lockfailure", "pm", "perf", "idmap", "devices",
    "keywrap", "launchSecurity", "throttlegroups",
})
_DEVICES_SINGLETONS = frozenset({"emulator", "watchdog", "memballoon", "nvram", "iommu",
                                 "vsock", "pstore"})
_OS_SINGLETONS = frozenset({"type"})
# What vfioctl reads from a device that is not a hostdev; every libvirt device allows
# each of these once (a second <address>, say, would be ignored by libvirt's parser).
_DEVICE_CHILD_SINGLETONS = frozenset({"address", "boot", "alias", "target", "model"})
# Element names libvirt uses directly in <domain>; the same name in another XML
# namespace is not libvirt's element and would be skipped by libvirt without a word.
_DOMAIN_VOCABULARY = _DOMAIN_SINGLETONS | {"sysinfo", "seclabel"}

# libvirt's upper bounds and messages (src/util/virpci.c virPCIDeviceAddressIsValid).
_LIMITS = {"domain": (0xFFFF, "0xFFFF"), "bus": (0xFF, "0xFF"), "slot": (0x1F, "0x1F"),
           "function": (7, "7")}


@dataclass(frozen=True)
class DomainDocument:
    """A parsed domain: the model plus the lxml tree it came from.

    ``hostdev_elements[i]`` is the element ``domain.hostdevs[i]`` was parsed from, so
    :func:`vfioctl.conf.format.format_document` can replace it in place.
    """

    domain: DomainDef
    tree: Any
    hostdev_elements: tuple[Any, ...]
    text: str


def parse_file(path: str | Path, *,
               libvirt: str | LibvirtDialect | None = None) -> DomainDocument:
    """Read and parse a libvirt domain XML file.

    ``libvirt`` is the release whose rules apply where releases differ ("9.0",
    "11.3"; None: :data:`~vfioctl.conf.dialect.DEFAULT_LIBVIRT`).

    Raises:
        NotFound: there is no such file (exit 4, like every missing input).
        PermissionDenied: it may not be read.
        XmlError: if the file cannot be read otherwise, is not well-formed, or a hostdev
            is invalid.
        UnsupportedConfig: for hostdevs vfioctl does not handle (usb, mdev, kvm backend).
    """
    name = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise NotFound(f"domain XML file {name} not found",
                       hint="give the path of a libvirt domain XML file") from None
    except PermissionError as err:
        raise PermissionDenied(f"cannot read {name}: {err.strerror}",
                               hint="run as a user who may read it") from err
    except OSError as err:
        raise XmlError(f"cannot read {name}: {err.strerror}") from err
    return parse_string(data, filename=name, libvirt=libvirt)


def parse_string(data: str | bytes, *, filename: str = "<string>",
                 libvirt: str | LibvirtDialect | None = None) -> DomainDocument:
    """Parse a libvirt domain XML document held in memory; see :func:`parse_file`."""
    from lxml import etree

    dialect = libvirt_dialect(libvirt)

    text = data if isinstance(data, str) else None
    if isinstance(data, str):
        data = data.encode()
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as err:
        line = err.lineno if err.lineno else None
        msg = err.msg.rsplit(", line ", 1)[0] if err.msg else "not well-formed"
        raise XmlError(f"{Location(filename, line)}: XML syntax error: {msg}",
                       line=line) from err
    if text is None:
        encoding = root.getroottree().docinfo.encoding or "utf-8"
        try:
            text = data.decode(encoding)
        except (LookupError, UnicodeDecodeError) as err:
            raise XmlError(f"{filename}: cannot decode the document as {encoding}") from err
    return _Parser(filename, dialect).document(root, text)


class _Parser:
    def __init__(self, filename: str, dialect: LibvirtDialect) -> None:
        self.file = filename
        self.dialect = dialect

    # -- helpers --------------------------------------------------------------------
    def loc(self, el: Any) -> Location:
        return Location(self.file, el.sourceline)

    def error(self, el: Any, message: str, hint: str | None = None) -> XmlError:
        return XmlError(f"{self.loc(el)}: {message}", line=el.sourceline, hint=hint)

    def unsupported(self, el: Any, message: str, hint: str | None = None) -> UnsupportedConfig:
        return UnsupportedConfig(f"{self.loc(el)}: {message}", hint=hint)

    def uint(self, el: Any, attr: str, *, default: int | None = 0) -> int | None:
        """An unsigned attribute read like libvirt's PCI address fields (base 0)."""
        text = el.get(attr)
        if text is None:
            return default
        value = _strtoul(text)
        if value is None:
            raise self.error(el, f"Cannot parse <{_tag(el)}> '{attr}' attribute '{text}'")
        return value

    def prop_int(self, el: Any, attr: str, base: int) -> int | None:
        """A non-negative ``int`` attribute as libvirt's virXMLPropInt reads it (with
        VIR_XML_PROP_NONNEGATIVE); None when absent."""
        text: str | None = el.get(attr)
        if text is None:
            return None
        value = parse_int(text, base)
        if value is None:
            raise self.error(el, f"Invalid value for attribute '{attr}' in element "
                             f"'{_tag(el)}': '{text}'. Expected integer value")
        if value < 0:
            raise self.error(el, f"Invalid value for attribute '{attr}' in element "
                             f"'{_tag(el)}': '{text}'. Expected non-negative value")
        return value

    def boot_order(self, boot: Any) -> int:
        """``<boot order='N'/>`` of any device: libvirt's virXMLPropUInt, base 10, not 0."""
        text = boot.get("order")
        if text is None:
            raise self.error(boot, "missing boot order attribute")
        order = parse_uint(text, 10)
        if order is None:
            raise self.error(boot, f"Invalid value for attribute 'order' in element "
                             f"'boot': '{text}'. Expected non-negative integer value")
        if order == 0:
            raise self.error(boot, "Invalid value for attribute 'order' in element "
                             "'boot': Zero is not permitted")
        return order

    def check_attrs(self, el: Any, allowed: frozenset[str], where: str) -> None:
        for attr in el.attrib:
            if attr not in allowed:
                newer = _NEWER_ATTRS.get((_tag(el), attr))
                hint = _REFUSED_ATTRS.get((_tag(el), attr)) or (
                    f"{newer} has it, {self.dialect} does not: read the file with "
                    f"--libvirt {DEFAULT_LIBVIRT.version}" if newer else
                    "vfioctl does not ignore what it does not understand")
                raise self.error(el, f"unknown attribute '{attr}' on <{_tag(el)}> {where}",
                                 hint=hint)

    def no_text(self, el: Any, where: str) -> None:
        if el.text and el.text.strip():
            raise self.error(el, f"unexpected text in <{_tag(el)}> {where}")
        for child in el:
            if child.tail and child.tail.strip():
                raise self.error(child, f"unexpected text in <{_tag(el)}> {where}")

    # -- document -------------------------------------------------------------------
    def document(self, root: Any, text: str) -> DomainDocument:
        if _tag(root) != "domain":
            raise self.error(root, f"expected a <domain> document, found <{_tag(root)}>")
        self.check_entities(root)
        self.check_once(root, _DOMAIN_SINGLETONS, "<domain>")
        self.check_foreign(root, _DOMAIN_VOCABULARY, "<domain>")
        name_el = root.find("name")
        os_el = root.find("os")
        if os_el is not None:
            self.check_once(os_el, _OS_SINGLETONS, "<os>")
        os_type = root.find("os/type")
        memory = self.memory(root.find("memory"))
        vcpus = self.vcpus(root.find("vcpu"))
        hostdevs: list[HostdevDef] = []
        elements: list[Any] = []
        controllers: list[PciControllerDef] = []
        others: list[OtherDeviceDef] = []
        devices = root.find("devices")
        if devices is not None:
            once = _DEVICES_SINGLETONS
            if not self.dialect.watchdog_once:
                once = once - {"watchdog"}
            self.check_once(devices, once, "<devices>")
            self.check_foreign(devices, None, "<devices>")
        emulator = root.find("devices/emulator")
        for el in devices if devices is not None else ():
            if not isinstance(el.tag, str):
                continue  # comments, processing instructions
            tag = _tag(el)
            if tag == "emulator":
                continue
            if tag == "hostdev":
                hostdevs.append(self.hostdev(el))
                elements.append(el)
                continue
            other = self.other(el)
            others.append(other)
            if tag == "controller":
                ctl = self.controller(el, other)
                if ctl is not None:
                    controllers.append(ctl)
        launch_security = self.launch_security(root.find("launchSecurity"))
        domain = DomainDef(
            name=name_el.text.strip() if name_el is not None and name_el.text else None,
            file=self.file,
            domain_type=root.get("type"),
            arch=os_type.get("arch") if os_type is not None else None,
            machine=os_type.get("machine") if os_type is not None else None,
            emulator=emulator.text.strip() if emulator is not None and emulator.text else None,
            os_boot=root.find("os/boot") is not None,
            memory=memory,
            vcpus=vcpus,
            hostdevs=tuple(hostdevs),
            controllers=tuple(controllers),
            others=tuple(others),
            launch_security=launch_security,
            elements=tuple(self.element(c) for c in root
                           if isinstance(c.tag, str) and c.tag != "devices"),
        )
        return DomainDocument(domain=domain, tree=root.getroottree(),
                              hostdev_elements=tuple(elements), text=text)

    def element(self, el: Any) -> ElementDef:
        """A plain mirror of ``el`` (see :class:`ElementDef`); comments are skipped."""
        return ElementDef(
            tag=_qualified(el),
            attrs=tuple((_qualified_name(el, k), str(v)) for k, v in el.attrib.items()),
            text=(el.text or "").strip(),
            children=tuple(self.element(c) for c in el if isinstance(c.tag, str)),
            where=self.loc(el),
        )

    def launch_security(self, el: Any) -> str | None:
        """``<launchSecurity type='…'>``: a confidential guest (libvirt's types: sev,
        sev-snp, tdx, s390-pv), whose memory the host cannot read."""
        if el is None:
            return None
        kind = el.get("type")
        if kind not in LAUNCH_SECURITY_TYPES:
            raise self.error(el, f"unknown <launchSecurity> type {kind!r}",
                             hint="libvirt knows " + ", ".join(
                                 f"'{t}'" for t in sorted(LAUNCH_SECURITY_TYPES)))
        return str(kind)

    def check_entities(self, root: Any) -> None:
        """Refuse XML entities, so that vfioctl and libvirt read the same document.

        With ``resolve_entities=False`` nothing is ever fetched or expanded (no XXE, no
        entity bomb), but libvirt 9.0 reads the text of an internal entity (to it,
        ``<memory unit='MiB'>&m;</memory>`` is the entity's number) while vfioctl would
        see nothing there; and a ``<hostdev>`` inside an entity is seen by neither.
        """
        from lxml import etree

        dtd = root.getroottree().docinfo.internalDTD
        names = [str(e.name) for e in dtd.iterentities()] if dtd is not None else []
        if names:
            raise XmlError(f"{self.file}: the document declares the XML entity "
                           f"'{names[0]}'; vfioctl does not expand entities",
                           hint="write the value out where it is used (libvirt reads "
                           "an entity's text, so vfioctl could not check what it sees)")
        for node in root.iter(etree.Entity):
            raise self.error(node, f"entity reference '{node.text}' cannot be resolved "
                             "(vfioctl loads no DTD)", hint="write the value out")

    def check_once(self, parent: Any, names: frozenset[str], where: str) -> None:
        seen: dict[str, Any] = {}
        for child in parent:
            if not isinstance(child.tag, str) or child.tag not in names:
                continue
            if child.tag in seen:
                raise self.error(child, f"element <{child.tag}> appears twice in {where}",
                                 hint=f"libvirt allows one (the first is at line "
                                 f"{seen[child.tag].sourceline}); merge them into one")
            seen[child.tag] = child

    def check_foreign(self, parent: Any, names: frozenset[str] | None, where: str) -> None:
        """Refuse an element in an XML namespace where libvirt expects its own element
        of that name (``names``; None: any element), e.g. ``<hostdev xmlns='…'>``:
        libvirt would skip it without a word."""
        for child in parent:
            if not isinstance(child.tag, str) or not child.tag.startswith("{"):
                continue
            ns, local = child.tag[1:].split("}", 1)
            if names is None or local in names:
                raise self.error(child, f"element <{local}> in XML namespace '{ns}' is "
                                 f"not libvirt's <{local}> (in {where})",
                                 hint="libvirt would ignore it; remove the xmlns or the "
                                 "element")

    def memory(self, el: Any) -> MemoryDef | None:
        """``<memory>`` as libvirt's virDomainParseMemory reads it: decimal, scaled by
        ``unit`` (KiB by default), rounded up to KiB; None when absent or empty."""
        if el is None:
            return None
        text = str(el.xpath("string()"))
        if not text:
            return None
        unit = el.get("unit")
        shown = f"'{text}'" + (f" (unit '{unit}')" if unit else "")
        value = parse_uint(text, 10, maximum=ULLONG_MAX)
        if value is None:
            raise self.error(el, f"invalid <memory> {shown}: not a non-negative decimal "
                             "integer", hint="write e.g. <memory unit='MiB'>1024</memory>")
        scale = unit_scale(unit, 1024)
        if scale is None:
            raise self.error(el, f"invalid <memory> unit '{unit}'",
                             hint="use b, KiB, MiB, GiB, TiB, PiB or EiB (k, M, G …: the "
                             "same), or KB, MB, GB … for powers of 1000")
        # libvirt's limits: bytes fit a signed 64-bit value (virScaleInteger), and the
        # KiB, rounded up, stay below that limit in KiB (virDomainParseMemory).
        if value > LLONG_MAX // scale or -(-value * scale // 1024) >= -(-LLONG_MAX // 1024):
            raise self.error(el, f"invalid <memory> {shown}: too large",
                             hint="libvirt's limit is 2^63 bytes")
        return MemoryDef(kib=-(-value * scale // 1024), where=self.loc(el))

    def vcpus(self, el: Any) -> int:
        """``<vcpu>`` as libvirt's virDomainVcpuParse reads it (decimal, at least 1),
        and its ``current`` attribute, which must not exceed it; 1 when absent."""
        if el is None:
            return 1
        text = str(el.xpath("string()"))
        count = parse_uint(text, 10)
        if count is None or count == 0:
            raise self.error(el, f"invalid <vcpu> '{text}': the maximum vcpus count must "
                             "be a positive integer", hint="write e.g. <vcpu>2</vcpu>")
        current = el.get("current")
        if current is not None:
            value = parse_uint(current, 10)
            if value is None:
                raise self.error(el, f"Invalid value for attribute 'current' in element "
                                 f"'vcpu': '{current}'. Expected non-negative integer "
                                 "value")
            if value > count:
                raise self.error(el, "maximum vCPU count must not be less than current "
                                 f"vCPU count ({count} < {value})")
        return count

    def controller(self, el: Any, summary: OtherDeviceDef) -> PciControllerDef | None:
        """Any ``<controller>``'s index (libvirt: base 10, a non-negative int); the
        model, alias, address and ``<target>`` numbers of a PCI one (base 0)."""
        index = self.prop_int(el, "index", 10)
        if el.get("type") != "pci":
            return None
        target = el.find("target")  # at most one: checked with the device's summary
        return PciControllerDef(
            index=index,
            model=el.get("model"),
            alias=summary.alias,
            address=summary.pci_address,
            chassis_nr=self.prop_int(target, "chassisNr", 0) if target is not None else None,
            chassis=self.prop_int(target, "chassis", 0) if target is not None else None,
            port=self.prop_int(target, "port", 0) if target is not None else None,
            where=self.loc(el),
        )

    def other(self, el: Any) -> OtherDeviceDef:
        self.check_once(el, _DEVICE_CHILD_SINGLETONS, f"<{_tag(el)}>")
        addr_el = el.find("address")
        pci = None
        if addr_el is not None and addr_el.get("type") == "pci":
            pci = self.guest_address(addr_el)
        model = el.get("model")
        model_el = el.find("model")
        if model is None and model_el is not None:
            model = model_el.get("type") or model_el.get("name")
        target = el.find("target")
        boot = el.find("boot")
        return OtherDeviceDef(
            tag=_tag(el),
            kind=el.get("type") or el.get("device"),
            model=model,
            bus=target.get("bus") if target is not None else None,
            target_type=target.get("type") if target is not None else None,
            pci_address=pci,
            has_address=addr_el is not None,
            boot_order=self.boot_order(boot) if boot is not None else None,
            alias=_alias_of(el),
            where=self.loc(el),
            attrs=tuple((_qualified_name(el, k), str(v)) for k, v in el.attrib.items()),
        )

    # -- hostdev --------------------------------------------------------------------
    def hostdev(self, el: Any) -> HostdevDef:
        mode = el.get("mode", "subsystem")
        kind = el.get("type")
        if mode == "capabilities":
            raise self.unsupported(el, "hostdev mode 'capabilities' is not supported by vfioctl",
                                   hint="vfioctl assigns PCI functions: use "
                                   "<hostdev mode='subsystem' type='pci'>")
        if mode != "subsystem":
            raise self.error(el, f"unknown hostdev mode '{mode}'")
        if kind in _OTHER_HOSTDEV_TYPES:
            raise self.unsupported(el, f"hostdev type '{kind}' is not supported by vfioctl",
                                   hint="only PCI hostdevs (type='pci') are handled")
        if kind is None:
            raise self.error(el, "missing hostdev subsys type")
        if kind != "pci":
            raise self.error(el, f"unknown host device source address type '{kind}'")
        if self.dialect.hostdev_display:
            self.display_attrs(el)
        self.check_attrs(el, _HOSTDEV_ATTRS, "in a hostdev")
        self.no_text(el, "in a hostdev")

        children: dict[str, Any] = {}
        for child in el:
            if not isinstance(child.tag, str):
                continue
            tag = _tag(child)
            if tag in _LIBVIRT_ONLY_CHILDREN:
                raise self.unsupported(child, f"<{tag}> in a PCI hostdev is not supported by "
                                       "vfioctl", hint="remove it, or use libvirt for it")
            if tag not in _CHILD_ATTRS:
                raise self.error(child, f"unknown element <{tag}> in a PCI hostdev",
                                 hint="vfioctl supports driver, source, boot, alias, rom "
                                 "and address (see docs/hostdev-xml.md)")
            if tag in children:
                raise self.error(child, f"element <{tag}> appears twice in a hostdev")
            allowed = _CHILD_ATTRS[tag]
            if tag == "driver" and self.dialect.driver_model:
                allowed = allowed | {"model"}
            self.check_attrs(child, allowed, "in a hostdev")
            if tag != "source":
                for sub in child:
                    if isinstance(sub.tag, str):
                        raise self.error(sub, f"unknown element <{_tag(sub)}> in hostdev "
                                         f"<{tag}>")
            children[tag] = child

        managed = el.get("managed")
        if managed not in (None, "yes", "no"):
            raise self.error(el, f"invalid managed value '{managed}' (expected yes or no)")

        driver_name = driver_group = driver_model = None
        if (drv := children.get("driver")) is not None:
            self.no_text(drv, "in a hostdev")
            driver_name = drv.get("name")
            if driver_name is None and self.dialect.driver_name_required:
                raise self.error(drv, f"<driver> in a hostdev needs name='vfio' "
                                 f"({self.dialect}'s schema requires it)",
                                 hint="write <driver name='vfio'/>, or leave <driver> out")
            if driver_name in ("kvm", "xen"):
                raise self.unsupported(
                    drv, f"PCI passthrough backend '{driver_name}' is not supported by vfioctl",
                    hint="use <driver name='vfio'/> (legacy KVM assignment is gone from Linux)")
            if driver_name not in (None, "vfio"):
                raise self.error(drv, f"Unknown PCI device <driver name='{driver_name}'/> "
                                 "has been specified")
            driver_model = self.driver_model(drv)
            driver_group = drv.get("group")
            if driver_group not in (None, "allow"):
                raise self.error(drv, f"invalid driver group '{driver_group}' (only 'allow')")

        src = children.get("source")
        if src is None:
            raise self.error(el, "PCI host devices must have a <source> element")
        source, vf_token = self.source(src)

        boot_order = None
        if (boot := children.get("boot")) is not None:
            self.no_text(boot, "in a hostdev")
            boot_order = self.boot_order(boot)

        alias = None
        if (alias_el := children.get("alias")) is not None:
            self.no_text(alias_el, "in a hostdev")
            alias = alias_el.get("name")
            if alias is None or not _ALIAS_RE.fullmatch(alias):
                raise self.error(alias_el, f"alias '{alias}' is not a user alias",
                                 hint="user aliases are 'ua-' followed by letters, digits, "
                                 "'_' or '-'; libvirt silently drops any other alias")

        rom = None
        if (rom_el := children.get("rom")) is not None:
            self.no_text(rom_el, "in a hostdev")
            rom = RomDef(
                bar=self.onoff(rom_el, "bar"),
                file=rom_el.get("file"),
                enabled=self.yesno(rom_el, "enabled"),
            )

        guest = None
        if (addr := children.get("address")) is not None:
            self.no_text(addr, "in a hostdev")
            addr_type = addr.get("type")
            if addr_type is None:
                raise self.error(addr, "No type specified for device address")
            if addr_type != "pci":
                raise self.unsupported(
                    addr, f"guest address type '{addr_type}' for a PCI hostdev is not "
                    "supported by vfioctl", hint="use <address type='pci' …/>")
            guest = self.guest_address(addr)

        hd = HostdevDef(
            source=source,
            managed=managed == "yes",
            driver_name=driver_name,
            driver_group=driver_group,
            driver_model=driver_model,
            vf_token=vf_token,
            boot_order=boot_order,
            alias=alias,
            rom=rom,
            guest_address=guest,
            where=self.loc(el),
        )
        self.schema_check(el)
        return hd

    def display_attrs(self, el: Any) -> None:
        """libvirt 11.3's ``display``/``ramfb`` on a PCI hostdev (a vGPU's console):
        libvirt writes ``"display"`` (and ``vfio-pci-nohotplug`` for ramfb); vfioctl
        does not, so it says so instead of calling them unknown."""
        given = [f"{a}='{el.get(a)}'" for a in ("display", "ramfb")
                 if self.onoff(el, a) is not None]
        if given:
            raise self.unsupported(
                el, f"{' '.join(given)} on a PCI hostdev {'is' if len(given) == 1 else 'are'} "
                "not supported by vfioctl",
                hint=f"remove {'it' if len(given) == 1 else 'them'}, or let libvirt start this "
                "guest")

    def driver_model(self, drv: Any) -> str | None:
        """libvirt >= 10.0's ``<driver model='…'>``: the host driver libvirt binds
        instead of vfio-pci (a VFIO variant driver such as mlx5_vfio_pci). vfioctl
        binds vfio-pci, so only that model is accepted."""
        model: str | None = drv.get("model")
        if model is None:
            return None
        if not _DRIVER_MODEL_RE.fullmatch(model):
            raise self.error(drv, f"invalid driver model '{model}' (letters, digits, "
                             "'_', '+' and '-' only)")
        if model != _VFIO_PCI:
            raise self.unsupported(
                drv, f"VFIO variant driver '{model}' (<driver model>) is not supported by "
                "vfioctl", hint="vfioctl binds vfio-pci: remove model= (or write "
                "model='vfio-pci'), or let libvirt >= 10.0 start this guest")
        return model

    def source(self, src: Any) -> tuple[PciAddress, VfToken | StoredTokenRef | None]:
        self.no_text(src, "in a hostdev")
        addrs = []
        for child in src:
            if not isinstance(child.tag, str):
                continue
            if _tag(child) != "address":
                raise self.error(child, f"unknown element <{_tag(child)}> in hostdev <source>")
            addrs.append(child)
        if not addrs:
            raise self.error(src, "PCI host devices must have a source <address>")
        if len(addrs) > 1:
            raise self.error(addrs[1], "element <address> appears twice in hostdev <source>")
        addr = addrs[0]
        self.check_attrs(addr, _SOURCE_ADDRESS_ATTRS, "in hostdev <source>")
        self.no_text(addr, "in hostdev <source>")
        values = self.address_fields(addr)
        token: VfToken | StoredTokenRef | None = None
        tokens = [c for c in addr if isinstance(c.tag, str)]
        for child in tokens:
            if _tag(child) != "vf-token":
                raise self.error(child, f"unknown element <{_tag(child)}> in hostdev source "
                                 "<address>")
        if len(tokens) > 1:
            raise self.error(tokens[1], "element <vf-token> appears twice")
        if tokens:
            tok = tokens[0]
            self.check_attrs(tok, frozenset({"uuid"}), "in hostdev <source>")
            self.no_text(tok, "in hostdev <source>")
            text = tok.get("uuid")
            if text is None:
                token = FROM_STORE  # <vf-token/>: vfioctl's stored token for the PF
            elif not _UUID_RE.fullmatch(text):
                # The value is a secret even when malformed: never echo it.
                raise self.error(tok, "malformed vf-token uuid",
                                 hint="write it as 8-4-4-4-12 hex digits, e.g. the output "
                                 "of uuidgen, or write <vf-token/> to use the token vfioctl "
                                 "holds for the PF")
            else:
                token = VfToken(uuid.UUID(text))
        return PciAddress(*values), token

    def address_fields(self, addr: Any) -> tuple[int, int, int, int]:
        values = []
        for attr in ("domain", "bus", "slot", "function"):
            value = self.uint(addr, attr)
            assert value is not None
            limit, shown = _LIMITS[attr]
            if value > limit:
                # libvirt prints the value it read, in hex (virPCIDeviceAddressIsValid)
                msg = (f"Invalid PCI address function={value:#x}, must be <= 7"
                       if attr == "function"
                       else f"Invalid PCI address {attr}='{value:#x}', must be <= {shown}")
                raise self.error(addr, msg)
            values.append(value)
        return values[0], values[1], values[2], values[3]

    def guest_address(self, addr: Any) -> GuestPciAddress:
        domain, bus, slot, function = self.address_fields(addr)
        return GuestPciAddress(domain, bus, slot, function, self.onoff(addr, "multifunction"))

    def onoff(self, el: Any, attr: str) -> bool | None:
        return self._choice(el, attr, "on", "off")

    def yesno(self, el: Any, attr: str) -> bool | None:
        return self._choice(el, attr, "yes", "no")

    def _choice(self, el: Any, attr: str, yes: str, no: str) -> bool | None:
        text: str | None = el.get(attr)
        if text is None:
            return None
        if text not in (yes, no):
            raise self.error(el, f"Invalid value for attribute '{attr}' in element "
                             f"'{_tag(el)}': '{text}'", hint=f"use '{yes}' or '{no}'")
        return text == yes

    def schema_check(self, el: Any) -> None:
        """RelaxNG backstop: the checks above should already have caught everything."""
        import copy

        from lxml import etree

        rng = _schema()
        if rng.validate(etree.ElementTree(copy.deepcopy(el))):
            return
        err = rng.error_log.last_error
        line = err.line if err is not None and err.line else el.sourceline
        msg = err.message if err is not None else "does not match the schema"
        raise XmlError(f"{Location(self.file, line)}: hostdev does not match vfioctl's "
                       f"schema: {msg}", line=line)


@cache
def _schema() -> Any:
    from lxml import etree

    text = resources.files("vfioctl.conf").joinpath("schema/hostdev.rng").read_bytes()
    return etree.RelaxNG(etree.fromstring(text))


def schema_path() -> Path:
    """Where the hostdev RelaxNG schema is installed (for documentation and tests)."""
    return Path(str(resources.files("vfioctl.conf").joinpath("schema/hostdev.rng")))


def _tag(el: Any) -> str:
    tag = el.tag
    return tag if isinstance(tag, str) else "?"


def _qualified(el: Any) -> str:
    """An element's name as written: ``prefix:local`` in a namespace, else ``local``."""
    return _qualified_name(el, _tag(el))


def _qualified_name(el: Any, name: str) -> str:
    if not name.startswith("{"):
        return name
    ns, local = name[1:].split("}", 1)
    prefix = next((p for p, uri in el.nsmap.items() if uri == ns and p), None)
    return f"{prefix}:{local}" if prefix else local


def _alias_of(el: Any) -> str | None:
    alias = el.find("alias")
    return alias.get("name") if alias is not None else None


def _strtoul(text: str) -> int | None:
    """Like libvirt's virStrToLong_uip(…, base 0): 0x hex, leading-0 octal, else decimal;
    at most UINT_MAX (see :mod:`vfioctl.conf.numbers`)."""
    return parse_uint(text, 0)
