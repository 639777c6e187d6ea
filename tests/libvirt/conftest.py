"""Fixtures for the libvirt front-end tests: a writable simulated host named by
``VFIOCTL_HOST`` (as the installed hook script sets it), a private handoff directory,
and the emulator wrapper installed in a scratch directory."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from vfioctl.pci import settle as settle_mod
from vfioctl.sim.loader import bundled_text

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))


@pytest.fixture(autouse=True)
def _no_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settle_mod, "SETTLE_SECONDS", 0.0)


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "run" / "vfioctl-libvirt"
    monkeypatch.setenv("VFIOCTL_LIBVIRT_RUN_DIR", str(path))
    return path


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_dir: Path) -> Path:
    """The workstation (GPU 01:00.0 sharing group 1 with its audio 01:00.1)."""
    path = tmp_path / "ws.toml"
    path.write_text(bundled_text("workstation"))
    monkeypatch.setenv("VFIOCTL_HOST", f"sim:{path}")
    return path


@pytest.fixture
def srv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_dir: Path) -> Path:
    """The SR-IOV server with PF 0000:03:00.0 driven from userspace: on vfio-pci, two
    VFs (03:02.0, 03:02.1), a stored VF token (set up through the facade)."""
    import vfioctl

    path = tmp_path / "srv.toml"
    path.write_text(bundled_text("sriov-server"))
    with vfioctl.open(f"sim:{path}") as host:
        host.detach(["0000:03:00.0"])
        host.set_numvfs("0000:03:00.0", 2, allow_enable_sriov=True)
        host.set_token("0000:03:00.0")
    monkeypatch.setenv("VFIOCTL_HOST", f"sim:{path}")
    return path


@pytest.fixture
def wrapper(tmp_path: Path, run_dir: Path) -> Path:
    """vfioctl's emulator wrapper, installed (with its hook) under tmp_path."""
    from vfioctl.libvirt import install

    path = tmp_path / "libexec" / "vfioctl-qemu"
    install(tmp_path / "hooks", path, env={"VFIOCTL_LIBVIRT_RUN_DIR": str(run_dir)})
    return path
