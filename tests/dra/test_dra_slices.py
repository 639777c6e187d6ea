"""ResourceSlices: the bodies the official client sends, checked against its models,
and republished when SR-IOV changes the node's devices."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from drahelp import DRIVER, NODE, FakeApiServer, wait_for
from kubernetes import client

import vfioctl


def roundtrip(doc: dict[str, Any]) -> dict[str, Any]:
    """The document as the client's model reads and writes it: a field the model does
    not know (a typo, a wrong nesting) is dropped, so the two differ."""
    model = client.V1ResourceSlice.from_dict(doc)
    out: dict[str, Any] = client.ApiClient().sanitize_for_serialization(model)
    return out


def devices(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["name"]: {k: next(iter(v.values())) for k, v in d["attributes"].items()}
            for d in doc["spec"]["devices"]}


def test_published_slice_is_a_valid_resource_slice_and_follows_sriov(
        host: Any, start_plugin: Any, api: FakeApiServer) -> None:
    spec = host("sriov-server")
    with vfioctl.open(spec) as h:          # a VM on the host holds one NIC
        h.prepare("win10", ["0000:04:00.1"])
    proc, kubelet = start_plugin(spec)
    name = f"{NODE}-vfio-vfioctl-io"
    wait_for(lambda: name in api.slices)
    [post] = [r for r in api.requests if r.method == "POST"]
    body = post.body
    assert roundtrip(body) == body
    assert body["apiVersion"] == "resource.k8s.io/v1" and body["kind"] == "ResourceSlice"
    assert body["spec"]["driver"] == DRIVER and body["spec"]["nodeName"] == NODE
    assert body["spec"]["pool"] == {"name": NODE, "generation": 1, "resourceSliceCount": 1}
    [owner] = body["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Node", NODE, api.node_uid)
    found = devices(body)
    pf = found["pci-0000-03-00-0"]
    assert pf == {
        "pciBusID": "0000:03:00.0", "resource.kubernetes.io/pciBusID": "0000:03:00.0",
        "vendor": "8086", "deviceID": pf["deviceID"], "class": "020000",
        "iommuGroup": 7, "groupSize": 1, "takesOthers": False, "isVF": False,
        "pcieRoot": "pci0000:00", "resource.kubernetes.io/pcieRoot": "pci0000:00",
        **({"numaNode": pf["numaNode"]} if "numaNode" in pf else {}),
    }
    # the boot disk, the console's group, the bridges, a device held for another owner
    # are not offered
    assert "pci-0000-04-00-1" not in found and "pci-0000-04-00-0" in found
    assert "pci-0000-00-17-0" not in found and "pci-0000-07-00-0" not in found
    assert not any(d.startswith("pci-0000-00-03") for d in found)

    with vfioctl.open(spec) as h:
        h.detach(["0000:03:00.0"])
        h.set_numvfs("0000:03:00.0", 2, allow_enable_sriov=True)
    wait_for(lambda: "pci-0000-03-02-1" in devices(api.slices[name]))
    puts = [r for r in api.requests if r.method == "PUT"]
    put = puts[-1]
    assert roundtrip(put.body) == put.body
    # every republication is a newer generation of the pool
    assert [p.body["spec"]["pool"]["generation"] for p in puts] == \
        list(range(2, 2 + len(puts)))
    now = devices(put.body)
    assert "pci-0000-03-00-0" not in now          # its VFs would go with it
    for vf in ("pci-0000-03-02-0", "pci-0000-03-02-1"):
        assert now[vf]["isVF"] is True and now[vf]["pfPciBusID"] == "0000:03:00.0"
    # a device held for a claim of this driver stays offered (it is allocated to it)
    with vfioctl.open(spec) as h:
        h.set_token("0000:03:00.0")
    uid = api.add_claim("vf", [("vf", "pci-0000-03-02-0")])
    kubelet.register()
    assert kubelet.prepare(("default", "vf", uid)).claims[uid].error == ""
    with vfioctl.open(spec) as h:
        h.set_numvfs("0000:04:00.0", 1)       # a change: a new publication
    wait_for(lambda: "pci-0000-04-02-0" in devices(api.slices[name]))
    assert "pci-0000-03-02-0" in devices(api.slices[name])
    proc.stop()
    assert api.requests[-1].method == "DELETE" and name not in api.slices


def test_cli_slices_prints_the_same_document(host: Any) -> None:
    spec = host("workstation")
    result = subprocess.run([sys.executable, "-m", "vfioctl", "--host", spec, "dra",
                             "slices", "--node-name", NODE], capture_output=True,
                            text=True, timeout=600, check=True)
    doc = json.loads(result.stdout)
    assert roundtrip(doc) == doc
    found = devices(doc)
    assert found["pci-0000-01-00-0"]["takesOthers"] is True
    assert found["pci-0000-01-00-0"]["groupSize"] == 2
    # the chipset's group (LPC bridge + audio + SMBus) is never offered
    assert not any(n.startswith("pci-0000-00-1f") for n in found)
