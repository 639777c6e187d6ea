"""Simulator: the kernel model — PCI core, driver core, SR-IOV, IOMMU groups, vfio-pci.

The plan (in the manner of libvirt's ``tests/virpcimock.c``): every file the simulated
kernel presents, what a write accepts, and the errno of each rejection. Paths are relative
to the host root ``/``. Reads of write-only files and writes to read-only files fail with
EACCES (kernfs); a missing path gives ENOENT.

``sys/bus/pci/devices/ADDR`` -> ``../../../devices/pci0000:00/[BRIDGE/...]ADDR``
    vendor device subsystem_vendor subsystem_device (``0x%04x``), class (``0x%06x``),
    revision (``0x%02x``), config (binary; 4096 bytes for PCIe and host bridges, else 256;
    a VF reads ``ffff`` as vendor/device), modalias, numa_node, irq, enable, resource,
    boot_vga (VGA class only), secondary/subordinate_bus_number (bridges),
    iommu_group -> ``../../../kernel/iommu_groups/N``, driver -> ``../../../bus/pci/
    drivers/NAME`` (depth follows the device), vfio-dev/vfioN (bound to vfio-pci),
    net/IFNAME/operstate and the disk subtree (bound to a kernel driver only).
  driver_override  read ``(null)`` or the name. Write: up to the first newline; empty or
                   ``\\n`` clears. >= 4095 bytes: EINVAL.
  reset_method     read the enabled methods (``flr pm bus``), present only when the
                   device had any. Write ``""``/``\\n``: disable all; ``default``:
                   restore; a list of supported names: that order; else EINVAL.
  sriov_totalvfs sriov_offset sriov_stride sriov_vf_device (PFs, read-only)
  sriov_numvfs     write N (kstrtou16, base 0): not a number EINVAL; > TotalVFs ERANGE;
                   == current: no-op; no driver, or a driver without sriov_configure:
                   ENOENT; vfio-pci with enable_sriov=N: ENOENT; non-zero while non-zero:
                   EBUSY; 0 while a VF's VFIO device file is open: the kernel blocks
                   (SimWouldBlock). VFs appear with physfn/virtfnN links and get groups;
                   VFs of a vfio-pci PF get driver_override=vfio-pci.
  sriov_drivers_autoprobe  ``0``/``1`` (kstrtobool, else EINVAL); a VF without override
                   probes only when its PF's flag is 1.
``sys/bus/pci/drivers/NAME/``  (only while the driver is loaded)
  bind    write ADDR: no such device, or the driver does not match it (id table,
          dynamic ids, driver_override): ENODEV; already bound: EBUSY; probe refusal:
          its errno (vfio-pci: bridge EINVAL, no IOMMU group EINVAL, PF with VFs EBUSY;
          pcieport: not a PCIe port ENODEV; a non-DMA-safe driver into a group a VFIO
          user owns: EBUSY).
  unbind  write ADDR: not bound to this driver: ENODEV. vfio-pci, and PF drivers with
          sriov_configure, disable the PF's VFs first (vfio-pci whatever enable_sriov
          says: ``vfio_pci_core_unregister_device``). A VFIO device file open on the
          device, or on one of the VFs removed: the kernel blocks (SimWouldBlock); a
          group file alone does not hold the device. The interface of a NIC is
          destroyed: a later bind brings it back down and without addresses.
  new_id  ``VVVV DDDD [SV SD CLASS MASK]`` (hex): fewer than 2 fields EINVAL; already in
          the static table EEXIST; then every unbound matching device is probed.
  remove_id  same format: no such dynamic id ENODEV.
  module -> ``../../../../module/MOD`` for modular drivers; ADDR links for bound devices.
``sys/bus/pci/drivers_probe``  write ADDR: unknown ENODEV; otherwise succeeds (an unbound
    device is offered to the drivers in registration order; override first).
``sys/bus/pci/drivers_autoprobe`` (``1``), ``rescan`` (accepted, no effect).
``sys/kernel/iommu_groups/N/devices/ADDR`` -> device; ``type``, ``reserved_regions``.
``sys/module/vfio_pci/parameters/enable_sriov``  ``Y``/``N``; write kstrtobool else EINVAL.
    Present only while vfio-pci is loaded (``Host.load_module("vfio-pci")``), or always
    where it is built in (``module = ""``).
``sys/class/iommu/dmar0|ivhd0``, ``sys/class/net/IF``, ``sys/block/DISK`` -> device subtree.
``proc/cmdline``, ``proc/mounts``, ``proc/swaps``, ``proc/sys/kernel/osrelease``,
``proc/net/route``, ``ipv6_route`` and ``if_inet6`` (:mod:`vfioctl.sim.net`),
``proc/PID/comm`` and ``proc/PID/fd/N`` of the processes holding VFIO files, this one
included, and ``proc/self`` (:mod:`vfioctl.sim.users`);
``lib/modules/RELEASE/modules.dep`` and ``modules.builtin`` (what modprobe could load).
``dev/vfio/vfio`` (vfio loaded) and ``dev/vfio/N`` (group N has a vfio-pci member):
    see :mod:`vfioctl.sim.vfio` for the ioctls and their errnos.
"""

from __future__ import annotations

import errno
import os
import re
import uuid
from collections.abc import Iterator

from vfioctl.address import PciAddress
from vfioctl.errors import ConfigError
from vfioctl.sim.blocking import SimWouldBlock
from vfioctl.sim.device import BOOT_ACS_CTRL, SimDevice
from vfioctl.sim.groups import GroupAllocator
from vfioctl.sim.model import DriverSpec, Function, HostSpec, IdMatch, Kind
from vfioctl.sim.net import LiveIf
from vfioctl.sim.users import VfioUser, make_user

VFIO_PCI = "vfio-pci"
PCIEPORT = "pcieport"
VFIO_MODULES = ("vfio", "vfio_iommu_type1", "vfio_pci_core")
PAGE_SIZE = 4096


def kerr(code: int, what: str = "") -> OSError:
    """An OSError as a failed ``write(2)``/``ioctl(2)`` would raise it."""
    return OSError(code, os.strerror(code), what) if what else OSError(code, os.strerror(code))


def parse_bool(text: str) -> bool:
    """``kstrtobool``: y/Y/1/on and n/N/0/off (first characters), else EINVAL."""
    s = text.strip("\n")
    if s[:1] in ("y", "Y", "1"):
        return True
    if s[:1] in ("n", "N", "0"):
        return False
    if s[:2].lower() == "on":
        return True
    if s[:3].lower() == "off":
        return False
    raise kerr(errno.EINVAL)


def parse_u16(text: str) -> int:
    """``kstrtou16(buf, 0, …)``: decimal, 0x hex or 0 octal, one trailing newline."""
    s = text[:-1] if text.endswith("\n") else text
    s = s.removeprefix("+")
    try:
        if re.fullmatch(r"0[xX][0-9a-fA-F]+", s):
            n = int(s, 16)
        elif re.fullmatch(r"0[0-7]*", s):
            n = int(s, 8)
        elif re.fullmatch(r"[1-9][0-9]*", s):
            n = int(s)
        else:
            raise ValueError(s)
    except ValueError:
        raise kerr(errno.EINVAL) from None
    if n > 0xFFFF:
        raise kerr(errno.EINVAL)
    return n


def device_name_arg(text: str) -> str:
    """``bus_find_device_by_name`` compares with ``sysfs_streq``: one trailing newline."""
    return text[:-1] if text.endswith("\n") else text


class SimKernel:
    """The simulated kernel of one host. Not thread-safe; one per process.

    Attributes that tests read directly: :attr:`devices` (name -> :class:`SimDevice` in
    add order), :attr:`vf_tokens` (secret), :attr:`enable_sriov`, :meth:`driver_of`,
    :meth:`group_of`.
    """

    def __init__(self, spec: HostSpec) -> None:
        self.spec = spec
        self.drivers: dict[str, DriverSpec] = {d.name: d for d in spec.drivers}
        # Registered (loaded) drivers in registration order: the order device_attach tries.
        self.registered: list[str] = [d.name for d in spec.drivers
                                      if d.module is None or d.loaded]
        self.dynids: dict[str, list[IdMatch]] = {}
        self.enable_sriov = spec.enable_sriov
        self.devices: dict[str, SimDevice] = {}
        self.iommu_on = spec.iommu != "none" and not re.search(
            r"(^|\s)(iommu=off|intel_iommu=off|amd_iommu=off)(\s|$)", spec.cmdline)
        # a group someone holds open keeps its number (the vfio_group holds the
        # iommu_group) even when its last device is gone
        self.groups: GroupAllocator | None = GroupAllocator(
            held=lambda: self.vfio.held_groups()) if self.iommu_on else None
        self.vf_tokens: dict[str, uuid.UUID] = {}
        self.vfio_users: dict[int, VfioUser] = {}     # other processes; see sim.users
        self.version = 0          # bumped on every change of the tree's shape
        self.dirty = False        # state changed since the last save
        from vfioctl.sim.vfio import VfioLayer
        self.vfio = VfioLayer(self)
        self._build_hardware()

    # -- construction ----------------------------------------------------------------------
    def _build_hardware(self) -> None:
        fns = {fn.name: fn for fn in self.spec.functions}
        children: dict[str | None, list[Function]] = {}
        for fn in self.spec.functions:
            children.setdefault(None if fn.parent is None else str(fn.parent), []).append(fn)
        slots: dict[tuple[int, int, int], int] = {}
        for fn in self.spec.functions:
            k = (fn.addr.domain, fn.addr.bus, fn.addr.slot)
            slots[k] = slots.get(k, 0) + 1
        used_buses = {(fn.addr.domain, fn.addr.bus) for fn in self.spec.functions}

        def pcie_default(fn: Function, parent: SimDevice | None) -> bool:
            if fn.pcie is not None:
                return fn.pcie
            if fn.kind in (Kind.PCI_BRIDGE, Kind.HOST_BRIDGE):
                return False
            # below a PCIe-to-PCI or PCI-to-PCI bridge the bus is conventional PCI
            return not (parent is not None and parent.fn.kind in (
                Kind.PCIE_PCI_BRIDGE, Kind.PCI_BRIDGE))

        def add_bus(fns_on_bus: list[Function], parent: SimDevice | None) -> None:
            # pci_bus_add_devices(): all devices of a bus, then each bridge's bus in turn
            added: list[SimDevice] = []
            for fn in sorted(fns_on_bus, key=lambda f: f.addr):
                header_mf = fn.multifunction if fn.multifunction is not None else \
                    slots[(fn.addr.domain, fn.addr.bus, fn.addr.slot)] > 1
                # pci_scan_slot(): every function > 0 is multifunction to the kernel
                dev = SimDevice(fn, parent, pcie=pcie_default(fn, parent),
                                multifunction=header_mf or fn.addr.function > 0,
                                header_multifunction=header_mf, index=len(self.devices))
                dev.sysdir = (f"{parent.sysdir}/{fn.name}" if parent is not None else
                              f"sys/devices/pci{fn.addr.domain:04x}:{fn.addr.bus:02x}/{fn.name}")
                if parent is not None:
                    parent.children.append(dev)
                self.devices[dev.name] = dev
                added.append(dev)
            for dev in added:
                if dev.is_bridge:
                    kids = children.get(dev.name, [])
                    if kids:
                        dev.secondary_bus = kids[0].addr.bus
                    else:
                        dev.secondary_bus = dev.fn.secondary_bus or _free_bus(
                            used_buses, dev.addr.domain, dev.addr.bus)
                    used_buses.add((dev.addr.domain, dev.secondary_bus))
                    add_bus(kids, dev)

        roots = children.get(None, [])
        for key in sorted({(f.addr.domain, f.addr.bus) for f in roots}):
            add_bus([f for f in roots if (f.addr.domain, f.addr.bus) == key], None)
        missing = set(fns) - set(self.devices)
        if missing:
            raise ConfigError(f"devices {', '.join(sorted(missing))} are not reachable "
                              "from a root bus (check their parent)")
        for dev in self.devices.values():
            if dev.is_bridge:
                dev.subordinate_bus = max([dev.secondary_bus] + [
                    d.addr.bus for d in self._subtree(dev)] + [
                    d.secondary_bus for d in self._subtree(dev) if d.is_bridge])
            if dev.fn.acs is not None and not dev.pcie:
                raise ConfigError(f"device {dev.name}: ACS needs a PCIe function, and this "
                                  "one is conventional PCI (pcie = false or behind a PCI bus)")
            if self.iommu_on and dev.fn.acs is not None:
                dev.acs_ctrl = dev.fn.acs & BOOT_ACS_CTRL
        on_bus: set[tuple[int, int]] = set()
        for dev in self.devices.values():          # pci_device_add() order
            dev.default_reset_methods = self._reset_methods(dev, on_bus)
            dev.reset_methods = dev.default_reset_methods
            on_bus.add((dev.addr.domain, dev.addr.bus))
        if self.groups is not None:
            for dev in self.devices.values():
                self.groups.add(dev)

    def _subtree(self, dev: SimDevice) -> Iterator[SimDevice]:
        for child in dev.children:
            yield child
            yield from self._subtree(child)

    def _reset_methods(self, dev: SimDevice, on_bus: set[tuple[int, int]]
                       ) -> tuple[str, ...]:
        """``pci_init_reset_methods()`` as ``pci_device_add()`` runs it, before the device
        joins its bus's device list and before a bridge gets its subordinate bus
        (drivers/pci/pci.c ``pci_reset_fn_methods`` order; ``device_specific``, ``acpi``,
        ``af_flr`` and ``cxl_bus`` are not modelled):

        - ``flr``: PCIe DevCap FLR bit (``pcie_reset_flr``);
        - ``pm``: a PM capability with No_Soft_Reset clear (``pci_pm_reset``);
        - ``bus``: ``pci_parent_bus_reset``: not on a root bus, the bus has a bridge
          (VFs on a virtual bus do not), and no device was added to the bus before this
          one (``on_bus``: buses that have one). So the first function of a slot gets it
          and its later siblings do not, bridges included; hotplug slot reset is not
          possible yet at that point (no hotplug driver has claimed the slot).
        """
        methods = []
        if dev.flr:
            methods.append("flr")
        if dev.pm_reset:
            methods.append("pm")
        if dev.upstream is not None and (dev.addr.domain, dev.addr.bus) not in on_bus and (
                not dev.is_vf or dev.addr.bus == dev.upstream.secondary_bus):
            methods.append("bus")
        return tuple(methods)

    def boot(self) -> None:
        """Probe every device in add order, as the kernel does at boot (no saved state)."""
        for dev in list(self.devices.values()):
            dev.driver_override = dev.fn.driver_override
            if dev.fn.unbound:
                continue
            if dev.fn.driver is not None:
                if dev.fn.driver not in self.registered:
                    raise ConfigError(f"device {dev.name}: driver {dev.fn.driver} is not "
                                      "loaded at boot (set loaded = true on the driver)")
                self._bind(self.drivers[dev.fn.driver], dev)
            else:
                self._attach(dev)
        self.dirty = False

    # -- queries ------------------------------------------------------------------------------
    def get(self, name: str) -> SimDevice | None:
        return self.devices.get(name)

    def driver_of(self, name: str | PciAddress) -> str | None:
        """The driver bound to a device (None: unbound). KeyError if no such device."""
        return self.devices[str(name)].driver

    def group_of(self, name: str | PciAddress) -> int | None:
        if self.groups is None:
            return None
        return self.groups.group_of.get(str(name))

    def group_members(self, group: int) -> list[SimDevice]:
        if self.groups is None:
            return []
        return [self.devices[n] for n in self.groups.members.get(group, [])]

    def module_loaded(self, module: str) -> bool:
        return any(self.drivers[d].module == module for d in self.registered) or (
            module in (*VFIO_MODULES, "vfio_pci") and VFIO_PCI in self.registered)

    def loaded_modules(self) -> list[str]:
        mods = [self.drivers[d].module for d in self.registered]
        out = [m for m in mods if m]
        if VFIO_PCI in self.registered:
            out += list(VFIO_MODULES)
        return out

    def vfio_group_devices(self, group: int) -> list[SimDevice]:
        return [d for d in self.group_members(group) if d.driver == VFIO_PCI]

    def host_uses(self, dev: SimDevice) -> bool:
        """Net/block children exist only while a kernel (non-VFIO) driver drives it."""
        return dev.driver is not None and dev.driver not in (VFIO_PCI, "pci-stub")

    # -- driver core ---------------------------------------------------------------------------
    def _changed(self, *, shape: bool = True) -> None:
        self.dirty = True
        if shape:
            self.version += 1

    def matches(self, drv: DriverSpec, dev: SimDevice) -> bool:
        """``pci_match_device``: override first, then dynamic ids, then the id table;
        a set override always matches its own driver."""
        if dev.driver_override is not None and dev.driver_override != drv.name:
            return False
        fn = dev.fn
        vendor, device = fn.vendor, fn.device
        for m in self.dynids.get(drv.name, []) + list(drv.ids):
            if m.matches(vendor, device, fn.class_code):
                return True
        return dev.driver_override is not None

    def _probe_error(self, drv: DriverSpec, dev: SimDevice) -> int:
        """What the driver's probe (and the core around it) says; 0 = binds."""
        if dev.is_vf and dev.physfn is not None and not dev.physfn.drivers_autoprobe \
                and dev.driver_override is None:
            return errno.ENODEV          # pci_device_can_probe()
        if not drv.dma_managed and self.vfio.group_owned(self.group_of(dev.name)):
            return errno.EBUSY           # iommu_device_use_default_domain()
        if drv.name == PCIEPORT and dev.pcie_type not in (4, 5, 6, 10):
            return errno.ENODEV          # pcie_portdrv_probe()
        if drv.name == "virtio-pci" and not 0x1000 <= dev.fn.device <= 0x107F:
            return errno.ENODEV          # virtio_pci_probe()
        if drv.name == VFIO_PCI:
            if dev.is_bridge:
                return errno.EINVAL      # vfio_pci_probe(): normal header only
            if self.group_of(dev.name) is None:
                return errno.EINVAL      # no IOMMU group, no noiommu mode
            if dev.numvfs:
                return errno.EBUSY       # "Cannot bind to PF with SR-IOV enabled"
        return 0

    def _bind(self, drv: DriverSpec, dev: SimDevice) -> None:
        dev.driver = drv.name
        if drv.name == VFIO_PCI:
            dev.vfio_index = self.free_vfio_index()
        if drv.name == VFIO_PCI and dev.fn.sriov is not None and not dev.is_vf:
            # vfio_pci_vf_init(): a random token the user can never read back
            self.vf_tokens[dev.name] = uuid.uuid4()
        self._changed()

    def free_vfio_index(self) -> int:
        """The lowest vfio device index no present device holds (``ida_alloc_max()``)."""
        taken = {d.vfio_index for d in self.devices.values() if d.vfio_index is not None}
        return next(i for i in range(len(taken) + 1) if i not in taken)

    def _probe(self, drv: DriverSpec, dev: SimDevice) -> int:
        err = self._probe_error(drv, dev)
        if err == 0:
            self._bind(drv, dev)
        return err

    def _attach(self, dev: SimDevice) -> bool:
        """``device_attach``: first registered driver that matches and probes wins."""
        if dev.driver is not None:
            return True
        for name in self.registered:
            drv = self.drivers[name]
            if self.matches(drv, dev) and self._probe(drv, dev) == 0:
                return True
        return False

    def _unbind(self, dev: SimDevice) -> None:
        """``device_release_driver``: the driver's remove, which for vfio-pci first
        disables SR-IOV and then waits for the device's VFIO files to be closed."""
        if dev.driver is None:
            return
        drv = self.drivers[dev.driver]
        takes_vfs = bool(dev.numvfs) and (drv.sriov or drv.name == VFIO_PCI)
        what = f"unbinding {drv.name} from {dev.name}"
        if takes_vfs:
            self._check_vfs_closed(dev, what)
        if drv.name == VFIO_PCI and self.vfio.device_open(dev.name):
            raise SimWouldBlock(what, dev.name, self.vfio.holders(dev.name))
        if takes_vfs:
            self._disable_vfs(dev)
        if dev.driver == VFIO_PCI:
            self.vf_tokens.pop(dev.name, None)
            dev.vfio_index = None
        dev.driver = None
        # the interface is destroyed; one created by a later bind is down, unconfigured
        dev.net_up = False
        dev.net_configured = False
        self._changed()

    # -- sysfs write handlers -----------------------------------------------------------------
    def write_driver_override(self, dev: SimDevice, data: str) -> None:
        if len(data) >= PAGE_SIZE - 1:
            raise kerr(errno.EINVAL)
        value = data.split("\0", 1)[0].split("\n", 1)[0]
        dev.driver_override = value or None
        self._changed(shape=False)

    def write_bind(self, drv: DriverSpec, data: str) -> None:
        dev = self.devices.get(device_name_arg(data))
        if dev is None or not self.matches(drv, dev):
            raise kerr(errno.ENODEV)
        if dev.driver is not None:
            raise kerr(errno.EBUSY)
        err = self._probe(drv, dev)
        if err:
            raise kerr(err)

    def write_unbind(self, drv: DriverSpec, data: str) -> None:
        dev = self.devices.get(device_name_arg(data))
        if dev is None or dev.driver != drv.name:
            raise kerr(errno.ENODEV)
        self._unbind(dev)

    def write_drivers_probe(self, data: str) -> None:
        dev = self.devices.get(device_name_arg(data))
        if dev is None:
            raise kerr(errno.ENODEV)
        self._attach(dev)

    def _parse_id(self, data: str) -> IdMatch:
        fields = data.split()
        try:
            nums = [int(f, 16) for f in fields[:6]]
        except ValueError:
            nums = []
        if len(nums) < 2:
            raise kerr(errno.EINVAL)
        cls, mask = (nums[4], nums[5]) if len(nums) >= 6 else (0, 0)
        return IdMatch(nums[0], nums[1], cls, mask)

    def write_new_id(self, drv: DriverSpec, data: str) -> None:
        m = self._parse_id(data)
        assert m.vendor is not None and m.device is not None
        if any(s.matches(m.vendor, m.device, m.class_code or 0) for s in drv.ids):
            raise kerr(errno.EEXIST)
        self.dynids.setdefault(drv.name, []).append(m)
        self._changed(shape=False)
        for dev in list(self.devices.values()):         # driver_attach()
            if dev.driver is None and self.matches(drv, dev):
                self._probe(drv, dev)

    def write_remove_id(self, drv: DriverSpec, data: str) -> None:
        m = self._parse_id(data)
        ids = self.dynids.get(drv.name, [])
        for i, have in enumerate(ids):
            if (have.vendor, have.device) == (m.vendor, m.device):
                del ids[i]
                self._changed(shape=False)
                return
        raise kerr(errno.ENODEV)

    def write_reset_method(self, dev: SimDevice, data: str) -> None:
        s = data.strip()
        if s == "":
            dev.reset_methods = ()
        elif s == "default":
            dev.reset_methods = dev.default_reset_methods
        else:
            names = s.split()
            if any(n not in dev.default_reset_methods for n in names):
                raise kerr(errno.EINVAL)
            dev.reset_methods = tuple(dict.fromkeys(names))
        self._changed(shape=False)

    def write_enable_sriov(self, data: str) -> None:
        self.enable_sriov = parse_bool(data)
        self._changed(shape=False)

    def write_drivers_autoprobe(self, dev: SimDevice, data: str) -> None:
        dev.drivers_autoprobe = parse_bool(data)
        self._changed(shape=False)

    def sriov_totalvfs(self, dev: SimDevice) -> int:
        """``pci_sriov_get_totalvfs`` (drivers/pci/iov.c): the capability's TotalVFs,
        or the bound driver's limit from ``pci_sriov_set_totalvfs``."""
        assert dev.fn.sriov is not None
        drv = self.drivers.get(dev.driver) if dev.driver else None
        if drv is not None and drv.max_vfs is not None:
            return min(drv.max_vfs, dev.fn.sriov.total_vfs)
        return dev.fn.sriov.total_vfs

    def write_sriov_numvfs(self, dev: SimDevice, data: str) -> None:
        """``sriov_numvfs_store`` (drivers/pci/iov.c) and the driver's sriov_configure."""
        assert dev.fn.sriov is not None
        num = parse_u16(data)
        if num > self.sriov_totalvfs(dev):
            raise kerr(errno.ERANGE)
        if num == dev.numvfs:
            return
        drv = self.drivers.get(dev.driver) if dev.driver else None
        if drv is None or not drv.sriov:
            raise kerr(errno.ENOENT)
        # vfio-pci's sriov_configure (drivers/vfio/pci/vfio_pci.c) answers ENOENT while
        # enable_sriov is N for every request, disabling VFs included.
        refuses = drv.name == VFIO_PCI and not self.enable_sriov
        if num == 0:
            if refuses:
                raise kerr(errno.ENOENT)
            self._check_vfs_closed(dev, f"writing 0 to {dev.name}'s sriov_numvfs")
            self._disable_vfs(dev)
            return
        if dev.numvfs:
            raise kerr(errno.EBUSY)
        if refuses:
            raise kerr(errno.ENOENT)
        self.enable_vfs(dev, num)

    # -- SR-IOV ---------------------------------------------------------------------------------
    def vf_address(self, pf: SimDevice, i: int) -> PciAddress:
        """Routing ID = PF RID + First VF Offset + i * VF Stride (PCIe r6.0 sec 9.3.3.9)."""
        assert pf.fn.sriov is not None
        rid = (pf.addr.bus << 8 | pf.addr.devfn) + pf.fn.sriov.offset + i * pf.fn.sriov.stride
        if rid > 0xFFFF:
            raise kerr(errno.ENOMEM)
        return PciAddress(pf.addr.domain, rid >> 8, (rid >> 3) & 0x1F, rid & 7)

    def enable_vfs(self, pf: SimDevice, num: int, groups: list[int] | None = None,
                   probe: bool = True) -> None:
        """``pci_enable_sriov`` + ``pci_iov_add_virtfn`` for each VF, then probing."""
        sriov = pf.fn.sriov
        assert sriov is not None
        addrs = [self.vf_address(pf, i) for i in range(num)]
        if any(str(a) in self.devices for a in addrs):
            raise kerr(errno.EBUSY)
        pf.numvfs = num
        for i, addr in enumerate(addrs):
            # VFs: FLR is mandatory (PCIe r6.0 sec 9.3.5.3.2); ARI as the PF; a measured
            # model says the rest
            fn = Function(addr=addr, kind=Kind.ENDPOINT, vendor=pf.fn.vendor,
                          device=sriov.vf_device, class_code=pf.fn.class_code,
                          revision=pf.fn.revision, subsystem_vendor=pf.fn.subsystem_vendor,
                          subsystem_device=pf.fn.subsystem_device, pcie=pf.pcie,
                          flr=True, ari=pf.fn.ari, numa_node=pf.fn.numa_node,
                          caps=pf.fn.model.vf_layout if pf.fn.model else None)
            vf = SimDevice(fn, pf.upstream, pcie=pf.pcie, multifunction=False,
                           index=len(self.devices), physfn=pf)
            vf.sysdir = pf.sysdir.rsplit("/", 1)[0] + "/" + vf.name
            # pci_iov_add_virtfn() -> pci_device_add(): the PF is already on the bus
            vf.default_reset_methods = vf.reset_methods = self._reset_methods(
                vf, {(a.domain, a.bus) for a in (pf.addr, *(v.addr for v in pf.vfs))})
            pf.vfs.append(vf)
            self.devices[vf.name] = vf
            if self.groups is not None:
                self.groups.add(vf, None if groups is None else groups[i])
            if pf.driver == VFIO_PCI:
                # vfio_pci_bus_notifier(): "Captured SR-IOV VF ... driver_override"
                vf.driver_override = VFIO_PCI
        self._changed()
        if probe:
            for vf in pf.vfs:
                if pf.drivers_autoprobe or vf.driver_override is not None:
                    self._attach(vf)

    def _check_vfs_closed(self, pf: SimDevice, what: str) -> None:
        """``pci_disable_sriov`` removes every VF, which unbinds it: a VF whose VFIO
        device file is open makes the caller wait (before anything changes here)."""
        for vf in pf.vfs:
            if self.vfio.device_open(vf.name):
                raise SimWouldBlock(what, vf.name, self.vfio.holders(vf.name))

    def _disable_vfs(self, pf: SimDevice) -> None:
        self._check_vfs_closed(pf, f"disabling the VFs of {pf.name}")
        for vf in reversed(pf.vfs):
            if vf.driver is not None:
                self._unbind(vf)
            if self.groups is not None:
                self.groups.remove(vf)
            del self.devices[vf.name]
        pf.vfs = []
        pf.numvfs = 0
        self._changed()

    # -- VFIO users (other processes) ------------------------------------------------------
    def add_vfio_user(self, pid: int, comm: str, group: int,
                      devices: tuple[str, ...] | list[str] = (), *,
                      restoring: bool = False) -> VfioUser:
        """Another process opens ``/dev/vfio/GROUP``, sets it in a type1 container (as
        QEMU does) and takes a device file for each of ``devices``.

        ``restoring``: the user is read back from saved state, where its group may have
        lost every member since it was opened (the open file keeps the group).

        Raises:
            ValueError: a bad pid (taken, this process's own), comm or address.
            OSError: what the kernel answers that process: ENOENT no ``/dev/vfio/GROUP``
                (no member on vfio-pci); EBUSY the group is already open; EPERM the group
                is not viable; ENODEV a device that is not a vfio-pci member of it.
        """
        user = make_user(pid, comm, group, devices)
        if user.pid in self.vfio_users:
            raise ValueError(f"pid {user.pid} already holds VFIO files on this host")
        members = [d.name for d in self.vfio_group_devices(user.group)]
        if not members and not (restoring and not user.devices):
            raise kerr(errno.ENOENT, f"/dev/vfio/{user.group}")
        if self.vfio.group_held(user.group):
            raise kerr(errno.EBUSY, f"/dev/vfio/{user.group}")
        if members and not self.vfio.viable(user.group):
            raise kerr(errno.EPERM, f"IOMMU group {user.group} is not viable")
        for name in user.devices:
            if name not in members:
                raise kerr(errno.ENODEV, f"{name} is not bound to vfio-pci in IOMMU group "
                           f"{user.group}")
        self.vfio_users[user.pid] = user
        self._changed()
        return user

    def remove_vfio_user(self, pid: int) -> None:
        """The process exits: its VFIO files are closed.

        Raises:
            ValueError: no such user.
        """
        if pid not in self.vfio_users:
            raise ValueError(f"no VFIO user with pid {pid} on this host")
        del self.vfio_users[pid]
        self._changed()

    # -- network -----------------------------------------------------------------------------
    def live_interfaces(self) -> list[LiveIf]:
        """The NICs' interfaces that exist now (a kernel driver is bound), with their
        ifindex: ``lo`` is 1, then every declared interface in device order."""
        out = []
        index = 1
        for dev in self.devices.values():
            for net in dev.fn.net:
                index += 1
                if self.host_uses(dev):
                    out.append(LiveIf(index, net, dev.net_up, dev.net_configured))
        return out

    # -- modules ----------------------------------------------------------------------------------
    def load_module(self, name: str) -> None:
        """``modprobe NAME``: register the driver(s) of that module and attach them
        to unbound devices (override first). Unknown module: ENOENT (modprobe fails)."""
        mod = name.replace("-", "_")
        found = [d for d in self.drivers.values() if d.module == mod or
                 d.name.replace("-", "_") == mod]
        if not found and mod in VFIO_MODULES:
            return
        if not found:
            raise kerr(errno.ENOENT, f"modprobe: FATAL: Module {name} not found")
        for drv in found:
            if drv.name in self.registered:
                continue
            self.registered.append(drv.name)
            self._changed()
            for dev in list(self.devices.values()):
                if dev.driver is None and self.matches(drv, dev):
                    self._probe(drv, dev)


def _free_bus(used: set[tuple[int, int]], domain: int, after: int) -> int:
    for bus in range(after + 1, 256):
        if (domain, bus) not in used:
            return bus
    raise ConfigError(f"no free bus number left in domain {domain:04x}")
