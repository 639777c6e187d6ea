"""The kubelet plugin: the registration service and the DRA service on unix sockets.

The kubelet's plugin watcher sees ``<registry>/<driver>-reg.sock`` appear, asks
``GetInfo`` (type ``DRAPlugin``, the driver name, the DRA socket as endpoint, the
services offered: ``v1.DRAPlugin`` and ``v1beta1.DRAPlugin``) and reports with
``NotifyRegistrationStatus``; it then calls ``NodePrepareResources`` and
``NodeUnprepareResources`` on the endpoint, one gRPC service per API version, both
answered by the same :class:`vfioctl.dra.driver.Driver`. Each claim of a request gets
an entry in the response — its devices or its error — so one refused claim does not
fail the others.

The DRA socket listens before the registration socket appears (the kubelet dials the
endpoint as soon as it has registered), and the registration socket goes first on
shutdown (the kubelet then stops sending work).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

from vfioctl.dra.claims import ClaimRef
from vfioctl.dra.driver import ClaimError, Driver
from vfioctl.dra.wire import stub

log = logging.getLogger("vfioctl.dra")

PLUGIN_TYPE = "DRAPlugin"
SUPPORTED_VERSIONS = ("v1.DRAPlugin", "v1beta1.DRAPlugin")


def _refs(request: Any) -> list[ClaimRef]:
    return [ClaimRef(c.namespace, c.name, c.uid) for c in request.claims]


def _dra_servicer(driver: Driver, version: str) -> Any:
    pb = stub(f"dra_{version}_pb2")
    grpc_mod = stub(f"dra_{version}_pb2_grpc")

    class Servicer(grpc_mod.DRAPluginServicer):  # type: ignore[misc,name-defined]
        def NodePrepareResources(self, request: Any, context: Any) -> Any:
            response = pb.NodePrepareResourcesResponse()
            for ref in _refs(request):
                entry = response.claims[ref.uid]
                try:
                    for dev in driver.prepare(ref):
                        entry.devices.add(request_names=[dev.request], pool_name=dev.pool,
                                          device_name=dev.device,
                                          cdi_device_ids=list(dev.cdi_ids))
                except ClaimError as err:
                    entry.error = str(err)
            return response

        def NodeUnprepareResources(self, request: Any, context: Any) -> Any:
            response = pb.NodeUnprepareResourcesResponse()
            for ref in _refs(request):
                entry = response.claims[ref.uid]
                try:
                    driver.unprepare(ref)
                except ClaimError as err:
                    entry.error = str(err)
            return response

    return Servicer(), grpc_mod


def _registration_servicer(name: str, endpoint: Path, registered: threading.Event) -> Any:
    pb = stub("pluginregistration_v1_pb2")
    grpc_mod = stub("pluginregistration_v1_pb2_grpc")

    class Servicer(grpc_mod.RegistrationServicer):  # type: ignore[misc,name-defined]
        def GetInfo(self, request: Any, context: Any) -> Any:
            return pb.PluginInfo(type=PLUGIN_TYPE, name=name, endpoint=str(endpoint),
                                 supported_versions=list(SUPPORTED_VERSIONS))

        def NotifyRegistrationStatus(self, request: Any, context: Any) -> Any:
            if request.plugin_registered:
                log.info("registered with the kubelet as %s", name)
                registered.set()
            else:
                log.error("the kubelet refused the registration: %s", request.error)
            return pb.RegistrationStatusResponse()

    return Servicer(), grpc_mod


def _listen(server: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)   # a socket left by a killed instance: listen anew (kubelet's rule)
    if not server.add_insecure_port(f"unix:{path}"):
        from vfioctl import HostError

        raise HostError(f"cannot listen on {path}")


class Plugin:
    """Both servers, started and stopped together."""

    def __init__(self, driver: Driver, *, workers: int = 4) -> None:
        import grpc

        self.driver = driver
        self.registered = threading.Event()
        config = driver.config
        self.dra_socket = config.dra_socket
        self.registration_socket = config.registration_socket
        self._dra = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
        for version in ("v1", "v1beta1"):
            servicer, mod = _dra_servicer(driver, version)
            mod.add_DRAPluginServicer_to_server(servicer, self._dra)
        self._reg = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
        servicer, mod = _registration_servicer(config.driver_name, self.dra_socket,
                                               self.registered)
        mod.add_RegistrationServicer_to_server(servicer, self._reg)

    def start(self) -> None:
        _listen(self._dra, self.dra_socket)
        self._dra.start()
        _listen(self._reg, self.registration_socket)
        self._reg.start()
        log.info("serving %s on %s (registration %s)", self.driver.config.driver_name,
                 self.dra_socket, self.registration_socket)

    def stop(self, grace: float = 5.0) -> None:
        self._reg.stop(0).wait()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.registration_socket)
        self._dra.stop(grace).wait()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.dra_socket)

    @contextlib.contextmanager
    def running(self) -> Iterator[Plugin]:
        self.start()
        try:
            yield self
        finally:
            self.stop()


__all__ = ["PLUGIN_TYPE", "SUPPORTED_VERSIONS", "Plugin"]
