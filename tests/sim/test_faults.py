"""Fault injection: failing writes and ioctls, the write log, faults from a host file."""

from __future__ import annotations

import errno
from pathlib import PurePosixPath

import pytest
from simtest import DEV, DRV, make_host, oserrno

from vfioctl.host import uapi
from vfioctl.sim.faults import SimCrash
from vfioctl.sim.host import SimHost
from vfioctl.sim.loader import bundled_text

NIC = "0000:04:01.0"


def test_write_fault_by_glob_matches_the_resolved_path_too() -> None:
    host = make_host("q35-vmtest", faults={"sys/bus/pci/drivers/*/unbind": errno.EBUSY})
    # written through the device's driver link, matched on the driver's own path
    assert oserrno(lambda: host.write(DEV / NIC / "driver/unbind", NIC)) == errno.EBUSY
    assert host.kernel.driver_of(NIC) == "e1000"
    assert host.writes[-1].errno == errno.EBUSY


def test_fault_times_and_skip() -> None:
    host = make_host("q35-vmtest")
    host.faults.fail_write("*/driver_override", errno.EIO, times=1, skip=1)
    path = DEV / NIC / "driver_override"
    assert oserrno(lambda: host.write(path, "a")) is None
    assert oserrno(lambda: host.write(path, "b")) == errno.EIO
    assert oserrno(lambda: host.write(path, "c")) is None
    assert host.read_text(path) == "c\n"


def test_write_log_counts_every_attempt() -> None:
    host = make_host("q35-vmtest")
    host.write(DEV / NIC / "driver_override", "vfio-pci")
    oserrno(lambda: host.write(DRV / "e1000/bind", NIC))
    host.write(DEV / NIC / "driver/unbind", NIC)
    assert host.write_count == 3
    # override names another driver: bind does not match (ENODEV, not EBUSY)
    assert [w.errno for w in host.writes] == [None, errno.ENODEV, None]
    assert len(host.writes_to(f"*{NIC}*")) == 2


def test_ioctl_fault_by_name() -> None:
    host = make_host("q35-vmtest")
    host.load_module("vfio-pci")
    host.faults.fail_ioctl("GET_API_VERSION", errno.ENOMEM, times=1)
    c = host.open(PurePosixPath("dev/vfio/vfio"))
    assert oserrno(lambda: host.ioctl(c, uapi.VFIO_GET_API_VERSION)) == errno.ENOMEM
    assert host.ioctl(c, uapi.VFIO_GET_API_VERSION) == 0


def test_faults_and_crash_from_the_host_file() -> None:
    text = bundled_text("q35-vmtest") + '''
[[fault]]
write = "sys/bus/pci/devices/*/sriov_numvfs"
errno = "ENOMEM"

[[fault]]
ioctl = "GROUP_GET_STATUS"
errno = "EIO"

[crash]
at_write = 2
'''
    host = SimHost.from_text(text)
    assert oserrno(lambda: host.write(DEV / "0000:01:00.0/sriov_numvfs", "1")) \
        == errno.ENOMEM
    with pytest.raises(SimCrash):
        host.write(DEV / NIC / "driver_override", "x")
    assert host.read_text(DEV / NIC / "driver_override") == "(null)\n"
    assert host.faults.ioctl_error("GROUP_GET_STATUS") == errno.EIO
