"""Fixtures of the DRA tests: short socket paths, a fake API server, plugin processes."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from drahelp import FakeApiServer, PluginPaths, PluginProcess, TestKubelet, gen_stubs

import vfioctl

pytest.importorskip("grpc", reason="the DRA driver needs grpcio (the 'dra' extra)")
pytest.importorskip("kubernetes", reason="the DRA driver needs the kubernetes client")


@pytest.fixture(scope="session", autouse=True)
def _stubs() -> None:
    gen_stubs()


@pytest.fixture
def root() -> Iterator[Path]:
    # Not tmp_path: pytest's directories are deep enough to pass sun_path's 108 bytes.
    path = Path(tempfile.mkdtemp(prefix="dra-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    server = FakeApiServer().start()
    yield server
    server.stop()


@pytest.fixture
def host(root: Path) -> Callable[[str], str]:
    """``host(name)``: a writable copy of bundled simulated host ``name``; its spec."""
    def make(name: str) -> str:
        return vfioctl.copy_simulated_host(name, root / f"{name}.toml")
    return make


@pytest.fixture
def start_plugin(root: Path, api: FakeApiServer) -> Iterator[
        Callable[..., tuple[PluginProcess, TestKubelet]]]:
    """Start ``vfioctl dra plugin`` on a host spec and register a test kubelet with it."""
    started: list[tuple[PluginProcess, TestKubelet]] = []
    kubeconfig = api.kubeconfig(root / "kubeconfig")

    def start(spec: str, **kwargs: object) -> tuple[PluginProcess, TestKubelet]:
        proc = PluginProcess(spec, PluginPaths(root), kubeconfig, root / "plugin.log",
                             **kwargs)  # type: ignore[arg-type]
        proc.wait_ready()
        kubelet = TestKubelet(proc.paths.reg_socket)
        started.append((proc, kubelet))
        return proc, kubelet

    yield start
    for proc, kubelet in started:
        kubelet.close()
        proc.stop()
