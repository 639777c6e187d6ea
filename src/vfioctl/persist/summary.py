"""What ``status`` and ``doctor`` say about persisted entries: the hardware check of
each, read-only, without ever failing the command that asks.

A configuration that cannot be read (not root, a planted file, a hand edit that does
not parse) is a problem to report, not a reason for ``status`` or ``doctor`` to fail:
they answer other questions too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vfioctl.errors import VfioctlError
from vfioctl.host.base import Host
from vfioctl.persist import boot, store
from vfioctl.persist.check import Verdict, check
from vfioctl.persist.paths import EtcPaths, etc_of


@dataclass(frozen=True)
class Summary:
    """The persisted entries of a host, each checked; ``error`` if none could be read."""

    paths: EtcPaths | None
    verdicts: list[Verdict] = field(default_factory=list)
    error: str | None = None
    boot_installed: bool = False
    boot_stale: bool = False      # the helper's table is older than the configuration

    @property
    def changed(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.ok]

    @property
    def renumbered(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.renumbered]


def summarize(host: Host) -> Summary:
    """Check every persisted entry of ``host`` against its hardware now."""
    paths = etc_of(host)
    if paths is None:
        return Summary(None)
    try:
        config = store.load(paths)
        verdicts = [check(host, e) for e in config.entries]
    except VfioctlError as err:
        line = str(err) + (f"; {err.hint}" if err.hint else "")
        return Summary(paths, error=line)
    installed = boot.helper_runs(paths)
    stale = False
    if installed:
        try:
            stale = paths.overrides.read_text() != boot.overrides_text(config)
        except OSError:
            stale = True
    return Summary(paths, verdicts, None, installed, stale)


__all__ = ["Summary", "summarize"]
