"""deploy/: every manifest is what the Kubernetes API models read, and the pieces fit
together (the names, paths and rights the plugin uses are the ones deployed)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from drahelp import DRIVER, REPO
from kubernetes import client

from vfioctl.dra.claims import CONFIG_API_VERSION, CONFIG_KIND
from vfioctl.dra.inventory import list_devices

DEPLOY = REPO / "deploy"
MODELS = {
    "Namespace": client.V1Namespace, "ServiceAccount": client.V1ServiceAccount,
    "ClusterRole": client.V1ClusterRole, "ClusterRoleBinding": client.V1ClusterRoleBinding,
    "DaemonSet": client.V1DaemonSet, "DeviceClass": client.V1DeviceClass,
    "ResourceClaimTemplate": client.V1ResourceClaimTemplate, "Pod": client.V1Pod,
}


def manifests() -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        out += [(path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return out


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in manifests() if doc["kind"] == kind]


def test_every_kubernetes_manifest_reads_back_unchanged_through_its_model() -> None:
    checked = 0
    for path, doc in manifests():
        if doc["apiVersion"].startswith("kubevirt.io/"):
            continue        # a CRD: no model in the Kubernetes client
        model = MODELS[doc["kind"]].from_dict(doc)
        back = client.ApiClient().sanitize_for_serialization(model)
        # a misspelt or misplaced field is dropped by the model: the documents differ
        assert back == doc, f"{path.name}: {doc['kind']} {doc['metadata']['name']}"
        checked += 1
    assert checked >= 10


def test_daemonset_mounts_what_the_plugin_uses() -> None:
    [ds] = by_kind("DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    [container] = pod["containers"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    args = dict(a.removeprefix("--").split("=", 1) for a in container["args"])
    for option in ("registry-dir", "plugins-dir", "cdi-dir", "state-dir"):
        assert args[option] in mounts
    assert {"/run/vfioctl", "/sys", "/dev"} <= mounts
    # the host paths are the same paths: the kubelet and the runtime see what we write
    volumes = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"]}
    for m in container["volumeMounts"]:
        assert volumes[m["name"]] == m["mountPath"]
    assert container["env"][0]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert pod["hostPID"] and pod["hostNetwork"]
    assert container["securityContext"]["privileged"] is True
    [sa] = by_kind("ServiceAccount")
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    assert sa["metadata"]["namespace"] == ds["metadata"]["namespace"]


def test_rbac_grants_the_calls_the_plugin_makes() -> None:
    [role] = by_kind("ClusterRole")
    rights = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"]
              for r in rule["resources"] for v in rule["verbs"]}
    for verb in ("get", "create", "update", "delete"):
        assert ("resource.k8s.io", "resourceslices", verb) in rights
    assert ("resource.k8s.io", "resourceclaims", "get") in rights
    assert ("", "nodes", "get") in rights
    [binding] = by_kind("ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]


def test_classes_claims_and_pods_name_each_other_and_real_attributes(
        tmp_path: Path) -> None:
    import vfioctl

    classes = {c["metadata"]["name"] for c in by_kind("DeviceClass")}
    assert DRIVER in classes
    templates = {t["metadata"]["name"]: t for t in by_kind("ResourceClaimTemplate")}
    # the attributes a node with VFs publishes
    spec = vfioctl.copy_simulated_host("sriov-server", tmp_path / "srv.toml")
    with vfioctl.open(spec) as host:
        host.set_numvfs("0000:03:00.0", 2)
        attributes = {k for d in list_devices(host) for k in d.attributes}
    expressions = []
    for c in by_kind("DeviceClass"):
        expressions += [s["cel"]["expression"] for s in c["spec"]["selectors"]]
        for config in c["spec"].get("config", []):
            params = config["opaque"]["parameters"]
            assert (params["apiVersion"], params["kind"]) == (CONFIG_API_VERSION,
                                                              CONFIG_KIND)
    for t in templates.values():
        for request in t["spec"]["spec"]["devices"]["requests"]:
            assert request["exactly"]["deviceClassName"] in classes
            expressions += [s["cel"]["expression"]
                            for s in request["exactly"].get("selectors", [])]
    used = set()
    for expr in expressions:
        assert 'device.driver == "vfio.vfioctl.io"' in expr or "attributes" in expr
        used |= set(re.findall(r'attributes\["vfio\.vfioctl\.io"\]\.(\w+)', expr))
    assert used and used <= attributes
    for pod in by_kind("Pod") + [d for _, d in manifests()
                                 if d["kind"] == "VirtualMachineInstance"]:
        for claim in pod["spec"]["resourceClaims"]:
            assert claim["resourceClaimTemplateName"] in templates


@pytest.mark.parametrize("path", sorted(DEPLOY.glob("*.yaml")), ids=lambda p: p.name)
def test_manifests_start_with_a_comment_saying_what_they_are(path: Path) -> None:
    assert path.read_text().startswith("#")
