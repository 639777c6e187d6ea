"""Config: host-independent semantic checks on a parsed domain (libvirt's messages).

Parsing already rejected what is malformed inside one hostdev; this pass looks across
the document, as libvirt's ``domain_validate.c`` / ``domain_addr.c`` do: duplicate
sources, guest addresses, aliases and boot orders. Messages reuse libvirt's wording so
a libvirt user recognises them, prefixed with ``file:line``.
"""

from __future__ import annotations

from vfioctl.conf.hostdev import DomainDef, GuestPciAddress, Location
from vfioctl.errors import XmlError


def validate_domain(domain: DomainDef) -> None:
    """Check a parsed domain for conflicts between its devices.

    Raises:
        XmlError: on a duplicate hostdev source, guest PCI address, alias, boot order or
            PCI controller index, per-device boot mixed with ``<os><boot>``, or a ROM
            tuned while disabled.
    """
    _check_sources(domain)
    _check_controllers(domain)
    _check_guest_addresses(domain)
    _check_aliases(domain)
    _check_boot(domain)
    _check_rom(domain)


def _err(where: Location | None, message: str, hint: str | None = None) -> XmlError:
    prefix = f"{where}: " if where is not None else ""
    return XmlError(prefix + message, line=where.line if where else None, hint=hint)


def _check_sources(domain: DomainDef) -> None:
    seen: dict[object, Location | None] = {}
    for hd in domain.hostdevs:
        if hd.source in seen:
            raise _err(hd.where, "Hostdev already exists in the domain configuration",
                       hint=f"PCI device {hd.source} is also assigned at {seen[hd.source]}")
        seen[hd.source] = hd.where


def _check_controllers(domain: DomainDef) -> None:
    # libvirt 9.0 refuses two controllers of one type with one index when defining.
    seen: set[int] = set()
    for ctl in domain.controllers:
        if ctl.index is None:
            continue
        if ctl.index in seen:
            raise _err(ctl.where, f"Multiple 'pci' controllers with index '{ctl.index}'")
        seen.add(ctl.index)


def _is_wanted(addr: GuestPciAddress) -> bool:
    # libvirt: an all-zero <address type='pci'/> means "assign one for me".
    return (addr.domain, addr.bus, addr.slot, addr.function) != (0, 0, 0, 0)


def _check_guest_addresses(domain: DomainDef) -> None:
    used: dict[tuple[int, int, int, int], Location | None] = {}
    entries: list[tuple[GuestPciAddress, Location | None]] = []
    for other in domain.others:
        if other.pci_address is not None:
            entries.append((other.pci_address, other.where))
    for hd in domain.hostdevs:
        if hd.guest_address is not None:
            entries.append((hd.guest_address, hd.where))
    # Devices that are not hostdevs come first so that the hostdev is the one blamed.
    for addr, where in entries:
        if not _is_wanted(addr):
            continue
        key = (addr.domain, addr.bus, addr.slot, addr.function)
        if key in used:
            raise _err(where, f"Attempted double use of PCI Address {addr}",
                       hint=f"it is already used at {used[key]}")
        used[key] = where


def _check_aliases(domain: DomainDef) -> None:
    seen: set[str] = set()
    items = [(o.alias, o.where) for o in domain.others] + [
        (hd.alias, hd.where) for hd in domain.hostdevs]
    for alias, where in items:
        if alias is None:
            continue
        if alias in seen:
            raise _err(where, f"non unique alias detected: {alias}")
        seen.add(alias)


def _check_boot(domain: DomainDef) -> None:
    seen: set[int] = set()
    items = [(o.boot_order, o.where) for o in domain.others] + [
        (hd.boot_order, hd.where) for hd in domain.hostdevs]
    any_boot = False
    for order, where in items:
        if order is None:
            continue
        any_boot = True
        if order in seen:
            raise _err(where, f"boot order '{order}' used for more than one device")
        seen.add(order)
    if any_boot and domain.os_boot:
        first = next(w for o, w in items if o is not None)
        raise _err(first, "per-device boot elements cannot be used together with os/boot "
                   "elements")


def _check_rom(domain: DomainDef) -> None:
    for hd in domain.hostdevs:
        rom = hd.rom
        if rom is not None and rom.enabled is False and (rom.bar is not None or rom.file):
            raise _err(hd.where, "ROM tuning is not supported when ROM is disabled")
