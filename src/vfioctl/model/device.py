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

from collections.abc import Sequence
from dataclasses import dataclass, replace
from json.encoder import encode_basestring_ascii as _escape
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


def _num(value: int | None) -> str:
    return "null" if value is None else int.__repr__(value)


def list_json_text(devices: Sequence[DeviceInfo]) -> str:
    """``json.dumps([d.to_json() for d in devices], indent=2)``, written directly.

    ``list --json`` on thousands of functions spends more on building and encoding the
    dicts than on anything but the sysfs reads, so its one shape is written out here,
    next to :meth:`DeviceInfo.to_json`; tests/unit/test_read_model.py holds the two to
    the same bytes. Each address is formatted once, though VF-heavy hosts name most of
    them twice more (a VF's ``physfn``, its PF's ``virtfns``).
    """
    if not devices:
        return "[]"
    names: dict[PciAddress, str] = {}

    def name(addr: PciAddress) -> str:
        text = names.get(addr)
        if text is None:
            text = names[addr] = str(addr)
        return text

    parts = []
    for d in devices:
        physfn = "null" if d.physfn is None else f'"{name(d.physfn)}"'
        virtfns = "[]" if not d.virtfns else (
            '[\n      "' + '",\n      "'.join(map(name, d.virtfns)) + '"\n    ]')
        driver = "null" if d.driver is None else _escape(d.driver)
        parts.append(
            f'  {{\n    "address": "{name(d.address)}",\n'
            f'    "vendor": "{d.vendor:04x}",\n    "device": "{d.device:04x}",\n'
            f'    "class": "{d.class_code:06x}",\n    "driver": {driver},\n'
            f'    "iommu_group": {_num(d.iommu_group)},\n    "physfn": {physfn},\n'
            f'    "virtfns": {virtfns},\n'
            f'    "sriov_totalvfs": {_num(d.sriov_totalvfs)},\n'
            f'    "sriov_numvfs": {_num(d.sriov_numvfs)}\n  }}')
    return "[\n" + ",\n".join(parts) + "\n]"


def device_info(dev: PciDevice, known: dict[str, PciAddress] | None = None) -> DeviceInfo:
    """The ``list`` record of ``dev``; a PF's VFs from its ``virtfnN`` links.

    ``known`` maps kernel names to parsed addresses (the listing's), so that VF and PF
    links resolve without parsing each address again.
    """
    return _read(dev, known, read_virtfns=True)


def _read(dev: PciDevice, known: dict[str, PciAddress] | None, *,
          read_virtfns: bool) -> DeviceInfo:
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
            if read_virtfns:
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

    A PF's ``virtfns`` come from its VFs' ``physfn`` links, already read for the VFs'
    own records, instead of one more readlink per VF: the kernel makes and removes a
    PF's ``virtfnN`` link and the VF's ``physfn`` link together (drivers/pci/iov.c,
    pci_iov_sysfs_link() and pci_iov_remove_virtfn()), and VF N has routing ID
    PF + offset + N * stride with a stride of at least 1 (pci_iov_virtfn_devfn()), so
    address order is N order. (:func:`device_info` alone reads the ``virtfnN`` links.)

    Raises:
        UsageError: a name in ``sys/bus/pci/devices`` is not a PCI address.
    """
    try:
        names = host.listdir(_DEVICES)
    except FileNotFoundError:
        return []
    known = {n: PciAddress.parse(n) for n in names}
    records = [_read(PciDevice(host, a), known, read_virtfns=False)
               for a in in_address_order(known.values())]
    vfs_of: dict[PciAddress, list[PciAddress]] = {}
    for r in records:
        if r.physfn is not None:
            vfs_of.setdefault(r.physfn, []).append(r.address)
    if vfs_of:
        records = [r if r.address not in vfs_of else replace(r, virtfns=tuple(vfs_of[r.address]))
                   for r in records]
    return records


__all__ = ["DeviceInfo", "Json", "device_info", "list_devices", "list_json_text"]
