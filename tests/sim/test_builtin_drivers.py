"""A kernel that builds its drivers in (the tier's 7.3, ``vmtest/kernel/``): a host
file's ``module = ""`` driver is registered from boot, and a built-in vfio-pci still has
``/sys/module/vfio_pci/parameters`` (``kernel/params.c``: ``param_sysfs_builtin()``) but
no ``initstate``/``refcnt``, which only loaded modules have."""

from __future__ import annotations

from simtest import DEV, bind_vfio

from vfioctl.sim.host import SimHost
from vfioctl.sim.loader import bundled_text


def test_a_kernel_with_vfio_pci_built_in_has_its_parameters_from_boot() -> None:
    """The tier's 7.3 builds every driver in: vfio-pci is registered at boot and its
    ``enable_sriov`` parameter is there to write, without any modprobe."""
    text = bundled_text("q35-vmtest").replace(
        'name = "vfio-pci"\nloaded = false', 'name = "vfio-pci"\nmodule = ""', 1)
    host = SimHost.from_text(text)
    assert host.exists("sys/bus/pci/drivers/vfio-pci")
    assert host.exists("dev/vfio/vfio")
    param = "sys/module/vfio_pci/parameters/enable_sriov"
    assert host.read_text(param) == "N\n"
    assert not host.exists("sys/module/vfio_pci/initstate")     # built in, not loaded
    host.write(param, "Y")
    bind_vfio(host, "0000:01:00.0")
    host.write(DEV / "0000:01:00.0/sriov_numvfs", "2")
    assert host.exists(DEV / "0000:01:00.1")
