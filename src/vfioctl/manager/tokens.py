"""Policy: the VF-token lifecycle — set it on a vfio-pci PF, keep it secret, hand it to VF
users, and notice when the kernel's token has moved on.

The kernel's side (docs/kernel.md, "VF token"): binding an SR-IOV PF to vfio-pci gives
it a random token nobody can read; ``VFIO_DEVICE_FEATURE`` SET replaces it; a VF of that
PF opens only with ``vf_token=<the token>``; while VFs are open the PF itself opens only
with the current token; the token survives the PF's fds being closed but not an unbind.

vfioctl's side: ``token set`` is a journaled operation with one ``TOKEN`` step, in this
order, so that the kernel and the stored copy agree whatever moment vfioctl dies at:

1. stage the new token in a 0600 file (fsynced) in the token directory;
2. journal the step, naming the staged file (never the secret), marked to be completed
   by recovery (the user asked for a new token; completing is always possible while the
   PF is on vfio-pci, since setting the same token twice is harmless);
3. tell the kernel (``DEVICE_FEATURE`` SET), then rename the staged file into place.

Recovery repeats 3 (opening the PF with no token, the old one or the staged one: one of
them is the kernel's if VFs are open) and discards staged files no journal names.

Stale copies are detected two ways. Passively: the PF is no longer on vfio-pci, or
vfioctl's record of the PF (``vfioctl detach``) is newer than the copy. Actively: the
kernel refuses a VF open with the stored token (EACCES).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vfioctl.address import PciAddress
from vfioctl.errors import HostError, NotFound, OperationInvalid
from vfioctl.host import uapi
from vfioctl.host.base import Host
from vfioctl.manager.checks import require_writable
from vfioctl.pci.device import VFIO_DRIVER, PciDevice, get_device
from vfioctl.secret import REDACTED, VfToken
from vfioctl.state import DeviceRecord, Phase, Step, StepKind, StoredToken, TokenStore, now
from vfioctl.vfio.device import (
    DeviceHandle,
    VfTokenRejected,
    not_an_sriov_pf,
    open_device,
)

log = logging.getLogger(__name__)

STORED = "stored"  # a token step's from_value: an older copy existed


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
        return {
            "pf": str(self.pf),
            "driver": self.driver,
            "stored": st is not None,
            "set_at": st.set_at if st else None,
            "stale": self.stale is not None,
            "stale_reason": self.stale,
            "file": str(self.file) if st and self.file else None,
            "vf_token": None if st is None else (st.token.reveal() if reveal else REDACTED),
        }


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


def token_store(host: Host) -> TokenStore:
    """The host's token store.

    Raises:
        ReadOnlyHost: a snapshot or bundled simulated host keeps no tokens.
    """
    require_writable(host, "keep VF tokens")
    assert host.state_dir is not None
    return TokenStore(host.state_dir)


def check_pf(host: Host, pf: PciAddress | str) -> PciDevice:
    """The PF, if it can carry a VF token: an SR-IOV PF bound to vfio-pci.

    Raises:
        DeviceNotFound; TokenNotAccepted for a VF, a non-SR-IOV device or a PF on
        another driver.
    """
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


def stale_reason(host: Host, stored: StoredToken,
                 records: Sequence[DeviceRecord]) -> str | None:
    """Why the stored copy cannot be the kernel's token any more, or None if it may be."""
    dev = PciDevice(host, stored.pf)
    if not dev.exists():
        return f"PF {stored.pf} is gone"
    if dev.driver != VFIO_DRIVER:
        return (f"PF {stored.pf} is no longer bound to vfio-pci (driver: "
                f"{dev.driver or 'none'}); its token went with the binding")
    rec = next((r for r in records if r.addr == stored.pf), None)
    rebound = ("it was detached again since the token was set, and vfio-pci gave it a "
               "new random token")
    if stored.held_since is not None and (rec is None or rec.since != stored.held_since):
        return rebound
    if rec is not None and rec.moved and rec.since > stored.set_at:
        return rebound
    return None


def quiet_load(store: TokenStore, pf: PciAddress) -> StoredToken | None:
    """The stored copy, or None when there is none or it is unusable (it is replaced)."""
    try:
        return store.load(pf)
    except HostError:
        return None


def new_entry(pf: PciAddress, token: VfToken | None,
              records: Sequence[DeviceRecord]) -> StoredToken:
    rec = next((r for r in records if r.addr == pf), None)
    return StoredToken(pf, token if token is not None else VfToken.generate(), now(),
                       rec.since if rec else None)


# -- carrying out a token step ----------------------------------------------------------------
class TokenCommitFailed(HostError):
    """The kernel took the new token but its copy could not be stored: the journal stays
    open and the next vfioctl command completes it (the staged file has the token)."""


def apply_step(host: Host, store: TokenStore, step: Step, *, forward: bool) -> str:
    """A ``TOKEN`` step: set (``to_value`` names the staged file) or forget (None).

    Forward: the kernel gets the staged token, then the staged file becomes the stored
    copy; a kernel refusal discards the staged file (nothing changed), a failed rename
    raises :class:`TokenCommitFailed`. Back (a set interrupted before the kernel was
    told): the staged file is discarded.
    """
    assert step.kind is StepKind.TOKEN
    pf = step.addr
    staged_name = step.to_value
    if staged_name is None:                      # forget
        if forward:
            store.remove(pf)
        return "forgotten" if forward else "kept"
    if not forward:
        store.discard_staged(staged_name)
        return "rolled back"
    if staged_name not in store.list_staged():
        # Renamed into place already: the operation got as far as its last write.
        return "set"
    staged = store.load_staged(staged_name)
    old = quiet_load(store, pf) if step.from_value == STORED else None
    # While VFs are open the PF opens only with the kernel's current token: the old one
    # or, after a crash past the kernel's SET (the step was under way), the staged one.
    maybe_current = [old.token] if old else []
    if step.phase is not Phase.PLANNED:
        maybe_current.append(staged.token)
    try:
        _set_kernel_token(host, pf, staged.token, maybe_current)
    except Exception:
        # The kernel refused: it kept its token. (A death here runs no handler: the
        # staged file stays for recovery, which completes the set.)
        store.discard_staged(staged_name)
        raise
    try:
        store.commit_staged(staged_name, pf)
    except HostError as err:
        raise TokenCommitFailed(
            f"PF {pf} has the new VF token but vfioctl could not store it ({err})",
            hint="the next vfioctl command stores it; until then the old copy is stale"
        ) from err
    return "set"


def _set_kernel_token(host: Host, pf: PciAddress, token: VfToken,
                      candidates: Sequence[VfToken]) -> None:
    """``DEVICE_FEATURE`` SET on the PF. While VFs are open the PF opens only with the
    current token: try without one first, then each candidate."""
    with contextlib.ExitStack() as stack:
        handle = _open_pf(host, pf, candidates, stack)
        if not handle.probe_vf_token():
            raise not_an_sriov_pf(pf)
        handle.set_vf_token(token)
    log.debug("PF %s: VF token set (value %s)", pf, REDACTED)


def _open_pf(host: Host, pf: PciAddress, candidates: Sequence[VfToken],
             stack: contextlib.ExitStack) -> DeviceHandle:
    try:
        return stack.enter_context(open_device(host, pf))
    except VfTokenRejected:
        if not candidates:
            raise
    last: VfTokenRejected | None = None
    for token in candidates:
        try:
            return stack.enter_context(open_device(host, pf, token=token))
        except VfTokenRejected as err:
            last = err
    assert last is not None
    raise last


# -- consumers ------------------------------------------------------------------------------
@contextlib.contextmanager
def open_vf(host: Host, vf: PciAddress | str, stored: VfToken | None, *,
            token: VfToken | None = None, use_token: bool = True
            ) -> Iterator[DeviceHandle]:
    """Open a VF through VFIO the way a consumer would, closing it on exit.

    A VF of a vfio-pci PF is opened with ``token``, else ``stored`` (the PF's stored
    token, already checked for staleness by the caller); a VF of a kernel-driven PF with
    none (the kernel refuses one there). ``use_token=False`` opens without any token.

    Raises:
        OperationInvalid: ``vf`` is not a VF.
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
            chosen, from_store = stored, True
    with contextlib.ExitStack() as stack:
        try:
            handle = stack.enter_context(open_device(host, dev.addr, token=chosen))
        except VfTokenRejected as err:
            if not from_store or chosen is None:
                raise
            raise VfTokenRejected(
                f"the stored VF token of PF {pf} is stale: the kernel refused it for "
                f"{dev.name}", addr=dev.addr, pf=pf,
                hint=f"the PF was probably rebound to vfio-pci after 'vfioctl token set', "
                f"which gives it a new random token: run 'vfioctl token set {pf}' again "
                "and give it to the VF users") from err
        yield handle


def needs_stored_token(host: Host, vf: PciAddress | str) -> PciAddress | None:
    """The PF whose stored token opening ``vf`` needs, or None (no token needed)."""
    dev = get_device(host, vf)
    pf = dev.physfn
    if pf is not None and PciDevice(host, pf).driver == VFIO_DRIVER:
        return pf
    return None


__all__ = ["CheckResult", "TokenCommitFailed", "TokenNotFound", "TokenStale", "TokenStatus",
           "apply_step", "check_pf", "needs_stored_token", "open_vf", "quiet_load", "stale_reason",
           "token_store"]
