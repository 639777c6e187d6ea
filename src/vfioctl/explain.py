"""Analysis: why a device's IOMMU group is what it is (read-only).

The kernel forms groups from the PCI topology (drivers/iommu/iommu.c pci_device_group):
a device is isolated only if every bridge on its path to the root bus enforces ACS
(Source Validation, Request/Completion Redirect, Upstream Forwarding), functions of a
multifunction device are isolated only with ACS on the device itself, and conventional
PCI devices behind a PCIe-to-PCI bridge all use the bridge's requester id. This module
reads the same facts from config space and states them in words, so that users see
*which* bridge costs them isolation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vfioctl.address import PciAddress
from vfioctl.host.base import Host
from vfioctl.pci.config import ACS_REQUIRED
from vfioctl.pci.device import VFIO_DRIVER, PciDevice, get_device
from vfioctl.pci.iommu import IommuGroup
from vfioctl.vfio.holders import device_users


@dataclass
class Explanation:
    addr: PciAddress
    group: int | None
    peers: list[tuple[PciAddress, str | None]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    path: list[str] = field(default_factory=list)
    #: who the device's trust rests on, when a PF is driven from userspace
    trust: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The document of ``explain ADDR --json`` (README "JSON output"): the same
        facts as the text, the sentences as the text prints them."""
        return {
            "address": str(self.addr),
            "group": self.group,
            "peers": [{"address": str(a), "driver": d} for a, d in self.peers],
            "path": list(self.path),
            "reasons": list(self.reasons),
            "trust": list(self.trust),
        }


def userspace_pf_lines(host: Host, dev: PciDevice) -> list[str]:
    """For a VF of a PF driven from userspace (or such a PF): that fact, and which
    processes drive it now (holders of its VFIO files). A guest given such a VF trusts
    an unattested driver (docs/rationale.md, "A userspace PF and its VFs")."""
    pf = PciDevice(host, dev.physfn) if dev.physfn is not None else dev
    if pf.driver != VFIO_DRIVER or not pf.sriov_totalvfs:
        return []
    users = device_users(pf)
    who = ("open by " + ", ".join(h.describe() for h in users) if users
           else "open by a VFIO user" if users is not None
           else "not open by any process now")
    if pf is dev:
        return [f"{dev.addr} is an SR-IOV PF driven from userspace (vfio-pci), {who}: its "
                "VFs open only with its VF token, and their users trust this driver"]
    return [f"its PF {pf.addr} is driven from userspace (vfio-pci), {who}: that driver "
            "can reset this VF and, depending on the device, see its data; the VF opens "
            "only with the PF's VF token"]


def acs_words(dev: PciDevice) -> tuple[bool | None, str]:
    """Whether ``dev``'s ACS isolates what is below it (None: no ACS capability), and
    that in words (``ACS present but RR/CR not enabled``)."""
    acs = dev.config.acs
    if acs is None:
        return None, "no ACS capability"
    missing = [b for b in ACS_REQUIRED if b in acs.capability and b not in acs.control]
    if missing:
        return False, f"ACS present but {'/'.join(missing)} not enabled"
    return True, "ACS " + " ".join(sorted(acs.control & set(ACS_REQUIRED)) or ["(n/a)"])


def acs_break(dev: PciDevice, kind: str | None) -> str | None:
    """Why the bridge ``dev`` (of PCIe port type ``kind``; None: conventional PCI)
    costs the devices below it their isolation, or None when it does not: the two
    rules :func:`explain_device` states for a path (a PCIe-to-PCI bridge shares its
    requester id; a root or downstream port without ACS does not isolate)."""
    if kind == "pcie_to_pci_bridge":
        return "PCIe-to-PCI bridge: the devices behind it share its requester id"
    if kind in ("root_port", "downstream_port"):
        ok, words = acs_words(dev)
        if ok is not True:
            return f"{kind.replace('_', ' ')} with {words}"
    return None


def explain_device(host: Host, addr: PciAddress | str) -> Explanation:
    """Explain the group of the device at ``addr``.

    Raises:
        UsageError, DeviceNotFound: for a bad or unknown address.
    """
    dev = get_device(host, addr)
    ex = Explanation(dev.addr, dev.iommu_group)
    ex.trust = userspace_pf_lines(host, dev)
    if ex.group is None:
        ex.reasons.append("the device has no IOMMU group: the IOMMU is off on this host")
        return ex
    members = IommuGroup(host, ex.group).members
    ex.peers = [(a, PciDevice(host, a).driver) for a in members if a != dev.addr]

    # The path, described bridge by bridge (root first).
    for bridge_addr in dev.path_to_root:
        bridge = PciDevice(host, bridge_addr)
        ok, words = acs_words(bridge)
        kind = bridge.config.pcie_port_type or "conventional PCI bridge"
        ex.path.append(f"{bridge_addr} {kind}: {words}")
        if kind == "pcie_to_pci_bridge":
            ex.reasons.append(
                f"{dev.addr} is behind PCIe-to-PCI bridge {bridge_addr}: conventional PCI "
                "devices behind it share the bridge's requester id, so they and the bridge "
                "form one group")
        elif kind in ("root_port", "downstream_port") and ok is not True:
            ex.reasons.append(
                f"{kind.replace('_', ' ')} {bridge_addr} has {words}: peer-to-peer traffic "
                "below it is not forced upstream, so the devices below it cannot be "
                "isolated from one another")
    cfg = dev.config
    same_slot = [a for a, _ in ex.peers if a.slot_name == dev.addr.slot_name]
    if same_slot:
        ok, words = acs_words(dev)
        if ok is not True:
            ex.reasons.append(
                f"{dev.addr} is a function of a multifunction device with {words}: its "
                f"functions ({', '.join(str(a) for a in same_slot)}) may talk to each other "
                "directly, so they share a group")
    if not ex.peers:
        ex.reasons.append(
            "the device is alone in its group: it can be assigned without affecting "
            "any other device")
    elif not ex.reasons:
        ex.reasons.append(
            "the group is shared, but config space does not show why (the platform may "
            "declare it, e.g. an integrated device without ACS on the root bus, or a "
            "kernel quirk); assign the whole group together")
    if cfg.pcie_port_type is None and not dev.path_to_root and ex.peers:
        ex.reasons.append(f"{dev.addr} is a conventional PCI function on the root bus")
    return ex
