"""The ``list`` record of a PCI function, and reading it for every function of a host.

``list`` is the command run on hosts with thousands of functions, so
:func:`device_info` reads only what a :class:`DeviceInfo` holds, with as few sysfs
calls as the kernel's layout allows: one read of ``modalias`` for the ids and the class
(:meth:`PciDevice.identity`), the ``driver``, ``iommu_group`` and ``physfn`` links and,
for a function that is not a VF, one probe of ``sriov_totalvfs`` (the kernel shows the
SR-IOV attributes on PFs only: drivers/pci/iov.c, sriov_pf_attrs_are_visible()). Only
a PF's directory is listed, to find its ``virtfnN`` links. benchmarks/bench_list.py
compares the whole command with ``lspci -D -nn -k`` on the same tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vfioctl.address import PciAddress
from vfioctl.host.base import PCI_DEVICES, Host
from vfioctl.pci.device import PciDevice, in_address_order, parse_sysfs_int

Json = dict[str, Any]

_DEVICES = str(PCI_DEVICES)


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """One PCI function as ``list`` shows it: ids, driver, IOMMU group, SR-IOV links.

    Ids and the class are ints, addresses :class:`PciAddress`; :meth:`to_json` gives
    the element of ``list --json`` (README "JSON output").
    """

    address: PciAddress
    vendor: int
    device: int
    class_code: int
    driver: str | None
    iommu_group: int | None
    physfn: PciAddress | None
    virtfns: tuple[PciAddress, ...]
    sriov_totalvfs: int | None
    sriov_numvfs: int | None

    @property
    def is_vf(self) -> bool:
        return self.physfn is not None

    @property
    def is_pf(self) -> bool:
        """Has the SR-IOV capability the kernel exposes (``sriov_totalvfs``), VFs or not."""
        return self.sriov_totalvfs is not None

    def to_json(self) -> Json:
        """The element of ``list --json``: ids as 4 hex digits, the class as 6."""
        physfn = self.physfn
        return {
            "address": str(self.address),
            "vendor": f"{self.vendor:04x}",
            "device": f"{self.device:04x}",
            "class": f"{self.class_code:06x}",
            "driver": self.driver,
            "iommu_group": self.iommu_group,
            "physfn": None if physfn is None else str(physfn),
            "virtfns": [str(a) for a in self.virtfns],
            "sriov_totalvfs": self.sriov_totalvfs,
            "sriov_numvfs": self.sriov_numvfs,
        }


def device_info(dev: PciDevice, known: dict[str, PciAddress] | None = None) -> DeviceInfo:
    """The ``list`` record of ``dev``.

    ``known`` maps kernel names to parsed addresses (the listing's), so that VF and PF
    links resolve without parsing each address again.
    """
    ident = dev.identity()
    driver = dev.link_name("driver")
    group = dev.link_name("iommu_group")
    physfn_name = dev.link_name("physfn")
    physfn: PciAddress | None = None
    virtfns: tuple[PciAddress, ...] = ()
    total: int | None = None
    numvfs: int | None = None
    if physfn_name is not None:  # a VF, which never has the PF attributes
        physfn = known.get(physfn_name) if known is not None else None
        if physfn is None:
            physfn = PciAddress.parse(physfn_name)
    else:
        raw_total = dev.read_attr("sriov_totalvfs")
        if raw_total is not None:  # a PF
            total = parse_sysfs_int(raw_total)
            numvfs = dev.int_attr("sriov_numvfs")
            virtfns = tuple(dev.virtfns_in(dev.entries(), known))
    return DeviceInfo(
        address=dev.addr,
        vendor=ident.vendor,
        device=ident.device,
        class_code=ident.class_code,
        driver=driver,
        iommu_group=None if group is None else int(group),
        physfn=physfn,
        virtfns=virtfns,
        sriov_totalvfs=total,
        sriov_numvfs=numvfs,
    )


def list_devices(host: Host) -> list[DeviceInfo]:
    """Every PCI function of the host in address order (``list``).

    Raises:
        UsageError: a name in ``sys/bus/pci/devices`` is not a PCI address.
    """
    try:
        names = host.listdir(_DEVICES)
    except FileNotFoundError:
        return []
    known = {n: PciAddress.parse(n) for n in names}
    return [device_info(PciDevice(host, a), known) for a in in_address_order(known.values())]


__all__ = ["DeviceInfo", "Json", "device_info", "list_devices"]
