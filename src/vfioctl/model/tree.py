"""The PCI topology as a tree (``vfioctl tree``): each function under the bridge that
leads to it, with its IOMMU group, and the bridges that cost their subtree isolation.

Parents come from the function's real sysfs directory, the kernel's device hierarchy
(``sys/devices/pci0000:00/0000:00:1c.0/0000:03:00.0``): its last PCI address component
above the function is the bridge the function sits behind, the component before the
first address names the root bus. A VF's directory lies next to its PF's, so VFs hang
under the PF's bridge, as ``lspci -tv`` shows them. ACS breaks are judged by the rules
``explain`` states (:func:`vfioctl.explain.acs_break`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vfioctl.address import PciAddress
from vfioctl.errors import UsageError
from vfioctl.explain import acs_break
from vfioctl.host.base import Host
from vfioctl.model.device import DeviceInfo, Json, list_devices
from vfioctl.pci.device import PciDevice


@dataclass(slots=True)
class TreeNode:
    """One function and the functions behind it (address order)."""

    info: DeviceInfo
    pcie_port_type: str | None
    #: why this bridge does not isolate the devices below it; None: it does, or it is
    #: no bridge
    acs_break: str | None
    children: list[TreeNode] = field(default_factory=list)

    @property
    def address(self) -> PciAddress:
        return self.info.address

    def walk(self) -> list[TreeNode]:
        """This node and every node below it, depth first (the order of the text)."""
        out = [self]
        for child in self.children:
            out.extend(child.walk())
        return out

    def to_json(self) -> Json:
        d = self.info
        return {
            "address": str(d.address),
            "vendor": f"{d.vendor:04x}",
            "device": f"{d.device:04x}",
            "class": f"{d.class_code:06x}",
            "driver": d.driver,
            "iommu_group": d.iommu_group,
            "physfn": None if d.physfn is None else str(d.physfn),
            "pcie_port_type": self.pcie_port_type,
            "acs_break": self.acs_break,
            "children": [c.to_json() for c in self.children],
        }


@dataclass(slots=True)
class RootBus:
    """A root bus (``pci0000:00``) and the functions on it."""

    name: str
    children: list[TreeNode] = field(default_factory=list)

    def walk(self) -> list[TreeNode]:
        return [n for c in self.children for n in c.walk()]

    def to_json(self) -> Json:
        return {"root_bus": self.name, "children": [c.to_json() for c in self.children]}


def _place(dev: PciDevice) -> tuple[str, PciAddress | None]:
    """(root bus name, upstream bridge or None) from the function's sysfs directory."""
    parts = dev.sysfs_path.split("/")[:-1]
    root, parent = f"pci{dev.addr.domain:04x}:{dev.addr.bus:02x}", None
    for part in parts:
        try:
            parent = PciAddress.parse(part)
        except UsageError:
            if parent is None and part.startswith("pci"):
                root = part
    return root, parent


def _is_bridge_class(info: DeviceInfo) -> bool:
    return info.class_code >> 8 == 0x0604


def build_tree(host: Host) -> list[RootBus]:
    """Every function of the host under its root bus and bridges (``tree``).

    Config space is decoded for bridges only: the ACS facts matter where a bridge
    decides what its subtree shares.
    """
    infos = list_devices(host)
    nodes: dict[PciAddress, TreeNode] = {}
    placed: list[tuple[TreeNode, str, PciAddress | None]] = []
    for info in infos:
        dev = PciDevice(host, info.address)
        kind: str | None = None
        broken: str | None = None
        if _is_bridge_class(info):
            kind = dev.config.pcie_port_type
            broken = acs_break(dev, kind)
        node = TreeNode(info, kind, broken)
        nodes[info.address] = node
        root, parent = _place(dev)
        placed.append((node, root, parent))
    roots: dict[str, RootBus] = {}
    for node, root, parent in placed:
        up = nodes.get(parent) if parent is not None else None
        if up is not None:
            up.children.append(node)
        else:
            roots.setdefault(root, RootBus(root)).children.append(node)
    return [roots[k] for k in sorted(roots, key=_root_key)]


def _root_key(name: str) -> tuple[int, str]:
    text = name.removeprefix("pci")
    try:
        domain, _, bus = text.partition(":")
        return int(domain, 16) << 8 | int(bus or "0", 16), name
    except ValueError:
        return 1 << 40, name


__all__ = ["RootBus", "TreeNode", "build_tree"]
