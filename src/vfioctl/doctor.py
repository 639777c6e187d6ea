"""Analysis: is this host ready for VFIO? (read-only, like ``virt-host-validate``).

Each check reads files through the Host seam and returns pass/warn/fail (or info: a
fact that needs no action) with a fix the user can apply. Nothing here changes the
host; the one open it makes (``/dev/kvm``, on a host that allows opens) is closed at
once. A file that is missing or unreadable makes a check say "unknown", never fail
with a traceback.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from vfioctl.address import PciAddress
from vfioctl.errors import ReadOnlyHost, UsageError
from vfioctl.host.base import (
    DEV_IOMMU,
    DEV_KVM,
    DEV_VFIO,
    DEV_VFIO_DEVICES,
    LIB_MODULES,
    PCI_DEVICES,
    PROC_CPUINFO,
    PROC_MEMINFO,
    PROC_MOUNTS,
    PROC_OSRELEASE,
    PROC_SELF_LIMITS,
    PROC_SELF_STATUS,
    SYS_CLASS_IOMMU,
    SYS_HUGEPAGES,
    SYS_MODULE,
    VFIO_TYPE1_PARAMS,
    Host,
    SysPath,
)
from vfioctl.inventory import group_records
from vfioctl.pci.device import PciDevice
from vfioctl.pci.iommu import iommu_status, read_cmdline

PASS, WARN, FAIL, INFO = "pass", "warn", "fail", "info"

# VFIO type1 pins every page of guest RAM it maps (vfio_pin_pages_remote() counts them
# against RLIMIT_MEMLOCK unless the caller has CAP_IPC_LOCK): a limit below a small
# guest's memory makes QEMU fail at start with "VFIO_MAP_DMA failed: Cannot allocate
# memory".
MEMLOCK_MIN = 1 << 30
CAP_IPC_LOCK = 14                       # include/uapi/linux/capability.h
# The VFIO device cdev with iommufd (drivers/vfio/device_cdev.c) is in Linux 6.6.
CDEV_KERNEL = (6, 6)
# Reset methods that reset only the function itself (drivers/pci/pci.c
# pci_reset_fn_methods); "bus" and "cxl_bus" reset everything below the bridge.
_OWN_RESETS = frozenset({"device_specific", "acpi", "flr", "af_flr", "pm"})
_BUS_RESETS = frozenset({"bus", "cxl_bus"})
_RESETS_NAMED = 4                       # devices a reset detail names before "…"

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
            if allow == "Y":
                return Check("interrupt remapping", PASS,
                             "supported by every DMAR unit; allow_unsafe_interrupts=Y is "
                             "set but not needed", _UNSAFE_REMOVE)
            return Check("interrupt remapping", PASS, "supported by every DMAR unit")
        if ir:
            if allow == "Y":
                return Check("interrupt remapping", WARN,
                             "not supported; vfio allows unsafe interrupts "
                             "(allow_unsafe_interrupts=Y): a guest can inject interrupts",
                             "enable interrupt remapping in the firmware (x2APIC/VT-d), "
                             "then " + _UNSAFE_REMOVE)
            return Check("interrupt remapping", FAIL,
                         "not supported by the IOMMU: vfio refuses to attach a group "
                         "(allow_unsafe_interrupts=N)",
                         "enable interrupt remapping in the firmware (x2APIC/VT-d); or, "
                         "accepting that a guest can inject interrupts into the host, "
                         "'options vfio_iommu_type1 allow_unsafe_interrupts=1' in "
                         "/etc/modprobe.d/vfio.conf")
    if allow == "Y":
        return Check("interrupt remapping", WARN,
                     "assumed present (AMD-Vi/other IOMMU); allow_unsafe_interrupts=Y "
                     "would let vfio run without it", _UNSAFE_REMOVE)
    return Check("interrupt remapping", PASS, "assumed present (AMD-Vi/other IOMMU)")


_UNSAFE_REMOVE = ("remove allow_unsafe_interrupts=1 from /etc/modprobe.d and the "
                  "kernel command line")


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


def check_iommufd(host: Host) -> Check:
    """The VFIO device cdev with iommufd: optional (the group API works everywhere), so
    never a failure — Debian's kernels are built without CONFIG_IOMMUFD."""
    name = "iommufd / vfio cdev"
    if _snapshot_manifest(host) is not None:
        return Check(name, INFO, "unknown: a snapshot does not record /dev/iommu")
    release = _read(host, PROC_OSRELEASE) or "?"
    cdevs = sorted(_listdir(host, DEV_VFIO_DEVICES))
    if host.exists(DEV_IOMMU):
        detail = "available (/dev/iommu)"
        detail += (f"; {len(cdevs)} device cdev(s) in /dev/vfio/devices" if cdevs else
                   "; /dev/vfio/devices appears once a device is on vfio-pci (needs "
                   "CONFIG_VFIO_DEVICE_CDEV)")
        return Check(name, PASS, detail)
    version = _kernel_version(release)
    if version is None or version < CDEV_KERNEL:
        return Check(name, INFO, f"not available: kernel {release} predates the VFIO "
                     f"device cdev ({CDEV_KERNEL[0]}.{CDEV_KERNEL[1]}); the group API "
                     "(/dev/vfio/N) is used, which every QEMU supports")
    if _module_available(host, release, "iommufd"):
        return Check(name, WARN, f"kernel {release} has iommufd but /dev/iommu is "
                     "missing (the module is not loaded); the group API is used",
                     "run 'modprobe iommufd' to use the cdev (optional)")
    return Check(name, INFO, f"not available: kernel {release} is built without "
                 "CONFIG_IOMMUFD (as Debian's are); the group API (/dev/vfio/N) is used, "
                 "nothing to do")


def check_kvm(host: Host) -> Check:
    """``/dev/kvm`` exists and opens: without it QEMU emulates the CPU (-accel tcg),
    which runs a passthrough guest far too slowly to use."""
    if _snapshot_manifest(host) is not None:
        return Check("KVM", INFO, "unknown: a snapshot does not record /dev/kvm",
                     "run 'vfioctl doctor' on that host")
    vendor = _cpu_vendor(host)
    module = {"intel": "kvm_intel", "amd": "kvm_amd"}.get(vendor or "",
                                                          "kvm_intel or kvm_amd")
    if not host.exists(DEV_KVM):
        return Check("KVM", FAIL, "/dev/kvm is missing: guests cannot use hardware "
                     "virtualization", f"enable VT-x/AMD-V (SVM) in the firmware setup, "
                     f"then run 'modprobe {module}'")
    try:
        fd = host.open(DEV_KVM)
    except ReadOnlyHost:
        return Check("KVM", PASS, f"/dev/kvm present (not opened: {host.name} is "
                     "read-only)")
    except PermissionError:
        return Check("KVM", FAIL, "/dev/kvm exists but this user may not open it",
                     "add the user to the kvm group ('sudo usermod -aG kvm $USER', then "
                     "log in again); libvirt's QEMU user has it already")
    except OSError as err:
        return Check("KVM", FAIL, f"/dev/kvm does not open: {err.strerror or err}",
                     f"check 'dmesg | grep -i kvm'; run 'modprobe {module}'")
    with contextlib.suppress(OSError):
        host.close(fd)
    return Check("KVM", PASS, "/dev/kvm opens")


def check_memlock(host: Host) -> Check:
    """This process's RLIMIT_MEMLOCK against what a guest with assigned devices pins
    (all its memory). Read through the Host (``proc/self/limits``: on the live host the
    same value ``resource.getrlimit`` gives) so a simulated host can model it."""
    name = "memlock limit"
    if _snapshot_manifest(host) is not None:
        return Check(name, INFO, "unknown: a snapshot does not record process limits",
                     "run 'vfioctl doctor' as the user that runs QEMU on that host")
    limit = _memlock(_read(host, PROC_SELF_LIMITS))
    if limit == -1:
        return Check(name, WARN, "unknown: proc/self/limits has no 'Max locked memory'",
                     "check 'ulimit -l' in the shell that starts QEMU")
    if limit is None:
        return Check(name, PASS, "unlimited")
    shown = _size(limit)
    if _has_cap(_read(host, PROC_SELF_STATUS), CAP_IPC_LOCK):
        return Check(name, PASS, f"{shown}, but this process has CAP_IPC_LOCK (root): "
                     "vfio does not count what it pins; a QEMU run by another user is "
                     "limited")
    if limit >= MEMLOCK_MIN:
        return Check(name, PASS, f"{shown}: enough for a guest with assigned devices and "
                     f"up to about {shown} of memory (vfio pins all of it)")
    return Check(name, WARN, f"{shown}: a guest with an assigned device pins all its "
                 f"memory, so QEMU started by this user fails (VFIO_MAP_DMA: cannot "
                 f"allocate memory) for any guest above {shown}",
                 "raise it for the user that runs QEMU: 'ulimit -l unlimited' (as root) or "
                 "'USER hard memlock unlimited' + 'USER soft memlock unlimited' in "
                 "/etc/security/limits.conf, LimitMEMLOCK=infinity in a systemd unit; "
                 "libvirt raises it for its guests itself")


def check_hugepages(host: Host) -> Check:
    """Reserved huge pages, when there are any: a guest backed by them fails to start
    when none are free, or when no hugetlbfs is mounted for QEMU's ``-mem-path``."""
    name = "hugepages"
    pools = _hugepage_pools(host)
    if pools is None:
        return Check(name, INFO, "unknown: neither sys/kernel/mm/hugepages nor "
                     "proc/meminfo can be read")
    used = [(size, total, free) for size, total, free in pools if total > 0]
    if not used:
        return Check(name, INFO, "none reserved (guests use normal pages; reserve some "
                     "only for a guest with <memoryBacking><hugepages/>)")
    parts = [f"{_size(size << 10)} pages: {free} of {total} free" for size, total, free
             in used]
    detail = "; ".join(parts)
    if all(free == 0 for _, _, free in used):
        size = used[0][0]
        return Check(name, WARN, f"{detail}: a guest backed by huge pages cannot start",
                     f"reserve more ('echo N > /sys/kernel/mm/hugepages/hugepages-"
                     f"{size}kB/nr_hugepages', or hugepagesz=/hugepages= on the kernel "
                     "command line) or stop what uses them")
    mounts = _read(host, PROC_MOUNTS)
    if mounts is not None and not any(
            len(f) > 2 and f[2] == "hugetlbfs" for f in map(str.split, mounts.splitlines())):
        return Check(name, WARN, f"{detail}; no hugetlbfs is mounted (QEMU's -mem-path "
                     "needs one)", "mount -t hugetlbfs hugetlbfs /dev/hugepages (systemd's "
                     "dev-hugepages.mount does it at boot)")
    return Check(name, PASS, detail)


def check_resets(host: Host) -> list[Check]:
    """How each assignable device (an endpoint in an IOMMU group) is reset between
    guests (``reset_method``): a reset of its own (FLR, PM, ACPI, device-specific) is
    fine; a secondary bus reset also resets every other device on its bus; a device on
    a root bus has no bus to reset; a device with no method keeps the last guest's
    state (some GPUs then fail to start a second time)."""
    devices = _assignable(host)
    if devices is None:
        return [Check("device reset", WARN, "unknown: no device is in an IOMMU group",
                      "fix the IOMMU check first")]
    by_bus: dict[tuple[int, int], list[PciAddress]] = {}
    for addr in _all_addresses(host):
        by_bus.setdefault((addr.domain, addr.bus), []).append(addr)
    problems: list[Check] = []
    root_bus: list[str] = []
    for dev in devices:
        problem = _reset_problem(dev, by_bus.get((dev.addr.domain, dev.addr.bus), []))
        if problem == "root-bus":
            root_bus.append(dev.name)
        elif isinstance(problem, Check):
            problems.append(problem)
    if root_bus:
        shown = ", ".join(root_bus[:_RESETS_NAMED]) + (
            f" (+{len(root_bus) - _RESETS_NAMED} more)" if len(root_bus) > _RESETS_NAMED
            else "")
        problems.insert(0, Check(
            "reset, root bus", WARN, f"{shown}: no FLR or PM reset, and a root bus has no "
            "bus reset: they keep state from guest to guest",
            "fine for most integrated devices; a device that must be reset needs one "
            "with FLR or a slot behind a root port"))
    bad = len(root_bus) + sum(1 for p in problems if p.name.startswith("reset "))
    if not problems:
        return [Check("device reset", PASS, f"each of the {len(devices)} assignable "
                      "devices has a reset of its own or is alone on its bus")]
    summary = Check("device reset", WARN, f"{bad} of {len(devices)} assignable devices "
                    "cannot be reset on their own (below)")
    return [summary, *problems]


def _reset_problem(dev: PciDevice, on_bus: list[PciAddress]) -> Check | str | None:
    """None: it can be reset alone; "root-bus": no reset at all on a root bus (reported
    together); else the Check saying what is wrong."""
    name = f"reset {dev.name}"
    try:
        methods = dev.reset_method
        has_reset = methods is not None or dev.host.exists(dev.path / "reset")
        root_bus = dev.parent is None
    except (OSError, ValueError):
        return Check(name, WARN, "unknown: its reset_method cannot be read")
    if methods is None:
        if has_reset:
            return None  # before Linux 5.15: a reset exists, the kernel does not say which
        methods = []
    if _OWN_RESETS.intersection(methods):
        return None
    others = [str(a) for a in on_bus if a != dev.addr]
    shown = ", ".join(others[:_RESETS_NAMED]) + (" …" if len(others) > _RESETS_NAMED
                                                 else "")
    bus = f"{dev.addr.domain:04x}:{dev.addr.bus:02x}"
    if _BUS_RESETS.intersection(methods):
        if not others:
            return None
        return Check(name, WARN, f"bus reset only: resetting it also resets {shown} on "
                     f"bus {bus}", "give those devices to the same guest, or keep them "
                     "unused while it runs")
    if root_bus:
        return "root-bus"
    if others:
        # pci_parent_bus_reset() offers "bus" to the first device found on a bus only;
        # vfio still resets the others with the bus when a user owns all of them
        # (VFIO_DEVICE_PCI_HOT_RESET)
        return Check(name, WARN, f"no reset of its own: only a reset of bus {bus}, "
                     f"which also resets {shown}", "give the whole bus to one guest (QEMU "
                     "then resets it between boots)")
    return Check(name, WARN, "no reset method: it keeps state between guests",
                 f"if reset_method was cleared: 'echo default > /{dev.path}/reset_method'")


def run_checks(host: Host) -> list[Check]:
    """All checks, in the order a user fixes them."""
    return [check_iommu(host), check_interrupt_remapping(host), check_modules(host),
            check_dev_vfio(host), check_groups(host), check_iommufd(host),
            check_kvm(host), check_memlock(host), check_hugepages(host),
            *check_resets(host), *check_persisted(host)]


def check_persisted(host: Host) -> list[Check]:
    """Persisted bindings (docs/persistence.md): each entry against the hardware now,
    and whether boot applies them at all. Nothing persisted: no check."""
    from vfioctl.persist.summary import summarize

    found = summarize(host)
    if found.error is not None:
        return [Check("persisted", WARN, f"cannot read the persisted configuration: "
                      f"{found.error}", "fix or remove /etc/vfioctl/persist.toml")]
    if not found.verdicts:
        return []
    out = [Check(f"persisted {v.entry.address}", WARN, v.describe(),
                 f"'vfioctl persist remove {v.entry.address}', or persist the new "
                 f"hardware: 'vfioctl detach {v.entry.address} --persist'")
           for v in found.changed]
    out += [Check(f"persisted {v.entry.address}", INFO, v.describe())
            for v in found.renumbered]
    n = len(found.verdicts)
    entries = "1 entry" if n == 1 else f"{n} entries"
    if not found.boot_installed:
        out.append(Check("persisted boot", WARN, f"{entries} persisted, but boot does "
                         "not apply them: vfioctl's udev rule is not installed",
                         "vfioctl persist install-boot"))
    elif found.boot_stale:
        out.append(Check("persisted boot", WARN, "the udev helper's table is older "
                         "than the persisted configuration (edited by hand?)",
                         "vfioctl persist install-boot (it rewrites it)"))
    elif not found.changed:
        out.append(Check("persisted boot", PASS, f"{entries} persisted, each matching "
                         "the hardware; the udev rule applies them at boot"))
    return out


# -- readers ----------------------------------------------------------------------------


def _kernel_version(release: str) -> tuple[int, int] | None:
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _module_available(host: Host, release: str, module: str) -> bool:
    if host.exists(SYS_MODULE / module):
        return True
    pattern = re.compile(rf"(^|/){re.escape(module)}\.ko", re.M)
    for index in ("modules.builtin", "modules.dep"):
        text = _read(host, LIB_MODULES / release / index)
        if text and pattern.search(text):
            return True
    return False


def _memlock(text: str | None) -> int | None:
    """The soft ``Max locked memory`` limit in bytes, None for unlimited, -1 when the
    row is missing or unreadable (fs/proc/base.c proc_pid_limits layout)."""
    for line in (text or "").splitlines():
        if line.startswith("Max locked memory"):
            fields = line[len("Max locked memory"):].split()
            if fields and fields[0] == "unlimited":
                return None
            if fields and fields[0].isdigit():
                return int(fields[0])
    return -1


def _has_cap(status: str | None, cap: int) -> bool:
    for line in (status or "").splitlines():
        if line.startswith("CapEff:"):
            try:
                return bool(int(line.split()[1], 16) >> cap & 1)
            except (IndexError, ValueError):
                return False
    return False


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            value = n / (1 << shift)
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} bytes"


def _hugepage_pools(host: Host) -> list[tuple[int, int, int]] | None:
    """(size in KiB, total, free) per page size: sysfs, else proc/meminfo's default."""
    pools = []
    for entry in sorted(_listdir(host, SYS_HUGEPAGES)):
        m = re.fullmatch(r"hugepages-(\d+)kB", entry)
        if not m:
            continue
        total = _read(host, SYS_HUGEPAGES / entry / "nr_hugepages")
        free = _read(host, SYS_HUGEPAGES / entry / "free_hugepages")
        if total and free and total.isdigit() and free.isdigit():
            pools.append((int(m.group(1)), int(total), int(free)))
    if pools:
        return sorted(pools)
    info: dict[str, str] = {}
    for line in (_read(host, PROC_MEMINFO) or "").splitlines():
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
    try:
        size = int(info["Hugepagesize"].split()[0])
        return [(size, int(info["HugePages_Total"]), int(info["HugePages_Free"]))]
    except (KeyError, IndexError, ValueError):
        return None


def _all_addresses(host: Host) -> list[PciAddress]:
    out = []
    for name in _listdir(host, PCI_DEVICES):
        try:
            out.append(PciAddress.parse(name))
        except UsageError:
            continue
    return sorted(out)


def _assignable(host: Host) -> list[PciDevice] | None:
    """Endpoints (not bridges, class 06) in an IOMMU group; None when no device is in
    a group (no IOMMU: nothing is assignable)."""
    grouped = []
    for addr in _all_addresses(host):
        dev = PciDevice(host, addr)
        try:
            if dev.iommu_group is None:
                continue
            if dev.class_code >> 16 == 0x06:
                continue
        except (OSError, ValueError):
            continue
        grouped.append(dev)
    if not grouped and not any(PciDevice(host, a).link_name("iommu_group")
                               for a in _all_addresses(host)):
        return None
    return grouped


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
