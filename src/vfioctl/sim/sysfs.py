"""Simulator: lays the kernel model out as the files and links Linux presents.

Everything here is layout: which file exists where, its exact text (``0x8086\\n``,
``(null)\\n``), and the relative link targets with the depth the kernel uses. What a
write *does* is :class:`~vfioctl.sim.kernel.SimKernel`'s business; the tree only routes
writes to it. The tree is rebuilt when the kernel's shape changes (``kernel.version``);
file contents are read live through callbacks, so attribute changes need no rebuild.
"""

from __future__ import annotations

import functools
import posixpath
from collections.abc import Callable

from vfioctl.sim import extras
from vfioctl.sim.device import SimDevice
from vfioctl.sim.kernel import VFIO_MODULES, VFIO_PCI, SimKernel
from vfioctl.sim.procfs import build_proc
from vfioctl.sim.vfs import CharDev, Dir, File, Link, Tree, Writer


def rel(from_dir: str, to: str) -> str:
    """The relative link target from directory ``from_dir`` to ``to`` (both from /)."""
    return posixpath.relpath("/" + to, "/" + from_dir)


def text(value: str) -> File:
    data = value.encode()
    return File(lambda: data)


def live(fn: Callable[[], str], write: Writer | None = None) -> File:
    return File(lambda: fn().encode(), write)


def wo(write: Writer) -> File:
    """A write-only attribute (mode 0200): reading it fails with EACCES."""
    return File(None, write)


def build_tree(k: SimKernel) -> Tree:
    """The whole file tree of the simulated host."""
    root = Dir()
    bus = root.mkdir("sys/bus/pci")
    devs = bus.mkdir("devices")
    drivers = bus.mkdir("drivers")
    bus.mkdir("slots")
    bus.children["drivers_probe"] = wo(k.write_drivers_probe)
    bus.children["drivers_autoprobe"] = text("1\n")
    bus.children["rescan"] = wo(lambda data: None)
    groups_dir = root.mkdir("sys/kernel/iommu_groups")
    root.mkdir("sys/class/iommu")
    root.mkdir("sys/block")

    for dev in k.devices.values():
        d = root.mkdir(dev.sysdir)
        _device_files(k, dev, d)
        if dev.driver == VFIO_PCI and dev.vfio_index is not None:
            d.mkdir("vfio-dev", f"vfio{dev.vfio_index}")
        devs.children[dev.name] = Link(rel("sys/bus/pci/devices", dev.sysdir))
        if k.host_uses(dev):
            _usage(root, dev, d)

    for name in k.registered:
        drv = k.drivers[name]
        dd = drivers.mkdir(name)
        dd.children["bind"] = wo(functools.partial(k.write_bind, drv))
        dd.children["unbind"] = wo(functools.partial(k.write_unbind, drv))
        dd.children["new_id"] = wo(functools.partial(k.write_new_id, drv))
        dd.children["remove_id"] = wo(functools.partial(k.write_remove_id, drv))
        dd.children["uevent"] = wo(lambda data: None)
        if drv.module:
            dd.children["module"] = Link(f"../../../../module/{drv.module}")
        for dev in k.devices.values():
            if dev.driver == name:
                dd.children[dev.name] = Link(rel(f"sys/bus/pci/drivers/{name}", dev.sysdir))

    if k.groups is not None:
        for number, members in k.groups.members.items():
            g = groups_dir.mkdir(str(number))
            gd = g.mkdir("devices")
            for member in members:
                gd.children[member] = Link(rel(f"sys/kernel/iommu_groups/{number}/devices",
                                               k.devices[member].sysdir))
            g.children["type"] = text("identity\n" if "iommu=pt" in k.spec.cmdline.split()
                                      else "DMA-FQ\n")
            g.children["reserved_regions"] = text(
                "0x00000000fee00000 0x00000000feefffff msi\n")
        _iommu_unit(root, k)

    # A built-in vfio-pci (module = "") still has /sys/module/vfio_pci/parameters, as
    # every built-in module with parameters does; built-in modules have no initstate or
    # refcnt (kernel/params.c: param_sysfs_builtin(); kernel/module/sysfs.c).
    vfio_built_in = VFIO_PCI in k.registered and not k.drivers[VFIO_PCI].module
    modules = k.loaded_modules() + (["vfio_pci"] if vfio_built_in else [])
    for mod in modules:
        m = root.mkdir("sys/module", mod)
        if not (vfio_built_in and mod in ("vfio_pci", *VFIO_MODULES)):
            m.children["initstate"] = text("live\n")
            m.children["refcnt"] = text("0\n")
        if mod == "vfio_pci":
            p = m.mkdir("parameters")
            p.children["enable_sriov"] = live(lambda: "Y\n" if k.enable_sriov else "N\n",
                                              k.write_enable_sriov)
            for param in ("disable_vga", "disable_idle_d3", "nointxmask",
                          "disable_denylist"):
                p.children[param] = text("N\n")
        if mod == "vfio_iommu_type1":
            p = m.mkdir("parameters")
            p.children["allow_unsafe_interrupts"] = text(
                "Y\n" if k.spec.extras.allow_unsafe_interrupts else "N\n")

    # What modprobe could load: lib/modules/RELEASE/modules.dep (one line per module
    # file, as depmod writes it) and modules.builtin for drivers built into the kernel.
    mods = root.mkdir("lib/modules", k.spec.kernel_release)
    dep = sorted({d.module for d in k.drivers.values() if d.module})
    builtin = sorted({d.name for d in k.drivers.values() if not d.module})
    mods.children["modules.dep"] = text("".join(
        f"kernel/drivers/{m.replace('_', '-')}.ko:\n" for m in dep))
    mods.children["modules.builtin"] = text("".join(
        f"kernel/drivers/{n.replace('_', '-')}.ko\n" for n in builtin))

    build_proc(root, k)
    _extras(root, k)

    if k.module_loaded("vfio"):
        dv = root.mkdir("dev/vfio")
        dv.children["vfio"] = CharDev("container")
        if k.spec.extras.iommufd:
            cdevs = dv.mkdir("devices")
            for dev in k.devices.values():
                if dev.driver == VFIO_PCI and dev.vfio_index is not None:
                    i = dev.vfio_index
                    cdevs.children[f"vfio{i}"] = CharDev(f"cdev:{i}")
        if k.groups is not None:
            # the node lives while a member is on vfio-pci or someone holds it open
            held = k.vfio.held_groups()
            for number in [*k.groups.members, *sorted(held - set(k.groups.members))]:
                if k.vfio_group_devices(number) or k.vfio.group_held(number):
                    dv.children[str(number)] = CharDev(f"group:{number}")
    return Tree(root)


def _device_files(k: SimKernel, dev: SimDevice, d: Dir) -> None:
    fn = dev.fn
    c = d.children
    c["vendor"] = text(f"0x{fn.vendor:04x}\n")
    c["device"] = text(f"0x{fn.device:04x}\n")
    c["subsystem_vendor"] = text(f"0x{fn.subsystem_vendor:04x}\n")
    c["subsystem_device"] = text(f"0x{fn.subsystem_device:04x}\n")
    c["class"] = text(f"0x{fn.class_code:06x}\n")
    c["revision"] = text(f"0x{fn.revision:02x}\n")
    irq = 16 + dev.index % 240 if not dev.is_bridge else 0
    c["config"] = File(lambda: dev.config(bound=dev.driver is not None, irq=irq))
    c["irq"] = text(f"{irq}\n")
    c["numa_node"] = text(f"{fn.numa_node}\n")
    c["local_cpulist"] = text("0-7\n")
    c["modalias"] = text(dev.modalias + "\n")
    c["enable"] = live(lambda: "1\n" if dev.driver is not None else "0\n")
    c["d3cold_allowed"] = text("1\n")
    c["resource"] = text(_resource(dev))
    c["driver_override"] = live(lambda: (dev.driver_override or "(null)") + "\n",
                                lambda data: k.write_driver_override(dev, data))
    c["uevent"] = live(lambda: (f"DRIVER={dev.driver}\n" if dev.driver else "") + (
        f"PCI_CLASS={fn.class_code:X}\nPCI_ID={fn.vendor:04X}:{fn.device:04X}\n"
        f"PCI_SLOT_NAME={dev.name}\nMODALIAS={dev.modalias}\n"))
    if (fn.class_code >> 8) == 0x0300:
        c["boot_vga"] = text("1\n" if fn.boot_vga else "0\n")
    if dev.default_reset_methods:
        c["reset_method"] = live(
            lambda: (" ".join(dev.reset_methods) + "\n") if dev.reset_methods else "",
            lambda data: k.write_reset_method(dev, data))
        c["reset"] = wo(lambda data: None)
    if dev.is_bridge:
        c["secondary_bus_number"] = text(f"{dev.secondary_bus}\n")
        c["subordinate_bus_number"] = text(f"{dev.subordinate_bus}\n")
    if fn.sriov is not None and not dev.is_vf:
        s = fn.sriov
        c["sriov_totalvfs"] = live(lambda: f"{k.sriov_totalvfs(dev)}\n", None)
        c["sriov_offset"] = text(f"{s.offset}\n")
        c["sriov_stride"] = text(f"{s.stride}\n")
        c["sriov_vf_device"] = text(f"{s.vf_device:x}\n")
        c["sriov_numvfs"] = live(lambda: f"{dev.numvfs}\n",
                                 lambda data: k.write_sriov_numvfs(dev, data))
        c["sriov_drivers_autoprobe"] = live(
            lambda: "1\n" if dev.drivers_autoprobe else "0\n",
            lambda data: k.write_drivers_autoprobe(dev, data))
        for i, vf in enumerate(dev.vfs):
            c[f"virtfn{i}"] = Link(f"../{vf.name}")
    if dev.physfn is not None:
        c["physfn"] = Link(f"../{dev.physfn.name}")
    if dev.driver is not None:
        c["driver"] = Link(rel(dev.sysdir, f"sys/bus/pci/drivers/{dev.driver}"))
    group = k.group_of(dev.name)
    if group is not None:
        c["iommu_group"] = Link(rel(dev.sysdir, f"sys/kernel/iommu_groups/{group}"))
        unit = "dmar0" if k.spec.iommu == "intel" else "ivhd0"
        c["iommu"] = Link(rel(dev.sysdir, f"sys/devices/virtual/iommu/{unit}"))


def _resource(dev: SimDevice) -> str:
    """``resource``: start end flags per resource; 13 rows (17 for bridges) as with
    CONFIG_PCI_IOV (6 BARs, ROM, 6 IOV BARs, then 4 bridge windows)."""
    rows = ["0x0000000000000000 0x0000000000000000 0x0000000000000000"] * (
        17 if dev.is_bridge else 13)
    bar0 = 0 if (dev.is_bridge or dev.is_vf or dev.fn.kind == "host-bridge") else dev.bar0
    if bar0:
        rows[0] = f"0x{bar0:016x} 0x{bar0 + 0xFFFF:016x} 0x0000000000040200"
    return "\n".join(rows) + "\n"


def _usage(root: Dir, dev: SimDevice, d: Dir) -> None:
    for net in dev.fn.net:
        nd = d.mkdir("net", net.name)
        nd.children["operstate"] = live(lambda: "up\n" if dev.net_up else "down\n")
        nd.children["flags"] = live(lambda: "0x1003\n" if dev.net_up else "0x1002\n")
        nd.children["address"] = text(net.mac + "\n")
        nd.children["mtu"] = text("1500\n")
        root.mkdir("sys/class/net").children[net.name] = Link(
            rel("sys/class/net", f"{dev.sysdir}/net/{net.name}"))
    for disk in dev.fn.disks:
        path = f"{dev.sysdir}/{disk.path}/{disk.name}"
        dd = root.mkdir(path)
        dd.children["dev"] = text(disk.major_minor + "\n")
        dd.children["size"] = text("1000215216\n")
        major, minor = disk.major_minor.split(":")
        for i, part in enumerate(disk.partitions, start=1):
            pd = dd.mkdir(part.name)
            pd.children["partition"] = text(f"{i}\n")
            pd.children["dev"] = text(f"{major}:{int(minor) + i}\n")
        root.mkdir("sys/block").children[disk.name] = Link(rel("sys/block", path))
    for node in dev.fn.drm:
        nd = d.mkdir("drm", node)
        nd.children["dev"] = text(f"226:{extras.drm_minor(node)}\n")
    if dev.fn.sound_card is not None:
        n = dev.fn.sound_card
        card = d.mkdir("sound", f"card{n}")
        card.children["number"] = text(f"{n}\n")
        for sub in (f"controlC{n}", f"pcmC{n}D0p", f"hwC{n}D0"):
            card.mkdir(sub)
    if dev.fn.nvidia_minor is not None:
        info = root.mkdir("proc/driver/nvidia/gpus", dev.name)
        info.children["information"] = text(
            f"Model: \t\t Simulated GPU\nBus Location: \t {dev.name}\n"
            f"Device Minor: \t {dev.fn.nvidia_minor}\n")


def _extras(root: Dir, k: SimKernel) -> None:
    """KVM, memory, huge pages and iommufd nodes (:mod:`vfioctl.sim.extras`)."""
    x = k.spec.extras
    dev = root.mkdir("dev")
    if x.kvm != "absent":
        dev.children["kvm"] = CharDev(f"kvm:{x.kvm}")
    if x.iommufd:
        dev.children["iommu"] = CharDev("iommufd")
    root.mkdir("proc").children["meminfo"] = text(extras.meminfo(x))
    hp = root.mkdir("sys/kernel/mm/hugepages")
    for pages in x.hugepages:
        d = hp.mkdir(f"hugepages-{pages.size_kib}kB")
        d.children["nr_hugepages"] = text(f"{pages.total}\n")
        d.children["free_hugepages"] = text(f"{pages.free}\n")
        d.children["resv_hugepages"] = text("0\n")
        d.children["surplus_hugepages"] = text("0\n")


def _iommu_unit(root: Dir, k: SimKernel) -> None:
    # AMD's unit really sits below its PCI function (0000:00:00.2/iommu/ivhd0); a
    # virtual device keeps the simulator independent of that function being declared.
    unit = "dmar0" if k.spec.iommu == "intel" else "ivhd0"
    sub = "intel-iommu" if k.spec.iommu == "intel" else "amd-iommu"
    u = root.mkdir("sys/devices/virtual/iommu", unit)
    regs = u.mkdir(sub)
    if sub == "intel-iommu":
        regs.children["cap"] = text("d2008c40660462\n")
        # bit 3: Interrupt Remapping support (VT-d spec 11.4.3)
        ecap = 0xF050DA if k.spec.extras.interrupt_remapping else 0xF050DA & ~0x8
        regs.children["ecap"] = text(f"{ecap:x}\n")
        regs.children["version"] = text("1:0\n")
    else:
        regs.children["cap"] = text("0x00190000\n")
        regs.children["features"] = text("0x206d73ef22254ade\n")
    root.mkdir("sys/class/iommu").children[unit] = Link(
        rel("sys/class/iommu", f"sys/devices/virtual/iommu/{unit}"))
