"""Policy: the VF-token lifecycle — set it on a vfio-pci PF, keep it secret, hand it to
VF users, and notice when the kernel's token has moved on.

The kernel side (KERNEL.md "VF token", seeds/003): binding an SR-IOV PF to vfio-pci gives
it a random token nobody can read; ``VFIO_DEVICE_FEATURE`` SET replaces it; a VF of that
PF opens only with ``vf_token=<the token>``; the token survives the PF's fds being closed
but not an unbind, so a PF that is reattached and detached again has a *new* random token
and any stored copy is stale.

vfioctl's side: :func:`set_token` sets the token under the host's writer lock (the same
lock as detach/reattach, :mod:`vfioctl.state`) and keeps a copy in
``STATE_DIR/vf-tokens/ADDR`` (file 0600 in a 0700 directory, written before the kernel
is told and renamed into place after, so the file and the kernel never disagree after a
failure). :func:`get_token` hands it to a consumer, refusing a copy it knows is stale;
:func:`open_vf` opens a VF with it. The token is a :class:`VfToken`, which never prints
itself; nothing here logs or raises it.

Stale copies are detected two ways. Passively: the PF is no longer on vfio-pci, or
vfioctl's own record of the PF (``vfioctl detach``) is newer than the copy. Actively: the
kernel refuses a VF open with the stored token (EACCES) — :func:`open_vf` then says the
copy is stale rather than "token required".
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from vfioctl.address import PciAddress
from vfioctl.errors import (
    HostError,
    NotFound,
    OperationInvalid,
    ReadOnlyHost,
)
from vfioctl.host import uapi
from vfioctl.host.base import Host
from vfioctl.pci.device import VFIO_DRIVER, PciDevice, get_device
from vfioctl.secret import REDACTED, VfToken
from vfioctl.state import DeviceRecord, StateStore, StoredToken, TokenStore, now
from vfioctl.vfio.device import (
    DeviceHandle,
    VfTokenRejected,
    not_an_sriov_pf,
    open_device,
)

log = logging.getLogger(__name__)

TOKENS_DIR: Final = "vf-tokens"
DIR_MODE: Final = 0o700
FILE_MODE: Final = 0o600


class TokenNotFound(NotFound):
    """vfioctl has no stored VF token for this PF."""

    def __init__(self, pf: PciAddress) -> None:
        super().__init__(f"no VF token stored for PF {pf}",
                         hint=f"set one with 'vfioctl token set {pf}'")
        self.pf = pf


class TokenStale(OperationInvalid):
    """The stored token no longer matches the kernel's (the PF was rebound or unbound)."""

    def __init__(self, pf: PciAddress, reason: str) -> None:
        super().__init__(f"the stored VF token of PF {pf} is stale: {reason}",
                         hint=f"set a new one with 'vfioctl token set {pf}' and give it to "
                         "the VF users again")
        self.pf = pf
        self.reason = reason


@dataclass(frozen=True)
class TokenStatus:
    """What ``vfioctl token show`` reports; the token only when asked to reveal."""

    pf: PciAddress
    driver: str | None
    stored: StoredToken | None
    stale: str | None
    file: Path | None

    def to_json(self, *, reveal: bool = False) -> dict[str, Any]:
        st = self.stored
        doc: dict[str, Any] = {
            "pf": str(self.pf),
            "driver": self.driver,
            "stored": st is not None,
            "set_at": st.set_at if st else None,
            "stale": self.stale is not None,
            "stale_reason": self.stale,
            "file": str(self.file) if st and self.file else None,
            "vf_token": None if st is None else (st.token.reveal() if reveal else REDACTED),
        }
        return doc


@dataclass(frozen=True)
class CheckResult:
    """A VF opened through VFIO (and closed again): the proof a consumer gets in."""

    vf: PciAddress
    pf: PciAddress | None
    path: str
    info: uapi.DeviceInfo
    with_token: bool

    def to_json(self) -> dict[str, Any]:
        return {"vf": str(self.vf), "pf": None if self.pf is None else str(self.pf),
                "opened": True, "path": self.path, "with_token": self.with_token,
                "device_info": {"flags": self.info.flags,
                                "num_regions": self.info.num_regions,
                                "num_irqs": self.info.num_irqs}}


def _store(host: Host) -> TokenStore:
    if host.state_dir is None or host.readonly:
        raise ReadOnlyHost(f"host {host.name} is read-only: it has no VF tokens",
                           hint="use the live host or a simulated copy (--host sim:FILE)")
    return TokenStore(host.state_dir)


def _held_record(host: Host, pf: PciAddress) -> DeviceRecord | None:
    assert host.state_dir is not None
    for rec in StateStore(host.state_dir).read_records():
        if rec.addr == pf:
            return rec
    return None


def _check_pf(host: Host, pf: PciAddress | str) -> PciDevice:
    dev = get_device(host, pf)
    physfn = dev.physfn
    if physfn is not None:
        raise not_an_sriov_pf(dev.addr, f": it is a VF of {physfn}; use 'vfioctl token set "
                              f"{physfn}'")
    if not dev.sriov_totalvfs:
        raise not_an_sriov_pf(dev.addr, ": it has no SR-IOV capability")
    if dev.driver != VFIO_DRIVER:
        raise not_an_sriov_pf(dev.addr, f" (driver: {dev.driver or 'none'})")
    return dev


def stale_reason(host: Host, stored: StoredToken) -> str | None:
    """Why the stored copy cannot be the kernel's token any more, or None if it may be."""
    dev = PciDevice(host, stored.pf)
    if not dev.exists():
        return f"PF {stored.pf} is gone"
    if dev.driver != VFIO_DRIVER:
        return (f"PF {stored.pf} is no longer bound to vfio-pci (driver: "
                f"{dev.driver or 'none'}); its token went with the binding")
    rec = _held_record(host, stored.pf)
    rebound = ("it was detached again since the token was set, and vfio-pci gave it a "
               "new random token")
    if stored.held_since is not None and (rec is None or rec.since != stored.held_since):
        return rebound
    if rec is not None and rec.moved and rec.since > stored.set_at:
        return rebound
    return None


# -- operations --------------------------------------------------------------------------------
def set_token(host: Host, pf: PciAddress | str, token: VfToken | None = None, *,
              lock_timeout: float | None = None) -> tuple[StoredToken, Path]:
    """Set the VF token of an SR-IOV PF bound to vfio-pci, and store it (0600).

    Without ``token`` a fresh random one is made. VFs opened before keep working; new VF
    opens need the new token (KERNEL.md). If VFs are open, the PF can be opened only with
    the current token: the stored one is used for that.

    Returns:
        The stored token and the file it is in.

    Raises:
        ReadOnlyHost: on a snapshot or bundled simulated host.
        DeviceNotFound: no such device.
        TokenNotAccepted: not an SR-IOV PF bound to vfio-pci.
        GroupBusy: the PF's group is open by another VFIO user.
        VfTokenRejected: VFs are in use and vfioctl has not got their token.
        Busy: another vfioctl holds the host's lock.
        HostError: the kernel or the file system refused.
    """
    store = _store(host)
    assert host.state_dir is not None
    with StateStore(host.state_dir, timeout=lock_timeout).writer():
        # Step 1: check everything before touching anything.
        dev = _check_pf(host, pf)
        new = token if token is not None else VfToken.generate()
        rec = _held_record(host, dev.addr)
        entry = StoredToken(dev.addr, new, now(), rec.since if rec else None)
        old = _quiet_load(store, dev.addr)
        # Step 2: the file first (0600, not yet under its name), so that a failure to
        # write it leaves the kernel's token alone; then the kernel; then the rename.
        tmp = store.prepare(entry)
        try:
            with contextlib.ExitStack() as stack:
                handle = _open_pf(host, dev, old, stack)
                if not handle.probe_vf_token():
                    raise not_an_sriov_pf(dev.addr)
                handle.set_vf_token(new)
            path = store.commit(tmp, dev.addr)
        except BaseException:
            store.discard(tmp)
            raise
    log.debug("stored the VF token of %s in %s", dev.addr, path)
    return entry, path


def _open_pf(host: Host, dev: PciDevice, old: StoredToken | None,
             stack: contextlib.ExitStack) -> DeviceHandle:
    try:
        return stack.enter_context(open_device(host, dev.addr))
    except VfTokenRejected:
        if old is None:
            raise
    # VFs are in use: the PF opens only with their token (KERNEL.md), ours if we set it.
    log.debug("PF %s has VFs in use: reopening it with the stored token", dev.addr)
    return stack.enter_context(open_device(host, dev.addr, token=old.token))


def _quiet_load(store: TokenStore, pf: PciAddress) -> StoredToken | None:
    try:
        return store.load(pf)
    except HostError:
        return None


def show_token(host: Host, pf: PciAddress | str) -> TokenStatus:
    """The stored token's status (stale or not); the token stays inside the result.

    Raises:
        DeviceNotFound, ReadOnlyHost, PermissionDenied (a file others could read).
    """
    store = _store(host)
    dev = get_device(host, pf)
    stored = store.load(dev.addr)
    stale = stale_reason(host, stored) if stored is not None else None
    return TokenStatus(dev.addr, dev.driver, stored, stale,
                       store.path(dev.addr) if stored is not None else None)


def get_token(host: Host, pf: PciAddress | str) -> VfToken:
    """The VF token of ``pf`` for a consumer (QEMU, DPDK, a Python driver).

    Raises:
        TokenNotFound: none stored. TokenStale: the PF was rebound or unbound since.
        DeviceNotFound, ReadOnlyHost, PermissionDenied: as for :func:`show_token`.
    """
    status = show_token(host, pf)
    if status.stored is None:
        raise TokenNotFound(status.pf)
    if status.stale is not None:
        raise TokenStale(status.pf, status.stale)
    return status.stored.token


def forget_token(host: Host, pf: PciAddress | str) -> bool:
    """Remove the stored copy (the kernel keeps its token). True if there was one."""
    store = _store(host)
    addr = pf if isinstance(pf, PciAddress) else PciAddress.parse(pf)
    return store.remove(addr)


@contextlib.contextmanager
def open_vf(host: Host, vf: PciAddress | str, *, token: VfToken | None = None,
            use_token: bool = True) -> Iterator[DeviceHandle]:
    """Open a VF through VFIO the way a consumer would, closing it on exit.

    A VF of a vfio-pci PF is opened with ``token`` or else the stored token of its PF; a
    VF of a kernel-driven PF with none (the kernel refuses one there, KERNEL.md).
    ``use_token=False`` opens without any token (to show what a consumer without it
    gets).

    Raises:
        OperationInvalid: ``vf`` is not a VF.
        TokenNotFound / TokenStale: no usable stored token (and none given).
        VfTokenRejected: the kernel refused the token; with the stored one, the message
            says the copy is stale.
        Everything :func:`vfioctl.vfio.device.open_device` raises.
    """
    dev = get_device(host, vf)
    pf = dev.physfn
    if pf is None:
        raise OperationInvalid(f"{dev.name} is not an SR-IOV VF",
                               hint="'vfioctl sriov PF' lists a PF's VFs")
    chosen: VfToken | None = None
    from_store = False
    if use_token and PciDevice(host, pf).driver == VFIO_DRIVER:
        chosen = token
        if chosen is None:
            chosen, from_store = get_token(host, pf), True
    with contextlib.ExitStack() as stack:
        try:
            handle = stack.enter_context(open_device(host, dev.addr, token=chosen))
        except VfTokenRejected as err:
            if not from_store:
                raise
            raise _stale_rejection(dev, pf) from err
        yield handle


def _stale_rejection(dev: PciDevice, pf: PciAddress) -> VfTokenRejected:
    return VfTokenRejected(
        f"the stored VF token of PF {pf} is stale: the kernel refused it for {dev.name}",
        addr=dev.addr, pf=pf,
        hint=f"the PF was probably rebound to vfio-pci after 'vfioctl token set', which "
        f"gives it a new random token: run 'vfioctl token set {pf}' again and give it "
        "to the VF users")


def check_vf(host: Host, vf: PciAddress | str, *, use_token: bool = True) -> CheckResult:
    """Open a VF with its PF's stored token, read ``DEVICE_GET_INFO``, close it.

    Raises:
        Everything :func:`open_vf` raises.
    """
    with open_vf(host, vf, use_token=use_token) as handle:
        dev = PciDevice(host, handle.addr)
        pf = dev.physfn
        with_token = use_token and pf is not None and \
            PciDevice(host, pf).driver == VFIO_DRIVER
        return CheckResult(handle.addr, pf, handle.path, handle.info, with_token)
