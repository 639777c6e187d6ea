"""Simulator: one PCI function as the simulated kernel holds it (``struct pci_dev``).

Hardware facts come from the immutable :class:`~vfioctl.sim.model.Function`; what the
kernel changes at run time (driver, driver_override, NumVFs, reset methods, group) lives
here. The class also answers the questions the group rules ask (:class:`GroupNode`).
"""

from __future__ import annotations

from functools import cached_property

from vfioctl.sim.caps import Facts, Layout, reconcile
from vfioctl.sim.config import ConfigInputs, build_config
from vfioctl.sim.model import ACS_CR, ACS_RR, ACS_SV, ACS_UF, Function, Kind, PcieType

# The bits pci_std_enable_acs() turns on at boot when an IOMMU asked for ACS
# (drivers/pci/pci.c); TB only for untrusted/external-facing ports, not modelled.
BOOT_ACS_CTRL = ACS_SV | ACS_RR | ACS_CR | ACS_UF

_KIND_PCIE_TYPE = {
    Kind.ROOT_PORT: PcieType.ROOT_PORT,
    Kind.UPSTREAM_PORT: PcieType.UPSTREAM,
    Kind.DOWNSTREAM_PORT: PcieType.DOWNSTREAM,
    Kind.PCIE_PCI_BRIDGE: PcieType.PCI_BRIDGE,
}


class SimDevice:
    """A PCI function in the simulated kernel."""

    def __init__(self, fn: Function, upstream: SimDevice | None, *, pcie: bool,
                 multifunction: bool, index: int, physfn: SimDevice | None = None,
                 header_multifunction: bool | None = None) -> None:
        self.fn = fn
        self.addr = fn.addr
        self.name = fn.name
        self.upstream = upstream
        self.physfn = physfn
        self.is_vf = physfn is not None
        self.vfs: list[SimDevice] = []
        self.children: list[SimDevice] = []
        self.pcie = pcie
        # the Header Type register's bit 7, and the kernel's pdev->multifunction: that bit,
        # or any function > 0 (drivers/pci/probe.c pci_scan_slot())
        self.header_multifunction = multifunction if header_multifunction is None \
            else header_multifunction
        self.multifunction = multifunction
        self.index = index
        self.secondary_bus = 0
        self.subordinate_bus = 0
        self.acs_ctrl = 0
        # run-time state
        self.driver: str | None = None
        self.driver_override: str | None = None
        # vfio-dev/vfio<N> while on vfio-pci: the kernel's device index, the lowest free
        # one when vfio-pci binds (ida_alloc_max() in vfio_main.c: vfio_init_device()),
        # given back when it unbinds (ida_free())
        self.vfio_index: int | None = None
        self.numvfs = 0
        self.drivers_autoprobe = True
        self.default_reset_methods: tuple[str, ...] = ()
        self.reset_methods: tuple[str, ...] = ()
        self.net_up = any(n.up for n in fn.net)
        self.net_configured = True      # has the addresses of the host file (sim.net)
        self.sysdir = ""

    # -- GroupNode ------------------------------------------------------------------------
    @property
    def slot_key(self) -> tuple[int, int, int]:
        return (self.addr.domain, self.addr.bus, self.addr.slot)

    @property
    def pcie_type(self) -> int | None:
        if not self.pcie:
            return None
        if self.fn.kind in _KIND_PCIE_TYPE:
            return int(_KIND_PCIE_TYPE[self.fn.kind])
        if self.fn.kind == Kind.PCI_BRIDGE:
            return int(PcieType.PCIE_BRIDGE)
        # QEMU and real root complexes present endpoints on a root bus as RC integrated
        # endpoints (QEMU hw/pci/pcie.c pcie_endpoint_cap_init).
        if self.upstream is None and not self.is_vf:
            return int(PcieType.RC_END)
        if self.is_vf and self.physfn is not None:
            return self.physfn.pcie_type
        return int(PcieType.ENDPOINT)

    @property
    def acs_cap(self) -> int | None:
        return self.fn.acs

    # -- facts ------------------------------------------------------------------------------
    @property
    def is_bridge(self) -> bool:
        return self.fn.kind.is_bridge

    @property
    def ext_config(self) -> bool:
        """4096-byte config: as the hardware says, else PCIe or a host bridge (what
        drivers/pci/probe.c pci_cfg_space_size() finds on such devices)."""
        if self.fn.config_size is not None:
            return self.fn.config_size == 4096
        return self.pcie or (self.fn.class_code >> 8) == 0x0600

    @cached_property
    def layout(self) -> Layout:
        """The capabilities this function presents (:mod:`vfioctl.sim.caps`)."""
        fn = self.fn
        base = fn.caps
        if base is None and fn.model is not None:
            base = fn.model.layout if self.pcie else (fn.model.conventional or fn.model.layout)
        return reconcile(base, Facts(
            pcie=self.pcie, ext_config=self.ext_config, pm=fn.pm_reset,
            ssvid=self.is_bridge and bool(fn.subsystem_vendor or fn.subsystem_device),
            ari=fn.ari, sriov=fn.sriov is not None and not self.is_vf,
            acs=fn.acs is not None, root_port=fn.kind == Kind.ROOT_PORT))

    @property
    def flr(self) -> bool:
        """PCIe DevCap Function Level Reset Capable (``pcie_reset_flr`` probe)."""
        return self.pcie and self.fn.flr and self.layout.has("express")

    @property
    def pm_reset(self) -> bool:
        """A PM capability with No_Soft_Reset clear (``pci_pm_reset`` probe)."""
        return self.fn.pm_reset and self.layout.has("pm")

    @property
    def sysfs_path(self) -> str:
        """``sys/bus/pci/devices/ADDR``: the name every caller uses."""
        return f"sys/bus/pci/devices/{self.name}"

    def config(self, *, bound: bool, irq: int) -> bytes:
        """Config space bytes as a read of the ``config`` attribute returns them."""
        fn = self.fn
        sriov = fn.sriov
        ari_fwd = self.fn.kind in (Kind.ROOT_PORT, Kind.DOWNSTREAM_PORT) and any(
            c.fn.ari for c in self.children)
        inputs = ConfigInputs(
            # A VF's Vendor/Device ID registers read 0xffff (PCIe r6.0 sec 9.3.4.1.1);
            # the kernel's vendor/device files carry the real ids (pci_iov_add_virtfn
            # copies them from the PF's SR-IOV capability).
            vendor=0xFFFF if self.is_vf else fn.vendor,
            device=0xFFFF if self.is_vf else fn.device,
            class_code=fn.class_code, revision=fn.revision,
            subsystem_vendor=fn.subsystem_vendor, subsystem_device=fn.subsystem_device,
            bridge=self.is_bridge,
            multifunction=self.header_multifunction and not self.is_vf,
            pcie_type=self.pcie_type, ext_config=self.ext_config, layout=self.layout,
            flr=fn.flr,
            pm=fn.pm_reset, acs_cap=fn.acs, acs_ctrl=self.acs_ctrl,
            sriov_total=sriov.total_vfs if sriov else 0, sriov_num=self.numvfs,
            sriov_offset=sriov.offset if sriov else 0,
            sriov_stride=sriov.stride if sriov else 0,
            sriov_vf_device=sriov.vf_device if sriov else 0,
            ari=fn.ari, ari_forwarding=ari_fwd,
            primary_bus=self.addr.bus, secondary_bus=self.secondary_bus,
            subordinate_bus=self.subordinate_bus, port_number=self.addr.slot,
            bar0=0 if (self.is_bridge or self.is_vf or fn.kind == Kind.HOST_BRIDGE)
            else self.bar0, irq=irq, enabled=bound, serial=self.serial,
        )
        return build_config(inputs)

    @property
    def bar0(self) -> int:
        """A plausible, unique 32-bit BAR0 (64 KiB per function, below 4 GiB)."""
        return 0xC0000000 + (self.index << 16)

    @property
    def serial(self) -> int:
        """Device Serial Number: QEMU derives it from the MAC (52-54-00-ff-ff-12-34-56 for
        52:54:00:12:34:56); otherwise a unique number per function."""
        if self.fn.net:
            mac = bytes(int(x, 16) for x in self.fn.net[0].mac.split(":"))
            return int.from_bytes(mac[:3] + b"\xff\xff" + mac[3:], "big")
        return 0x5349_4D00_0000_0000 | self.index

    @property
    def modalias(self) -> str:
        fn = self.fn
        return (f"pci:v{fn.vendor:08X}d{fn.device:08X}sv{fn.subsystem_vendor:08X}"
                f"sd{fn.subsystem_device:08X}bc{fn.class_code >> 16:02X}"
                f"sc{(fn.class_code >> 8) & 0xFF:02X}i{fn.class_code & 0xFF:02X}")

    def __repr__(self) -> str:
        return f"SimDevice({self.name})"
