"""A VF-heavy host tree for the list benchmark, stamped from a real kernel's sysfs.

The q35-sriov capture (tests/data/snapshots/q35-sriov, taken from Debian's kernel in the
vmtest VM) holds a root port (``0000:00:12.0``), an SR-IOV NVMe PF below it
(``0000:01:00.0``, on vfio-pci) and two of its VFs, laid out exactly as the kernel lays
them out: the function directories under ``sys/devices/pci0000:00/...``, the
``sys/bus/pci/devices`` links, ``driver``/``iommu_group``/``physfn``/``virtfnN`` links,
and one IOMMU group per function. This module copies those three directories as
templates into ``PFS`` root ports, each with one PF and ``VFS`` VFs (the VFs at
``BB:00.1`` ... ``BB:1f.7``, which is where ARI with VF offset 1 and stride 1 puts 255
VFs), and rewrites only what differs per function: the links, the bridge bus numbers in
the root port's config space and ``*_bus_number`` files, and the PF's SR-IOV counts
(``sriov_totalvfs``/``sriov_numvfs`` files and the capability's TotalVFs/NumVFs
registers). Every other file is a hard link to the template's, so the tree costs little
disk and is built in seconds.

    .venv/bin/python benchmarks/vf_tree.py OUT_DIR [--pfs 16] [--vfs 255]
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import sys
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent.parent / "tests/data/snapshots/q35-sriov"
ROOT_PORT = "0000:00:12.0"
PF = "0000:01:00.0"
VF = "0000:01:00.1"
HOST_BRIDGE = "0000:00:00.0"
# Links rewritten per function; everything else in a function directory is shared.
_PER_FUNCTION_LINKS = ("iommu_group", "physfn")
_PCI_EXT_CAP_ID_SRIOV = 0x0010


def _sriov_offset(config: bytes) -> int:
    off = 0x100
    while 0x100 <= off <= len(config) - 4:
        header = int(struct.unpack_from("<I", config, off)[0])
        if header & 0xFFFF == _PCI_EXT_CAP_ID_SRIOV:
            return off
        off = (header >> 20) & 0xFFC
        if off == 0:
            break
    raise SystemExit("vf_tree: the template PF has no SR-IOV capability")


def _clone_function(src: Path, dst: Path, *, skip: set[str]) -> None:
    """Copy one function directory: hard links for files, links kept, ``skip`` left out."""
    dst.mkdir(parents=True)
    for entry in os.scandir(src):
        if entry.name in skip or entry.name.startswith("virtfn"):
            continue
        target = dst / entry.name
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), target)
        elif entry.is_file():
            os.link(entry.path, target)


def _write(path: Path, text: str) -> None:
    path.unlink(missing_ok=True)  # never write through a hard link into the template
    path.write_text(text)


def _group(root: Path, number: int, fn_rel: str) -> str:
    """Make IOMMU group ``number`` holding the function at ``sys/devices/<fn_rel>``.

    Returns the relative target of that function's ``iommu_group`` link.
    """
    group = root / "sys/kernel/iommu_groups" / str(number)
    (group / "devices").mkdir(parents=True)
    tmpl = TEMPLATE / "sys/kernel/iommu_groups/10"
    for name in ("type", "reserved_regions"):
        if (tmpl / name).is_file():
            os.link(tmpl / name, group / name)
    name = fn_rel.rsplit("/", 1)[1]
    os.symlink(f"../../../../devices/{fn_rel}", group / "devices" / name)
    up = "../" * (fn_rel.count("/") + 2)  # from sys/devices/<fn_rel> back up to sys/
    return f"{up}kernel/iommu_groups/{number}"


def build_vf_tree(out: Path, pfs: int = 16, vfs: int = 255) -> int:
    """Write the tree under ``out`` (which must not exist); returns the function count."""
    if not 1 <= pfs <= 0xF0 or not 0 <= vfs <= 255:
        raise SystemExit("vf_tree: --pfs must be 1-240 and --vfs 0-255")
    tsys = TEMPLATE / "sys/devices/pci0000:00"
    t_port, t_pf, t_vf = tsys / ROOT_PORT, tsys / ROOT_PORT / PF, tsys / ROOT_PORT / VF
    if not t_vf.is_dir():
        raise SystemExit(f"vf_tree: template {t_vf} is missing")
    devices = out / "sys/bus/pci/devices"
    drivers = out / "sys/bus/pci/drivers"
    devices.mkdir(parents=True)
    top = out / "sys/devices/pci0000:00"
    top.mkdir(parents=True)
    for drv in ("pcieport", "vfio-pci"):
        (drivers / drv).mkdir(parents=True)
    pf_config = bytearray((t_pf / "config").read_bytes())
    cap = _sriov_offset(bytes(pf_config))
    for reg in (0x0C, 0x0E, 0x10):  # InitialVFs, TotalVFs, NumVFs
        struct.pack_into("<H", pf_config, cap + reg, vfs)
    port_config = bytearray((t_port / "config").read_bytes())
    group = 0
    count = 0

    def register(rel: str, driver: str | None) -> None:
        nonlocal count
        name = rel.rsplit("/", 1)[1]
        os.symlink(f"../../../devices/{rel}", devices / name)
        if driver is not None:
            os.symlink(f"../../../../devices/{rel}", drivers / driver / name)
        count += 1

    # host bridge, as captured
    _clone_function(tsys / HOST_BRIDGE, top / HOST_BRIDGE, skip={"iommu_group"})
    os.symlink(_group(out, group, f"pci0000:00/{HOST_BRIDGE}"), top / HOST_BRIDGE / "iommu_group")
    register(f"pci0000:00/{HOST_BRIDGE}", None)
    for i in range(pfs):
        bus = i + 1
        port = f"0000:00:{0x08 + i // 8:02x}.{i % 8}"
        port_rel = f"pci0000:00/{port}"
        _clone_function(t_port, top / port, skip={"iommu_group", "config",
                                                  "secondary_bus_number",
                                                  "subordinate_bus_number"})
        port_config[0x19] = port_config[0x1A] = bus
        (top / port / "config").write_bytes(bytes(port_config))
        for name in ("secondary_bus_number", "subordinate_bus_number"):
            (top / port / name).write_text(f"{bus}\n")
        group += 1
        os.symlink(_group(out, group, port_rel), top / port / "iommu_group")
        register(port_rel, "pcieport")

        pf = f"0000:{bus:02x}:00.0"
        pf_rel = f"{port_rel}/{pf}"
        pf_dir = top / port / pf
        _clone_function(t_pf, pf_dir, skip={"iommu_group", "config", "sriov_numvfs",
                                            "sriov_totalvfs"})
        (pf_dir / "config").write_bytes(bytes(pf_config))
        _write(pf_dir / "sriov_totalvfs", f"{vfs}\n")
        _write(pf_dir / "sriov_numvfs", f"{vfs}\n")
        group += 1
        os.symlink(_group(out, group, pf_rel), pf_dir / "iommu_group")
        register(pf_rel, "vfio-pci")
        for n in range(vfs):
            devfn = n + 1  # VF offset 1, stride 1 (the template's sriov_offset/stride)
            vf = f"0000:{bus:02x}:{devfn >> 3:02x}.{devfn & 7}"
            vf_rel = f"{port_rel}/{vf}"
            _clone_function(t_vf, top / port / vf, skip=set(_PER_FUNCTION_LINKS))
            os.symlink(f"../{pf}", top / port / vf / "physfn")
            os.symlink(f"../{vf}", pf_dir / f"virtfn{n}")
            group += 1
            os.symlink(_group(out, group, vf_rel), top / port / vf / "iommu_group")
            register(vf_rel, "vfio-pci")
    for name in ("proc/cmdline",):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(TEMPLATE / name, out / name)
    if (TEMPLATE / "sys/class/iommu").is_dir():
        shutil.copytree(TEMPLATE / "sys/class/iommu", out / "sys/class/iommu", symlinks=True)
    return count


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--pfs", type=int, default=16)
    ap.add_argument("--vfs", type=int, default=255)
    args = ap.parse_args()
    if args.out.exists():
        print(f"vf_tree: '{args.out}' exists; give a new directory", file=sys.stderr)
        return 2
    n = build_vf_tree(args.out, args.pfs, args.vfs)
    print(f"{n} functions under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
