"""Translation: where each hostdev sits on the guest PCI bus, the way libvirt 9.0 decides.

Explicit ``<address type='pci'>`` is kept. For ``pc`` (i440fx) machines an omitted
address is assigned like libvirt's ``qemuDomainAssignDevicePCISlots``: slot 0 is the
host bridge, slot 1 the PIIX3 (IDE 1.1, default USB 1.2), slot 2 goes to the primary
video device if the domain has one (or has ``<graphics>``, which implies one); then the
devices libvirt places *before* hostdevs take the lowest free slots, one each, in the
order interfaces, sound, controllers, disks; then hostdevs, in document order. Devices
placed after hostdevs (memballoon, rng, input, watchdog, other video) do not matter.
This order and the implicit controllers (``lsi`` for a SCSI disk, ``virtio-serial`` for
a virtio channel) were checked against libvirt 9.0's ``virsh domxml-to-native``.

For ``q35`` libvirt adds ``pcie-root-port`` controllers and moves devices behind them;
vfioctl does not reproduce that and asks for an explicit address instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from vfioctl.conf.hostdev import DomainDef, GuestPciAddress, HostdevDef, OtherDeviceDef
from vfioctl.errors import UnsupportedConfig

ROOT_BUS = {"pc": "pci.0", "q35": "pcie.0"}
_MAX_SLOT = 0x1F
_PIIX3_SLOT = 1
_VGA_SLOT = 2

# USB controller models that are one plain PCI function each (pc machines).
_USB_ONE_SLOT = frozenset({"qemu-xhci", "nec-xhci", "piix4-uhci", "ehci", "vt82c686b-uhci",
                           "pci-ohci"})
_USB_NO_SLOT = frozenset({None, "piix3-uhci", "none"})
_SOUND_NOT_PCI = frozenset({"pcspk", "sb16", "usb"})


@dataclass(frozen=True)
class Placement:
    """A hostdev's QEMU bus id and its guest address (assigned or as written)."""

    bus: str
    address: GuestPciAddress
    assigned: bool


def is_wanted(addr: GuestPciAddress | None) -> bool:
    """True when an address is given; libvirt treats an all-zero one as "assign it"."""
    return addr is not None and (addr.domain, addr.bus, addr.slot, addr.function) != (0,) * 4


def place_hostdevs(domain: DomainDef) -> list[Placement]:
    """One :class:`Placement` per hostdev of ``domain``, in order.

    Raises:
        UnsupportedConfig: for a machine other than pc/q35, a q35 hostdev without an
            address, a bus without a declared controller, or a layout vfioctl cannot
            predict (multifunction USB companions, no free slot on pci.0).
    """
    family = domain.machine_family
    if domain.arch not in (None, "x86_64", "i686"):
        raise UnsupportedConfig(
            f"{domain.file}: guest architecture '{domain.arch}' is not supported by vfioctl",
            hint="vfioctl generates arguments for x86 pc and q35 machines")
    if family not in ROOT_BUS:
        raise UnsupportedConfig(
            f"{domain.file}: machine type '{domain.machine}' is not supported by vfioctl",
            hint="use a pc (i440fx) or q35 machine")

    placements: list[Placement | None] = []
    for hd in domain.hostdevs:
        if is_wanted(hd.guest_address):
            assert hd.guest_address is not None
            placements.append(Placement(_bus_id(domain, hd, hd.guest_address),
                                        hd.guest_address, assigned=False))
        else:
            placements.append(None)
    if all(p is not None for p in placements):
        return [p for p in placements if p is not None]
    if family == "q35":
        hd = next(h for h, p in zip(domain.hostdevs, placements, strict=True) if p is None)
        raise UnsupportedConfig(
            f"{hd.where}: automatic PCI address assignment on q35 is not supported by "
            "vfioctl",
            hint="give the hostdev an <address type='pci' …/> on bus 0x00 (pcie.0) or on a "
            "declared pcie-root-port")

    used = _used_root_slots(domain)
    before = _slots_taken_before_hostdevs(domain)
    for _ in range(before):
        _take(used, domain, None)
    out: list[Placement] = []
    for hd, placement in zip(domain.hostdevs, placements, strict=True):
        if placement is None:
            slot = _take(used, domain, hd)
            placement = Placement(ROOT_BUS["pc"], GuestPciAddress(0, 0, slot, 0), assigned=True)
        out.append(placement)
    return out


def _bus_id(domain: DomainDef, hd: HostdevDef, addr: GuestPciAddress) -> str:
    family = domain.machine_family
    if addr.domain != 0:
        raise UnsupportedConfig(
            f"{hd.where}: guest PCI domain 0x{addr.domain:04x} is not supported by vfioctl")
    if addr.bus == 0:
        return ROOT_BUS[family]
    for ctl in domain.controllers:
        if ctl.index == addr.bus:
            return ctl.bus_id
    raise UnsupportedConfig(
        f"{hd.where}: guest PCI bus 0x{addr.bus:02x} has no <controller type='pci' "
        f"index='{addr.bus}'> and vfioctl does not add controllers",
        hint="declare the controller (pci-bridge on pc, pcie-root-port on q35)")


def _used_root_slots(domain: DomainDef) -> set[int]:
    used = {0, _PIIX3_SLOT}
    addrs = [o.pci_address for o in domain.others] + [h.guest_address for h in domain.hostdevs]
    for addr in addrs:
        if is_wanted(addr) and addr is not None and addr.bus == 0:
            used.add(addr.slot)
    # The primary video goes to 0x2 when it has no address and 0x2 is free.
    videos = [o for o in domain.others if o.tag == "video" and o.model != "none"]
    has_graphics = any(o.tag == "graphics" for o in domain.others)
    primary_unaddressed = (videos and not videos[0].has_address) or (not videos and has_graphics)
    if primary_unaddressed and _VGA_SLOT not in used:
        used.add(_VGA_SLOT)
    return used


def _unaddressed(dev: OtherDeviceDef) -> bool:
    return not dev.has_address


def _slots_taken_before_hostdevs(domain: DomainDef) -> int:
    count = 0
    others = domain.others
    controllers = {(o.kind, o.model) for o in others if o.tag == "controller"}
    ctl_types = {kind for kind, _ in controllers}
    for dev in others:
        if not _unaddressed(dev):
            continue
        if dev.tag == "interface":
            if dev.kind == "hostdev":
                raise UnsupportedConfig(
                    f"{dev.where}: <interface type='hostdev'> is not supported by vfioctl",
                    hint="write it as a <hostdev mode='subsystem' type='pci'>")
            count += 1
        elif dev.tag == "sound" and dev.model not in _SOUND_NOT_PCI:
            count += 1
        elif dev.tag == "controller":
            count += _controller_slots(dev)
        elif dev.tag == "disk" and dev.bus == "virtio":
            count += 1
        elif dev.tag == "filesystem":
            raise UnsupportedConfig(
                f"{dev.where}: vfioctl cannot predict libvirt's PCI address for a "
                "<filesystem> without an address",
                hint="give the hostdevs explicit <address type='pci' …/> elements")
    # Controllers libvirt adds by itself (virDomainDefAddImplicitControllers).
    if "scsi" not in ctl_types and any(o.tag == "disk" and o.bus == "scsi" for o in others):
        count += 1  # lsi
    if "virtio-serial" not in ctl_types and any(
        o.tag in ("channel", "console") and o.target_type == "virtio" for o in others
    ):
        count += 1  # virtio-serial-pci
    if "sata" not in ctl_types and any(o.tag == "disk" and o.bus == "sata" for o in others):
        raise UnsupportedConfig(
            f"{domain.file}: vfioctl cannot predict libvirt's PCI address for the implicit "
            "SATA controller", hint="declare the controller with an address")
    return count


def _controller_slots(dev: OtherDeviceDef) -> int:
    kind, model = dev.kind, dev.model
    if kind == "usb":
        if model in _USB_NO_SLOT:
            return 0
        if model in _USB_ONE_SLOT:
            return 1
        raise UnsupportedConfig(
            f"{dev.where}: vfioctl cannot predict libvirt's PCI address for USB controller "
            f"model '{model}'", hint="give the hostdevs explicit <address type='pci' …/>")
    if kind in ("ide", "fdc", "xenbus", "ccid"):
        return 0
    if kind in ("scsi", "virtio-serial", "sata"):
        return 1
    if kind == "pci":
        if model in ("pci-root", None):
            return 0
        if model == "pci-bridge":
            return 1
        raise UnsupportedConfig(
            f"{dev.where}: PCI controller model '{model}' without an address is not "
            "supported by vfioctl on a pc machine")
    raise UnsupportedConfig(
        f"{dev.where}: vfioctl cannot predict libvirt's PCI address for a '{kind}' "
        "controller without an address",
        hint="give the hostdevs explicit <address type='pci' …/> elements")


def _take(used: set[int], domain: DomainDef, hd: HostdevDef | None) -> int:
    for slot in range(_VGA_SLOT, _MAX_SLOT + 1):
        if slot not in used:
            used.add(slot)
            return slot
    where = hd.where if hd is not None else domain.file
    raise UnsupportedConfig(
        f"{where}: no free slot left on pci.0 and vfioctl does not add PCI bridges",
        hint="give the hostdev an explicit address behind a declared pci-bridge")
