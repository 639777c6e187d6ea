"""Every row of docs/kernel.md "Errno rows the simulator is tested against" that concerns
sysfs, SR-IOV and viability, plus the driver-core errnos the simulator's plan promises,
asserted through the Host seam only."""

from __future__ import annotations

import errno
import posixpath

import pytest
from simtest import DEV, DRV, group_of, make_host, oserrno

from vfioctl.sim.host import SimHost

PF = "0000:01:00.0"
E1000 = "0000:04:01.0"


def driver(host: SimHost, name: str) -> str | None:
    path = DEV / name / "driver"
    return posixpath.basename(host.readlink(path)) if host.is_link(path) else None


def bind_vfio(host: SimHost, name: str) -> None:
    """The binding recipe (docs/kernel.md "Binding and driver override"): override,
    unbind, drivers_probe."""
    host.write(DEV / name / "driver_override", "vfio-pci")
    if host.exists(DEV / name / "driver"):
        host.write(DEV / name / "driver/unbind", name)
    host.write(DEV.parent / "drivers_probe", name)


@pytest.fixture
def q35() -> SimHost:
    host = make_host("q35-vmtest")
    host.load_module("vfio-pci")
    return host


# -- driver_override -------------------------------------------------------------------------
def test_driver_override_reads_null_and_newline_clears(q35: SimHost) -> None:
    path = DEV / E1000 / "driver_override"
    assert q35.read_text(path) == "(null)\n"
    q35.write(path, "vfio-pci\n")
    assert q35.read_text(path) == "vfio-pci\n"
    q35.write(path, "\n")
    assert q35.read_text(path) == "(null)\n"


def test_binding_recipe_moves_device_to_vfio(q35: SimHost) -> None:
    bind_vfio(q35, E1000)
    assert driver(q35, E1000) == "vfio-pci"
    assert q35.readlink(DEV / E1000 / "driver") == "../../../../../bus/pci/drivers/vfio-pci"
    assert q35.is_link(DRV / "vfio-pci" / E1000)
    assert not q35.exists(DRV / "e1000" / E1000)


def test_drivers_probe_without_match_leaves_device_unbound_and_succeeds(q35: SimHost) -> None:
    q35.write(DEV / E1000 / "driver_override", "no-such-driver")
    q35.write(DEV / E1000 / "driver/unbind", E1000)
    q35.write(DEV.parent / "drivers_probe", E1000)
    assert driver(q35, E1000) is None
    assert oserrno(lambda: q35.write(DEV.parent / "drivers_probe", "0000:ff:00.0")) \
        == errno.ENODEV


def test_drivers_probe_prefers_override_over_id_table(q35: SimHost) -> None:
    q35.write(DEV / E1000 / "driver/unbind", E1000)
    q35.write(DEV / E1000 / "driver_override", "pci-stub")
    q35.load_module("pci-stub")       # module load probes the overridden device
    assert driver(q35, E1000) == "pci-stub"


def test_bind_errors(q35: SimHost) -> None:
    e1000e = "0000:02:00.0"
    # id table does not match and no override: ENODEV
    q35.write(DEV / e1000e / "driver/unbind", e1000e)
    assert oserrno(lambda: q35.write(DRV / "e1000/bind", e1000e)) == errno.ENODEV
    # matches but already bound: EBUSY
    q35.write(DRV / "e1000e/bind", e1000e)
    assert oserrno(lambda: q35.write(DRV / "e1000e/bind", e1000e)) == errno.EBUSY
    # override set to another driver: no match
    q35.write(DEV / e1000e / "driver_override", "vfio-pci")
    q35.write(DEV / e1000e / "driver/unbind", e1000e)
    assert oserrno(lambda: q35.write(DRV / "e1000e/bind", e1000e)) == errno.ENODEV
    # unbind from a driver it is not bound to: ENODEV
    assert oserrno(lambda: q35.write(DRV / "e1000e/unbind", e1000e)) == errno.ENODEV
    # vfio-pci refuses bridges
    q35.write(DEV / "0000:03:00.0/driver_override", "vfio-pci")
    assert oserrno(lambda: q35.write(DRV / "vfio-pci/bind", "0000:03:00.0")) == errno.EINVAL


def test_write_only_and_read_only_attributes(q35: SimHost) -> None:
    assert oserrno(lambda: q35.read_bytes(DRV / "vfio-pci/bind")) == errno.EACCES
    assert oserrno(lambda: q35.write(DEV / E1000 / "vendor", "0x1234")) == errno.EACCES
    assert oserrno(lambda: q35.write(DEV / E1000 / "no_such_file", "1")) == errno.ENOENT


def test_new_id_binds_matching_unbound_devices_and_remove_id(q35: SimHost) -> None:
    q35.write(DEV / E1000 / "driver/unbind", E1000)
    q35.write(DRV / "vfio-pci/new_id", "8086 100e")
    assert driver(q35, E1000) == "vfio-pci"
    assert oserrno(lambda: q35.write(DRV / "vfio-pci/new_id", "8086")) == errno.EINVAL
    assert oserrno(lambda: q35.write(DRV / "e1000/new_id", "8086 100e")) == errno.EEXIST
    q35.write(DRV / "vfio-pci/remove_id", "8086 100e")
    assert oserrno(lambda: q35.write(DRV / "vfio-pci/remove_id", "8086 100e")) == errno.ENODEV


# -- vendor/device of a VF ------------------------------------------------------------------------
def test_vf_files_carry_real_ids_while_config_reads_ffff(q35: SimHost) -> None:
    q35.write(DEV / PF / "sriov_numvfs", "1")
    vf = DEV / "0000:01:00.1"
    assert q35.read_text(vf / "vendor") == "0x1b36\n"
    assert q35.read_text(vf / "device") == "0x0010\n"
    assert q35.read_bytes(vf / "config")[:4] == b"\xff\xff\xff\xff"


# -- reset_method ---------------------------------------------------------------------------------
def test_reset_method_lists_and_empty_line_disables(q35: SimHost) -> None:
    path = DEV / PF / "reset_method"
    assert q35.read_text(path) == "flr bus\n"
    q35.write(path, "\n")
    assert q35.read_text(path).strip() == ""
    assert oserrno(lambda: q35.write(path, "warp")) == errno.EINVAL
    q35.write(path, "default")
    assert q35.read_text(path) == "flr bus\n"


# -- SR-IOV ---------------------------------------------------------------------------------------
def test_sriov_pf_files(q35: SimHost) -> None:
    d = DEV / PF
    assert [q35.read_text(d / f).strip() for f in (
        "sriov_totalvfs", "sriov_numvfs", "sriov_offset", "sriov_stride", "sriov_vf_device",
        "sriov_drivers_autoprobe")] == ["4", "0", "1", "1", "10", "1"]


def test_sriov_links_and_nonzero_to_nonzero_is_ebusy(q35: SimHost) -> None:
    q35.write(DEV / PF / "sriov_numvfs", "2")
    assert q35.readlink(DEV / PF / "virtfn1") == "../0000:01:00.2"
    assert q35.readlink(DEV / "0000:01:00.2/physfn") == f"../{PF}"
    assert driver(q35, "0000:01:00.1") == "nvme"          # autoprobe with a kernel PF driver
    assert oserrno(lambda: q35.write(DEV / PF / "sriov_numvfs", "3")) == errno.EBUSY
    assert oserrno(lambda: q35.write(DEV / PF / "sriov_numvfs", "5")) == errno.ERANGE
    assert oserrno(lambda: q35.write(DEV / PF / "sriov_numvfs", "x")) == errno.EINVAL
    q35.write(DEV / PF / "sriov_numvfs", "0")
    assert not q35.exists(DEV / "0000:01:00.1")
    assert not q35.exists(DEV / PF / "virtfn0")


def test_vfio_pf_numvfs_enoent_until_enable_sriov(q35: SimHost) -> None:
    bind_vfio(q35, PF)
    param = "sys/module/vfio_pci/parameters/enable_sriov"
    assert q35.read_text(DEV.parent.parent.parent.parent / param) == "N\n"
    assert oserrno(lambda: q35.write(DEV / PF / "sriov_numvfs", "2")) == errno.ENOENT
    q35.write(DEV.parent.parent.parent.parent / param, "Y")
    q35.write(DEV / PF / "sriov_numvfs", "2")
    for vf in ("0000:01:00.1", "0000:01:00.2"):
        assert q35.read_text(DEV / vf / "driver_override") == "vfio-pci\n"
        assert driver(q35, vf) == "vfio-pci"
    # vfio-pci's sriov_configure refuses every request while enable_sriov is N,
    # disabling included (drivers/vfio/pci/vfio_pci.c); an unchanged count is a no-op
    q35.write(DEV.parent.parent.parent.parent / param, "N")
    assert oserrno(lambda: q35.write(DEV / PF / "sriov_numvfs", "0")) == errno.ENOENT
    q35.write(DEV / PF / "sriov_numvfs", "2")
    q35.write(DEV.parent.parent.parent.parent / param, "Y")
    q35.write(DEV / PF / "sriov_numvfs", "0")
    assert not q35.exists(DEV / "0000:01:00.1")


def test_vfs_of_vfio_pf_bind_even_without_autoprobe(q35: SimHost) -> None:
    q35.write(DEV / PF / "sriov_drivers_autoprobe", "0")
    bind_vfio(q35, PF)
    q35.write(DEV.parent.parent.parent / "module/vfio_pci/parameters/enable_sriov", "1")
    q35.write(DEV / PF / "sriov_numvfs", "1")
    assert driver(q35, "0000:01:00.1") == "vfio-pci"      # override beats autoprobe=0


def test_autoprobe_off_leaves_kernel_vfs_unbound(q35: SimHost) -> None:
    q35.write(DEV / PF / "sriov_drivers_autoprobe", "0")
    q35.write(DEV / PF / "sriov_numvfs", "1")
    assert driver(q35, "0000:01:00.1") is None


def test_vfio_bind_of_pf_with_vfs_is_ebusy(q35: SimHost) -> None:
    q35.write(DEV / PF / "sriov_numvfs", "2")
    q35.write(DEV / PF / "driver_override", "vfio-pci")
    # the PF must leave nvme first; unbinding nvme disables the VFs (driver remove)
    q35.write(DEV / PF / "driver/unbind", PF)
    assert q35.read_text(DEV / PF / "sriov_numvfs") == "0\n"
    # hardware where the VFs stay (a driver that leaves SR-IOV on) is reached by state:
    k = q35.kernel
    k.enable_vfs(k.devices[PF], 1)
    assert oserrno(lambda: q35.write(DRV / "vfio-pci/bind", PF)) == errno.EBUSY


def test_numvfs_without_driver_is_enoent(q35: SimHost) -> None:
    q35.write(DEV / PF / "driver/unbind", PF)
    assert oserrno(lambda: q35.write(DEV / PF / "sriov_numvfs", "1")) == errno.ENOENT


def test_enable_sriov_param_only_while_vfio_loaded() -> None:
    host = make_host("q35-vmtest")
    param = DEV.parent.parent.parent / "module/vfio_pci/parameters/enable_sriov"
    assert not host.exists(param)
    assert not host.exists(DRV / "vfio-pci")
    assert not host.exists(DEV.parent.parent.parent.parent / "dev/vfio/vfio")
    host.load_module("vfio_pci")
    assert host.read_text(param) == "N\n"
    assert host.exists(DRV / "vfio-pci/bind")
    assert oserrno(lambda: host.write(param, "maybe")) == errno.EINVAL
    assert oserrno(lambda: host.load_module("no-such-module")) == errno.ENOENT


# -- host usage appears only while the kernel driver is bound -------------------------------
def test_net_and_block_vanish_on_unbind_and_come_back_down() -> None:
    host = make_host("workstation")
    nic, sata = "0000:04:00.0", "0000:05:00.0"
    root = DEV.parent.parent.parent.parent
    assert host.read_text(DEV / nic / "net/enp4s0/operstate") == "up\n"
    assert "enp4s0" in host.read_text(root / "proc/net/route")
    host.write(DEV / nic / "driver/unbind", nic)
    assert not host.exists(DEV / nic / "net")
    assert not host.exists(root / "sys/class/net/enp4s0")
    assert "enp4s0" not in host.read_text(root / "proc/net/route")
    host.write(DRV / "igb/bind", nic)
    assert host.read_text(DEV / nic / "net/enp4s0/operstate") == "down\n"
    assert host.is_link(root / "sys/block/sda")
    host.write(DEV / sata / "driver/unbind", sata)
    assert not host.exists(root / "sys/block/sda")


# -- group viability (DMA ownership) ------------------------------------------------------------
def test_kernel_driver_cannot_enter_a_group_a_vfio_user_owns(q35: SimHost) -> None:
    from vfioctl.host import uapi
    root = DEV.parent.parent.parent.parent
    rng = "0000:04:02.0"
    bind_vfio(q35, E1000)
    bind_vfio(q35, rng)
    c = q35.open(root / "dev/vfio/vfio")
    g = q35.open(root / f"dev/vfio/{group_of(q35, rng)}")
    q35.ioctl(g, uapi.VFIO_GROUP_SET_CONTAINER, uapi.pack_fd(c))
    q35.write(DEV / rng / "driver/unbind", rng)
    q35.write(DEV / rng / "driver_override", "\n")
    assert oserrno(lambda: q35.write(DRV / "virtio-pci/bind", rng)) == errno.EBUSY
    q35.write(DEV.parent / "drivers_probe", rng)          # probe failure is not an error
    assert driver(q35, rng) is None
    q35.close(g)
    q35.write(DRV / "virtio-pci/bind", rng)               # ownership released on close
    assert driver(q35, rng) == "virtio-pci"
