"""Fixtures for the simulator's own tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from simtest import make_host

from vfioctl.sim.host import SimHost


@pytest.fixture
def sim_host() -> Callable[..., SimHost]:
    """``sim_host(name, faults={glob: errno})``: a writable in-memory host."""
    return make_host
