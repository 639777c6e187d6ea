"""Mechanics: a PCI function as a lazy view over ``sys/bus/pci/devices/ADDR`` on a Host.

Like pyudev's Device, a :class:`PciDevice` caches nothing the kernel can change: every
property re-reads sysfs, because a driver bound a moment ago makes any cached value
stale. Views compare and hash by (host, address).

Every value comes from a sysfs file, never from a guess: vendor/device ids from the
``vendor``/``device`` files (or ``modalias``, which the kernel prints from the same
fields) rather than from ``config`` (a VF's config space reads ``ffff`` there,
docs/kernel.md "Config space of a VF"), the driver from the ``driver`` link, the group
from the ``iommu_group`` link, the parent chain from where the kernel placed the device
directory.

Paths on the hot read path are plain strings (``host.base`` explains why).
"""

from __future__ import annotations

import errno
import posixpath
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, NamedTuple

from vfioctl.address import PciAddress
from vfioctl.errors import DeviceNotFound, UsageError
from vfioctl.host.base import PCI_DEVICES, Host

if TYPE_CHECKING:
    from vfioctl.pci.config import ConfigSpace

# Drivers the kernel lets sit in a VFIO group: they set driver_managed_dma (vfio-pci and
# its variants, pci-stub) or are the port driver that never does DMA for the device
# (pcieport). drivers/vfio/group.c + drivers/pci/pcie/portdrv.c; docs/kernel.md "DMA
# ownership and group viability".
VFIO_SAFE_DRIVERS = frozenset({"vfio-pci", "pci-stub", "pcieport"})
VFIO_DRIVER = "vfio-pci"

_DEVICES_PREFIX = f"{PCI_DEVICES}/"
# Errors read as "this attribute is not there (now)": a missing file (ENOENT), a device
# removed meanwhile (ENODEV), an attribute whose show() refuses to answer (EINVAL, EIO).
_ABSENT_ERRNOS = frozenset({errno.ENOENT, errno.ENODEV, errno.EINVAL, errno.EIO})
# drivers/pci/pci-sysfs.c modalias_show(): "pci:v%08Xd%08Xsv%08Xsd%08Xbc%02Xsc%02Xi%02X"
# from the very pci_dev fields that vendor_show/device_show/class_show print. Checked
# whole, then sliced at the fixed offsets (cheaper than match groups, once per function).
_MODALIAS = re.compile(rb"pci:v[0-9A-F]{8}d[0-9A-F]{8}sv[0-9A-F]{8}sd[0-9A-F]{8}"
                       rb"bc[0-9A-F]{2}sc[0-9A-F]{2}i[0-9A-F]{2}\s*")
_ADDRESS_ORDER = attrgetter("domain", "bus", "slot", "function")


class Identity(NamedTuple):
    """Vendor, device, subsystem ids and class of a function, as the kernel reports them.

    A tuple rather than a frozen dataclass: ``list`` builds one per function, and a
    tuple is built at C speed.
    """

    vendor: int
    device: int
    subsystem_vendor: int | None
    subsystem_device: int | None
    class_code: int


def parse_sysfs_int(raw: bytes | None) -> int | None:
    """A decimal (or ``0x``) sysfs number; None when absent, empty or not a number."""
    if raw is None:
        return None
    try:
        return int(raw, 0)
    except ValueError:
        return None


@dataclass(frozen=True)
class PciDevice:
    """A lazy view of one PCI function on one host."""

    host: Host
    addr: PciAddress
    # plain-string prefix ``sys/bus/pci/devices/ADDR/`` for the hot read path (host.base
    # on str paths); set once here, cheaper than a cached_property on first use
    _base: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_base", f"{_DEVICES_PREFIX}{self.addr}/")

    # -- identity -------------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(self.addr)

    @property
    def path(self) -> PurePosixPath:
        return PCI_DEVICES / self.name

    def __hash__(self) -> int:
        return hash((id(self.host), self.addr))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, PciDevice) and other.host is self.host
                and other.addr == self.addr)

    def __repr__(self) -> str:
        return f"PciDevice({self.name})"

    # -- raw access -----------------------------------------------------------------
    def read_attr(self, name: str) -> bytes | None:
        """A sysfs attribute's bytes as read; None when it is absent (see _ABSENT_ERRNOS).

        Other errors (EACCES, EBUSY …) propagate: they mean something.
        """
        try:
            return self.host.read_bytes(self._base + name)
        except OSError as err:
            if isinstance(err, FileNotFoundError) or err.errno in _ABSENT_ERRNOS:
                return None
            raise

    def attr(self, name: str) -> str | None:
        """A sysfs attribute, stripped; None when the file does not exist."""
        try:
            return self.host.read_text(self._base + name).strip()
        except OSError as err:
            if isinstance(err, FileNotFoundError) or err.errno in _ABSENT_ERRNOS:
                return None
            raise

    def hex_attr(self, name: str) -> int | None:
        """A ``0x…`` attribute (``vendor``, ``class`` …) as an int; None when absent."""
        value = self.read_attr(name)
        return None if value is None else int(value, 16)

    def int_attr(self, name: str) -> int | None:
        """A number attribute (``numa_node``, ``sriov_numvfs`` …); None when absent,
        empty or not a number."""
        return parse_sysfs_int(self.read_attr(name))

    def link_name(self, name: str) -> str | None:
        """The last component of the link ``name`` in the device directory (``driver``
        -> ``vfio-pci``); None when there is no such link."""
        try:
            return self.host.readlink(self._base + name).rpartition("/")[2]
        except OSError:
            return None

    def entries(self) -> list[str]:
        """Names in the device directory (one listdir tells which optional files exist)."""
        return self.host.listdir(self._base)

    def exists(self) -> bool:
        return self.host.exists(self.path)

    # -- ids and class --------------------------------------------------------------
    @property
    def vendor(self) -> int:
        return self.hex_attr("vendor") or 0

    @property
    def device(self) -> int:
        return self.hex_attr("device") or 0

    @property
    def subsystem_vendor(self) -> int | None:
        return self.hex_attr("subsystem_vendor")

    @property
    def subsystem_device(self) -> int | None:
        return self.hex_attr("subsystem_device")

    @property
    def class_code(self) -> int:
        return self.hex_attr("class") or 0

    @property
    def revision(self) -> int | None:
        return self.hex_attr("revision")

    def identity(self) -> Identity:
        """All ids and the class in one read of ``modalias``.

        The kernel formats ``modalias`` from the same ``struct pci_dev`` fields as the
        ``vendor``, ``device``, ``subsystem_*`` and ``class`` files
        (drivers/pci/pci-sysfs.c, modalias_show()), so one read replaces five; when
        ``modalias`` is missing or not in that format, the files are read one by one.
        """
        raw = self.read_attr("modalias")
        if raw is None or _MODALIAS.fullmatch(raw) is None:
            return Identity(self.vendor, self.device, self.subsystem_vendor,
                            self.subsystem_device, self.class_code)
        return Identity(int(raw[5:13], 16), int(raw[14:22], 16), int(raw[24:32], 16),
                        int(raw[34:42], 16), int(raw[44:46] + raw[48:50] + raw[51:53], 16))

    # -- driver ---------------------------------------------------------------------
    @property
    def driver(self) -> str | None:
        """The bound driver's name, or None when the function is driverless."""
        return self.link_name("driver")

    @property
    def driver_override(self) -> str | None:
        """The override, or None when unset (the kernel reads back ``(null)``)."""
        value = self.attr("driver_override")
        return None if value in (None, "", "(null)") else value

    @property
    def is_vfio_variant(self) -> bool:
        """Bound to vfio-pci or a vfio variant driver (they all create ``vfio-dev/``)."""
        return self.driver == VFIO_DRIVER or self.has_vfio_dev()

    def has_vfio_dev(self) -> bool:
        """The ``vfio-dev/`` directory exists: some vfio driver (vfio-pci or a variant)
        has registered this function."""
        return self.host.exists(self._base + "vfio-dev")

    @property
    def vfio_safe(self) -> bool:
        """Acceptable in a VFIO group: driverless, vfio(-variant), pci-stub or pcieport."""
        return driver_is_vfio_safe(self, self.driver)

    # -- placement ------------------------------------------------------------------
    @property
    def iommu_group(self) -> int | None:
        name = self.link_name("iommu_group")
        return None if name is None else int(name)

    @property
    def numa_node(self) -> int | None:
        return self.int_attr("numa_node")

    @property
    def sysfs_path(self) -> str:
        """The device's real directory, e.g. ``sys/devices/pci0000:00/0000:00:1c.0/…``."""
        target = self.host.readlink(self.path)
        return posixpath.normpath(posixpath.join(str(PCI_DEVICES), target))

    @property
    def path_to_root(self) -> list[PciAddress]:
        """Upstream bridges from the root bus down to (not including) this function."""
        chain: list[PciAddress] = []
        for part in self.sysfs_path.split("/")[:-1]:
            try:
                chain.append(PciAddress.parse(part))
            except UsageError:
                continue
        return chain

    @property
    def parent(self) -> PciAddress | None:
        chain = self.path_to_root
        return chain[-1] if chain else None

    # -- SR-IOV ---------------------------------------------------------------------
    @property
    def physfn(self) -> PciAddress | None:
        name = self.link_name("physfn")
        return None if name is None else PciAddress.parse(name)

    @property
    def virtfns(self) -> list[PciAddress]:
        return self.virtfns_in(self.entries())

    def virtfns_in(self, entries: list[str],
                   known: dict[str, PciAddress] | None = None) -> list[PciAddress]:
        """The VFs named by the ``virtfnN`` links among ``entries``, in N order.

        ``known`` maps kernel names to addresses already parsed (a listing's), so that
        a PF with hundreds of VFs does not parse each address again.
        """
        numbered = []
        for entry in entries:
            if entry.startswith("virtfn") and entry[6:].isdigit():
                target = self.link_name(entry)
                if target is not None:
                    addr = known.get(target) if known is not None else None
                    numbered.append((int(entry[6:]), addr or PciAddress.parse(target)))
        numbered.sort(key=_first)
        return [addr for _, addr in numbered]

    @property
    def sriov_totalvfs(self) -> int | None:
        return self.int_attr("sriov_totalvfs")

    @property
    def sriov_numvfs(self) -> int | None:
        return self.int_attr("sriov_numvfs")

    @property
    def reset_method(self) -> list[str] | None:
        value = self.attr("reset_method")
        return None if value is None else value.split()

    @property
    def boot_vga(self) -> bool | None:
        value = self.attr("boot_vga")
        return None if value is None else value == "1"

    # -- config space ---------------------------------------------------------------
    @property
    def config(self) -> ConfigSpace:
        from vfioctl.pci.config import parse_config  # only show/explain decode config

        try:
            raw = self.host.read_bytes(self._base + "config")
        except OSError:
            raw = b""
        return parse_config(raw)


def _first(pair: tuple[int, PciAddress]) -> int:
    return pair[0]


def driver_is_vfio_safe(dev: PciDevice, driver: str | None) -> bool:
    """Whether ``dev``, bound to ``driver`` (read a moment ago), may sit in a VFIO group.

    The kernel's DMA-ownership rule (drivers/vfio/group.c, driver_managed_dma): no
    driver, vfio-pci, a vfio variant driver (detected by ``vfio-dev/``), pci-stub or
    pcieport. Split out so a caller that already read the driver pays one syscall less.
    """
    if driver is None or driver in VFIO_SAFE_DRIVERS:
        return True
    return dev.has_vfio_dev()


def in_address_order(addrs: Iterable[PciAddress]) -> list[PciAddress]:
    """``sorted(addrs)``, by a C-level key rather than the dataclass's ``__lt__``."""
    return sorted(addrs, key=_ADDRESS_ORDER)


def sorted_addresses(names: Iterable[str]) -> list[PciAddress]:
    """Kernel device names parsed and put in address order.

    Raises:
        UsageError: a name is not a PCI address.
    """
    return in_address_order(PciAddress.parse(n) for n in names)


def iter_addresses(host: Host) -> Iterator[PciAddress]:
    """Every PCI function the host has, in address order."""
    try:
        names = host.listdir(PCI_DEVICES)
    except FileNotFoundError:
        return
    yield from sorted_addresses(names)


def iter_devices(host: Host) -> Iterator[PciDevice]:
    for addr in iter_addresses(host):
        yield PciDevice(host, addr)


def find_device(host: Host, addr: PciAddress | str) -> PciDevice | None:
    """The device at ``addr``, or None if the host has none there."""
    if isinstance(addr, str):
        addr = PciAddress.parse(addr)
    dev = PciDevice(host, addr)
    return dev if host.exists(dev.path) else None


def get_device(host: Host, addr: PciAddress | str) -> PciDevice:
    """The device at ``addr``.

    Raises:
        UsageError: if ``addr`` is not a PCI address.
        DeviceNotFound: if the host has no such device.
    """
    if isinstance(addr, str):
        addr = PciAddress.parse(addr)
    dev = find_device(host, addr)
    if dev is None:
        raise DeviceNotFound(addr)
    return dev
