"""The ``show`` record: one PCI function in full, config space decoded."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from vfioctl.address import PciAddress
from vfioctl.host.base import Host
from vfioctl.model.device import DeviceInfo, Json, device_info
from vfioctl.pci.device import driver_is_vfio_safe, get_device
from vfioctl.pci.iommu import IommuGroup

if TYPE_CHECKING:
    from vfioctl.pci.config import AcsInfo, Capability, SriovInfo


def _hex(value: int | None, width: int) -> str | None:
    return None if value is None else f"{value:0{width}x}"


@dataclass(frozen=True, slots=True)
class DeviceDetail(DeviceInfo):
    """Everything :class:`DeviceInfo` holds, the other sysfs attributes of the function
    and its decoded config space (capabilities, ACS, SR-IOV registers, bridge buses).

    ``path`` is the chain of upstream bridges from the root bus down to (not including)
    this function; ``group_peers`` the other members of its IOMMU group.
    """

    subsystem_vendor: int | None
    subsystem_device: int | None
    revision: int | None
    driver_override: str | None
    numa_node: int | None
    reset_method: tuple[str, ...] | None
    boot_vga: bool | None
    header_type: int | None
    multifunction: bool
    bridge: bool
    secondary_bus: int | None
    subordinate_bus: int | None
    pcie_port_type: str | None
    flr: bool | None
    config_size: int
    capabilities: tuple[Capability, ...]
    acs: AcsInfo | None
    sriov: SriovInfo | None
    ari_next_function: int | None
    path: tuple[PciAddress, ...]
    group_peers: tuple[PciAddress, ...]
    vfio_safe: bool

    def to_json(self) -> Json:
        """The document of ``show ADDR --json``: the ``list`` keys, then the rest."""
        doc = DeviceInfo.to_json(self)  # slots dataclasses cannot use bare super()
        acs, sriov = self.acs, self.sriov
        doc.update({
            "subsystem_vendor": _hex(self.subsystem_vendor, 4),
            "subsystem_device": _hex(self.subsystem_device, 4),
            "revision": _hex(self.revision, 2),
            "driver_override": self.driver_override,
            "numa_node": self.numa_node,
            "reset_method": None if self.reset_method is None else list(self.reset_method),
            "boot_vga": self.boot_vga,
            "header_type": self.header_type,
            "multifunction": self.multifunction,
            "bridge": self.bridge,
            "secondary_bus": self.secondary_bus,
            "subordinate_bus": self.subordinate_bus,
            "pcie_port_type": self.pcie_port_type,
            "flr": self.flr,
            "config_size": self.config_size,
            "capabilities": [
                {
                    "id": f"{c.id:04x}" if c.extended else f"{c.id:02x}",
                    "name": c.name,
                    "offset": f"{c.offset:03x}",
                    "extended": c.extended,
                }
                for c in self.capabilities
            ],
            "acs": None if acs is None else {
                "capability": sorted(acs.capability),
                "control": sorted(acs.control),
                "isolates": acs.isolates,
            },
            "sriov": None if sriov is None else {
                "total_vfs": sriov.total_vfs,
                "initial_vfs": sriov.initial_vfs,
                "num_vfs": sriov.num_vfs,
                "vf_offset": sriov.vf_offset,
                "vf_stride": sriov.vf_stride,
                "vf_device": f"{sriov.vf_device:04x}",
                "vf_enable": sriov.vf_enable,
            },
            "ari_next_function": self.ari_next_function,
            "path": [str(a) for a in self.path],
            "group_peers": [str(a) for a in self.group_peers],
            "vfio_safe": self.vfio_safe,
        })
        return doc


def get_device_info(host: Host, addr: PciAddress | str) -> DeviceDetail:
    """Everything known about one function (``show``).

    Raises:
        UsageError: malformed address.
        DeviceNotFound: no such device.
        GroupNotFound: its ``iommu_group`` link names a group that does not exist.
    """
    dev = get_device(host, addr)
    base = device_info(dev)
    ident = dev.identity()
    cfg = dev.config
    peers: tuple[PciAddress, ...] = ()
    if base.iommu_group is not None:
        peers = tuple(a for a in IommuGroup(host, base.iommu_group).members
                      if a != dev.addr)
    reset = dev.reset_method
    return DeviceDetail(
        **{f.name: getattr(base, f.name) for f in fields(DeviceInfo)},
        subsystem_vendor=ident.subsystem_vendor,
        subsystem_device=ident.subsystem_device,
        revision=dev.revision,
        driver_override=dev.driver_override,
        numa_node=dev.numa_node,
        reset_method=None if reset is None else tuple(reset),
        boot_vga=dev.boot_vga,
        header_type=cfg.header_type,
        multifunction=cfg.multifunction,
        bridge=cfg.is_bridge,
        secondary_bus=cfg.secondary_bus,
        subordinate_bus=cfg.subordinate_bus,
        pcie_port_type=cfg.pcie_port_type,
        flr=cfg.flr_capable,
        config_size=len(cfg.raw),
        capabilities=cfg.capabilities,
        acs=cfg.acs,
        sriov=cfg.sriov,
        ari_next_function=cfg.ari_next_function,
        path=tuple(dev.path_to_root),
        group_peers=peers,
        vfio_safe=driver_is_vfio_safe(dev, base.driver),
    )


__all__ = ["DeviceDetail", "get_device_info"]
