"""A claim prepared and unprepared: the manager's ``prepare``/``release`` for its UID.

:class:`Driver` is what both DRA services call. Prepare reads the claim's allocation
(:mod:`vfioctl.dra.claims`), holds its devices for the owner *claim UID* under the
group rule (``takeGroup`` is the opt-in) and the manager's host-safety refusals, then
writes the claim's files: the VF token of a userspace-driven PF (0400, for the
container), the device metadata KubeVirt reads, and the CDI spec. Unprepare releases
the owner (managed devices go back to their original drivers) and removes the files.

Why it is safe to retry and to kill: the manager's journal is the checkpoint. A plugin
killed mid-prepare leaves an operation the next manager call finishes or rolls back
(it recovers first, under the writer lock), and the kubelet retries a claim it got no
answer for; preparing devices already held for the same claim changes nothing; the
files are written by rename, so a rewrite is the same file. Claims on one node are
serialized: one lock in the process, and the manager's writer lock between processes.

Errors of one claim are that claim's ``error`` string (a refusal's message and hint,
as the CLI prints them); the VF token is never in it, in a log line, or anywhere but
its 0400 file (:class:`vfioctl.VfToken` redacts itself everywhere else).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vfioctl import PciAddress, Session, VfioctlError, VfToken
from vfioctl.dra import cdi
from vfioctl.dra.claims import Allocated, ClaimAllocation, ClaimReader, ClaimRef, parse_claim
from vfioctl.dra.config import DriverConfig
from vfioctl.dra.inventory import STD_PCI_BUS_ID, address_of

log = logging.getLogger("vfioctl.dra")

VFIO_PCI = "vfio-pci"
METADATA_API_VERSION = "metadata.resource.k8s.io/v1alpha1"


@dataclass(frozen=True)
class PreparedDevice:
    """What the kubelet gets back for one allocated device."""

    request: str
    pool: str
    device: str
    cdi_ids: tuple[str, ...]


class ClaimError(Exception):
    """A claim that cannot be prepared or unprepared now: its ``error`` string."""


def describe_error(err: VfioctlError) -> str:
    """A refusal as one line: the message and, if any, what to do."""
    hint = getattr(err, "hint", None)
    return f"{err}; {hint}" if hint else str(err)


# A Kubernetes UID (a UUID in practice): it names files and CDI devices, so nothing else.
_UID = re.compile(r"[0-9A-Za-z][0-9A-Za-z-]{0,62}")


def _check_uid(uid: str) -> None:
    if not _UID.fullmatch(uid):
        raise ClaimError(f"'{uid}' is not a claim UID" if uid else "the claim has no UID")


class Driver:
    """Prepare and unprepare claims on one node."""

    def __init__(self, config: DriverConfig, session_factory: Callable[[], Session],
                 read_claim: ClaimReader) -> None:
        self.config = config
        self._session = session_factory
        self._read_claim = read_claim
        self._lock = threading.Lock()

    # -- paths ------------------------------------------------------------------------
    def claim_dir(self, uid: str) -> Path:
        return self.config.state_dir / "claims" / uid

    def is_claim(self, owner: str) -> bool:
        """Whether an owner in vfioctl's records is a claim this driver prepared (every
        prepared claim has its directory of files)."""
        return bool(owner) and "/" not in owner and self.claim_dir(owner).is_dir()

    def spec_path(self, uid: str) -> Path:
        return cdi.spec_path(self.config.cdi_dir, self.config.driver_name, uid)

    # -- startup ------------------------------------------------------------------------
    def recover(self) -> list[str]:
        """Finish what a killed plugin (or any vfioctl) left unfinished, before serving."""
        with self._session() as session:
            done = session.recover()
        for rec in done:
            log.info("recovered: %s", rec.describe())
        return [r.describe() for r in done]

    # -- prepare ------------------------------------------------------------------------
    def prepare(self, ref: ClaimRef) -> list[PreparedDevice]:
        """Prepare one claim (idempotent).

        Raises:
            ClaimError: the claim's error (refused, not found, bad parameters).
        """
        _check_uid(ref.uid)
        with self._lock:
            try:
                alloc = parse_claim(self._read_claim(ref), ref, self.config.driver_name)
                return self._prepare(alloc)
            except VfioctlError as err:
                log.warning("claim %s/%s (%s) not prepared: %s", ref.namespace, ref.name,
                            ref.uid, describe_error(err))
                raise ClaimError(describe_error(err)) from None
            except OSError as err:
                log.warning("claim %s/%s (%s) not prepared: %s", ref.namespace, ref.name,
                            ref.uid, err)
                raise ClaimError(f"cannot write the claim's files: {err}") from None
            except Exception as err:   # a bug or an API client failure: say it, retry
                log.exception("claim %s/%s (%s): internal error", ref.namespace, ref.name,
                              ref.uid)
                raise ClaimError(f"internal error: {type(err).__name__}: {err}") from None

    def _prepare(self, alloc: ClaimAllocation) -> list[PreparedDevice]:
        uid = alloc.ref.uid
        if not alloc.devices:
            return []
        addrs = self._addresses(alloc.devices)
        with self._session() as session:
            # Everything that can refuse the claim is asked before the host changes: the
            # VF tokens first (a VF of a userspace PF without one could not be opened),
            # then the manager's plan (the group rule, host use, other owners).
            tokens = {addr: self._token_for(session, addr) for addr in addrs}
            report = session.prepare(uid, addrs, group=alloc.take_group)
            for action in report.actions:
                log.info("claim %s: %s", uid, action.describe())
            cdi_devices = [
                cdi.CdiDevice(d.device, f"/dev/vfio/{session.device(addr).iommu_group}",
                              self._write_token(uid, d.device, tokens[addr]), d.device,
                              cdev_node=session.vfio_cdev(addr))
                for d, addr in zip(alloc.devices, addrs, strict=True)]
        mounts = self._write_metadata(alloc, addrs)
        cdi.write_spec(self.spec_path(uid), cdi.build_spec(
            self.config.driver_name, uid, cdi_devices, mounts,
            version=self.config.cdi_version))
        log.info("claim %s/%s (%s) prepared: %s", alloc.ref.namespace, alloc.ref.name, uid,
                 ", ".join(str(a) for a in addrs))
        driver = self.config.driver_name
        return [PreparedDevice(d.request, d.pool, d.device,
                               (cdi.qualified(driver, uid, d.device),))
                for d in alloc.devices]

    def _addresses(self, devices: Sequence[Allocated]) -> list[PciAddress]:
        from vfioctl import UsageError

        out = []
        for d in devices:
            if d.pool != self.config.node_name:
                raise UsageError(f"device '{d.device}' is from pool '{d.pool}', not this "
                                 f"node's ('{self.config.node_name}')",
                                 hint="the claim was allocated on another node")
            out.append(address_of(d.device))
        return out

    @staticmethod
    def _token_for(session: Session, addr: PciAddress) -> VfToken | None:
        """The VF token a VF's user must present: its PF's, when the PF is driven from
        userspace (bound to vfio-pci); None for any other device.

        Raises:
            TokenNotFound, TokenStale: vfioctl holds no usable token for that PF.
        """
        physfn = session.device(addr).physfn
        if physfn is None or session.device(physfn).driver != VFIO_PCI:
            return None
        return session.get_token(physfn)

    def _write_token(self, uid: str, device: str, token: VfToken | None) -> Path | None:
        """The token as a 0400 file of this claim: the one place it is written for a
        container."""
        if token is None:
            return None
        directory = self.claim_dir(uid)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = directory / f"vf-token-{device}"
        cdi.write_atomic(path, (token.reveal() + "\n").encode(), 0o400)
        return path

    def _write_metadata(self, alloc: ClaimAllocation,
                        addrs: Sequence[PciAddress]) -> list[tuple[Path, str]]:
        """The device metadata files (KEP-5304's ``DeviceMetadata``, one per request)
        and where they are mounted: ``resourceclaims/<claim>/<request>/<driver>-metadata
        .json`` and, for a claim made from a template, ``resourceclaimtemplates/<pod
        claim>/<request>/…`` — where KubeVirt's virt-launcher reads the device's
        ``resource.kubernetes.io/pciBusID``. Attribute values are in the ResourceSlice's
        own form (``{"string": …}``)."""
        driver = self.config.driver_name
        ref = alloc.ref
        by_request: dict[str, list[dict[str, Any]]] = {}
        for d, addr in zip(alloc.devices, addrs, strict=True):
            by_request.setdefault(d.request, []).append({
                "driver": driver, "pool": d.pool, "name": d.device,
                "attributes": {STD_PCI_BUS_ID: {"string": str(addr)},
                               "pciBusID": {"string": str(addr)}},
            })
        directory = self.claim_dir(ref.uid) / "metadata"
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        mounts: list[tuple[Path, str]] = []
        for request, devices in sorted(by_request.items()):
            doc: dict[str, Any] = {
                "apiVersion": METADATA_API_VERSION, "kind": "DeviceMetadata",
                "metadata": {"name": ref.name, "namespace": ref.namespace,
                             "uid": ref.uid, "generation": 1},
                "requests": [{"name": request, "devices": devices}]}
            if alloc.pod_claim_name:
                doc["podClaimName"] = alloc.pod_claim_name
            host = directory / f"{request}.json"
            cdi.write_atomic(host, (json.dumps(doc, indent=2) + "\n").encode(), 0o444)
            leaf = f"{request}/{driver}-metadata.json"
            mounts.append((host, f"{cdi.METADATA_DIR}/resourceclaims/{ref.name}/{leaf}"))
            if alloc.pod_claim_name:
                mounts.append((host, f"{cdi.METADATA_DIR}/resourceclaimtemplates/"
                                     f"{alloc.pod_claim_name}/{leaf}"))
        return mounts

    # -- unprepare ----------------------------------------------------------------------
    def unprepare(self, ref: ClaimRef) -> None:
        """Release one claim (idempotent: a claim never prepared releases nothing).

        Raises:
            ClaimError: the manager refused or failed to give the devices back.
        """
        _check_uid(ref.uid)
        with self._lock:
            try:
                with self._session() as session:
                    report = session.release(ref.uid)
            except VfioctlError as err:
                log.warning("claim %s (%s) not unprepared: %s", ref.name, ref.uid,
                            describe_error(err))
                raise ClaimError(describe_error(err)) from None
            for action in report.actions:
                log.info("claim %s: %s", ref.uid, action.describe())
            cdi.remove_spec(self.spec_path(ref.uid))
            shutil.rmtree(self.claim_dir(ref.uid), ignore_errors=True)
            log.info("claim %s/%s (%s) unprepared", ref.namespace, ref.name, ref.uid)


__all__ = ["ClaimError", "Driver", "PreparedDevice", "describe_error"]
