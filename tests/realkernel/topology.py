"""The vmtest machine as data: what vmtest/run.sh's QEMU command line gives the guest.

Measured on Debian's 6.1 kernel in QEMU 7.2 and 10 (q35, ``-device intel-iommu,intremap=on``,
``intel_iommu=on iommu=pt``); docs/kernel.md "IOMMU groups and ACS" states the same
partition. The fast suite (tests/test_snapshot_fixtures.py) checks the captured fixtures
against this table too, so the expected layout is written once. Pure data: importing it
touches nothing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Slot:
    """One function of the boot-time machine, as coldplug leaves it."""

    address: str
    vendor: str
    device: str
    class_: str
    driver: str | None
    role: str


# The addresses follow from run.sh's -device list: root-bus slots 0x10-0x16 are given
# explicitly; the two virtio-9p devices (host root, results dir) take the first free
# slots 01 and 02; buses are numbered depth-first by the guest's enumeration.
BOOT: tuple[Slot, ...] = (
    Slot("0000:00:00.0", "8086", "29c0", "060000", None, "q35 host bridge"),
    Slot("0000:00:01.0", "1af4", "1009", "000200", "virtio-pci", "9p: host root (never touch)"),
    Slot("0000:00:02.0", "1af4", "1009", "000200", "virtio-pci", "9p: results (never touch)"),
    Slot("0000:00:10.0", "8086", "10d3", "020000", "e1000e", "root-bus e1000e (RCiEP)"),
    Slot("0000:00:11.0", "1af4", "1000", "020000", "virtio-pci", "multifunction: virtio-net"),
    Slot("0000:00:11.1", "1af4", "1005", "00ff00", "virtio-pci", "multifunction: virtio-rng"),
    Slot("0000:00:12.0", "1b36", "000c", "060400", "pcieport", "root port rp1"),
    Slot("0000:00:13.0", "1b36", "000c", "060400", "pcieport", "root port rp2"),
    Slot("0000:00:14.0", "1b36", "000c", "060400", "pcieport", "root port rp3"),
    Slot("0000:00:15.0", "1b36", "000c", "060400", "pcieport", "root port rp4"),
    Slot("0000:00:16.0", "1b36", "000c", "060400", "pcieport", "root port rp7"),
    Slot("0000:00:1f.0", "8086", "2918", "060100", "lpc_ich", "ICH9 LPC"),
    Slot("0000:00:1f.2", "8086", "2922", "010601", "ahci", "ICH9 SATA"),
    Slot("0000:00:1f.3", "8086", "2930", "0c0500", "i801_smbus", "ICH9 SMBus"),
    Slot("0000:01:00.0", "1b36", "0010", "010802", "nvme", "NVMe SR-IOV PF (4 VFs)"),
    Slot("0000:02:00.0", "8086", "10d3", "020000", "e1000e", "e1000e on rp2"),
    # shpchp fails to register the bridge's hotplug slot (-16): the bridge stays driverless
    Slot("0000:03:00.0", "1b36", "000e", "060400", None, "PCIe-to-PCI bridge"),
    Slot("0000:04:01.0", "8086", "100e", "020000", "e1000", "e1000 behind the bridge"),
    Slot("0000:04:02.0", "1af4", "1005", "00ff00", "virtio-pci", "virtio-rng behind the bridge"),
    Slot("0000:05:00.0", "104c", "8232", "060400", "pcieport", "x3130 upstream port"),
    Slot("0000:06:00.0", "104c", "8233", "060400", "pcieport", "xio3130 downstream dn1"),
    Slot("0000:06:01.0", "104c", "8233", "060400", "pcieport", "xio3130 downstream dn2"),
    # on a PCIe port QEMU makes virtio modern-only: 1af4:1044, not the transitional 1005
    Slot("0000:07:00.0", "1af4", "1044", "00ff00", "virtio-pci", "virtio-rng under dn1"),
    Slot("0000:08:00.0", "8086", "10d3", "020000", "e1000e", "e1000e under dn2"),
    Slot("0000:09:00.0", "8086", "10c9", "020000", "igb", "igb (82576) SR-IOV PF on rp7"),
)

# The measured groups (docs/kernel.md "IOMMU groups and ACS"), as a partition of BOOT;
# this constant is the repository's record of them.
GROUP_PARTITION: frozenset[frozenset[str]] = frozenset(
    frozenset(members)
    for members in (
        {"0000:00:00.0"},
        {"0000:00:01.0"},
        {"0000:00:02.0"},
        {"0000:00:10.0"},
        {"0000:00:11.0", "0000:00:11.1"},
        {"0000:00:12.0"},
        {"0000:00:13.0"},
        {"0000:00:14.0"},
        {"0000:00:15.0"},
        {"0000:00:1f.0", "0000:00:1f.2", "0000:00:1f.3"},
        {"0000:01:00.0"},
        {"0000:02:00.0"},
        {"0000:03:00.0", "0000:04:01.0", "0000:04:02.0"},
        {"0000:05:00.0"},
        {"0000:06:00.0", "0000:07:00.0"},
        {"0000:06:01.0", "0000:08:00.0"},
        {"0000:00:16.0"},
        {"0000:09:00.0"},
    )
)

NVME_PF = "0000:01:00.0"
NVME_VF_DEVICE = "0010"  # sriov_vf_device; VF offset 1, stride 1: VFs at 01:00.1 …
NVME_TOTALVFS = 4
IGB_PF = "0000:09:00.0"
IGB_VF_DEVICE = "10ca"  # 82576 VF; VF offset 128, stride 2: VFs at 09:10.0, 09:10.2 …
IGB_TOTALVFS = 8        # the capability's; igb itself allows 7 (pci_sriov_set_totalvfs)
IGB_DRIVER_VFS = 7
PLAIN_E1000E = "0000:02:00.0"  # alone in its group behind rp2
BRIDGE = "0000:03:00.0"
BRIDGE_E1000 = "0000:04:01.0"
BRIDGE_RNG = "0000:04:02.0"
DOWNSTREAM_DN2 = "0000:06:01.0"
SWITCH_E1000E = "0000:08:00.0"
MF_NET = "0000:00:11.0"
MF_RNG = "0000:00:11.1"
# The guest's root filesystem and results: unbinding either ends the test run.
NEVER_TOUCH = frozenset({"0000:00:01.0", "0000:00:02.0"})


def by_address() -> dict[str, Slot]:
    return {slot.address: slot for slot in BOOT}


BOOT_DRIVER: dict[str, str | None] = {s.address: s.driver for s in BOOT}
"""Address -> the driver the guest's coldplug binds (None: driverless)."""
