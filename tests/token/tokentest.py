"""Helpers for the VF-token and SR-IOV tests: simulated hosts in files (so the state
directory, the lock and the token store are the real ones), set up through the product."""

from __future__ import annotations

from pathlib import Path

from tokenops import change_numvfs

from vfioctl.manager import HostdevManager
from vfioctl.sim.host import SimHost
from vfioctl.sim.loader import bundled_text

# sim:q35-vmtest is the model of the real-kernel tier's guest: the same addresses.
Q35_PF, Q35_VF, Q35_VF2, Q35_PLAIN = "0000:01:00.0", "0000:01:00.1", "0000:01:00.2", \
    "0000:02:00.0"
SRV_PF, SRV_VF = "0000:03:00.0", "0000:03:02.0"


def host_file(tmp_path: Path, name: str) -> SimHost:
    path = tmp_path / f"{name}.toml"
    path.write_text(bundled_text(name))
    return SimHost.from_file(path)


def userspace_pf(host: SimHost, pf: str, numvfs: int, *, plain: str | None = None) -> None:
    """PF detached onto vfio-pci with ``numvfs`` VFs (enable_sriov agreed)."""
    HostdevManager(host).detach([pf] + ([plain] if plain else []))
    if numvfs:
        change_numvfs(host, pf, numvfs, allow_enable_sriov=True)
