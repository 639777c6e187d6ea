"""The node's devices as a ResourceSlice (``resource.k8s.io/v1``), kept up to date.

One pool per node (named after the node), one slice in it, built with the official
client's models (:func:`build_slice`). :class:`Publisher` creates it, replaces it when
the devices change — SR-IOV VFs created or removed, drivers rebound so that a group's
verdict changes — with the pool's generation one higher (the scheduler uses only the
newest generation), and deletes it on shutdown. Changes are found by polling the read
model (a few sysfs reads per function; the default is every 10 s): sysfs has no
inotify for driver binds, and udev is not in every DaemonSet.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from vfioctl import Session
from vfioctl.dra.inventory import DraDevice, list_devices

log = logging.getLogger("vfioctl.dra")

API_VERSION = "resource.k8s.io/v1"


def slice_name(node: str, driver: str) -> str:
    """``<node>-<driver with dots as dashes>`` (a DNS subdomain, at most 253 bytes)."""
    return f"{node}-{driver.replace('.', '-')}"[:253]


def _attribute(value: str | int | bool) -> Any:
    from kubernetes import client

    if isinstance(value, bool):
        return client.V1DeviceAttribute(bool=value)
    if isinstance(value, int):
        return client.V1DeviceAttribute(int=value)
    return client.V1DeviceAttribute(string=value)


def build_slice(node: str, driver: str, devices: Sequence[DraDevice], generation: int,
                owner_uid: str | None = None) -> Any:
    """The ResourceSlice model (``kubernetes.client.V1ResourceSlice``) of ``devices``."""
    from kubernetes import client

    owners = None
    if owner_uid:
        # Owned by the Node: deleted with it.
        owners = [client.V1OwnerReference(api_version="v1", kind="Node", name=node,
                                          uid=owner_uid, controller=True)]
    return client.V1ResourceSlice(
        api_version=API_VERSION, kind="ResourceSlice",
        metadata=client.V1ObjectMeta(name=slice_name(node, driver), owner_references=owners),
        spec=client.V1ResourceSliceSpec(
            driver=driver, node_name=node,
            pool=client.V1ResourcePool(name=node, generation=generation,
                                       resource_slice_count=1),
            devices=[client.V1Device(name=d.name, attributes={
                k: _attribute(v) for k, v in sorted(d.attributes.items())})
                for d in devices]))


def to_json(model: Any) -> dict[str, Any]:
    """The wire form (camelCase, no nulls) of a client model."""
    from kubernetes import client

    serialize: Any = client.ApiClient().sanitize_for_serialization
    doc: dict[str, Any] = serialize(model)
    return doc


def fingerprint(devices: Sequence[DraDevice]) -> str:
    text = json.dumps([[d.name, d.attributes] for d in devices], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


class Publisher:
    """Keeps this node's ResourceSlice equal to the host's devices."""

    def __init__(self, api_client: Any, node: str, driver: str,
                 session_factory: Callable[[], Session],
                 is_claim: Callable[[str], bool] = lambda owner: False) -> None:
        from kubernetes import client

        self._api = client.ResourceV1Api(api_client)
        self._core = client.CoreV1Api(api_client)
        self.node = node
        self.driver = driver
        self._session = session_factory
        self._is_claim = is_claim
        self._seen: str | None = None
        self.generation = 0
        self._stop = threading.Event()

    def _current(self) -> Any | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self._api.read_resource_slice(slice_name(self.node, self.driver))
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def _node_uid(self) -> str | None:
        from kubernetes.client.exceptions import ApiException

        try:
            node: Any = self._core.read_node(self.node)
            uid: str | None = node.metadata.uid
            return uid
        except ApiException:
            return None   # no right to read Nodes (or no Node): unowned, still correct

    def sync(self) -> bool:
        """Publish if the devices changed since the last publication; True if it did."""
        with self._session() as session:
            devices = list_devices(session, self._is_claim)
        mark = fingerprint(devices)
        if mark == self._seen:
            return False
        current = self._current()
        if current is None:
            self.generation = max(self.generation, 0) + 1
            body = build_slice(self.node, self.driver, devices, self.generation,
                               self._node_uid())
            self._api.create_resource_slice(body)
        else:
            self.generation = max(self.generation, current.spec.pool.generation) + 1
            body = build_slice(self.node, self.driver, devices, self.generation,
                               self._node_uid())
            body.metadata.resource_version = current.metadata.resource_version
            self._api.replace_resource_slice(body.metadata.name, body)
        self._seen = mark
        log.info("published %d devices (pool %s generation %d)", len(devices), self.node,
                 self.generation)
        return True

    def run(self, interval: float = 10.0) -> None:
        """Sync until :meth:`stop`; an API error is logged and retried next round."""
        while not self._stop.is_set():
            try:
                self.sync()
            except Exception as err:   # the API server away for a while: keep serving
                log.warning("publishing the ResourceSlice failed: %s", err)
                self._seen = None
            self._stop.wait(interval)

    def stop(self) -> None:
        self._stop.set()

    def withdraw(self) -> None:
        """Delete this node's slice (the plugin is going away: nothing to allocate)."""
        from kubernetes.client.exceptions import ApiException

        try:
            self._api.delete_resource_slice(slice_name(self.node, self.driver))
        except ApiException as err:
            if err.status != 404:
                log.warning("withdrawing the ResourceSlice failed: %s", err)
        except Exception as err:   # shutting down: say so, never fail the exit for it
            log.warning("withdrawing the ResourceSlice failed: %s", err)


__all__ = ["API_VERSION", "Publisher", "build_slice", "fingerprint", "slice_name",
           "to_json"]
