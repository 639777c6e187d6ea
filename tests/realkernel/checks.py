"""Assertions shared by the scenarios: the product's JSON documents against raw sysfs,
and a snapshot read back against the live kernel it was taken from."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from .guest_kernel import Function, GuestKernel
from .topology import BOOT_DRIVER
from .vfioctl_cli import VfioctlCli

# docs/kernel.md "DMA ownership and group viability": drivers that do not claim DMA
# ownership.
DMA_SAFE_DRIVERS = {None, "vfio-pci", "pci-stub", "pcieport"}

# Debian 12's own QEMU 7.2 (no vfio-pci vf-token), kept beside the system QEMU 10 by
# tools/qemu72.sh; the guest sees the host's home directory.
QEMU72 = Path.home() / ".cache" / "vfioctl-vmtest" / "qemu-7.2" / "bin" / "qemu-system-x86_64"


def raw_record(f: Function) -> dict[str, Any]:
    """A ``list --json`` element computed from raw sysfs (ids without 0x, class 6 hex)."""
    return {
        "address": f.address,
        "vendor": f.vendor.removeprefix("0x"),
        "device": f.device.removeprefix("0x"),
        "subsystem_vendor": f.subsystem_vendor.removeprefix("0x"),
        "subsystem_device": f.subsystem_device.removeprefix("0x"),
        "class": f.class_.removeprefix("0x"),
        "driver": f.driver,
        "driver_override": f.driver_override,
        "iommu_group": f.iommu_group,
        "physfn": f.physfn,
        "virtfns": list(f.virtfns),
        "sriov_totalvfs": f.sriov_totalvfs,
        "sriov_numvfs": f.sriov_numvfs,
    }


# The keys every ``list --json`` element has (README "JSON output"); the others in
# raw_record are checked whenever a document carries them (``show`` has them all).
LIST_KEYS = ("address", "vendor", "device", "class", "driver", "iommu_group", "physfn",
             "virtfns", "sriov_totalvfs", "sriov_numvfs")


def assert_doc_matches_sysfs(doc: dict[str, Any], kernel: GuestKernel) -> None:
    expected = raw_record(kernel.function(doc["address"]))
    assert set(LIST_KEYS) <= doc.keys()
    assert {k: doc[k] for k in expected if k in doc} == {
        k: v for k, v in expected.items() if k in doc}, doc["address"]


def assert_list_matches_sysfs(listed: list[dict[str, Any]], kernel: GuestKernel) -> None:
    """Every function, in address order, with the fields raw sysfs gives."""
    assert [r["address"] for r in listed] == kernel.addresses()
    for doc in listed:
        assert_doc_matches_sysfs(doc, kernel)


def assert_groups_match_sysfs(groups: list[dict[str, Any]], kernel: GuestKernel) -> None:
    """Members from /sys/kernel/iommu_groups; viable/blockers by the DMA-ownership rule."""
    raw = kernel.groups()
    assert [g["group"] for g in groups] == sorted(raw)
    for g in groups:
        members = sorted(raw[g["group"]])
        assert g["devices"] == members
        blockers = [
            {"address": m, "driver": kernel.driver(m)}
            for m in members if kernel.driver(m) not in DMA_SAFE_DRIVERS
        ]
        assert g["blockers"] == blockers, g["group"]
        assert g["viable"] is (not blockers), g["group"]


def take_snapshot(vfioctl: VfioctlCli, out_dir: Path, name: str) -> Path:
    """``vfioctl snapshot /tmp/…/NAME``, exported as OUT/snapshots/NAME.tar.

    The snapshot is taken and read back in guest RAM and crosses 9p as one file: hundreds
    of small files and links over 9p under TCG cost minutes. run.sh unpacks the tar;
    ``run.sh --update-fixtures`` copies it into tests/data/snapshots/NAME.
    """
    dest = Path(tempfile.mkdtemp(prefix="vmtest-snap-")) / name
    result = vfioctl("snapshot", str(dest))
    assert result.rc == 0, result.stderr
    (out_dir / "snapshots").mkdir(exist_ok=True)
    with tarfile.open(out_dir / "snapshots" / f"{name}.tar", "w") as tar:
        tar.add(dest, arcname=name)
    return dest


def assert_snapshot_reads_like_live(vfioctl: VfioctlCli, snap: Path) -> None:
    """``--host linux:SNAP`` says what ``--host linux`` says, and so does lspci."""
    frozen = VfioctlCli(f"linux:{snap}")
    assert frozen.json("list") == vfioctl.json("list")
    assert frozen.json("groups") == vfioctl.json("groups")
    for doc in vfioctl.json("list"):
        assert frozen.json("show", doc["address"]) == vfioctl.json("show", doc["address"])
    live = lspci("-D", "-nn", "-k")
    assert lspci("-D", "-nn", "-k", "-A", "linux-sysfs", "-O",
                 f"sysfs.path={snap}/sys/bus/pci") == live


def lspci(*args: str) -> str:
    return subprocess.run(["lspci", *args], capture_output=True, text=True,
                          check=True).stdout


DriverState = dict[str, tuple[str | None, str | None]]


def driver_state(kernel: GuestKernel, *addrs: str) -> DriverState:
    """(driver, driver_override) of each function, from raw sysfs."""
    return {a: (kernel.driver(a), kernel.function(a).driver_override) for a in addrs}


def boot_state(*addrs: str) -> DriverState:
    """What :func:`driver_state` reads right after boot: boot driver, no override."""
    return {a: (BOOT_DRIVER[a], None) for a in addrs}


def restore_boot_drivers(kernel: GuestKernel, addrs: tuple[str, ...]) -> None:
    """The raw recipe (no vfioctl) that puts every function in ``addrs`` back on its
    boot driver: clear the override, unbind, reprobe. Used after a failed scenario."""
    for addr in addrs:
        if kernel.driver(addr) == BOOT_DRIVER[addr] and \
                kernel.function(addr).driver_override is None:
            continue
        kernel.clear_override(addr)
        kernel.unbind(addr)
        kernel.probe(addr)


def forked_cli(argv: list[str], env: dict[str, str]) -> int:
    """``vfioctl ARGV`` in a child forked from this process (a new interpreter costs 1-2
    s under TCG), with ``env`` added; its exit status, negative for the signal that
    killed it (the crash hooks SIGKILL it), as subprocess reports it."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 70
        try:
            os.environ.update(env)
            from vfioctl.cli.main import main

            with contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()):
                code = main(argv)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def token_open_path() -> str:
    """The path a VF open with its token takes on this guest's kernel: ``"cdev"`` where
    the kernel has the vfio cdev and checks tokens on it (6.18 on:
    ``vfio_df_check_token()``; 6.17's bind fails the token pointer with E2BIG and 6.6-6.16
    takes no flag, so the product falls back), else ``"group"`` (docs/kernel.md "The cdev
    path and iommufd")."""
    if not os.path.isdir("/dev/vfio/devices"):
        return "group"
    major, minor = (int(p) for p in os.uname().release.split(".")[:2])
    return "cdev" if (major, minor) >= (6, 18) else "group"
