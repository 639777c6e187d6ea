"""The node's devices as the DRA driver publishes them: one per assignable function.

"Assignable" is what the manager would hand to a guest: a member of an IOMMU group's
``together`` set by the group rule (:func:`vfioctl.model.assign.assess`: not a bridge
or port, not on pcieport/pci-stub) in a group the host does not use (a boot disk, the
console, a NIC with addresses — detach refuses those without ``--force``, and a pod
never gets ``--force``). A PF with VFs enabled is left out: detaching it would take
its VFs away (the manager refuses it), so its VFs are published instead. A group that
would take a host or ISA bridge along (class 06, the chipset) is not published.

Each device carries what a claim's selector (CEL) or KubeVirt needs: addresses, ids,
the group and what else assigning it takes, SR-IOV links, NUMA node and PCIe root.
The standard ``resource.kubernetes.io/pciBusID`` and ``…/pcieRoot`` attributes are
given too: they are the names KubeVirt and the scheduler's alignment look for. Nothing
secret is an attribute (never a VF token: docs/sriov-token.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vfioctl import PciAddress, Session
from vfioctl.model.assign import assess

#: Standard attribute names (a Kubernetes-owned domain any driver may publish).
STD_PCI_BUS_ID = "resource.kubernetes.io/pciBusID"
STD_PCIE_ROOT = "resource.kubernetes.io/pcieRoot"

Attr = str | int | bool
# PCI base class 06: host, ISA and other bridges. The group rule moves a host or ISA
# bridge with its group (it is no PCI-PCI bridge), but no pod may take the chipset.
_BRIDGE_CLASS = 0x06


@dataclass(frozen=True)
class DraDevice:
    """One published device: its name in the pool and its attributes."""

    name: str
    address: PciAddress
    iommu_group: int
    together: tuple[PciAddress, ...]
    attributes: dict[str, Attr]


def device_name(addr: PciAddress) -> str:
    """A DNS label for a PCI address: ``0000:01:00.1`` -> ``pci-0000-01-00-1``."""
    return f"pci-{addr.domain:04x}-{addr.bus:02x}-{addr.slot:02x}-{addr.function:x}"


def address_of(name: str) -> PciAddress:
    """The address a :func:`device_name` names.

    Raises:
        UsageError: not a name this driver publishes.
    """
    from vfioctl import UsageError

    parts = name.split("-")
    if len(parts) != 5 or parts[0] != "pci":
        raise UsageError(f"device '{name}' is not one of this driver's devices",
                         hint="its devices are named pci-DDDD-BB-SS-F")
    try:
        return PciAddress.parse(f"{parts[1]}:{parts[2]}:{parts[3]}.{parts[4]}")
    except UsageError:
        raise UsageError(f"device '{name}' is not one of this driver's devices",
                         hint="its devices are named pci-DDDD-BB-SS-F") from None


def pcie_root(path: tuple[PciAddress, ...], addr: PciAddress) -> str:
    """The root complex a function hangs off, as sysfs names it (``pci0000:00``)."""
    top = path[0] if path else addr
    return f"pci{top.domain:04x}:{top.bus:02x}"


def list_devices(session: Session,
                 is_claim: Callable[[str], bool] = lambda owner: False) -> list[DraDevice]:
    """Every assignable function of the host, in address order.

    A group with a member vfioctl holds for an owner that is not a claim of this driver
    (``is_claim``: a VM started with ``vfioctl start``, a ``prepare`` on the host) is
    left out: a claim for it could only be refused."""
    infos = {d.address: d for d in session.devices()}
    foreign = {addr for addr, rec in session.records().items()
               if rec.owner and not is_claim(rec.owner)}
    out: list[DraDevice] = []
    for group in session.groups():
        verdict = assess(session.host, group)
        if not verdict.assignable or any(
                addr not in infos or infos[addr].class_code >> 16 == _BRIDGE_CLASS
                or addr in foreign for addr in verdict.together):
            continue
        for addr in verdict.together:
            info = infos.get(addr)
            if info is None or (info.sriov_numvfs or 0) > 0:
                continue
            detail = session.device(addr)
            attrs: dict[str, Attr] = {
                "pciBusID": str(addr),
                STD_PCI_BUS_ID: str(addr),
                "vendor": f"{info.vendor:04x}",
                "deviceID": f"{info.device:04x}",
                "class": f"{info.class_code:06x}",
                "iommuGroup": group.number,
                "groupSize": len(verdict.together),
                "takesOthers": len(verdict.together) > 1,
                "isVF": info.physfn is not None,
                "pcieRoot": pcie_root(detail.path, addr),
                STD_PCIE_ROOT: pcie_root(detail.path, addr),
            }
            if info.physfn is not None:
                attrs["pfPciBusID"] = str(info.physfn)
            if detail.numa_node is not None and detail.numa_node >= 0:
                attrs["numaNode"] = detail.numa_node
            out.append(DraDevice(device_name(addr), addr, group.number, verdict.together,
                                 attrs))
    return sorted(out, key=lambda d: d.address)


__all__ = ["STD_PCIE_ROOT", "STD_PCI_BUS_ID", "DraDevice", "address_of", "device_name",
           "list_devices", "pcie_root"]
