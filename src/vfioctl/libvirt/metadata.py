"""Config: vfioctl's element in a libvirt domain's ``<metadata>`` — the group opt-in and
the VF-token reference, kept where libvirt keeps what it does not understand.

libvirt drops unknown attributes and elements of ``<hostdev>`` (``group='allow'`` and
``<vf-token/>`` are never merged upstream), but it keeps, unchanged, one element per XML
namespace inside ``<metadata>``. vfioctl's is (docs/libvirt.md)::

    <metadata>
      <vfioctl:devices xmlns:vfioctl="urn:vfioctl:libvirt:1" allow-untrusted-pf="no">
        <vfioctl:hostdev address="0000:01:00.0" group="allow"/>
        <vfioctl:hostdev address="0000:01:00.2" vf-token="stored"/>
      </vfioctl:devices>
    </metadata>

Each ``<vfioctl:hostdev>`` names one of the domain's PCI ``<hostdev>`` by its host
address. Pure: no host, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from vfioctl.address import PciAddress
from vfioctl.errors import UsageError, XmlError

NAMESPACE: Final = "urn:vfioctl:libvirt:1"
"""The namespace URI of vfioctl's ``<metadata>`` element (a URN: nothing to fetch)."""

ROOT: Final = "devices"
_YES_NO: Final = {"yes": True, "no": False}


@dataclass(frozen=True)
class HostdevMeta:
    """What vfioctl's metadata says about one hostdev."""

    address: PciAddress
    group_allow: bool = False
    token_from_store: bool = False
    line: int | None = None


@dataclass(frozen=True)
class DomainMeta:
    """vfioctl's metadata of a domain; empty when the domain has none."""

    hostdevs: tuple[HostdevMeta, ...] = ()
    allow_untrusted_pf: bool = False
    present: bool = field(default=False)

    def for_address(self, addr: PciAddress) -> HostdevMeta | None:
        return next((h for h in self.hostdevs if h.address == addr), None)


def _q(name: str) -> str:
    return f"{{{NAMESPACE}}}{name}"


def _error(filename: str, el: Any, message: str, hint: str | None = None) -> XmlError:
    line = el.sourceline
    where = f"{filename}:{line}" if line is not None else filename
    return XmlError(f"{where}: {message}", line=line, hint=hint)


def read_metadata(root: Any, *, filename: str = "<string>") -> DomainMeta:
    """vfioctl's metadata from a parsed ``<domain>`` element (lxml).

    Raises:
        XmlError: a second ``<vfioctl:devices>``, an unknown element or attribute in
            vfioctl's namespace, a malformed address, a value other than those
            documented, or one hostdev named twice (file:line in the message).
    """
    found = [el for md in root.findall("metadata") for el in md if el.tag == _q(ROOT)]
    stray = [el for md in root.findall("metadata") for el in md
             if isinstance(el.tag, str) and el.tag.startswith(f"{{{NAMESPACE}}}")
             and el.tag != _q(ROOT)]
    if stray:
        raise _error(filename, stray[0], f"unknown element <{_local(stray[0])}> in "
                     f"vfioctl's metadata namespace (the root is <{ROOT}>)")
    if not found:
        return DomainMeta()
    if len(found) > 1:
        raise _error(filename, found[1], f"<vfioctl:{ROOT}> appears twice in <metadata>")
    top = found[0]
    _check_attrs(filename, top, {"allow-untrusted-pf"})
    allow_untrusted = _yes_no(filename, top, "allow-untrusted-pf")
    hostdevs: list[HostdevMeta] = []
    seen: dict[PciAddress, int | None] = {}
    for el in top:
        if not isinstance(el.tag, str):
            continue  # comments, processing instructions
        if el.tag != _q("hostdev"):
            raise _error(filename, el, f"unknown element <{_local(el)}> in <vfioctl:{ROOT}> "
                         "(only <vfioctl:hostdev>)")
        hostdevs.append(_hostdev(filename, el, seen))
    return DomainMeta(tuple(hostdevs), allow_untrusted, present=True)


def _local(el: Any) -> str:
    tag = str(el.tag)
    return tag.rsplit("}", 1)[-1]


def _check_attrs(filename: str, el: Any, allowed: set[str]) -> None:
    for attr in el.attrib:
        if attr not in allowed:
            raise _error(filename, el, f"unknown attribute '{attr}' on <vfioctl:{_local(el)}>"
                         f" (allowed: {', '.join(sorted(allowed))})")


def _yes_no(filename: str, el: Any, attr: str) -> bool:
    value = el.get(attr)
    if value is None:
        return False
    if value not in _YES_NO:
        raise _error(filename, el, f"invalid {attr} '{value}' (yes or no)")
    return _YES_NO[value]


def _hostdev(filename: str, el: Any, seen: dict[PciAddress, int | None]) -> HostdevMeta:
    _check_attrs(filename, el, {"address", "group", "vf-token"})
    text = el.get("address")
    if text is None:
        raise _error(filename, el, "<vfioctl:hostdev> without address",
                     hint="name the hostdev by its host PCI address, e.g. "
                     "address='0000:01:00.0'")
    try:
        addr = PciAddress.parse(text)
    except UsageError as err:
        raise _error(filename, el, f"invalid address '{text}' on <vfioctl:hostdev>: {err}",
                     hint="write the full form DDDD:BB:SS.F") from err
    if addr in seen:
        raise _error(filename, el, f"PCI device {addr} appears twice in vfioctl's metadata"
                     f" (first at line {seen[addr]})")
    seen[addr] = el.sourceline
    group = el.get("group")
    if group not in (None, "allow"):
        raise _error(filename, el, f"invalid group '{group}' (only 'allow')")
    token = el.get("vf-token")
    if token not in (None, "stored"):
        raise _error(filename, el, f"invalid vf-token '{token}' (only 'stored': the "
                     "token vfioctl holds for the VF's PF; a token is never written here)")
    return HostdevMeta(addr, group_allow=group == "allow", token_from_store=token == "stored",
                       line=el.sourceline)


__all__ = ["NAMESPACE", "DomainMeta", "HostdevMeta", "read_metadata"]
