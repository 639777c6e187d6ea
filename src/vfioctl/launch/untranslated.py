"""Launch: what in a domain ``vfioctl start`` does not translate, so it can say so.

``start`` builds a minimal QEMU command line (machine, accelerator, memory, vCPUs, the
PCI hostdevs and PCI controllers). Everything else a domain asks for — a disk, a NIC,
UEFI firmware, a CPU model, clock timers, a confidential guest — would silently be
missing from the guest, so each such element is listed here and ``start`` refuses it
unless the user says they pass it to QEMU themselves (after ``--``).

An element is *not* reported when it changes nothing QEMU would do: pure metadata
(``<uuid>``, ``<title>``, ``<description>``, ``<metadata>``), a ``<currentMemory>``
the size of ``<memory>`` (start's QEMU has no balloon), a lifecycle action that
is what QEMU does anyway (``<on_poweroff>destroy``, ``<on_reboot>restart``,
``<on_crash>destroy``), or a device the machine has built in or that asks for nothing
(``<input type='mouse' bus='ps2'>``, the pc's IDE and the q35's SATA controller 0,
``<memballoon model='none'>``, ``<controller type='usb' model='none'>``). The full list
is in docs/hostdev-xml.md, "What start translates".
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from vfioctl.conf.hostdev import DomainDef, ElementDef, Location, OtherDeviceDef
from vfioctl.conf.numbers import ULLONG_MAX, parse_uint, unit_scale
from vfioctl.errors import ConfigError

#: what :func:`vfioctl.launch.plan.plan_start` does with an untranslated element
Untranslated = Literal["refuse", "ignore"]

# Children of <domain> that carry no guest hardware and no host behaviour QEMU has.
_METADATA = frozenset({"name", "uuid", "title", "description", "metadata", "on_lockfailure"})
# Lifecycle actions: harmless when they ask for what QEMU does without libvirt (a
# powered-off guest's QEMU exits, a reboot resets it, a crash without pvpanic is not seen).
_LIFECYCLE_DEFAULT = {"on_poweroff": "destroy", "on_reboot": "restart", "on_crash": "destroy"}
# <features> QEMU's pc and q35 machines have on by default (pae: every x86_64 CPU model).
_DEFAULT_FEATURES = frozenset({"acpi", "apic", "pae"})
# (controller type, index, machine family) built into the machine itself.
_BUILT_IN_CONTROLLERS = frozenset({("ide", "0", "pc"), ("sata", "0", "q35")})
#: PCI controller models start creates (by machine family); the root bus is the machine's
PCI_CONTROLLER_MODELS = {"pc": "pci-bridge", "q35": "pcie-root-port"}
_ROOT_MODELS = frozenset({"pci-root", "pcie-root"})


@dataclass(frozen=True)
class Finding:
    """One element start does not translate: how to name it and where it is."""

    what: str
    where: Location | None


def _attrs(el: ElementDef, allowed: frozenset[str]) -> Iterator[Finding]:
    for name, value in el.attrs:
        if name not in allowed:
            yield Finding(f"<{el.tag} {name}='{value}'>", el.where)


def _children(el: ElementDef, allowed: frozenset[str] = frozenset()) -> Iterator[Finding]:
    for child in el.children:
        if child.tag not in allowed:
            yield Finding(f"<{child.tag}> in <{el.tag}>", child.where)


def _domain_element(el: ElementDef, domain: DomainDef) -> Iterator[Finding]:
    tag = el.tag
    if tag in _METADATA:
        return
    if tag in _LIFECYCLE_DEFAULT:
        if el.text != _LIFECYCLE_DEFAULT[tag]:
            yield Finding(f"<{tag}>{el.text}</{tag}>", el.where)
        return
    if tag == "memory":
        yield from _attrs(el, frozenset({"unit"}))
    elif tag == "vcpu":
        yield from _attrs(el, frozenset({"placement", "current"}))
        if el.attr("placement") not in (None, "static"):
            yield Finding(f"<vcpu placement='{el.attr('placement')}'>", el.where)
        current = el.attr("current")
        if current is not None and parse_uint(current, 10) != domain.vcpus:
            yield Finding(f"<vcpu current='{current}'> (start gives the guest "
                          f"{domain.vcpus} vCPUs online)", el.where)
    elif tag == "currentMemory":
        # libvirt sets only the balloon's target from it; start's QEMU has no balloon,
        # so the guest gets <memory>: harmless when the two are the same size.
        if _kib(el) != (domain.memory.kib if domain.memory is not None else None):
            yield Finding("<currentMemory> smaller than <memory> (start's QEMU has no "
                          "balloon: the guest gets all of <memory>)", el.where)
    elif tag == "os":
        yield from _attrs(el, frozenset())
        for child in el.children:
            if child.tag == "type":
                yield from _attrs(child, frozenset({"arch", "machine"}))
            else:
                yield Finding(f"<{child.tag}> in <os>", child.where)
    elif tag == "features":
        for child in el.children:
            if child.tag not in _DEFAULT_FEATURES or child.attrs or child.children:
                yield Finding(f"<{child.tag}> in <features>", child.where)
    elif tag == "clock":
        if el.attrs != (("offset", "utc"),) and el.attrs != ():
            shown = " ".join(f"{k}='{v}'" for k, v in el.attrs)
            yield Finding(f"<clock {shown}>", el.where)
        yield from _children(el)
    elif tag == "seclabel" and el.attr("type") == "none":
        return
    else:
        yield Finding(f"<{tag}>", el.where)


def _kib(el: ElementDef) -> int | None:
    """A ``<currentMemory>``'s size in KiB, rounded up as for ``<memory>``; None if bad."""
    value = parse_uint(el.text, 10, maximum=ULLONG_MAX)
    scale = unit_scale(el.attr("unit"), 1024)
    if value is None or scale is None:
        return None
    return -(-value * scale // 1024)


def _device(dev: OtherDeviceDef, family: str) -> Iterator[Finding]:
    tag = dev.tag
    if tag == "controller":
        kind, index = dev.kind, dev.attr("index") or "0"
        created = dev.model in _ROOT_MODELS or dev.model == PCI_CONTROLLER_MODELS.get(family)
        if ((kind == "pci" and created)  # the root bus, or created by start (plan.py)
                or (kind == "usb" and dev.model == "none")
                or (kind, index.lstrip("0") or "0", family) in _BUILT_IN_CONTROLLERS):
            return
        model = f" model='{dev.model}'" if dev.model else ""
        yield Finding(f"<controller type='{kind}'{model}>", dev.where)
        return
    if tag == "memballoon" and dev.model == "none":
        return
    if tag == "input" and dev.attr("bus") == "ps2" and dev.kind in ("mouse", "keyboard"):
        return  # the i8042 of pc and q35
    if tag == "audio" and dev.kind == "none":
        return
    key = "device" if tag == "disk" and dev.attr("device") else "type"
    value = dev.attr(key)
    yield Finding(f"<{tag} {key}='{value}'>" if value else f"<{tag}>", dev.where)


def untranslated(domain: DomainDef) -> list[Finding]:
    """Every element of ``domain`` that ``start`` neither translates nor may drop, in
    document order (the elements outside ``<devices>`` first)."""
    found: list[Finding] = []
    for el in domain.elements:
        found.extend(_domain_element(el, domain))
    for dev in domain.others:
        found.extend(_device(dev, domain.machine_family))
    return found


def _line(f: Finding) -> str:
    return f"line {f.where.line}" if f.where is not None and f.where.line else "?"


def check_translated(domain: DomainDef, mode: Untranslated) -> None:
    """Refuse (``mode='refuse'``) a domain with an element start would leave out.

    Raises:
        ConfigError: naming the first such element and its line, and how many more
            there are (the first few by name).
    """
    if mode == "ignore":
        return
    found = untranslated(domain)
    if not found:
        return
    first, rest = found[0], found[1:]
    where = first.where if first.where is not None else domain.file
    more = ""
    if rest:
        shown = ", ".join(f"{f.what} {_line(f)}" for f in rest[:4])
        more = f" (and {len(rest)} more: {shown}{', …' if len(rest) > 4 else ''})"
    raise ConfigError(
        f"{where}: {first.what} is not translated by vfioctl start{more}",
        hint="give QEMU what the guest needs after '--' and start with "
        "--ignore-untranslated, or remove it (docs/hostdev-xml.md, 'What start translates')")
