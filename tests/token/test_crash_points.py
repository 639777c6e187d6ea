"""A kill at every step of every host-changing command: each sysfs write and VFIO ioctl
(before it reaches the kernel and after), each rename, fsync and unlink of the token
store, and each journal commit. The next vfioctl process (a new SimHost over the same
host file) recovers, and then the store, the journal and the simulated kernel agree:

- no journal is left running and no staged token file is left over;
- every device is on one side of the operation, never half-way;
- a stored VF token is the kernel's token (or there is none: never a wrong "current");
- ``enable_sriov`` is Y wherever a vfio-pci PF has VFs;
- the operation then runs to its end.

The kill is an exception that only ``BaseException`` handlers see, raised by wrappers
around the primitives — the in-process equivalent of ``strace -e inject=…:signal=KILL``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tokentest import Q35_PF, Q35_PLAIN, SRV_PF

from vfioctl.manager import HostdevManager
from vfioctl.pci.device import PciDevice
from vfioctl.pci.sriov import get_sriov, read_enable_sriov
from vfioctl.secret import VfToken
from vfioctl.sim.host import SimHost
from vfioctl.sim.loader import bundled_text
from vfioctl.state import StateWriter, TokenStore

TOK = VfToken(uuid.UUID("11111111-2222-3333-4444-555555555555"))
TOK2 = VfToken(uuid.UUID("66666666-7777-8888-9999-000000000000"))


class Killed(BaseException):
    """The process died here."""


class Points:
    """Counts crash points; raises :class:`Killed` at number ``at`` (0: never)."""

    def __init__(self) -> None:
        self.count = 0
        self.at = 0
        self.where = ""

    def hit(self, what: str) -> None:
        self.count += 1
        if self.count == self.at:
            self.where = what
            raise Killed(what)


_OS = ("replace", "rename", "fsync", "unlink", "link")
_WRITER = ("begin", "set_phase", "set_forward", "finish", "put_records")


@pytest.fixture
def points(monkeypatch: pytest.MonkeyPatch) -> Iterator[Points]:
    p = Points()

    def around(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            p.hit(f"before {name}")
            out = real(*args, **kwargs)
            p.hit(f"after {name}")
            return out
        return wrapper

    for name in _OS:
        monkeypatch.setattr(os, name, around(f"os.{name}", getattr(os, name)))
    for name in _WRITER:
        monkeypatch.setattr(StateWriter, name, around(name, getattr(StateWriter, name)))
    for name in ("write", "ioctl"):
        monkeypatch.setattr(SimHost, name, around(f"sim {name}", getattr(SimHost, name)))
    yield p


@dataclass(frozen=True)
class Case:
    name: str
    host: str
    setup: Callable[[HostdevManager], object]
    op: Callable[[HostdevManager], object]
    devices: tuple[str, ...]
    pf: str


def _userspace_pf(pf: str, numvfs: int, token: VfToken | None = None
                  ) -> Callable[[HostdevManager], None]:
    def setup(mgr: HostdevManager) -> None:
        mgr.detach([pf])
        if numvfs:
            mgr.set_numvfs(pf, numvfs, allow_enable_sriov=True)
        if token is not None:
            mgr.set_token(pf, token)
    return setup


CASES = [
    Case("sriov-create-on-vfio-pf", "q35-vmtest", _userspace_pf(Q35_PF, 0),
         lambda m: m.set_numvfs(Q35_PF, 2, allow_enable_sriov=True), (Q35_PF,), Q35_PF),
    Case("sriov-remove-on-vfio-pf", "q35-vmtest", _userspace_pf(Q35_PF, 2),
         lambda m: m.set_numvfs(Q35_PF, 0), (Q35_PF,), Q35_PF),
    Case("sriov-create-on-kernel-pf", "sriov-server", lambda m: None,
         lambda m: m.set_numvfs(SRV_PF, 4), (SRV_PF,), SRV_PF),
    Case("token-set-first", "q35-vmtest", _userspace_pf(Q35_PF, 2),
         lambda m: m.set_token(Q35_PF, TOK), (Q35_PF,), Q35_PF),
    Case("token-set-replace", "q35-vmtest", _userspace_pf(Q35_PF, 2, TOK),
         lambda m: m.set_token(Q35_PF, TOK2), (Q35_PF,), Q35_PF),
    Case("token-forget", "q35-vmtest", _userspace_pf(Q35_PF, 2, TOK),
         lambda m: m.forget_token(Q35_PF), (Q35_PF,), Q35_PF),
    Case("detach-pair", "q35-vmtest", lambda m: None,
         lambda m: m.detach([Q35_PLAIN]), (Q35_PLAIN,), Q35_PF),
    Case("reattach", "q35-vmtest", lambda m: m.detach([Q35_PLAIN]),
         lambda m: m.reattach([Q35_PLAIN]), (Q35_PLAIN,), Q35_PF),
    Case("prepare", "q35-vmtest", lambda m: None,
         lambda m: m.prepare("vm1", [Q35_PLAIN]), (Q35_PLAIN,), Q35_PF),
    Case("release", "q35-vmtest", lambda m: m.prepare("vm1", [Q35_PLAIN]),
         lambda m: m.release("vm1"), (Q35_PLAIN,), Q35_PF),
]


def _state(host: SimHost, case: Case) -> tuple[object, ...]:
    info = get_sriov(host, case.pf)
    drivers = tuple(PciDevice(host, a).driver for a in case.devices)  # type: ignore[arg-type]
    stored = TokenStore(host.state_dir).load(info.pf) if host.state_dir else None
    # (vfio-pci not loaded reads None: loading a module is not undone, and means N)
    return (drivers, info.sriov_numvfs, bool(read_enable_sriov(host)),
            None if stored is None else stored.token.reveal())


def _fresh(path: Path) -> SimHost:
    return SimHost.from_file(path)


def _agree(host: SimHost, case: Case, where: str) -> None:
    mgr = HostdevManager(host)
    assert mgr.recover() == [], f"{where}: a journal is still running"
    assert host.state_dir is not None
    store = TokenStore(host.state_dir)
    assert store.list_staged() == [], f"{where}: a staged token file is left"
    info = get_sriov(host, case.pf)
    stored = store.load(info.pf)
    kernel = host.kernel.vf_tokens.get(str(info.pf))
    if stored is not None:
        assert kernel is not None and stored.token.reveal() == str(kernel), \
            f"{where}: the stored token is not the kernel's"
    if info.userspace_pf and info.sriov_numvfs:
        assert read_enable_sriov(host), f"{where}: VFs on a vfio-pci PF without enable_sriov"
    for vf in info.vfs:
        assert vf.driver is not None or vf.driver_override is None, f"{where}: {vf}"
    if stored is not None and info.vfs:
        # end to end: a consumer opens a VF with what vfioctl hands out
        assert mgr.check_vf(info.vfs[0].addr).with_token, where


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_kill_at_every_point(case: Case, points: Points, tmp_path: Path) -> None:
    def setup(n: int) -> tuple[SimHost, Path]:
        path = tmp_path / f"{case.name}-{n}.toml"
        path.write_text(bundled_text(case.host))
        host = _fresh(path)
        points.at = 0
        case.setup(HostdevManager(host))
        return host, path

    clean, _ = setup(0)
    start = _state(clean, case)
    points.count = 0
    case.op(HostdevManager(clean))
    total = points.count
    end = _state(clean, case)
    assert total > 4, "the operation has crash points"
    seen_sides: set[str] = set()
    for n in range(1, total + 1):
        host, path = setup(n)
        points.count, points.at = 0, n
        with pytest.raises(Killed):
            case.op(HostdevManager(host))
        where = f"{case.name}: killed at point {n}/{total} ({points.where})"
        points.at = 0
        after = _fresh(path)                # the next vfioctl process
        HostdevManager(after).recover()
        now = _state(after, case)
        if case.name.startswith("token"):
            # a token operation either happened or did not; the copy matches the kernel
            assert now[:3] == start[:3], where
            assert now[3] in (start[3], end[3], None), where
        else:
            assert now in (start, end), f"{where}: half-done {now}"
        seen_sides.add("end" if now == end else "start" if now == start else "other")
        _agree(after, case, where)
        # the host is usable: the operation runs to its end now
        case.op(HostdevManager(after))
        _agree(after, case, where + ", then run again")
        assert _state(after, case)[:3] == end[:3], where
    assert "start" in seen_sides or "end" in seen_sides
