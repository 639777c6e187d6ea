"""Fixtures for the ``vfioctl start``/``release`` tests.

The manager side always runs on a simulated host file (a copy of the bundled
``sriov-server``, as ``vfioctl sim copy`` writes it); QEMU is Debian's real
``qemu-system-x86_64`` (7.2) with stand-in devices (``pci-testdev``) instead of vfio-pci,
so nothing here touches this machine's /sys or /dev/vfio.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from launchtest import HERE

from vfioctl.launch import Launch
from vfioctl.pci import settle as settle_mod
from vfioctl.sim.host import SimHost
from vfioctl.sim.loader import bundled_text


@pytest.fixture(autouse=True)
def _no_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    # The simulator binds synchronously; never wait for a driver link to appear.
    monkeypatch.setattr(settle_mod, "SETTLE_SECONDS", 0.0)


@pytest.fixture(autouse=True)
def _runtime_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep fallback runtime directories (long socket paths) inside the test's tmp dir."""
    run = tmp_path / "xdg"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    return run


@pytest.fixture
def host_file(tmp_path: Path) -> Path:
    """A writable copy of the bundled sriov-server host (``vfioctl sim copy``)."""
    path = tmp_path / "h.toml"
    path.write_text(bundled_text("sriov-server"))
    return path


@pytest.fixture
def host(host_file: Path) -> SimHost:
    return SimHost.from_file(host_file)


@pytest.fixture
def cli_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Environment for running ``python -m vfioctl.cli.main`` as a subprocess."""
    env = dict(os.environ)
    env.pop("VFIOCTL_HOST", None)
    env["XDG_RUNTIME_DIR"] = str(tmp_path / "xdg")
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent.parent / "src"),
                                         env.get("PYTHONPATH", "")])
    yield env



@pytest.fixture
def launched() -> Iterator[list[Launch]]:
    """Collects launches; whatever is still running at the end is killed and reaped."""
    launches: list[Launch] = []
    yield launches
    for launch in launches:
        if launch.process is not None and launch.process.poll() is None:
            launch.process.kill()
            launch.process.wait(10)
