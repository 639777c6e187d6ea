"""Writes the real kernel never returns from while a VFIO device file is open
(``vfio_unregister_group_dev`` waits for the user) raise SimWouldBlock and change
nothing; the same writes with only the group file open, or nothing open, go through as
the kernel's do (drivers/vfio/vfio_main.c, drivers/vfio/pci/vfio_pci_core.c,
drivers/pci/iov.c)."""

from __future__ import annotations

import errno
import os
from pathlib import Path, PurePosixPath

import pytest
from simtest import (
    DEV,
    DRV,
    VFIO,
    VfioSession,
    bind_vfio,
    file_host,
    group_of,
    make_host,
    oserrno,
)

from vfioctl.host import uapi
from vfioctl.sim.blocking import SimWouldBlock
from vfioctl.sim.host import SimHost

PF, VF0, VF1, PLAIN = "0000:01:00.0", "0000:01:00.1", "0000:01:00.2", "0000:02:00.0"
ENABLE_SRIOV = PurePosixPath("sys/module/vfio_pci/parameters/enable_sriov")
TOKEN = "11111111-2222-3333-4444-555555555555"


def driver(host: SimHost, name: str) -> str | None:
    return host.kernel.driver_of(name)


def vfs(host: SimHost) -> list[str]:
    return sorted(n for n in host.listdir(DEV) if host.exists(DEV / n / "physfn"))


@pytest.fixture
def q35() -> SimHost:
    host = make_host("q35-vmtest")
    host.load_module("vfio-pci")
    return host


def vfio_pf_with_vfs(host: SimHost, num: int = 2) -> None:
    """The NVMe PF on vfio-pci with ``num`` VFs (captured by vfio-pci) and a known token."""
    bind_vfio(host, PF)
    host.write(ENABLE_SRIOV, "Y")
    host.write(DEV / PF / "sriov_numvfs", str(num))
    s = VfioSession(host)
    fd = s.device(PF)
    host.ioctl(fd, uapi.VFIO_DEVICE_FEATURE, uapi.pack_feature(
        uapi.VFIO_DEVICE_FEATURE_SET | uapi.VFIO_DEVICE_FEATURE_PCI_VF_TOKEN,
        bytes.fromhex(TOKEN.replace("-", ""))))
    for f in [fd, *s.groups.values(), s.c]:
        host.close(f)


def test_sim_would_block_is_not_an_exception() -> None:
    # no `except Exception` in vfioctl may turn it into an error message
    assert issubclass(SimWouldBlock, BaseException)
    assert not issubclass(SimWouldBlock, Exception)


def test_unbinding_an_open_device_blocks_and_changes_nothing(q35: SimHost) -> None:
    bind_vfio(q35, PLAIN)
    s = VfioSession(q35)
    fd = s.device(PLAIN)
    before = q35.kernel.version
    with pytest.raises(SimWouldBlock) as info:
        q35.write(DRV / "vfio-pci/unbind", PLAIN)
    assert info.value.device == PLAIN
    assert info.value.holders == [f"this process (pid {os.getpid()})"]
    assert q35.writes[-1].blocked and q35.writes[-1].errno is None
    assert driver(q35, PLAIN) == "vfio-pci" and q35.kernel.version == before
    q35.close(fd)
    q35.write(DRV / "vfio-pci/unbind", PLAIN)
    assert driver(q35, PLAIN) is None


def test_the_group_file_alone_does_not_hold_the_device(q35: SimHost) -> None:
    """Only device files hold a registration; the group file keeps the vfio_group (and
    its /dev/vfio/N node and number) alive after its last member left."""
    bind_vfio(q35, PLAIN)
    number = group_of(q35, PLAIN)
    s = VfioSession(q35)
    g = s.attach(number)
    q35.write(DRV / "vfio-pci/unbind", PLAIN)
    assert driver(q35, PLAIN) is None
    assert q35.exists(VFIO / str(number))                       # the node lives on
    assert oserrno(lambda: q35.open(VFIO / str(number))) == errno.EBUSY
    assert oserrno(lambda: q35.ioctl(g, uapi.VFIO_GROUP_GET_DEVICE_FD,
                                     uapi.pack_device_name(PLAIN))) == errno.ENODEV
    q35.close(g)
    assert not q35.exists(VFIO / str(number))


def test_a_held_group_keeps_its_number_when_its_vf_is_gone(q35: SimHost) -> None:
    vfio_pf_with_vfs(q35)
    held = group_of(q35, VF1)
    s = VfioSession(q35)
    s.attach(held)                                              # group file only
    q35.write(DEV / PF / "sriov_numvfs", "0")                   # no device file: no wait
    assert vfs(q35) == [] and q35.exists(VFIO / str(held))
    q35.write(DEV / PF / "sriov_numvfs", "2")
    assert held not in {group_of(q35, VF0), group_of(q35, VF1)}
    q35.close(s.groups[held])
    q35.close(s.c)
    assert not q35.exists(VFIO / str(held))


def test_pf_unbind_with_a_vf_open_blocks(q35: SimHost) -> None:
    vfio_pf_with_vfs(q35)
    s = VfioSession(q35)
    fd = s.device(VF1, f"{VF1} vf_token={TOKEN}")
    for write in ((DRV / "vfio-pci/unbind", PF), (DEV / PF / "sriov_numvfs", "0")):
        with pytest.raises(SimWouldBlock) as info:
            q35.write(*write)
        assert info.value.device == VF1
        assert vfs(q35) == [VF0, VF1] and driver(q35, PF) == "vfio-pci"
    q35.close(fd)
    q35.write(DEV / PF / "sriov_numvfs", "0")
    assert vfs(q35) == []


def test_pf_unbind_from_vfio_pci_removes_its_vfs(q35: SimHost) -> None:
    """vfio_pci_core_unregister_device disables SR-IOV itself, whatever enable_sriov
    says now (vfio_pci_sriov_configure's check is not on that path)."""
    vfio_pf_with_vfs(q35)
    q35.write(ENABLE_SRIOV, "N")
    q35.write(DRV / "vfio-pci/unbind", PF)
    assert vfs(q35) == [] and driver(q35, PF) is None
    assert q35.read_text(DEV / PF / "sriov_numvfs") == "0\n"
    assert PF not in q35.kernel.vf_tokens


def test_pf_unbind_blocks_on_its_own_device_file(q35: SimHost) -> None:
    vfio_pf_with_vfs(q35)
    s = VfioSession(q35)
    fd = s.device(PF, f"{PF} vf_token={TOKEN}")
    with pytest.raises(SimWouldBlock) as info:
        q35.write(DRV / "vfio-pci/unbind", PF)
    assert info.value.device == PF and vfs(q35) == [VF0, VF1]
    q35.close(fd)


def test_kernel_pf_driver_unbind_blocks_on_an_open_vf(q35: SimHost) -> None:
    """nvme's remove disables SR-IOV too: a VF on vfio-pci with its file open waits."""
    q35.write(DEV / PF / "sriov_numvfs", "2")
    bind_vfio(q35, VF0)
    s = VfioSession(q35)
    fd = s.device(VF0)
    with pytest.raises(SimWouldBlock, match=VF0):
        q35.write(DRV / "nvme/unbind", PF)
    assert driver(q35, PF) == "nvme" and vfs(q35) == [VF0, VF1]
    q35.close(fd)
    q35.write(DRV / "nvme/unbind", PF)
    assert vfs(q35) == []


def test_a_vfio_user_of_another_process_blocks_too(q35: SimHost) -> None:
    vfio_pf_with_vfs(q35)
    q35.add_vfio_user(4242, "qemu-system-x86", group_of(q35, VF0), [VF0])
    with pytest.raises(SimWouldBlock) as info:
        q35.write(DEV / PF / "sriov_numvfs", "0")
    assert info.value.holders == ["pid 4242 (qemu-system-x86)"]
    assert "pid 4242 (qemu-system-x86)" in str(info.value)
    q35.remove_vfio_user(4242)
    q35.write(DEV / PF / "sriov_numvfs", "0")
    assert vfs(q35) == []


def test_blocking_write_leaves_a_host_file_as_it_was(tmp_path: Path) -> None:
    path, host = file_host(tmp_path)
    bind_vfio(host, PLAIN)
    host.add_vfio_user(4242, "qemu-system-x86", group_of(host, PLAIN), [PLAIN])
    saved = path.read_bytes()
    with pytest.raises(SimWouldBlock):
        host.write(DRV / "vfio-pci/unbind", PLAIN)
    assert path.read_bytes() == saved
