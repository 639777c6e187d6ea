"""Carrying out one journal step, towards its *to* side or back to its *from* side.

A step is written so that carrying it out again after an interruption finishes it: each
kind starts from what the host looks like now and writes only what differs. That is
what lets the live run (:mod:`vfioctl.manager.execute`) and recovery
(:mod:`vfioctl.manager.recovery`) share this code.
"""

from __future__ import annotations

from vfioctl.errors import InternalError
from vfioctl.host.base import Host
from vfioctl.manager import tokens
from vfioctl.pci.device import PciDevice
from vfioctl.pci.driver import move_to
from vfioctl.pci.sriov import get_sriov, read_enable_sriov, set_enable_sriov, settled, write_numvfs
from vfioctl.state import Step, StepKind, TokenStore


def apply(host: Host, store: TokenStore | None, step: Step, *, forward: bool) -> str | None:
    """Bring the step's object to its *to* side (``forward``) or its *from* side.

    Returns:
        The state it is in now, for reports: a driver for bind steps, a value otherwise.

    Raises:
        Whatever the mechanics raise (HostError and friends) when the kernel refuses.
    """
    if step.kind is StepKind.BIND:
        dev = PciDevice(host, step.addr)
        if forward:
            move_to(dev, step.to_driver, step.to_override)
        else:
            move_to(dev, step.from_driver, step.from_override)
        return dev.driver
    value = step.to_value if forward else step.from_value
    if step.kind is StepKind.ENABLE_SRIOV:
        want = value == "Y"
        if read_enable_sriov(host) != want:
            set_enable_sriov(host, want)
        return "Y" if want else "N"
    if step.kind is StepKind.NUMVFS:
        return str(_numvfs(host, step, int(value or 0)))
    if step.kind is StepKind.TOKEN:
        if store is None:
            raise InternalError("a token step on a host without a state directory")
        return tokens.apply_step(host, store, step, forward=forward)
    raise InternalError(f"unknown journal step kind {step.kind!r}")


def _numvfs(host: Host, step: Step, want: int) -> int:
    """``sriov_numvfs`` to ``want``, through 0 when both counts are non-zero (the kernel
    only goes from or to 0)."""
    info = get_sriov(host, step.addr)
    if info.sriov_numvfs == want:
        return want
    if info.sriov_numvfs and want:
        write_numvfs(host, info, 0)
        info = get_sriov(host, step.addr)
    write_numvfs(host, info, want)
    return settled(host, step.addr, want).sriov_numvfs
