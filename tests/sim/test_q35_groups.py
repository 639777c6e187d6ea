"""The q35-vmtest host gives exactly the IOMMU groups measured on the real guest
(docs/kernel.md "IOMMU groups and ACS"; tests/realkernel/topology.py GROUP_PARTITION)."""

from __future__ import annotations

import posixpath

from simtest import DEV, make_host

from vfioctl.sim.host import SimHost

# Membership measured in the QEMU 7.2 and 10 guests (numbers are not compared: only who is with
# whom). Every PCI function of the guest is listed exactly once.
MEASURED = [
    {"0000:00:00.0"},
    {"0000:00:01.0"},
    {"0000:00:02.0"},
    {"0000:00:10.0"},
    {"0000:00:11.0", "0000:00:11.1"},          # multifunction without ACS
    {"0000:00:12.0"}, {"0000:00:13.0"}, {"0000:00:14.0"}, {"0000:00:15.0"},  # root ports
    {"0000:00:16.0"},
    {"0000:00:1f.0", "0000:00:1f.2", "0000:00:1f.3"},                    # ICH9
    {"0000:01:00.0"},
    {"0000:02:00.0"},
    {"0000:03:00.0", "0000:04:01.0", "0000:04:02.0"},  # PCIe-to-PCI bridge + behind it
    {"0000:05:00.0"},                                  # switch upstream port alone
    {"0000:06:00.0", "0000:07:00.0"},                  # downstream port + its device
    {"0000:06:01.0", "0000:08:00.0"},
    {"0000:09:00.0"},                                  # igb PF behind its root port
]


def groups_from_sysfs(host: SimHost) -> list[set[str]]:
    """Read groups the way a user would: the iommu_group link of every device."""
    by_group: dict[str, set[str]] = {}
    for name in host.listdir(DEV):
        group = posixpath.basename(host.readlink(DEV / name / "iommu_group"))
        by_group.setdefault(group, set()).add(name)
    return list(by_group.values())


def test_q35_groups_equal_measured() -> None:
    host = SimHost.bundled("q35-vmtest")
    got = sorted(sorted(g) for g in groups_from_sysfs(host))
    assert got == sorted(sorted(g) for g in MEASURED)


def test_q35_vfs_get_their_own_groups() -> None:
    host = make_host("q35-vmtest")
    host.write(DEV / "0000:01:00.0/sriov_numvfs", "2")
    groups = groups_from_sysfs(host)
    assert {"0000:01:00.1"} in groups and {"0000:01:00.2"} in groups
    assert {"0000:01:00.0"} in groups
    # group numbers continue after the boot-time ones (lowest free id)
    vf_group = int(posixpath.basename(host.readlink(DEV / "0000:01:00.1/iommu_group")))
    assert vf_group == 18


def test_q35_boot_drivers_match_the_measured_guest() -> None:
    k = SimHost.bundled("q35-vmtest").kernel
    assert k.driver_of("0000:03:00.0") is None            # "driverless bridge"
    assert k.driver_of("0000:04:01.0") == "e1000"
    assert k.driver_of("0000:04:02.0") == "virtio-pci"
    assert k.driver_of("0000:06:00.0") == "pcieport"
    assert k.driver_of("0000:01:00.0") == "nvme"
