"""What a claim asks of this driver: read from the ResourceClaim, not from the kubelet.

The kubelet's prepare call names a claim only (namespace, name, UID); what the
scheduler allocated (``status.allocation.devices.results``: request, driver, pool,
device) and the opaque configuration for this driver
(``status.allocation.devices.config[].opaque``, copied there from the claim and its
DeviceClass) are in the ResourceClaim. Results and configuration of other drivers are
ignored: one claim may hold devices of several.

The opaque parameters this driver understands (docs/kubernetes.md "Claim parameters")::

    {"apiVersion": "vfio.vfioctl.io/v1alpha1", "kind": "VfioConfig", "takeGroup": true}

``takeGroup`` is the group rule's opt-in (``detach --group``): the claim may take the
other members of its devices' IOMMU groups along. Unknown keys or kinds are refused,
so a typo cannot silently drop the opt-in.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from vfioctl import ConfigError, NotFound

CONFIG_API_VERSION = "vfio.vfioctl.io/v1alpha1"
CONFIG_KIND = "VfioConfig"
#: The annotation the resource claim controller sets on claims made from a template.
POD_CLAIM_NAME = "resource.kubernetes.io/pod-claim-name"

Json = Mapping[str, Any]


@dataclass(frozen=True)
class Allocated:
    """One device allocated to the claim by this driver."""

    request: str
    pool: str
    device: str


@dataclass(frozen=True)
class ClaimRef:
    """A claim as the kubelet names it."""

    namespace: str
    name: str
    uid: str


@dataclass(frozen=True)
class ClaimAllocation:
    """This driver's share of an allocated claim."""

    ref: ClaimRef
    devices: tuple[Allocated, ...]
    take_group: bool
    pod_claim_name: str | None = None


def _get(doc: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(doc, Mapping):
            return None
        doc = doc.get(key)
    return doc


def parse_config(params: Any, where: str) -> bool:
    """``takeGroup`` from one opaque parameters object.

    Raises:
        ConfigError: not our kind, or a key or value this version does not know.
    """
    if not isinstance(params, Mapping):
        raise ConfigError(f"{where}: the opaque parameters are not a JSON object")
    if params.get("apiVersion") != CONFIG_API_VERSION or params.get("kind") != CONFIG_KIND:
        raise ConfigError(
            f"{where}: parameters of apiVersion '{params.get('apiVersion')}' kind "
            f"'{params.get('kind')}' are not this driver's",
            hint=f"use apiVersion {CONFIG_API_VERSION}, kind {CONFIG_KIND}")
    unknown = sorted(set(params) - {"apiVersion", "kind", "takeGroup"})
    if unknown:
        raise ConfigError(f"{where}: unknown parameter '{unknown[0]}'",
                          hint="the parameters are apiVersion, kind and takeGroup")
    take = params.get("takeGroup", False)
    if not isinstance(take, bool):
        raise ConfigError(f"{where}: takeGroup must be true or false")
    return take


def parse_claim(doc: Json, ref: ClaimRef, driver: str) -> ClaimAllocation:
    """This driver's devices and parameters in a ResourceClaim (its JSON form).

    Raises:
        NotFound: the claim in the API is another one (UID differs: it was deleted and
            made again) or is not allocated. ConfigError: bad parameters.
    """
    uid = _get(doc, "metadata", "uid")
    if uid != ref.uid:
        raise NotFound(f"claim {ref.namespace}/{ref.name} has UID '{uid}', not "
                       f"'{ref.uid}'", hint="the claim was replaced; the kubelet retries")
    results = _get(doc, "status", "allocation", "devices", "results") or []
    devices = tuple(
        Allocated(str(r.get("request", "")), str(r.get("pool", "")),
                  str(r.get("device", "")))
        for r in results if isinstance(r, Mapping) and r.get("driver") == driver)
    if _get(doc, "status", "allocation") is None:
        raise NotFound(f"claim {ref.namespace}/{ref.name} is not allocated",
                       hint="the kubelet prepares allocated claims only; it retries")
    take_group = False
    configs = _get(doc, "status", "allocation", "devices", "config") or []
    for i, entry in enumerate(configs):
        opaque = _get(entry, "opaque")
        if not isinstance(opaque, Mapping) or opaque.get("driver") != driver:
            continue
        requests = _get(entry, "requests") or []
        if requests and not any(d.request in requests for d in devices):
            continue
        if parse_config(opaque.get("parameters"), f"config[{i}]"):
            take_group = True
    annotations = _get(doc, "metadata", "annotations") or {}
    pod_claim = annotations.get(POD_CLAIM_NAME) if isinstance(annotations, Mapping) \
        else None
    return ClaimAllocation(ref, devices, take_group,
                           pod_claim if isinstance(pod_claim, str) else None)


ClaimReader = Callable[[ClaimRef], Json]


def kubernetes_reader(api_client: Any) -> ClaimReader:
    """Read claims through the official client (``resource.k8s.io/v1``), as JSON."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from vfioctl import HostError

    api = client.ResourceV1Api(api_client)

    def read(ref: ClaimRef) -> Json:
        try:
            return _read(ref)
        except ApiException as err:
            if err.status == 404:
                raise NotFound(f"claim {ref.namespace}/{ref.name} not found in the API",
                               hint="it was deleted; the kubelet stops retrying") from None
            raise HostError(f"cannot read claim {ref.namespace}/{ref.name} from the API "
                            f"server: {err.status} {err.reason}",
                            hint="check the driver's RBAC (get resourceclaims); the "
                            "kubelet retries") from None

    def _read(ref: ClaimRef) -> Json:
        # The raw JSON, not the model: the parser reads the few fields it needs and
        # a newer API server's extra fields cannot fail a model's validation.
        response: Any = api.read_namespaced_resource_claim(ref.name, ref.namespace,
                                                           _preload_content=False)
        doc: Json = json.loads(response.data)
        return doc

    return read


__all__ = ["CONFIG_API_VERSION", "CONFIG_KIND", "POD_CLAIM_NAME", "Allocated",
           "ClaimAllocation", "ClaimReader", "ClaimRef", "kubernetes_reader",
           "parse_claim", "parse_config"]
