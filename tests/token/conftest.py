"""Fixtures for the VF-token and SR-IOV tests (helpers live in tokentest.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tokentest import Q35_PF, Q35_PLAIN, host_file, userspace_pf

from vfioctl.sim.host import SimHost


@pytest.fixture
def q35(tmp_path: Path) -> SimHost:
    """sim:q35-vmtest: NVMe PF on vfio-pci with 2 VFs, 02:00.0 on vfio-pci (no SR-IOV)."""
    host = host_file(tmp_path, "q35-vmtest")
    userspace_pf(host, Q35_PF, 2, plain=Q35_PLAIN)
    return host


@pytest.fixture
def make_host(tmp_path: Path) -> Callable[[str], SimHost]:
    return lambda name: host_file(tmp_path, name)
