"""Capture a host's PCI/IOMMU view into a directory laid out like ``/``.

The capture goes through the Host seam, so the same code snapshots the running kernel,
another snapshot, or the simulator (which is how the simulator "writes itself out").
The result is read back by ``--host linux:DIR`` and by ``lspci -A linux-sysfs -O
sysfs.path=DIR/sys/bus/pci``. Links are kept as the kernel's relative links, so they
resolve inside DIR exactly as they do under ``/``.

Only attribute files that are safe and meaningful to read are copied (a whitelist):
reading ``rom`` or ``resourceN`` could touch the device, and write-only control files
(``bind``, ``unbind``, ``remove``) have nothing to read.

What decides whether the host uses a network device (``pci/usage.py``) is kept too, so a
snapshot answers that question as the host did: each PCI function's ``net/IFNAME/``
(``virtioN/net/IFNAME/`` for virtio-net) with ``operstate``, ``flags`` and the
``master`` link; ``proc/net/route``, ``ipv6_route`` and ``if_inet6``; and the interface
addresses the host reported (netlink on a live host) in ``vfioctl-addresses.json`` at
the top of DIR (format in ``host/ifaddr.py``; written even when empty, so "captured,
none" differs from an older snapshot without the file). A snapshot therefore holds the
host's IP addresses and routes: mind that before sharing it.
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
import time
from pathlib import Path, PurePosixPath

from vfioctl.errors import UsageError, wrap_oserror
from vfioctl.host import ifaddr
from vfioctl.host.base import (
    DEV_VFIO,
    IOMMU_GROUPS,
    PCI_DEVICES,
    PCI_DRIVERS,
    PROC_CMDLINE,
    PROC_NET_INET6,
    PROC_NET_ROUTE,
    PROC_NET_ROUTE6,
    PROC_OSRELEASE,
    SYS_CLASS_IOMMU,
    SYS_MODULE,
    Host,
)

DEVICE_FILES = frozenset({
    "vendor", "device", "subsystem_vendor", "subsystem_device", "class", "revision",
    "config", "driver_override", "numa_node", "boot_vga", "reset_method", "modalias",
    "enable", "irq", "resource", "local_cpulist", "label", "index", "acpi_index",
    "sriov_totalvfs", "sriov_numvfs", "sriov_offset", "sriov_stride", "sriov_vf_device",
    "sriov_drivers_autoprobe", "d3cold_allowed", "current_link_speed",
    "current_link_width", "max_link_speed", "max_link_width", "secondary_bus_number",
    "subordinate_bus_number", "ari_enabled", "msi_bus", "broken_parity_status",
    "power_state", "dma_mask_bits", "consistent_dma_mask_bits",
})
DEVICE_LINKS = frozenset({"driver", "iommu_group", "physfn", "firmware_node"})
MODULES = ("vfio", "vfio_pci", "vfio_pci_core", "vfio_iommu_type1", "pci_stub")
EXTRA_FILES = (
    str(PROC_CMDLINE),
    str(PROC_OSRELEASE),
    str(PROC_NET_ROUTE),
    str(PROC_NET_ROUTE6),
    str(PROC_NET_INET6),
)
NET_FILES = ("operstate", "flags")  # per interface, beside the ``master`` link
MANIFEST = "vfioctl-snapshot.json"


class _Copier:
    def __init__(self, host: Host, dest: Path) -> None:
        self.host = host
        self.dest = dest
        self.files = 0

    def _target(self, path: PurePosixPath | str) -> Path:
        return self.dest / str(path)

    def file(self, path: PurePosixPath) -> bool:
        try:
            data = self.host.read_bytes(path)
        except OSError as err:
            if err.errno in (errno.ENOENT, errno.EACCES, errno.EPERM, errno.EIO,
                             errno.EINVAL, errno.ENODEV, errno.ENXIO, errno.EISDIR):
                return False
            raise
        out = self._target(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        self.files += 1
        return True

    def link(self, path: PurePosixPath) -> None:
        target = self.host.readlink(path)
        out = self._target(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.is_symlink() or out.exists():
            out.unlink()
        os.symlink(target, out)

    def dir(self, path: PurePosixPath) -> None:
        self._target(path).mkdir(parents=True, exist_ok=True)


def take_snapshot(host: Host, dest: Path) -> dict[str, object]:
    """Copy ``host``'s PCI devices, drivers, IOMMU groups, vfio module parameters and
    kernel command line into ``dest`` (created; must be empty if it exists).

    Returns the manifest written to ``dest/vfioctl-snapshot.json``.

    Raises:
        UsageError: ``dest`` exists and is not an empty directory.
        HostError: a read failed for another reason than a missing/unreadable file.
    """
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UsageError(f"snapshot directory {dest} is not empty",
                         hint="choose a new directory")
    dest.mkdir(parents=True, exist_ok=True)
    cp = _Copier(host, dest)
    try:
        _copy_pci(cp)
        _copy_groups(cp)
        _copy_drivers(cp)
        _copy_misc(cp)
        _copy_addresses(cp)
    except OSError as err:
        raise wrap_oserror(err, f"cannot snapshot host {host.name}") from err
    manifest: dict[str, object] = {
        "format": 1,
        "source": host.name,
        "taken": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": cp.files,
        "dev_vfio": _listdir_or_none(host, DEV_VFIO),
    }
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _listdir_or_none(host: Host, path: PurePosixPath) -> list[str] | None:
    try:
        return sorted(host.listdir(path))
    except OSError:
        return None


def _copy_pci(cp: _Copier) -> None:
    host = cp.host
    cp.dir(PCI_DEVICES)
    for name in sorted(host.listdir(PCI_DEVICES)):
        link = PCI_DEVICES / name
        cp.link(link)
        real = PurePosixPath(posixpath.normpath(posixpath.join(str(PCI_DEVICES),
                                                               host.readlink(link))))
        cp.dir(real)
        for entry in host.listdir(real):
            p = real / entry
            if entry in DEVICE_LINKS or (entry.startswith("virtfn") and entry[6:].isdigit()):
                if host.is_link(p):
                    cp.link(p)
            elif entry in DEVICE_FILES:
                cp.file(p)
            elif entry == "vfio-dev":
                cp.dir(p)  # marks a vfio (variant) driver binding
            elif entry == "net":
                _copy_net(cp, p)
            elif entry.startswith("virtio") and entry[6:].isdigit() and \
                    host.exists(p / "net"):
                _copy_net(cp, p / "net")  # virtio-net: the interface is below virtioN


def _copy_net(cp: _Copier, net: PurePosixPath) -> None:
    """The interfaces of one function: what tells whether they are up, and bridged."""
    host = cp.host
    cp.dir(net)
    for ifname in host.listdir(net):
        base = net / ifname
        cp.dir(base)
        for name in NET_FILES:
            cp.file(base / name)
        if host.is_link(base / "master"):
            cp.link(base / "master")


def _copy_addresses(cp: _Copier) -> None:
    """The host's interface addresses, as :meth:`Host.ip_addresses` reports them."""
    (cp.dest / ifaddr.ADDRESSES_FILE).write_text(ifaddr.dumps(cp.host.ip_addresses()))
    cp.files += 1


def _copy_groups(cp: _Copier) -> None:
    host = cp.host
    try:
        groups = host.listdir(IOMMU_GROUPS)
    except FileNotFoundError:
        return
    cp.dir(IOMMU_GROUPS)
    for g in groups:
        devs = IOMMU_GROUPS / g / "devices"
        cp.dir(devs)
        for name in host.listdir(devs):
            cp.link(devs / name)
        cp.file(IOMMU_GROUPS / g / "type")
        cp.file(IOMMU_GROUPS / g / "reserved_regions")


def _copy_drivers(cp: _Copier) -> None:
    host = cp.host
    try:
        drivers = host.listdir(PCI_DRIVERS)
    except FileNotFoundError:
        return
    for drv in drivers:
        d = PCI_DRIVERS / drv
        cp.dir(d)
        for entry in host.listdir(d):
            p = d / entry
            if host.is_link(p) and (entry == "module" or ":" in entry):
                cp.link(p)


def _copy_misc(cp: _Copier) -> None:
    host = cp.host
    for f in EXTRA_FILES:
        cp.file(PurePosixPath(f))
    for mod in MODULES:
        params = SYS_MODULE / mod / "parameters"
        try:
            names = host.listdir(params)
        except OSError:
            if host.exists(SYS_MODULE / mod):
                cp.dir(SYS_MODULE / mod)
            continue
        cp.dir(params)
        for n in names:
            cp.file(params / n)
    iommu = SYS_CLASS_IOMMU
    try:
        units = host.listdir(iommu)
    except OSError:
        units = []
    cp.dir(iommu)
    for unit in units:
        cp.link(iommu / unit) if host.is_link(iommu / unit) else cp.dir(iommu / unit)
        for sub in ("intel-iommu/cap", "intel-iommu/ecap", "amd-iommu/cap",
                    "amd-iommu/features"):
            p = iommu / unit / sub
            if host.exists(p):
                data = host.read_bytes(p)
                # store under the resolved location so the link keeps working
                real = PurePosixPath(posixpath.normpath(posixpath.join(
                    str(iommu), host.readlink(iommu / unit)))) if host.is_link(
                    iommu / unit) else iommu / unit
                out = cp.dest / str(real / sub)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(data)
                cp.files += 1
