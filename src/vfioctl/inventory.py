"""Read-side documents: the stable JSON shapes of ``list``, ``groups`` and ``show``.

These dicts are API (README "JSON output"): keys are only ever added, never renamed or
retyped. Ids are 4 lowercase hex digits without ``0x``, classes 6; absent values are
``null``, never missing keys. The CLI prints them; library users get the same data.
"""

from __future__ import annotations

from typing import Any

from vfioctl.address import PciAddress
from vfioctl.host.base import Host
from vfioctl.pci.device import PciDevice, get_device, iter_devices
from vfioctl.pci.iommu import IommuGroup, iter_groups

Json = dict[str, Any]


def _hex4(value: int | None) -> str | None:
    return None if value is None else f"{value:04x}"


def _opt_int(dev: PciDevice, name: str, entries: set[str]) -> int | None:
    return dev._int_attr(name) if name in entries else None


def device_record(dev: PciDevice) -> Json:
    """One element of ``list --json``.

    Kept to what ``list`` needs: each extra attribute is one more sysfs read per
    function, and ``list`` must stay within 2x of ``lspci -D -nn -k`` on hosts with
    thousands of functions (benchmarks/bench_list.py). ``show`` has the rest.
    """
    entries = set(dev.entries())
    physfn = dev.physfn if "physfn" in entries else None
    return {
        "address": dev.name,
        "vendor": f"{dev.vendor:04x}",
        "device": f"{dev.device:04x}",
        "class": f"{dev.class_code:06x}",
        "driver": dev.driver if "driver" in entries else None,
        "iommu_group": dev.iommu_group if "iommu_group" in entries else None,
        "physfn": None if physfn is None else str(physfn),
        "virtfns": [str(a) for a in dev._virtfns(sorted(entries))],
        "sriov_totalvfs": _opt_int(dev, "sriov_totalvfs", entries),
        "sriov_numvfs": _opt_int(dev, "sriov_numvfs", entries),
    }


def list_records(host: Host) -> list[Json]:
    """``list --json``: every function in address order."""
    return [device_record(dev) for dev in iter_devices(host)]


def group_record(group: IommuGroup) -> Json:
    """One element of ``groups --json``."""
    members = group.devices()
    blockers = [
        {"address": d.name, "driver": d.driver} for d in members if not d.vfio_safe
    ]
    return {
        "group": group.number,
        "devices": [d.name for d in members],
        "viable": not blockers,
        "blockers": blockers,
    }


def group_records(host: Host) -> list[Json]:
    """``groups --json``: every IOMMU group in numeric order ([] when the IOMMU is off)."""
    return [group_record(g) for g in iter_groups(host)]


def show_record(host: Host, addr: PciAddress | str) -> Json:
    """``show ADDR --json``: everything known about one function.

    Raises:
        UsageError: malformed address.
        DeviceNotFound: no such device.
    """
    dev = get_device(host, addr)
    doc = device_record(dev)
    doc.update({
        "subsystem_vendor": _hex4(dev.subsystem_vendor),
        "subsystem_device": _hex4(dev.subsystem_device),
        "revision": None if dev.revision is None else f"{dev.revision:02x}",
        "driver_override": dev.driver_override,
        "numa_node": dev.numa_node,
    })
    cfg = dev.config
    acs = cfg.acs
    sriov = cfg.sriov
    group = dev.iommu_group
    peers: list[str] = []
    if group is not None:
        peers = [str(a) for a in IommuGroup(host, group).members if a != dev.addr]
    doc.update(
        {
            "reset_method": dev.reset_method,
            "boot_vga": dev.boot_vga,
            "header_type": cfg.header_type,
            "multifunction": cfg.multifunction,
            "bridge": cfg.is_bridge,
            "secondary_bus": cfg.secondary_bus,
            "subordinate_bus": cfg.subordinate_bus,
            "pcie_port_type": cfg.pcie_port_type,
            "flr": cfg.flr_capable,
            "config_size": len(cfg.raw),
            "capabilities": [
                {
                    "id": f"{c.id:04x}" if c.extended else f"{c.id:02x}",
                    "name": c.name,
                    "offset": f"{c.offset:03x}",
                    "extended": c.extended,
                }
                for c in cfg.capabilities
            ],
            "acs": None
            if acs is None
            else {
                "capability": sorted(acs.capability),
                "control": sorted(acs.control),
                "isolates": acs.isolates,
            },
            "sriov": None
            if sriov is None
            else {
                "total_vfs": sriov.total_vfs,
                "initial_vfs": sriov.initial_vfs,
                "num_vfs": sriov.num_vfs,
                "vf_offset": sriov.vf_offset,
                "vf_stride": sriov.vf_stride,
                "vf_device": f"{sriov.vf_device:04x}",
                "vf_enable": sriov.vf_enable,
            },
            "ari_next_function": cfg.ari_next_function,
            "path": [str(a) for a in dev.path_to_root],
            "group_peers": peers,
            "vfio_safe": dev.vfio_safe,
        }
    )
    return doc
