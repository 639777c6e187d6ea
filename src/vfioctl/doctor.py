"""Analysis: is this host ready for VFIO? (read-only, like ``virt-host-validate``).

Each check reads files through the Host seam and returns pass/warn/fail with a fix the
user can apply. Nothing here changes the host.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from vfioctl.host.base import (
    DEV_VFIO,
    LIB_MODULES,
    PROC_CPUINFO,
    PROC_OSRELEASE,
    SYS_CLASS_IOMMU,
    SYS_MODULE,
    VFIO_TYPE1_PARAMS,
    Host,
    SysPath,
)
from vfioctl.inventory import group_records
from vfioctl.pci.iommu import iommu_status, read_cmdline

PASS, WARN, FAIL = "pass", "warn", "fail"

# Intel VT-d extended capability register, bit 3: Interrupt Remapping support
# (VT-d spec 11.4.3); exposed as hex in sys/class/iommu/dmarN/intel-iommu/ecap.
_ECAP_IR = 1 << 3


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str | None = None


def _cpu_vendor(host: Host) -> str | None:
    try:
        text = host.read_text(PROC_CPUINFO)
    except OSError:
        return None
    if "GenuineIntel" in text:
        return "intel"
    if "AuthenticAMD" in text:
        return "amd"
    return None


def _grub_fix(param: str) -> str:
    return (f"add {param} to GRUB_CMDLINE_LINUX in /etc/default/grub, run update-grub "
            "and reboot")


def check_iommu(host: Host) -> Check:
    st = iommu_status(host)
    if st.enabled:
        return Check("IOMMU", PASS, f"enabled ({st.kind or 'unknown vendor'})")
    vendor = _cpu_vendor(host)
    param = {"intel": "intel_iommu=on", "amd": "amd_iommu=on"}.get(
        vendor or "", "intel_iommu=on (Intel) or amd_iommu=on (AMD)")
    return Check("IOMMU", FAIL, f"not active: {st.reason}",
                 f"enable VT-d/AMD-Vi in the firmware setup; {_grub_fix(param)}")


def check_interrupt_remapping(host: Host) -> Check:
    allow = _read(host, VFIO_TYPE1_PARAMS / "allow_unsafe_interrupts")
    units = _listdir(host, SYS_CLASS_IOMMU)
    dmar = [u for u in units if u.startswith("dmar")]
    if not units:
        return Check("interrupt remapping", WARN, "unknown: no IOMMU is active",
                     "fix the IOMMU check first")
    if dmar:
        ir = []
        for u in dmar:
            ecap = _read(host, SYS_CLASS_IOMMU / u / "intel-iommu" / "ecap")
            if ecap is not None:
                ir.append(bool(int(ecap, 16) & _ECAP_IR))
        if ir and all(ir):
            return Check("interrupt remapping", PASS, "supported by every DMAR unit")
        if ir:
            if allow == "Y":
                return Check("interrupt remapping", WARN,
                             "not supported; vfio allows unsafe interrupts "
                             "(allow_unsafe_interrupts=Y): a guest can inject interrupts")
            return Check("interrupt remapping", FAIL,
                         "not supported by the IOMMU: vfio refuses to set up MSI",
                         "enable interrupt remapping in the firmware (x2APIC/VT-d)")
    return Check("interrupt remapping", PASS if allow != "Y" else WARN,
                 "assumed present (AMD-Vi/other IOMMU)"
                 + ("; allow_unsafe_interrupts=Y" if allow == "Y" else ""))


def _snapshot_manifest(host: Host) -> dict[str, object] | None:
    """The manifest when the host is a tree made by ``vfioctl snapshot``."""
    text = _read(host, "vfioctl-snapshot.json")
    if text is None:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def check_modules(host: Host) -> Check:
    loaded = host.exists(SYS_MODULE / "vfio_pci")
    if loaded:
        return Check("vfio-pci module", PASS, "loaded")
    if _snapshot_manifest(host) is not None:
        return Check("vfio-pci module", WARN,
                     "not loaded when the snapshot was taken (a snapshot cannot tell "
                     "whether the kernel has it)", "run 'modprobe vfio-pci' on that host")
    release = _read(host, PROC_OSRELEASE)
    if release:
        base = LIB_MODULES / release
        for index in ("modules.builtin", "modules.dep"):
            text = _read(host, str(base / index))
            if text and re.search(r"vfio[-_]pci\.ko", text):
                return Check("vfio-pci module", WARN, "not loaded but available",
                             "vfioctl detach loads it; or run 'modprobe vfio-pci'")
    return Check("vfio-pci module", FAIL, "not loaded and not found for this kernel",
                 "install a kernel with CONFIG_VFIO_PCI (Debian: linux-image-amd64)")


def check_dev_vfio(host: Host) -> Check:
    manifest = _snapshot_manifest(host)
    if manifest is not None:
        entries = manifest.get("dev_vfio")
        if isinstance(entries, list) and "vfio" in entries:
            return Check("/dev/vfio/vfio", PASS, "present when the snapshot was taken")
        return Check("/dev/vfio/vfio", WARN, "missing when the snapshot was taken",
                     "load vfio-pci on that host")
    if host.exists(DEV_VFIO / "vfio"):
        return Check("/dev/vfio/vfio", PASS, "present")
    return Check("/dev/vfio/vfio", WARN, "missing (the vfio module is not loaded)",
                 "run 'modprobe vfio-pci' (vfioctl detach does it for you)")


def check_groups(host: Host) -> Check:
    groups = group_records(host)
    if not groups:
        return Check("IOMMU groups", FAIL, "none (the IOMMU is not active)",
                     "fix the IOMMU check first")
    shared = [g for g in groups if len(g["devices"]) > 1]
    detail = f"{len(groups)} groups, {len(shared)} shared by several functions"
    if shared:
        examples = "; ".join(
            f"group {g['group']}: {', '.join(g['devices'][:4])}"
            + (" …" if len(g["devices"]) > 4 else "") for g in shared[:3])
        detail += f" ({examples})"
    cmdline = read_cmdline(host)
    if "pcie_acs_override" in cmdline:
        return Check("IOMMU groups", WARN,
                     detail + "; pcie_acs_override is set: groups claim isolation the "
                     "hardware may not provide", "remove pcie_acs_override unless you "
                     "accept that risk")
    return Check("IOMMU groups", PASS, detail,
                 "run 'vfioctl explain ADDR' to see why a device shares its group"
                 if shared else None)


def run_checks(host: Host) -> list[Check]:
    """All checks, in the order a user fixes them."""
    return [check_iommu(host), check_interrupt_remapping(host), check_modules(host),
            check_dev_vfio(host), check_groups(host)]


def _read(host: Host, path: SysPath) -> str | None:
    try:
        return host.read_text(PurePosixPath(path)).strip()
    except OSError:
        return None


def _listdir(host: Host, path: SysPath) -> list[str]:
    try:
        return host.listdir(PurePosixPath(path))
    except OSError:
        return []
