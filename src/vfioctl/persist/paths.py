"""Where a host keeps its persistent configuration: its ``/etc``.

On the running kernel that is ``/etc`` (``VFIOCTL_ETC_DIR`` moves it, for tests); on a
simulated host file ``FILE`` it is the simulated host's own ``/etc``, the directory
``FILE.etc`` beside it (its ``/run`` is ``FILE.state``), so that trying persistence on a
simulated host never writes this machine's ``/etc``. A snapshot (``linux:DIR``) and a
bundled simulated host are read-only: they have no configuration to change.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from vfioctl.errors import OperationInvalid, ReadOnlyHost
from vfioctl.host.base import Host

CONFIG_NAME: Final = "persist.toml"
RULE_NAME: Final = "70-vfioctl.rules"        # before 80-drivers.rules (module loading)
HELPER_NAME: Final = "udev-helper"
OVERRIDES_NAME: Final = "boot-overrides"
INITRAMFS_RULES_NAME: Final = "initramfs.rules"
HOOK_NAME: Final = "vfioctl"


@dataclass(frozen=True)
class EtcPaths:
    """The files of persistence below one ``/etc``."""

    etc: Path

    @property
    def config_dir(self) -> Path:
        return self.etc / "vfioctl"

    @property
    def config(self) -> Path:
        return self.config_dir / CONFIG_NAME

    @property
    def helper(self) -> Path:
        return self.config_dir / HELPER_NAME

    @property
    def overrides(self) -> Path:
        return self.config_dir / OVERRIDES_NAME

    @property
    def initramfs_rules(self) -> Path:
        return self.config_dir / INITRAMFS_RULES_NAME

    @property
    def rule(self) -> Path:
        return self.etc / "udev" / "rules.d" / RULE_NAME

    @property
    def initramfs_hook(self) -> Path:
        return self.etc / "initramfs-tools" / "hooks" / HOOK_NAME

    def on_host(self, path: Path) -> str:
        """``path`` as the host itself names it (``/etc/vfioctl/…``): what a rule or
        hook written into this ``/etc`` must refer to."""
        return "/etc/" + str(path.relative_to(self.etc))


def etc_of(host: Host) -> EtcPaths | None:
    """The host's ``/etc``, or None where it has none vfioctl may change."""
    if host.readonly:
        return None
    scheme, _, arg = host.name.partition(":")
    if scheme == "linux" and not arg:
        return EtcPaths(Path(os.environ.get("VFIOCTL_ETC_DIR", "/etc")))
    if scheme == "sim" and arg:
        return sim_etc(Path(arg))
    return None


def sim_etc(host_file: Path) -> EtcPaths:
    """The ``/etc`` of the simulated host in ``host_file``: ``FILE.etc`` beside it."""
    return EtcPaths(Path(str(host_file) + ".etc"))


def require_etc(host: Host, what: str) -> EtcPaths:
    """:func:`etc_of`, or the refusal to ``what`` on a host without one.

    Raises:
        ReadOnlyHost / OperationInvalid: a bundled host, a snapshot (exit 5).
    """
    paths = etc_of(host)
    if paths is None:
        cls = ReadOnlyHost if host.readonly else OperationInvalid
        raise cls(f"host {host.name} has no configuration to {what}",
                               hint="persistence needs the running host or a simulated "
                               "host file (vfioctl sim copy NAME FILE; --host sim:FILE)")
    return paths


__all__ = ["EtcPaths", "etc_of", "require_etc", "sim_etc"]
