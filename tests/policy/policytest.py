"""Helpers for the manager's policy tests: writable simulated hosts and device states."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from vfioctl.address import PciAddress
from vfioctl.pci.device import PciDevice
from vfioctl.sim.host import SimHost
from vfioctl.sim.loader import bundled_text

HOSTS = Path(__file__).parent / "hosts"

State = dict[str, tuple[str | None, str | None]]


def host_text(name: str) -> str:
    """tests/policy/hosts/NAME.toml, else tests/data/hosts/NAME.toml, else a bundled host."""
    for path in (HOSTS / f"{name}.toml",
                 Path(__file__).parent.parent / "data" / "hosts" / f"{name}.toml"):
        if path.exists():
            return path.read_text()
    return bundled_text(name)


def make_host(name: str, state_dir: Path) -> SimHost:
    """A writable in-memory simulated host whose vfioctl state lives in ``state_dir``."""
    return SimHost.from_text(host_text(name), name=f"sim:{name}", state_dir=state_dir)


def snapshot(host: SimHost, addrs: Iterable[str] | None = None) -> State:
    """address -> (driver, driver_override) for the given devices (default: all)."""
    from vfioctl.pci.device import iter_addresses

    names = list(addrs) if addrs is not None else [str(a) for a in iter_addresses(host)]
    out: State = {}
    for name in names:
        dev = PciDevice(host, PciAddress.parse(name))
        out[name] = (dev.driver, dev.driver_override)
    return out
