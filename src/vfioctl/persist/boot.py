"""Boot integration: the udev rule, its helper, and the initramfs-tools hook.

Who binds a device at boot is decided by order (docs/persistence.md, "Boot flow"): a
driver built into the kernel probes when the device is added; a driver loaded from the
initramfs probes when the initramfs loads it; every other driver is a module that udev
loads for the device's modalias in ``80-drivers.rules``. ``driver_override`` set before
that moment wins (the PCI core offers the device to no other driver), so:

- ``/etc/udev/rules.d/70-vfioctl.rules`` (70 < 80) runs, for the persisted addresses
  only, ``/etc/vfioctl/udev-helper ADDRESS`` as a ``PROGRAM`` — which runs while the
  rules are being read, before any later rule's module loading — and only if the helper
  exists; the helper runs ``vfioctl persist apply --boot --device ADDRESS`` only if the
  Python it was written for exists, and always exits 0. A host without vfioctl, or with
  a broken one, boots as if nothing were persisted.
- ``/etc/initramfs-tools/hooks/vfioctl`` copies ``/etc/vfioctl/initramfs.rules`` into the
  initramfs as a udev rule that sets ``driver_override`` itself (no vfioctl in the
  initramfs), matched on address *and* ids, so that drivers the initramfs loads (GPU,
  NVMe) do not take the devices. The group check then happens in the real root: an entry
  that fails it gets its override cleared and the device reprobed.

The helper and the initramfs rules live in ``/etc/vfioctl`` so that everything boot
needs is in ``/etc``. Install and uninstall are idempotent; every later change of the
configuration rewrites the rule files when they are installed (:func:`refresh`).
"""

from __future__ import annotations

import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from vfioctl.errors import wrap_oserror
from vfioctl.host.base import Host
from vfioctl.pci.device import PciDevice
from vfioctl.pci.driver import set_override
from vfioctl.persist.check import member_of
from vfioctl.persist.config import Config
from vfioctl.persist.paths import CONFIG_NAME, EtcPaths

MARK: Final = "# vfioctl: persisted VFIO bindings"


@dataclass(frozen=True)
class Change:
    """One file install/uninstall touched: ``what`` is written|unchanged|removed|absent."""

    path: Path
    what: str

    def describe(self) -> str:
        return f"{self.path}: {self.what}"


def rule_text(paths: EtcPaths) -> str:
    """The udev rule of the real root: the helper, for every PCI device added."""
    helper = paths.on_host(paths.helper)
    return "\n".join([
        f"{MARK} (written by 'vfioctl persist install-boot'; do not edit).",
        "# Runs before 80-drivers.rules loads the drivers' modules, for every PCI device:",
        "# a module loaded for one device binds every other device it matches, so the",
        "# overrides of all persisted devices are set at the first event. Does nothing",
        "# without the helper.",
        f'ACTION=="add", SUBSYSTEM=="pci", TEST=="{helper}", PROGRAM="{helper} %k"',
    ]) + "\n"


def overrides_text(config: Config) -> str:
    """What the helper's shell part reads: ``ADDRESS VENDOR DEVICE SVENDOR SDEVICE
    DRIVER`` per entry (ids without ``0x``), so that it needs no Python to set the
    overrides before any module loads."""
    lines = [f"{MARK}: overrides the udev helper sets (from {CONFIG_NAME}; do not edit)"]
    for e in config.entries:
        lines.append(" ".join([str(e.address), *e.id.split(":"), *e.subsystem.split(":"),
                               e.driver]))
    return "\n".join(lines) + "\n"


def initramfs_rules_text(config: Config) -> str:
    """The initramfs's rule: the override alone, for devices whose ids still match."""
    lines = [f"{MARK}, initramfs part (copied by /etc/initramfs-tools/hooks/vfioctl).",
             "# The real root's vfioctl checks each group and gives back refused devices."]
    for e in config.entries:
        vendor, device = e.id.split(":")
        svendor, sdevice = e.subsystem.split(":")
        lines.append(f'ACTION=="add", SUBSYSTEM=="pci", KERNEL=="{e.address}", '
                     f'ATTR{{vendor}}=="0x{vendor}", ATTR{{device}}=="0x{device}", '
                     f'ATTR{{subsystem_vendor}}=="0x{svendor}", '
                     f'ATTR{{subsystem_device}}=="0x{sdevice}", '
                     f'ATTR{{driver_override}}="{e.driver}"')
    return "\n".join(lines) + "\n"


def helper_text(paths: EtcPaths, python: str) -> str:
    """The helper udev runs for each PCI device added.

    Its shell part sets ``driver_override`` on every persisted device that is still
    unbound, has no override and has the persisted ids (idempotent: every event may run
    it). For a persisted device's own event it then runs ``vfioctl persist apply --boot
    --device ADDRESS`` (group check, binding, token, VFs). Without the Python it was
    written for it does nothing at all, and it always exits 0.
    """
    quoted = "'" + python.replace("'", "'\\''") + "'"
    table = paths.on_host(paths.overrides)
    return f"""#!/bin/sh
{MARK}: the udev helper (vfioctl persist install-boot).
# Harmless when vfioctl is gone (its Python missing): it then does nothing; exits 0.
PATH=/usr/sbin:/usr/bin:/sbin:/bin; export PATH   # udev gives programs no PATH
PYTHON={quoted}
TABLE={table}
[ -n "$1" ] && [ -r "$TABLE" ] && [ -x "$PYTHON" ] || exit 0
mine=
while read -r addr vendor device svendor sdevice driver; do
    case "$addr" in ""|"#"*) continue ;; esac
    [ "$addr" = "$1" ] && mine=1
    d="/sys/bus/pci/devices/$addr"
    [ -e "$d/driver_override" ] && [ ! -e "$d/driver" ] || continue
    [ "$(cat "$d/vendor" "$d/device" "$d/subsystem_vendor" "$d/subsystem_device" \\
        2>/dev/null | tr '\\n' ' ')" = "0x$vendor 0x$device 0x$svendor 0x$sdevice " ] \\
        || continue
    [ "$(cat "$d/driver_override")" = "(null)" ] || continue
    echo "$driver" > "$d/driver_override" 2>/dev/null || true
done < "$TABLE"
[ -n "$mine" ] || exit 0
"$PYTHON" -m vfioctl persist apply --boot --device "$1" >/dev/null 2>&1 </dev/null || true
exit 0
"""


def hook_text(paths: EtcPaths) -> str:
    """The initramfs-tools hook (run by update-initramfs, not at boot)."""
    rules = paths.on_host(paths.initramfs_rules)
    return (f"#!/bin/sh\n{MARK}: initramfs-tools hook (vfioctl persist install-boot).\n"
            'PREREQ="udev"\nprereqs() { echo "$PREREQ"; }\n'
            'case "$1" in prereqs) prereqs; exit 0 ;; esac\n'
            f'[ -r "{rules}" ] || exit 0\n'
            'mkdir -p "${DESTDIR}/etc/udev/rules.d"\n'
            f'cp "{rules}" "${{DESTDIR}}/etc/udev/rules.d/70-vfioctl.rules"\nexit 0\n')


def installed(paths: EtcPaths) -> bool:
    """The udev rule is installed (then configuration changes rewrite it)."""
    return paths.rule.is_file()


def hook_installed(paths: EtcPaths) -> bool:
    return paths.initramfs_hook.is_file()


def install(paths: EtcPaths, config: Config, *, initramfs: bool = True,
            python: str | None = None) -> list[Change]:
    """Write the rule, the helper (and the initramfs hook and its rules); idempotent."""
    changes = [
        _write(paths.overrides, overrides_text(config), 0o644),
        _write(paths.helper, helper_text(paths, python or sys.executable), 0o755),
        _write(paths.rule, rule_text(paths), 0o644),
    ]
    if initramfs:
        changes.append(_write(paths.initramfs_rules, initramfs_rules_text(config), 0o644))
        changes.append(_write(paths.initramfs_hook, hook_text(paths), 0o755))
    return changes


def uninstall(paths: EtcPaths) -> list[Change]:
    """Remove what :func:`install` wrote (the configuration stays); idempotent."""
    return [_remove(p) for p in (paths.rule, paths.helper, paths.overrides,
                                 paths.initramfs_hook, paths.initramfs_rules)]


def refresh(paths: EtcPaths, config: Config) -> list[Change]:
    """Rewrite the installed rule files for a changed configuration."""
    out = []
    if installed(paths):
        out.append(_write(paths.overrides, overrides_text(config), 0o644))
    if hook_installed(paths):
        out.append(_write(paths.initramfs_rules, initramfs_rules_text(config), 0o644))
    return out


def helper_runs(paths: EtcPaths) -> bool:
    """udev would run the helper: the rule and the helper are both there."""
    return installed(paths) and paths.helper.is_file()


def early_overrides(host: Host, config: Config) -> None:
    """What the helper's shell part does, for a host that cannot run it (the simulator):
    the override of every persisted device still unbound, without one, with its ids."""
    for e in config.entries:
        dev = PciDevice(host, e.address)
        if not dev.exists() or dev.driver is not None or dev.driver_override is not None:
            continue
        if member_of(dev) == next(m for m in e.members if m.address == e.address):
            set_override(dev, e.driver)


def _write(path: Path, text: str, mode: int) -> Change:
    try:
        if path.is_file() and not path.is_symlink() and path.read_text() == text \
                and path.stat().st_mode & 0o777 == mode:
            return Change(path, "unchanged")
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                     | os.O_CLOEXEC, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as err:
        raise wrap_oserror(err, f"cannot write {path}", path=path) from None
    return Change(path, "written")


def _remove(path: Path) -> Change:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return Change(path, "absent")
    except OSError as err:
        raise wrap_oserror(err, f"cannot remove {path}", path=path) from None
    return Change(path, "removed")


__all__ = ["Change", "early_overrides", "helper_runs", "helper_text", "hook_installed",
           "hook_text", "initramfs_rules_text", "install", "installed", "overrides_text",
           "refresh", "rule_text", "uninstall"]
