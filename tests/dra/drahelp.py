"""Test doubles for the DRA tests: a fake API server and a kubelet on the real wire.

:class:`FakeApiServer` is a tiny HTTP server that answers the few Kubernetes API calls
the driver makes (read a ResourceClaim, read/create/replace/delete a ResourceSlice,
read a Node) from an in-memory store and records every request, so that tests check
what the official client sent. :class:`TestKubelet` is the kubelet's side of the two
gRPC services, over the plugin's unix sockets, with stubs generated from the driver's
own .proto files (tools/gen-proto.sh): the same bytes a kubelet sends.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

DRIVER = "vfio.vfioctl.io"
NODE = "node1"
REPO = Path(__file__).resolve().parents[2]

# A bound that only a hang reaches: a loaded machine makes these tests slower, never red.
HANG_S = 600.0


@dataclass
class Request:
    method: str
    path: str
    body: Any


@dataclass
class FakeApiServer:
    claims: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    slices: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    node_uid: str = "6f0c1c8e-0000-4000-8000-00000000node"
    _server: ThreadingHTTPServer | None = None
    _version: int = 0

    def start(self) -> FakeApiServer:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, doc: Any) -> None:
                data = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                api.requests.append(Request(self.command, self.path.split("?")[0], body))
                code, doc = api.route(self.command, self.path.split("?")[0], body)
                self._send(code, doc)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": self.url}}],
            "users": [{"name": "test", "user": {"token": "not-a-secret"}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
        }))
        return path

    @staticmethod
    def _not_found(what: str) -> tuple[int, Any]:
        return 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                     "reason": "NotFound", "code": 404, "message": f"{what} not found"}

    def route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        if parts[:3] == ["apis", "resource.k8s.io", "v1"] and len(parts) == 7 \
                and parts[3] == "namespaces" and parts[5] == "resourceclaims":
            claim = self.claims.get((parts[4], parts[6]))
            return (200, claim) if claim is not None else self._not_found("claim")
        if parts[:4] == ["apis", "resource.k8s.io", "v1", "resourceslices"]:
            name = parts[4] if len(parts) > 4 else None
            if method == "POST":
                self._version += 1
                body["metadata"]["resourceVersion"] = str(self._version)
                self.slices[body["metadata"]["name"]] = body
                return 201, body
            if name is None:
                return 405, {}
            if method == "GET":
                found = self.slices.get(name)
                return (200, found) if found else self._not_found("slice")
            if method == "PUT":
                old = self.slices.get(name)
                if old is None:
                    return self._not_found("slice")
                if body["metadata"].get("resourceVersion") != old["metadata"][
                        "resourceVersion"]:
                    return 409, {"kind": "Status", "code": 409, "reason": "Conflict"}
                self._version += 1
                body["metadata"]["resourceVersion"] = str(self._version)
                self.slices[name] = body
                return 200, body
            if method == "DELETE":
                gone = self.slices.pop(name, None)
                # the API server answers a delete with the object deleted
                return (200, gone) if gone else self._not_found("slice")
        if parts[:3] == ["api", "v1", "nodes"] and len(parts) == 4 and parts[3] == NODE:
            return 200, {"apiVersion": "v1", "kind": "Node",
                         "metadata": {"name": NODE, "uid": self.node_uid}}
        return self._not_found(path)

    def add_claim(self, name: str, devices: Sequence[tuple[str, str]], *,
                  take_group: bool | None = None, namespace: str = "default",
                  params: Any = None, pod_claim: str | None = None) -> str:
        """An allocated claim of ``devices`` ((request, device name) pairs); its UID."""
        uid = str(uuid.uuid4())
        config = []
        if params is None and take_group is not None:
            params = {"apiVersion": "vfio.vfioctl.io/v1alpha1", "kind": "VfioConfig",
                      "takeGroup": take_group}
        if params is not None:
            config.append({"source": "FromClaim", "requests": [],
                           "opaque": {"driver": DRIVER, "parameters": params}})
        meta: dict[str, Any] = {"name": name, "namespace": namespace, "uid": uid}
        if pod_claim:
            meta["annotations"] = {"resource.kubernetes.io/pod-claim-name": pod_claim}
        self.claims[(namespace, name)] = {
            "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim", "metadata": meta,
            "spec": {"devices": {"requests": [
                {"name": r, "exactly": {"deviceClassName": "vfio.vfioctl.io"}}
                for r in sorted({r for r, _ in devices})]}},
            "status": {"allocation": {"devices": {
                "results": [{"request": r, "driver": DRIVER, "pool": NODE, "device": d}
                            for r, d in devices],
                "config": config}}},
        }
        return uid


def gen_stubs() -> None:
    """Generate the stubs from the driver's .proto files if they are not there."""
    if not (REPO / "src/vfioctl/dra/gen/dra_v1_pb2_grpc.py").exists():
        subprocess.run([str(REPO / "tools/gen-proto.sh")], check=True,
                       stdout=subprocess.DEVNULL)


@dataclass
class PluginPaths:
    root: Path

    @property
    def registry(self) -> Path:
        return self.root / "registry"

    @property
    def plugins(self) -> Path:
        return self.root / "plugins"

    @property
    def cdi(self) -> Path:
        return self.root / "cdi"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def reg_socket(self) -> Path:
        return self.registry / f"{DRIVER}-reg.sock"

    def args(self) -> list[str]:
        return ["--registry-dir", str(self.registry), "--plugins-dir", str(self.plugins),
                "--cdi-dir", str(self.cdi), "--state-dir", str(self.state)]


class PluginProcess:
    """``vfioctl dra plugin`` as the DaemonSet runs it, in a child process."""

    def __init__(self, host_spec: str, paths: PluginPaths, kubeconfig: Path,
                 log: Path, *, wrapper: Sequence[str] = (), env: dict[str, str] | None = None,
                 publish: bool = True, extra: Sequence[str] = ()) -> None:
        cmd = [sys.executable, *wrapper] if wrapper else [sys.executable, "-m", "vfioctl"]
        cmd += ["--host", host_spec, "dra", "plugin", "--node-name", NODE,
                *paths.args(), "--kubeconfig", str(kubeconfig), "--interval", "0.2"]
        if not publish:
            cmd.append("--no-publish")
        cmd += extra
        self.paths = paths
        self.log = log
        full_env = {**os.environ, **(env or {})}
        full_env.pop("KUBERNETES_SERVICE_HOST", None)
        self._out = log.open("ab")
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=subprocess.STDOUT,
                                     env=full_env, cwd=REPO)

    def wait_ready(self, timeout: float = HANG_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._accepts(self.paths.reg_socket):
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"plugin exited {self.proc.returncode}: "
                                     + self.log.read_text())
            time.sleep(0.05)
        raise AssertionError("plugin did not start: " + self.log.read_text())

    @staticmethod
    def _accepts(path: Path) -> bool:
        """A listener is there (a socket file left by a killed plugin is not one)."""
        import socket

        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            try:
                sock.connect(str(path))
            except OSError:
                return False
            return True

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(HANG_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        return self.proc.returncode


class TestKubelet:
    """The kubelet's calls, over the plugin's sockets, on the real wire."""

    __test__ = False

    def __init__(self, registration_socket: Path) -> None:
        import grpc

        from vfioctl.dra.gen import (
            dra_v1_pb2,
            dra_v1_pb2_grpc,
            dra_v1beta1_pb2,
            dra_v1beta1_pb2_grpc,
            pluginregistration_v1_pb2,
            pluginregistration_v1_pb2_grpc,
        )

        self.grpc = grpc
        self.reg_pb = pluginregistration_v1_pb2
        self.pb = {"v1": dra_v1_pb2, "v1beta1": dra_v1beta1_pb2}
        self._grpc_mods = {"v1": dra_v1_pb2_grpc, "v1beta1": dra_v1beta1_pb2_grpc}
        self._reg_channel = grpc.insecure_channel(f"unix:{registration_socket}")
        self.registration = pluginregistration_v1_pb2_grpc.RegistrationStub(
            self._reg_channel)
        self.info: Any = None
        self._channel: Any = None

    def register(self) -> Any:
        """GetInfo, check it as the kubelet does, report success; the PluginInfo."""
        info = self.registration.GetInfo(self.reg_pb.InfoRequest(), timeout=HANG_S)
        ok = info.type == "DRAPlugin" and "v1.DRAPlugin" in info.supported_versions
        self.registration.NotifyRegistrationStatus(self.reg_pb.RegistrationStatus(
            plugin_registered=ok, error="" if ok else "unsupported"), timeout=HANG_S)
        self.info = info
        self._channel = self.grpc.insecure_channel(f"unix:{info.endpoint}")
        return info

    def _stub(self, version: str) -> Any:
        return self._grpc_mods[version].DRAPluginStub(self._channel)

    def _claims(self, version: str, claims: Sequence[tuple[str, str, str]]) -> list[Any]:
        pb = self.pb[version]
        return [pb.Claim(namespace=ns, name=name, uid=uid) for ns, name, uid in claims]

    def prepare(self, *claims: tuple[str, str, str], version: str = "v1") -> Any:
        pb = self.pb[version]
        return self._stub(version).NodePrepareResources(
            pb.NodePrepareResourcesRequest(claims=self._claims(version, claims)),
            timeout=HANG_S)

    def unprepare(self, *claims: tuple[str, str, str], version: str = "v1") -> Any:
        pb = self.pb[version]
        return self._stub(version).NodeUnprepareResources(
            pb.NodeUnprepareResourcesRequest(claims=self._claims(version, claims)),
            timeout=HANG_S)

    def close(self) -> None:
        self._reg_channel.close()
        if self._channel is not None:
            self._channel.close()


def wait_for(predicate: Any, timeout: float = HANG_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def iter_files(root: Path) -> Iterator[Path]:
    for path in root.rglob("*"):
        if path.is_file():
            yield path
