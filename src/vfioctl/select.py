"""Selection: the words users name devices with, turned into PCI addresses on a host.

People know their hardware by the names other tools show them: ``lspci``'s ``01:00.0``
and ``10de:2504``, ``ip link``'s ``enp4s0``, ``lsblk``'s ``sda``. Every command that
takes devices accepts all of them, so nobody has to look an address up first. Each
selector is resolved on the host at hand through the seam (live kernel, ``linux:DIR``
snapshot, simulated host alike), from what sysfs says now:

=====================  ==========================================================
form                   matches
=====================  ==========================================================
``0000:01:00.0``       that function (``01:00.0`` and ``pci_0000_01_00_0`` too;
                       a short address is in domain 0000)
``0000:01:00.*``       every function whose canonical address matches the glob
                       (:mod:`fnmatch`); a glob with fewer than two colons also
                       matches a domain-0000 address without its domain, so
                       ``01:00.*`` is bus 01 slot 00, and ``*:00.0`` (the ``*``
                       spans domain and bus) function 0 of slot 0 on every bus
``10de:2504``          every function with that vendor and device id
                       (``10de:*`` every function of vendor 10de; from the
                       ``vendor``/``device`` sysfs files, as ``lspci -d`` does;
                       one colon and no dot is this form, so ``0000:*`` is vendor
                       0000, not domain 0000)
``gpu``                every function of a class in :data:`CLASS_NAMES`
``enp4s0``             the function the interface belongs to
                       (``devices/ADDR/net/IFNAME``, or ``ADDR/virtioN/net/IFNAME``
                       for virtio-net)
``sda``, ``/dev/sda``  the function the block device sits below (its ``sys/block``
                       link points into the function's subtree); a partition
                       (``sda1``) selects its disk's; a device-mapper or MD device
                       the functions of the disks it is built on (``slaves/``)
=====================  ==========================================================

A class name takes precedence over an interface or block device of the same name;
an interface over a block device.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from collections.abc import Sequence

from vfioctl.address import PciAddress
from vfioctl.errors import DeviceNotFound, NotFound, UsageError
from vfioctl.host.base import DEV, PCI_DEVICES, SYS_BLOCK, Host
from vfioctl.pci.device import PciDevice, iter_addresses

__all__ = ["CLASS_NAMES", "SelectorNotFound", "resolve", "resolve_one"]

#: Class name -> the PCI class-code prefixes it selects, as hex digits of the 24-bit
#: code (base class, sub-class, programming interface; PCI Code and ID Assignment
#: specification): ``"03"`` is any display controller, ``"010802"`` an NVMe one.
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "gpu": ("03",),             # display controllers: VGA, XGA, 3D, other
    "vga": ("03",),
    "display": ("03",),
    "audio": ("0401", "0403"),  # multimedia audio, HD audio (a GPU's HDMI audio)
    "multimedia": ("04",),
    "network": ("02",),
    "nic": ("02",),
    "ethernet": ("0200",),
    "storage": ("01",),
    "nvme": ("010802",),
    "sata": ("0106",),
    "raid": ("0104",),
    "usb": ("0c03",),
    "smbus": ("0c05",),
    "bridge": ("06",),
    "accelerator": ("12",),     # processing accelerators
}

_GLOB_CHARS = frozenset("*?[")
# addresses and their globs: hex digits, separators, fnmatch's syntax
_ADDRESS_GLOB = re.compile(r"^[0-9a-fA-F:.*?\[\]!-]+$")
_ID = re.compile(r"^[0-9a-fA-F]{4}:[0-9a-fA-F]{4}$")
_ID_GLOB = re.compile(r"^[0-9a-fA-F*?\[\]!-]{1,16}:[0-9a-fA-F*?\[\]!-]{1,16}$")
# a kernel device name inside a sysfs path (sys/devices/pci0000:00/0000:00:1c.4/...)
_KERNEL_NAME = re.compile(r"^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
# interface and block device names: what the kernel allows, minus '/' and ':'
_NAME = re.compile(r"^(?!\.\.?$)[^\s/:]{1,64}$")
_FORMS = ("is not a PCI address, a vendor:device id, a class name, an interface or a "
          "block device")
_FORMS_HINT = ("name devices as 0000:01:00.0, 01:00.*, 10de:2504, gpu, enp4s0 or sda "
               "(see 'vfioctl list')")
_SHOWN = 4  # matches a message names before "(+N more)"
_STACK_DEPTH = 4  # dm on md on disks: deep enough, bounded against link loops


class SelectorNotFound(DeviceNotFound):
    """A selector of a known form that names no device on this host (exit 4)."""

    def __init__(self, selector: str, what: str, *, hint: str | None = None) -> None:
        NotFound.__init__(self, f"no PCI device matches {what} on this host",
                          hint=hint or "run 'vfioctl list' to see the devices this host has")
        self.addr: object = selector
        self.selector = selector


def resolve(host: Host, selectors: Sequence[str]) -> list[PciAddress]:
    """Devices named by each selector, in the order given, each once.

    A selector is a full address (0000:01:00.0), a short one (01:00.0 = domain 0000), a
    glob over addresses (0000:01:00.*, 01:00.*, \\*:00.0), a vendor:device id
    (10de:2504, 10de:\\*), a class name (gpu, vga, display, audio, network, nvme,
    storage, usb, ... — see :data:`CLASS_NAMES`), a network interface name (enp4s0) or a
    block device (sda, nvme0n1, /dev/sda). A selector that matches several devices
    gives them in address order.

    Raises:
        UsageError: (exit 2) a selector of no known form (a word that is no class name,
            interface or block device on this host counts as such).
        DeviceNotFound: (exit 4) a selector of a known form that matches nothing.
    """
    resolver = _Resolver(host)
    out: dict[PciAddress, None] = {}
    for selector in selectors:
        for addr in resolver.one_selector(selector):
            out.setdefault(addr, None)
    return list(out)


def resolve_one(host: Host, selector: str) -> PciAddress:
    """Exactly one device.

    Raises:
        UsageError: the selector is of no known form, or it names several devices (the
            message names them, shortened).
        DeviceNotFound: it names none.
    """
    found = _Resolver(host).one_selector(selector)
    if len(found) == 1:
        return found[0]
    raise UsageError(f"'{selector}' names {len(found)} devices: {_shorten(found)}",
                     hint="name one of them (by address, e.g. "
                     f"'{found[0]}')")


def _shorten(addrs: Sequence[PciAddress]) -> str:
    shown = ", ".join(str(a) for a in addrs[:_SHOWN])
    more = len(addrs) - _SHOWN
    return shown + (f" (+{more} more)" if more > 0 else "")


class _Resolver:
    """One resolution: the host's address list and interface map are read once, and
    only when a selector needs them."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._addresses: list[PciAddress] | None = None
        self._interfaces: dict[str, PciAddress] | None = None

    @property
    def addresses(self) -> list[PciAddress]:
        if self._addresses is None:
            self._addresses = list(iter_addresses(self.host))
        return self._addresses

    def one_selector(self, selector: str) -> list[PciAddress]:
        text = selector.strip()
        if any(c in _GLOB_CHARS for c in text):
            return self._glob(selector, text)
        if text.startswith("pci_") or (":" in text and "." in text):
            # An address, or a near miss: PciAddress says what is wrong with it.
            addr = PciAddress.parse(text)
            if not self.host.exists(PCI_DEVICES / str(addr)):
                raise DeviceNotFound(addr)
            return [addr]
        if _ID.match(text):
            return self._ids(selector, text.lower())
        classes = CLASS_NAMES.get(text.lower())
        if classes is not None:
            return self._class(text.lower(), classes)
        if text.startswith("/dev/"):
            return self._dev_node(selector, text)
        if _NAME.match(text):
            iface = self._interface_map().get(text)
            if iface is not None:
                return [iface]
            disk = self._block(text)
            if disk is not None:
                return _on_pci(selector, disk)
        raise _unknown_form(selector)

    # -- addresses and ids ----------------------------------------------------------
    def _glob(self, selector: str, text: str) -> list[PciAddress]:
        pattern = text.lower()
        if _ID_GLOB.match(pattern) and "." not in pattern:
            return self._ids(selector, pattern)
        if not _ADDRESS_GLOB.match(pattern):
            raise _unknown_form(selector)
        short = pattern.count(":") < 2  # may leave the domain out: 01:00.*
        found = [a for a in self.addresses if fnmatch.fnmatchcase(str(a), pattern)
                 or (short and a.domain == 0 and fnmatch.fnmatchcase(str(a)[5:], pattern))]
        if not found:
            raise SelectorNotFound(selector, f"the address pattern '{selector}'")
        return found

    def _ids(self, selector: str, pattern: str) -> list[PciAddress]:
        found = []
        for addr in self.addresses:
            ident = PciDevice(self.host, addr).identity()
            if fnmatch.fnmatchcase(f"{ident.vendor:04x}:{ident.device:04x}", pattern):
                found.append(addr)
        if not found:
            raise SelectorNotFound(selector, f"the id '{selector}'",
                                   hint="'vfioctl list' shows each device's "
                                   "vendor:device id")
        return found

    def _class(self, name: str, prefixes: tuple[str, ...]) -> list[PciAddress]:
        found = []
        for addr in self.addresses:
            code = f"{PciDevice(self.host, addr).identity().class_code:06x}"
            if code.startswith(prefixes):
                found.append(addr)
        if not found:
            codes = ", ".join(p.ljust(6, "x") for p in prefixes)
            raise SelectorNotFound(name, f"the class '{name}' (class {codes})")
        return found

    # -- interfaces -----------------------------------------------------------------
    def _interface_map(self) -> dict[str, PciAddress]:
        """Interface name -> function, from each function's ``net/`` (and virtio-net's
        ``virtioN/net/``) directory."""
        if self._interfaces is None:
            self._interfaces = {}
            for addr in self.addresses:
                base = PCI_DEVICES / str(addr)
                entries = _listdir(self.host, base)
                parents = [base] if "net" in entries else []
                parents += [base / e for e in entries
                            if e.startswith("virtio") and e[6:].isdigit()]
                for parent in parents:
                    for ifname in _listdir(self.host, parent / "net"):
                        self._interfaces.setdefault(ifname, addr)
        return self._interfaces

    # -- block devices --------------------------------------------------------------
    def _dev_node(self, selector: str, text: str) -> list[PciAddress]:
        rel = text[len("/dev/"):]
        name = rel
        try:
            if self.host.is_link(DEV / rel):  # /dev/disk/by-id/…, /dev/mapper/NAME
                name = posixpath.basename(self.host.readlink(DEV / rel))
        except OSError:
            pass
        found = self._block(name) if _NAME.match(name) else None
        if found is None:
            raise SelectorNotFound(selector, f"the block device '{selector}'",
                                   hint="'lsblk' lists the block devices this host has")
        return _on_pci(selector, found)

    def _block(self, name: str, depth: int = 0) -> list[PciAddress] | None:
        """The functions below which block device ``name`` (a disk, a partition, a
        stacked device) sits; None when the host has no such block device."""
        disk = name if self.host.exists(SYS_BLOCK / name) else self._disk_of_partition(name)
        if disk is None:
            return None
        addr = self._function_above(disk)
        if addr is not None:
            return [addr]
        if depth >= _STACK_DEPTH:
            return []
        found: list[PciAddress] = []
        for slave in _listdir(self.host, SYS_BLOCK / disk / "slaves"):
            found.extend(self._block(slave, depth + 1) or [])
        return list(dict.fromkeys(found))

    def _disk_of_partition(self, name: str) -> str | None:
        for disk in _listdir(self.host, SYS_BLOCK):
            if name.startswith(disk) and self.host.exists(SYS_BLOCK / disk / name):
                return disk
        return None

    def _function_above(self, disk: str) -> PciAddress | None:
        """The nearest PCI function in the path the ``sys/block`` link points to."""
        try:
            target = self.host.readlink(SYS_BLOCK / disk)
        except OSError:
            return None
        names = [p for p in target.split("/") if _KERNEL_NAME.match(p)]
        return PciAddress.parse(names[-1]) if names else None


def _listdir(host: Host, path: object) -> list[str]:
    try:
        return sorted(host.listdir(str(path)))
    except OSError:
        return []


def _on_pci(selector: str, found: list[PciAddress]) -> list[PciAddress]:
    """A block device that sits on no PCI function (loop, zram, a RAM disk) selects
    nothing: that is an answer worth its own message."""
    if not found:
        raise SelectorNotFound(selector, f"the block device '{selector}' (it sits on no "
                               "PCI device)")
    return found


def _unknown_form(selector: str) -> UsageError:
    return UsageError(f"'{selector}' {_FORMS}", hint=_FORMS_HINT)
