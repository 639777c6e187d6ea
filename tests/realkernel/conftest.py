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
    """The bundled machine booted with this guest's kernel: the release it reports and
    whether it was built with IOMMUFD and the vfio cdev (``/dev/iommu``) are inputs to
    the model, like the hardware; every behaviour the scenarios see is then the model's."""
    try:
        from vfioctl.sim.host import SimHost
        from vfioctl.sim.loader import bundled_text
    except ImportError:
        return None
    text = twin_text(bundled_text(SIM_HOST), os.uname().release,
                     iommufd=os.path.exists("/dev/iommu"), built_in=built_in_modules())
    return GuestKernel(SimHost.from_text(text, name=f"sim:{SIM_HOST}"))


def built_in_modules() -> frozenset[str]:
    """The modules built into this kernel (kmod's ``modules.builtin``), ``-`` as ``_``."""
    path = Path(f"/lib/modules/{os.uname().release}/modules.builtin")
    if not path.is_file():
        return frozenset()
    return frozenset(line.rsplit("/", 1)[-1].removesuffix(".ko").replace("-", "_")
                     for line in path.read_text().split())


def twin_text(text: str, release: str, *, iommufd: bool,
              built_in: frozenset[str] = frozenset()) -> str:
    """A host description booted with another kernel: the ``[host]`` table's release
    (and iommufd) replaced, and every ``[[driver]]`` whose module that kernel builds in
    made built in (registered from boot, as the tier's 7.3 has even vfio-pci)."""
    lines = text.splitlines(keepends=True)
    start = lines.index("[host]\n")
    out = lines[:start + 1]
    if iommufd:
        out.append("iommufd = true\n")
    section = "[host]"
    driver_name: str | None = None
    for line in lines[start + 1:]:
        if line.startswith("["):
            section, driver_name = line.strip(), None
            out.append(line)
            continue
        if section == "[host]":
            if line.startswith("iommufd"):
                continue
            out.append(f'kernel = "{release}"\n' if line.startswith("kernel =") else line)
            continue
        if section == "[[driver]]":
            if line.startswith("name = "):
                driver_name = line.split('"')[1]
                out.append(line)
                if driver_name.replace("-", "_") in built_in:
                    out.append('module = ""\n')
                continue
            if driver_name is not None and driver_name.replace("-", "_") in built_in and \
                    line.startswith(("module =", "loaded =")):
                continue
        out.append(line)
    return "".join(out)


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
