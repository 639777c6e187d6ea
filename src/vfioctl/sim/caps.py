"""Simulator: capability layouts — which capabilities a function has, where, in what order.

A layout is the list of standard capabilities (chain order, offsets in 0x40..0xff) and
extended capabilities (chain order, offsets in 0x100..0xfff) of one function. It comes
from, in this order:

1. ``caps = [...]`` on the device in the host file (explicit);
2. ``model = "NAME"`` on the device: a layout from :data:`MODELS`, the library of
   devices whose config space was measured on real hardware (QEMU 7.2 guests: the
   ``tests/data/snapshots/q35-*`` captures);
3. a default built from the device's facts (PCIe, PM, bridge subsystem id; ARI, SR-IOV,
   ACS), packed from 0x40 and 0x100.

Whatever the source, the facts the kernel model reasons about win over the layout
(:func:`reconcile`): a capability whose fact is absent is dropped (PCI Express on a
conventional function, ACS without ``acs``, SR-IOV without ``sriov``, ARI without
``ari``) and one whose fact is present but the layout lacks is appended where there is
room. PM and the bridge subsystem id are only added by the default layout: a given
layout has them where it lists them (``pm_reset`` then only clears No_Soft_Reset).
The register *contents* are built by :mod:`vfioctl.sim.config` from the facts and the
entry's parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# name -> capability id (PCI 3.0 appendix H; PCIe r6.0 sec 7.6; pci_regs.h)
STD_CAPS: dict[str, int] = {
    "pm": 0x01, "msi": 0x05, "vendor": 0x09, "hotplug": 0x0C, "ssvid": 0x0D,
    "express": 0x10, "msix": 0x11, "sata": 0x12,
}
EXT_CAPS: dict[str, int] = {
    "aer": 0x0001, "dsn": 0x0003, "acs": 0x000D, "ari": 0x000E, "sriov": 0x0010,
}
# parameters an entry may carry (all integers; booleans as 0/1)
CAP_PARAMS: dict[str, tuple[str, ...]] = {
    "pm": ("pmc",),
    "msi": ("bits64", "maskable"),
    "msix": ("vectors", "bar", "table", "pba"),
    "vendor": ("len", "cfg_type", "bar", "offset", "length", "mult"),
    "express": ("version",),
    "aer": ("version",),
    "ari": ("next_fn",),
}
# capabilities present exactly when the function's facts say so (see reconcile())
FACT_CAPS = ("express", "ari", "sriov", "acs")

PCIE_V1_SIZE = 0x14          # QEMU PCI_EXP_VER1_SIZEOF: endpoint registers only
PCIE_V2_SIZE = 0x3C


@dataclass(frozen=True)
class CapEntry:
    """One capability at one offset, with the parameters of its registers."""

    name: str
    at: int
    params: tuple[tuple[str, int], ...] = ()

    def get(self, key: str, default: int) -> int:
        for k, v in self.params:
            if k == key:
                return v
        return default

    @property
    def extended(self) -> bool:
        return self.name in EXT_CAPS

    @property
    def cap_id(self) -> int:
        return EXT_CAPS[self.name] if self.extended else STD_CAPS[self.name]


def cap(name: str, at: int, **params: int) -> CapEntry:
    return CapEntry(name, at, tuple(sorted(params.items())))


@dataclass(frozen=True)
class Layout:
    """Standard and extended capabilities, each in chain order."""

    std: tuple[CapEntry, ...] = ()
    ext: tuple[CapEntry, ...] = ()

    def has(self, name: str) -> bool:
        return any(e.name == name for e in (*self.std, *self.ext))

    def entry(self, name: str) -> CapEntry | None:
        for e in (*self.std, *self.ext):
            if e.name == name:
                return e
        return None


def cap_size(e: CapEntry, *, root_port: bool = False) -> int:
    """Bytes the capability occupies (header included)."""
    n = e.name
    if n == "express":
        return PCIE_V1_SIZE if e.get("version", 2) == 1 else PCIE_V2_SIZE
    if n == "msi":
        return (14 if e.get("bits64", 1) else 10) + (10 if e.get("maskable", 0) else 0)
    if n == "vendor":
        return e.get("len", 0x10)
    if n == "aer":
        return 0x48 if root_port else 0x38
    if n == "sriov":
        return 0x40
    if n == "dsn":
        return 12
    if n in ("msix",):
        return 12
    return 8          # pm, ssvid, hotplug (SHPC), sata, ari, acs


@dataclass(frozen=True)
class DeviceModel:
    """A device whose capability layout is known (measured on the real thing)."""

    name: str
    description: str
    layout: Layout                          # as a PCIe function
    conventional: Layout | None = None      # as a conventional PCI function (None: same)
    vf_layout: Layout | None = None         # its SR-IOV VFs
    kind: str | None = None                 # the Kind it must have (None: any)
    flr: bool = False                       # DevCap Function Level Reset Capable
    pm_reset: bool = False                  # PM No_Soft_Reset = 0 (the kernel lists "pm")
    ari: bool = False                       # has the ARI extended capability
    config_size: int | None = None          # None: the kernel's rule (PCIe/host bridge)


def _virtio(vectors: int) -> DeviceModel:
    """QEMU virtio-pci (hw/virtio/virtio-pci.c): the five virtio vendor capabilities
    (common, ISR, device, notify, PCI cfg) in BAR 4, MSI-X in BAR 1; on a PCIe bus also
    PM and a PCIe capability with FLR (virtio-pci's x-pcie-flr-init, on by default)."""
    def vcaps(offsets: Sequence[int]) -> tuple[CapEntry, ...]:
        common, isr, device, notify, pcicfg = offsets
        return (
            cap("vendor", pcicfg, len=0x14, cfg_type=5),
            cap("vendor", notify, len=0x14, cfg_type=2, bar=4, offset=0x3000, length=0x1000,
                mult=4),
            cap("vendor", device, len=0x10, cfg_type=4, bar=4, offset=0x2000, length=0x1000),
            cap("vendor", isr, len=0x10, cfg_type=3, bar=4, offset=0x1000, length=0x1000),
            cap("vendor", common, len=0x10, cfg_type=1, bar=4, offset=0x0000, length=0x1000),
        )
    pci = Layout(std=(cap("msix", 0x98, vectors=vectors, bar=1, table=0, pba=0x800),
                      *vcaps((0x40, 0x50, 0x60, 0x70, 0x84))))
    pcie = Layout(std=(cap("msix", 0xDC, vectors=vectors, bar=1, table=0, pba=0x800),
                       *vcaps((0x84, 0x94, 0xA4, 0xB4, 0xC8)),
                       cap("pm", 0x7C), cap("express", 0x40)))
    name = "qemu-virtio-net" if vectors != 2 else "qemu-virtio"
    return DeviceModel(name, f"QEMU virtio-pci ({vectors} MSI-X vectors)", layout=pcie,
                       conventional=pci, kind="endpoint", flr=True, pm_reset=True)


_XIO3130 = Layout(std=(cap("express", 0x90), cap("ssvid", 0x80), cap("msi", 0x70, bits64=1)),
                  ext=(cap("aer", 0x100),))
# ARI's Next Function Number: 0 from QEMU 10 (7.2 wrote 1), PF and VFs alike; measured in
# the tier's q35 fixtures
_NVME_VF = Layout(std=(cap("msix", 0x40, vectors=1, bar=0, table=0x2000, pba=0x3000),
                       cap("express", 0x80), cap("pm", 0x60)),
                  ext=(cap("ari", 0x100, next_fn=0),))

# QEMU igb's VF (hw/net/igbvf.c), measured in the tier's guest: PCIe with FLR first in
# the chain, then MSI-X (3 vectors, BAR 3); AER and ARI.
_IGB_VF = Layout(std=(cap("express", 0xA0),
                      cap("msix", 0x70, vectors=3, bar=3, table=0, pba=0x2000)),
                 ext=(cap("aer", 0x100), cap("ari", 0x150, next_fn=0)))

MODELS: dict[str, DeviceModel] = {m.name: m for m in (
    DeviceModel("q35-mch", "QEMU Q35 MCH host bridge (hw/pci-host/q35.c): no capabilities, "
                "256-byte config space", Layout(), kind="host-bridge", config_size=256),
    DeviceModel("ich9-ahci", "ICH9 AHCI (hw/ide/ich.c): MSI, SATA", Layout(std=(
        cap("msi", 0x80, bits64=1), cap("sata", 0xA8))), kind="endpoint"),
    _virtio(2),
    _virtio(4),
    DeviceModel("qemu-e1000e", "QEMU e1000e (hw/net/e1000e.c): PM, MSI, PCIe v1, MSI-X, "
                "AER, DSN", Layout(
                    std=(cap("pm", 0xC8, pmc=0x0022), cap("msi", 0xD0, bits64=1),
                         cap("express", 0xE0, version=1),
                         cap("msix", 0xA0, vectors=5, bar=3, table=0, pba=0x2000)),
                    ext=(cap("aer", 0x100), cap("dsn", 0x140))),
                kind="endpoint", pm_reset=True),
    DeviceModel("qemu-nvme", "QEMU NVMe (hw/nvme/ctrl.c): MSI-X, PCIe with FLR, PM "
                "(No_Soft_Reset), ARI, SR-IOV; VFs alike without SR-IOV", Layout(
                    std=(cap("msix", 0x40, vectors=61, bar=0, table=0x2000, pba=0x3000),
                         cap("express", 0x80), cap("pm", 0x60)),
                    ext=(cap("ari", 0x100, next_fn=0), cap("sriov", 0x120))),
                vf_layout=_NVME_VF, kind="endpoint", flr=True, ari=True),
    DeviceModel("qemu-igb", "QEMU igb, an Intel 82576 (hw/net/igb.c): PM, MSI, MSI-X, PCIe "
                "v2 with FLR, AER, ARI, SR-IOV (8 VFs, offset 128, stride 2)", Layout(
                    std=(cap("pm", 0x40, pmc=0x0022), cap("msi", 0x50, bits64=1, maskable=1),
                         cap("msix", 0x70, vectors=10, bar=3, table=0, pba=0x2000),
                         cap("express", 0xA0)),
                    # its AER capability says version 1 (measured: the tier's q35 fixtures)
                    ext=(cap("aer", 0x100, version=1), cap("ari", 0x150, next_fn=0),
                         cap("sriov", 0x160))),
                vf_layout=_IGB_VF, kind="endpoint", flr=True, pm_reset=True, ari=True),
    DeviceModel("qemu-pcie-root-port", "QEMU pcie-root-port (hw/pci-bridge/"
                "pcie_root_port.c): PCIe, MSI-X, SSVID, AER, ACS", Layout(
                    std=(cap("express", 0x54), cap("msix", 0x48, vectors=1, bar=0,
                                                   table=0, pba=0x800),
                         cap("ssvid", 0x40)),
                    ext=(cap("aer", 0x100), cap("acs", 0x148))),
                kind="root-port"),
    DeviceModel("qemu-xio3130-upstream", "QEMU x3130-upstream (hw/pci-bridge/"
                "xio3130_upstream.c): PCIe with FLR, SSVID, MSI, AER", _XIO3130,
                kind="upstream-port", flr=True),
    DeviceModel("qemu-xio3130-downstream", "QEMU xio3130-downstream (hw/pci-bridge/"
                "xio3130_downstream.c): PCIe with FLR, SSVID, MSI, AER; no ACS",
                _XIO3130, kind="downstream-port", flr=True),
    DeviceModel("qemu-pcie-pci-bridge", "QEMU pcie-pci-bridge (hw/pci-bridge/"
                "pcie_pci_bridge.c): MSI, PM, PCIe, SHPC, AER", Layout(
                    std=(cap("msi", 0x8C, bits64=1, maskable=1), cap("pm", 0x84),
                         cap("express", 0x48), cap("hotplug", 0x40)),
                    ext=(cap("aer", 0x100),)),
                kind="pcie-pci-bridge", pm_reset=True),
)}


# -- parsing (host file ``caps = [...]``) ------------------------------------------------------
def parse_caps(value: object, where: str) -> Layout:
    """``caps = [{id = "msix", at = 0x48, vectors = 1}, ...]``, each kind in chain order.

    Raises:
        ValueError: the message says what is wrong (the caller names the device).
    """
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ValueError("caps must be an array of tables like {id = 'msix', at = 0x48}")
    std: list[CapEntry] = []
    ext: list[CapEntry] = []
    for t in value:
        entry = _parse_entry(t)
        (ext if entry.extended else std).append(entry)
    layout = Layout(tuple(std), tuple(ext))
    check_layout(layout)
    return layout


def _parse_entry(t: Mapping[str, Any]) -> CapEntry:
    name = t.get("id")
    if not isinstance(name, str) or (name not in STD_CAPS and name not in EXT_CAPS):
        raise ValueError(f"caps: id {name!r} unknown (use "
                         f"{', '.join([*STD_CAPS, *EXT_CAPS])})")
    allowed = ("id", "at", *CAP_PARAMS.get(name, ()))
    unknown = sorted(set(t) - set(allowed))
    if unknown:
        raise ValueError(f"caps: {name} does not take {', '.join(unknown)} "
                         f"(it takes {', '.join(allowed)})")
    at = t.get("at")
    if not isinstance(at, int) or isinstance(at, bool):
        raise ValueError(f"caps: {name} needs at = OFFSET (a number, e.g. 0x48)")
    params = []
    for k in allowed[2:]:
        if k in t:
            v = t[k]
            if isinstance(v, bool):
                v = int(v)
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"caps: {name}.{k} must be a non-negative number")
            params.append((k, v))
    return CapEntry(name, at, tuple(sorted(params)))


def check_layout(layout: Layout, *, root_port: bool = False) -> None:
    """Offsets in range, dword aligned, no overlaps, each fact capability at most once.

    Raises:
        ValueError: what is wrong.
    """
    for entries, lo, hi in ((layout.std, 0x40, 0x100), (layout.ext, 0x100, 0x1000)):
        spans: list[tuple[int, int, str]] = []
        for e in entries:
            end = e.at + cap_size(e, root_port=root_port)
            if e.at % 4 or not lo <= e.at or end > hi:
                raise ValueError(f"caps: {e.name} at {e.at:#x} must be dword aligned and "
                                 f"fit in {lo:#x}..{hi - 1:#x}")
            for s, t, n in spans:
                if e.at < t and s < end:
                    raise ValueError(f"caps: {e.name} at {e.at:#x} overlaps {n} at {s:#x}")
            spans.append((e.at, end, e.name))
    if layout.ext and layout.ext[0].at != 0x100:
        raise ValueError("caps: the first extended capability must be at 0x100")
    for name in (*FACT_CAPS, "pm", "ssvid", "msi", "msix"):
        if sum(e.name == name for e in (*layout.std, *layout.ext)) > 1:
            raise ValueError(f"caps: {name} given twice")


# -- the layout a function ends up with ----------------------------------------------------------
@dataclass(frozen=True)
class Facts:
    """What the kernel model knows about a function that decides capability presence."""

    pcie: bool
    ext_config: bool
    pm: bool                    # pm_reset: a PM capability (default layouts only)
    ssvid: bool                 # a bridge with a subsystem id (default layouts only)
    ari: bool
    sriov: bool
    acs: bool
    root_port: bool = False


@dataclass
class _Packer:
    """Appends entries after the last one of a kind (``step``-aligned)."""

    entries: list[CapEntry] = field(default_factory=list)

    def append(self, name: str, start: int, step: int, root_port: bool,
               **params: int) -> None:
        end = max((e.at + cap_size(e, root_port=root_port) for e in self.entries),
                  default=start)
        at = (end + step - 1) // step * step
        self.entries.append(cap(name, at, **params))


def reconcile(base: Layout | None, facts: Facts) -> Layout:
    """The layout a function presents: ``base`` (None: the default) made to agree with
    the facts (see the module docstring)."""
    if base is None:
        base = Layout()
        default = True
    else:
        default = False
    std = _Packer([e for e in base.std if e.name != "express" or facts.pcie])
    rp = facts.root_port
    if facts.pcie and not any(e.name == "express" for e in std.entries):
        std.append("express", 0x40, 4, rp)
    if default and facts.pm:
        std.append("pm", 0x40, 4, rp)
    if default and facts.ssvid:
        std.append("ssvid", 0x40, 4, rp)
    if not (facts.pcie and facts.ext_config):
        return Layout(tuple(std.entries), ())
    want = {"ari": facts.ari, "sriov": facts.sriov, "acs": facts.acs}
    ext = _Packer([e for e in base.ext if want.get(e.name, True)])
    if ext.entries and ext.entries[0].at != 0x100:
        # the chain must start at 0x100 (PCIe r6.0 sec 7.6.3): repack what is left
        kept, ext.entries = ext.entries, []
        for e in kept:
            ext.append(e.name, 0x100, 0x20, rp, **dict(e.params))
    for name in ("ari", "sriov", "acs"):
        if want[name] and not any(e.name == name for e in ext.entries):
            ext.append(name, 0x100, 0x20, rp)
    return Layout(tuple(std.entries), tuple(ext.entries))
