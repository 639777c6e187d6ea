"""The token and SR-IOV operations as the tests call them, each one manager call.

vfioctl 0.1.0 had these as functions over a host; since the manager owns every host
change they are :class:`~vfioctl.manager.HostdevManager` methods. The tests keep their
shape ``op(host, …)`` through these one-line adapters.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from vfioctl.address import PciAddress
from vfioctl.host.base import Host
from vfioctl.manager import CheckResult, HostdevManager, SriovChange, TokenStatus
from vfioctl.secret import VfToken
from vfioctl.state import StoredToken
from vfioctl.vfio.device import DeviceHandle

Addr = PciAddress | str


def set_token(host: Host, pf: Addr, token: VfToken | None = None, *,
              lock_timeout: float | None = None, force: bool = False
              ) -> tuple[StoredToken, Path]:
    done = HostdevManager(host, lock_timeout=lock_timeout).set_token(pf, token, force=force)
    return done.stored, done.file


def show_token(host: Host, pf: Addr) -> TokenStatus:
    return HostdevManager(host).token_status(pf)


def get_token(host: Host, pf: Addr) -> VfToken:
    return HostdevManager(host).get_token(pf)


def forget_token(host: Host, pf: Addr) -> bool:
    return HostdevManager(host).forget_token(pf)


@contextlib.contextmanager
def open_vf(host: Host, vf: Addr, *, token: VfToken | None = None,
            use_token: bool = True) -> Iterator[DeviceHandle]:
    with HostdevManager(host).open_vf(vf, token=token, use_token=use_token) as handle:
        yield handle


def check_vf(host: Host, vf: Addr, *, use_token: bool = True) -> CheckResult:
    return HostdevManager(host).check_vf(vf, use_token=use_token)


def change_numvfs(host: Host, pf: Addr, numvfs: int, *, allow_enable_sriov: bool = False,
                  lock_timeout: float | None = None) -> SriovChange:
    return HostdevManager(host, lock_timeout=lock_timeout).set_numvfs(
        pf, numvfs, allow_enable_sriov=allow_enable_sriov)
