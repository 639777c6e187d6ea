"""Real-kernel scenarios: fixtures, and the guard that keeps them inside the test VM.

These tests write to ``/sys`` (driver_override, unbind, sriov_numvfs) and open
``/dev/vfio``: they must only ever run inside the guest that ``make test-vm`` boots,
which sets ``VFIOCTL_IN_TEST_VM=1`` (vmtest/guest/runner.py). Everywhere else every
test here is skipped at collection, before any fixture could touch the machine.

The modules run in file-name order and share one kernel: ``test_10_*`` sees the
coldplugged boot state, later modules bind devices to vfio-pci and enable VFs. Each
module states the state it starts from and the state it leaves.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .differential import Differential
from .guest_kernel import GuestKernel, RawFs
from .vfioctl_cli import VfioctlCli

IN_TEST_VM = os.environ.get("VFIOCTL_IN_TEST_VM") == "1"
HERE = Path(__file__).resolve().parent
SIM_HOST = "q35-vmtest"  # the bundled model of exactly this machine


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip this directory's tests unless running inside the test VM."""
    if IN_TEST_VM:
        return
    skip = pytest.mark.skip(
        reason="real-kernel scenario: runs only inside the test VM (make test-vm), "
        "which sets VFIOCTL_IN_TEST_VM=1"
    )
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def kernel() -> GuestKernel:
    """The guest's kernel through raw sysfs and ioctls: the oracle, independent of vfioctl.

    Its twin is the bundled simulated host ``sim:q35-vmtest`` (in memory, writable): every
    write the scenarios make is made there too (see guest_kernel.py).
    """
    return GuestKernel(RawFs(), twin=_sim_twin())


def _sim_twin() -> GuestKernel | None:
    try:
        from vfioctl.sim.host import SimHost
    except ImportError:
        return None
    return GuestKernel(SimHost.bundled(SIM_HOST, writable=True))


@pytest.fixture(scope="session")
def differential(kernel: GuestKernel) -> Differential:
    """Checkpoints where the simulated twin is compared with the kernel (test_90 reports)."""
    return Differential(kernel)


@pytest.fixture(scope="session")
def out_dir() -> Path:
    """The results directory shared with the host (snapshots land here)."""
    return Path(os.environ["VFIOCTL_VMTEST_OUT"])


@pytest.fixture(scope="session")
def vfioctl() -> Iterator[VfioctlCli]:
    """The product's CLI against the live kernel (``--host linux``)."""
    yield VfioctlCli("linux")
