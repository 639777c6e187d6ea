"""Fixtures for the manager's policy tests: writable simulated hosts with a state dir."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from policytest import make_host

from vfioctl.pci import settle as settle_mod
from vfioctl.sim.host import SimHost


@pytest.fixture
def sim(tmp_path: Path) -> Callable[[str], SimHost]:
    """``sim(name)``: a fresh writable host; each call gets its own state directory."""
    counter = iter(range(10_000))

    def make(name: str = "policy") -> SimHost:
        return make_host(name, tmp_path / f"state{next(counter)}")

    return make


@pytest.fixture(autouse=True)
def _no_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    # The simulator binds synchronously; never wait for a driver link to appear.
    monkeypatch.setattr(settle_mod, "SETTLE_SECONDS", 0.0)
