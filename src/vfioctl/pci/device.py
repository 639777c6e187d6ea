"""Mechanics: a PCI function as a lazy view over ``sys/bus/pci/devices/ADDR`` on a Host.

Like pyudev's Device, a :class:`PciDevice` caches nothing the kernel can change: every
property re-reads sysfs, because a driver bound a moment ago makes any cached value
stale. Views compare and hash by (host, address).

Every value comes from a sysfs file, never from a guess: vendor/device ids from the
``vendor``/``device`` files rather than from ``config`` (a VF's config space reads
``ffff`` there, KERNEL.md), the driver from the ``driver`` link, the group from the
``iommu_group`` link, the parent chain from where the kernel placed the device directory.
"""

from __future__ import annotations

import errno
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import PurePosixPath

from vfioctl.address import PciAddress
from vfioctl.errors import DeviceNotFound, UsageError
from vfioctl.host.base import PCI_DEVICES, Host
from vfioctl.pci.config import ConfigSpace, parse_config

# Drivers the kernel lets sit in a VFIO group: they set driver_managed_dma (vfio-pci and
# its variants, pci-stub) or are the port driver that never does DMA for the device
# (pcieport). drivers/vfio/group.c + drivers/pci/pcie/portdrv.c; KERNEL.md.
VFIO_SAFE_DRIVERS = frozenset({"vfio-pci", "pci-stub", "pcieport"})
VFIO_DRIVER = "vfio-pci"


@dataclass(frozen=True)
class PciDevice:
    """A lazy view of one PCI function on one host."""

    host: Host
    addr: PciAddress

    # -- identity -------------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(self.addr)

    @property
    def path(self) -> PurePosixPath:
        return PCI_DEVICES / self.name

    @cached_property
    def _base(self) -> str:
        # plain-string prefix for the hot read path (see host.base on str paths)
        return f"{PCI_DEVICES}/{self.addr}/"

    def __hash__(self) -> int:
        return hash((id(self.host), self.addr))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, PciDevice) and other.host is self.host
                and other.addr == self.addr)

    def __repr__(self) -> str:
        return f"PciDevice({self.name})"

    # -- raw access -----------------------------------------------------------------
    def attr(self, name: str) -> str | None:
        """A sysfs attribute, stripped; None when the file does not exist."""
        try:
            return self.host.read_text(self._base + name).strip()
        except FileNotFoundError:
            return None
        except OSError as err:
            if err.errno in (errno.ENOENT, errno.ENODEV, errno.EINVAL, errno.EIO):
                return None
            raise

    def _hex_attr(self, name: str) -> int | None:
        value = self.attr(name)
        return None if value is None else int(value, 16)

    def _int_attr(self, name: str) -> int | None:
        value = self.attr(name)
        if value is None or value == "":
            return None
        try:
            return int(value, 0)
        except ValueError:
            return None

    def _link_name(self, name: str) -> str | None:
        try:
            return posixpath.basename(self.host.readlink(self._base + name))
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
        return self._hex_attr("vendor") or 0

    @property
    def device(self) -> int:
        return self._hex_attr("device") or 0

    @property
    def subsystem_vendor(self) -> int | None:
        return self._hex_attr("subsystem_vendor")

    @property
    def subsystem_device(self) -> int | None:
        return self._hex_attr("subsystem_device")

    @property
    def class_code(self) -> int:
        return self._hex_attr("class") or 0

    @property
    def revision(self) -> int | None:
        return self._hex_attr("revision")

    # -- driver ---------------------------------------------------------------------
    @property
    def driver(self) -> str | None:
        """The bound driver's name, or None when the function is driverless."""
        return self._link_name("driver")

    @property
    def driver_override(self) -> str | None:
        """The override, or None when unset (the kernel reads back ``(null)``)."""
        value = self.attr("driver_override")
        return None if value in (None, "", "(null)") else value

    @property
    def is_vfio_variant(self) -> bool:
        """Bound to vfio-pci or a vfio variant driver (they all create ``vfio-dev/``)."""
        return self.driver == VFIO_DRIVER or self.host.exists(self.path / "vfio-dev")

    @property
    def vfio_safe(self) -> bool:
        """Acceptable in a VFIO group: driverless, vfio(-variant), pci-stub or pcieport."""
        drv = self.driver
        return drv is None or drv in VFIO_SAFE_DRIVERS or self.is_vfio_variant

    # -- placement ------------------------------------------------------------------
    @property
    def iommu_group(self) -> int | None:
        name = self._link_name("iommu_group")
        return None if name is None else int(name)

    @property
    def numa_node(self) -> int | None:
        return self._int_attr("numa_node")

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
        name = self._link_name("physfn")
        return None if name is None else PciAddress.parse(name)

    @property
    def virtfns(self) -> list[PciAddress]:
        return self._virtfns(self.entries())

    def _virtfns(self, entries: list[str]) -> list[PciAddress]:
        numbered = []
        for entry in entries:
            if entry.startswith("virtfn") and entry[6:].isdigit():
                target = self._link_name(entry)
                if target is not None:
                    numbered.append((int(entry[6:]), PciAddress.parse(target)))
        return [addr for _, addr in sorted(numbered)]

    @property
    def sriov_totalvfs(self) -> int | None:
        return self._int_attr("sriov_totalvfs")

    @property
    def sriov_numvfs(self) -> int | None:
        return self._int_attr("sriov_numvfs")

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
        try:
            raw = self.host.read_bytes(self.path / "config")
        except OSError:
            raw = b""
        return parse_config(raw)


def iter_addresses(host: Host) -> Iterator[PciAddress]:
    """Every PCI function the host has, in address order."""
    try:
        names = host.listdir(PCI_DEVICES)
    except FileNotFoundError:
        return
    yield from sorted(PciAddress.parse(n) for n in names)


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
