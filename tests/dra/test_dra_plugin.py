"""The DRA plugin end to end: a test kubelet on the real wire, a simulated host.

Each test starts ``vfioctl dra plugin`` as a child process (what the DaemonSet runs)
on a writable copy of a bundled simulated host, with a fake API server holding the
claims, and drives it through the kubelet's gRPC services over the unix sockets. The
oracle is the host as the library reads it afterwards (drivers, held-for owners) and
the files the plugin wrote, checked against the CDI schema.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import threading
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from drahelp import DRIVER, NODE, FakeApiServer, iter_files, wait_for
from kubernetes import client

import vfioctl

SCHEMA = json.loads((Path(__file__).parent / "data/cdi-schema.json").read_text())
GPU, AUDIO = "0000:01:00.0", "0000:01:00.1"


def drivers(spec: str, *addrs: str) -> list[str | None]:
    with vfioctl.open(spec) as host:
        return [host.device(a).driver for a in addrs]


def held(spec: str) -> dict[str, str | None]:
    with vfioctl.open(spec) as host:
        return {str(s.record.addr): s.record.owner for s in host.status()}


def cdi_specs(root: Path) -> list[dict[str, Any]]:
    cdi = root / "cdi"
    return [json.loads(p.read_text()) for p in sorted(cdi.glob("*.json"))] \
        if cdi.exists() else []


def device_nodes(spec: dict[str, Any]) -> set[str]:
    nodes = {n["path"] for n in spec.get("containerEdits", {}).get("deviceNodes", [])}
    for dev in spec["devices"]:
        nodes |= {n["path"] for n in dev["containerEdits"].get("deviceNodes", [])}
    return nodes


def test_registration_names_the_driver_and_its_dra_socket(host: Any, start_plugin: Any,
                                                          root: Path) -> None:
    proc, kubelet = start_plugin(host("workstation"))
    info = kubelet.register()
    assert info.type == "DRAPlugin"
    assert info.name == DRIVER
    assert info.endpoint == str(root / "plugins" / DRIVER / "dra.sock")
    assert list(info.supported_versions) == ["v1.DRAPlugin", "v1beta1.DRAPlugin"]
    assert stat.S_ISSOCK(os.stat(info.endpoint).st_mode)
    wait_for(lambda: "registered with the kubelet" in proc.log.read_text())
    assert proc.stop() == 0
    # gone on shutdown: the kubelet's watcher unregisters the plugin
    assert not proc.paths.reg_socket.exists()
    assert not Path(info.endpoint).exists()


def test_shared_group_prepared_with_the_opt_in_and_given_back(
        host: Any, start_plugin: Any, api: FakeApiServer, root: Path) -> None:
    spec = host("workstation")
    uid = api.add_claim("gpu", [("gpu", "pci-0000-01-00-0")], take_group=True,
                        pod_claim="vm-gpu")
    _, kubelet = start_plugin(spec)
    kubelet.register()
    response = kubelet.prepare(("default", "gpu", uid))
    entry = response.claims[uid]
    assert entry.error == ""
    [dev] = entry.devices
    assert (list(dev.request_names), dev.pool_name, dev.device_name) == \
        (["gpu"], NODE, "pci-0000-01-00-0")
    assert list(dev.cdi_device_ids) == [f"{DRIVER}/vfio={uid}-pci-0000-01-00-0"]
    # the whole group went to vfio-pci, held for the claim's UID
    assert drivers(spec, GPU, AUDIO) == ["vfio-pci", "vfio-pci"]
    assert held(spec) == {GPU: uid, AUDIO: uid}
    [cdi] = cdi_specs(root)
    jsonschema.validate(cdi, SCHEMA)
    assert cdi["kind"] == f"{DRIVER}/vfio"
    assert [d["name"] for d in cdi["devices"]] == [f"{uid}-pci-0000-01-00-0"]
    assert device_nodes(cdi) == {"/dev/vfio/vfio", "/dev/vfio/1"}
    # KubeVirt's device metadata, for the claim and for the pod's claim name
    targets = {m["containerPath"]: Path(m["hostPath"])
               for m in cdi["containerEdits"]["mounts"]}
    base = "/var/run/kubernetes.io/dra-device-attributes"
    assert set(targets) == {f"{base}/resourceclaims/gpu/gpu/{DRIVER}-metadata.json",
                            f"{base}/resourceclaimtemplates/vm-gpu/gpu/"
                            f"{DRIVER}-metadata.json"}
    meta = json.loads(next(iter(targets.values())).read_text())
    assert (meta["apiVersion"], meta["kind"]) == ("metadata.resource.k8s.io/v1alpha1",
                                                  "DeviceMetadata")
    assert meta["metadata"] == {"name": "gpu", "namespace": "default", "uid": uid,
                                "generation": 1}
    assert meta["podClaimName"] == "vm-gpu"
    [request] = meta["requests"]
    assert request["name"] == "gpu"
    [mdev] = request["devices"]
    assert (mdev["driver"], mdev["pool"], mdev["name"]) == (DRIVER, NODE,
                                                            "pci-0000-01-00-0")
    # the value in a ResourceSlice attribute's own form, as KubeVirt decodes it
    assert client.V1DeviceAttribute.from_dict(
        mdev["attributes"]["resource.kubernetes.io/pciBusID"]).string == GPU

    response = kubelet.unprepare(("default", "gpu", uid))
    assert response.claims[uid].error == ""
    assert drivers(spec, GPU, AUDIO) == ["nouveau", "snd_hda_intel"]
    assert held(spec) == {}
    assert cdi_specs(root) == []
    assert not (root / "state" / "claims" / uid).exists()


def test_group_rule_refuses_a_member_alone(host: Any, start_plugin: Any,
                                           api: FakeApiServer, root: Path) -> None:
    spec = host("workstation")
    uid = api.add_claim("gpu", [("gpu", "pci-0000-01-00-0")])
    _, kubelet = start_plugin(spec)
    kubelet.register()
    entry = kubelet.prepare(("default", "gpu", uid)).claims[uid]
    assert "cannot detach 0000:01:00.0 alone" in entry.error
    assert "0000:01:00.1" in entry.error
    assert list(entry.devices) == []
    assert drivers(spec, GPU, AUDIO) == ["nouveau", "snd_hda_intel"]
    assert held(spec) == {} and cdi_specs(root) == []


@pytest.mark.parametrize(("device", "params", "needle"), [
    # the boot disk's controller: the host uses it, a pod never gets --force
    ("pci-0000-05-00-0", None, "0000:05:00.0"),
    ("pci-0000-01-00-0", {"apiVersion": "vfio.vfioctl.io/v1alpha1", "kind": "VfioConfig",
                          "takeGroups": True}, "unknown parameter 'takeGroups'"),
    ("pci-0000-01-00-0", {"apiVersion": "v1", "kind": "Other"}, "are not this driver's"),
    ("gpu0", None, "is not one of this driver's devices"),
    ("pci-0000-0f-00-0", None, "not found"),
])
def test_refusals_are_the_claims_error_and_change_nothing(
        host: Any, start_plugin: Any, api: FakeApiServer, root: Path, device: str,
        params: Any, needle: str) -> None:
    spec = host("workstation")
    before = drivers(spec, GPU, AUDIO, "0000:05:00.0", "0000:04:00.0")
    uid = api.add_claim("c", [("r", device)], params=params)
    ok = api.add_claim("ok", [("r", "pci-0000-06-00-0")])
    _, kubelet = start_plugin(spec)
    kubelet.register()
    response = kubelet.prepare(("default", "c", uid), ("default", "ok", ok))
    assert needle in response.claims[uid].error
    # one refused claim does not fail another one of the same call
    assert response.claims[ok].error == ""
    assert drivers(spec, GPU, AUDIO, "0000:05:00.0", "0000:04:00.0") == before
    assert held(spec) == {"0000:06:00.0": ok}
    assert [d["devices"][0]["name"] for d in cdi_specs(root)] == \
        [f"{ok}-pci-0000-06-00-0"]


def test_claim_not_in_the_api_or_replaced(host: Any, start_plugin: Any,
                                          api: FakeApiServer) -> None:
    spec = host("workstation")
    uid = api.add_claim("c", [("r", "pci-0000-06-00-0")])
    _, kubelet = start_plugin(spec)
    kubelet.register()
    response = kubelet.prepare(("default", "gone", "1234"), ("default", "c", "other-uid"))
    assert "not found" in response.claims["1234"].error
    assert "has UID" in response.claims["other-uid"].error
    assert held(spec) == {}
    assert uid


def test_retries_are_idempotent(host: Any, start_plugin: Any, api: FakeApiServer,
                                root: Path) -> None:
    spec = host("workstation")
    uid = api.add_claim("gpu", [("gpu", "pci-0000-01-00-1")], take_group=True)
    _, kubelet = start_plugin(spec)
    kubelet.register()
    first = kubelet.prepare(("default", "gpu", uid))
    files = {p: p.read_bytes() for p in iter_files(root / "cdi")}
    second = kubelet.prepare(("default", "gpu", uid), version="v1beta1")
    assert first.claims[uid].error == second.claims[uid].error == ""
    assert [list(d.cdi_device_ids) for d in first.claims[uid].devices] == \
        [list(d.cdi_device_ids) for d in second.claims[uid].devices]
    assert {p: p.read_bytes() for p in iter_files(root / "cdi")} == files
    assert held(spec) == {GPU: uid, AUDIO: uid}
    for _ in range(2):
        assert kubelet.unprepare(("default", "gpu", uid)).claims[uid].error == ""
    assert drivers(spec, GPU, AUDIO) == ["nouveau", "snd_hda_intel"]
    # a claim this plugin never prepared unprepares to nothing
    assert kubelet.unprepare(("default", "x", "never")).claims["never"].error == ""


def test_two_claims_racing_for_one_group(host: Any, start_plugin: Any,
                                         api: FakeApiServer) -> None:
    spec = host("workstation")
    a = api.add_claim("a", [("r", "pci-0000-01-00-0")], take_group=True)
    b = api.add_claim("b", [("r", "pci-0000-01-00-1")], take_group=True)
    _, kubelet = start_plugin(spec)
    kubelet.register()
    results: dict[str, str] = {}
    barrier = threading.Barrier(2)

    def claim(name: str, uid: str) -> None:
        barrier.wait()
        results[uid] = kubelet.prepare(("default", name, uid)).claims[uid].error

    threads = [threading.Thread(target=claim, args=x) for x in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [uid for uid, err in results.items() if not err]
    assert len(winners) == 1
    [loser] = set(results) - set(winners)
    assert f"in use by '{winners[0]}'" in results[loser]
    assert held(spec) == {GPU: winners[0], AUDIO: winners[0]}


@pytest.mark.parametrize("at_write", [1, 4])
def test_kill_9_mid_prepare_then_restart_recovers(
        host: Any, start_plugin: Any, api: FakeApiServer, root: Path,
        at_write: int) -> None:
    spec = host("workstation")
    uid = api.add_claim("gpu", [("gpu", "pci-0000-01-00-0")], take_group=True)
    crashing = str(Path(__file__).parent / "crashing_plugin.py")
    proc, kubelet = start_plugin(spec, wrapper=[crashing],
                                 env={"DRA_TEST_KILL_AT_WRITE": str(at_write)})
    kubelet.register()
    with pytest.raises(Exception) as info:
        kubelet.prepare(("default", "gpu", uid))
    assert "UNAVAILABLE" in str(info.value) or "CANCELLED" in str(info.value)
    assert proc.proc.wait(10) == -9
    kubelet.close()
    # the DaemonSet restarts it; the kubelet retries the claim it got no answer for
    proc2, kubelet2 = start_plugin(spec)
    kubelet2.register()
    entry = kubelet2.prepare(("default", "gpu", uid)).claims[uid]
    assert entry.error == ""
    assert "recovered" in proc2.log.read_text() or at_write == 1
    assert drivers(spec, GPU, AUDIO) == ["vfio-pci", "vfio-pci"]
    assert held(spec) == {GPU: uid, AUDIO: uid}
    assert kubelet2.unprepare(("default", "gpu", uid)).claims[uid].error == ""
    assert drivers(spec, GPU, AUDIO) == ["nouveau", "snd_hda_intel"]
    with vfioctl.open(spec) as h:
        assert not h.needs_recovery()
        assert all(d.driver_override is None for d in map(h.device, (GPU, AUDIO)))


def _userspace_pf(spec: str) -> str:
    """PF 03:00.0 of the SR-IOV server on vfio-pci with 2 VFs and a VF token; the token."""
    with vfioctl.open(spec) as h:
        h.detach(["0000:03:00.0"])
        h.set_numvfs("0000:03:00.0", 2, allow_enable_sriov=True)
        h.set_token("0000:03:00.0")
        return h.get_token("0000:03:00.0").reveal()


def test_vf_of_a_userspace_pf_gets_its_token_as_a_read_only_file(
        host: Any, start_plugin: Any, api: FakeApiServer, root: Path) -> None:
    spec = host("sriov-server")
    token = _userspace_pf(spec)
    uid = api.add_claim("vf", [("vf", "pci-0000-03-02-0")])
    proc, kubelet = start_plugin(spec)
    kubelet.register()
    wait_for(lambda: api.slices)
    response = kubelet.prepare(("default", "vf", uid))
    assert response.claims[uid].error == ""
    assert drivers(spec, "0000:03:02.0") == ["vfio-pci"]
    [cdi] = cdi_specs(root)
    jsonschema.validate(cdi, SCHEMA)
    [dev] = cdi["devices"]
    [mount] = dev["containerEdits"]["mounts"]
    target = "/var/run/vfioctl/vf-token/pci-0000-03-02-0"
    assert mount["containerPath"] == target and "ro" in mount["options"]
    assert dev["containerEdits"]["env"] == [f"VFIOCTL_VF_TOKEN_FILE={target}"]
    token_file = Path(mount["hostPath"])
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o400
    assert token_file.read_text().strip() == token
    # the secret is in that file and nowhere else the plugin wrote or said
    everywhere = [proc.log.read_text(), str(response),
                  json.dumps([(r.method, r.path, r.body) for r in api.requests]),
                  json.dumps(api.slices)]
    everywhere += [p.read_text() for p in iter_files(root / "cdi")]
    everywhere += [p.read_text() for p in iter_files(root / "state") if p != token_file]
    assert all(token not in text and token.upper() not in text for text in everywhere)
    assert kubelet.unprepare(("default", "vf", uid)).claims[uid].error == ""
    assert not token_file.exists()
    proc.stop()
    assert token not in proc.log.read_text()


def test_vf_of_a_userspace_pf_without_a_token_is_refused(
        host: Any, start_plugin: Any, api: FakeApiServer) -> None:
    spec = host("sriov-server")
    _userspace_pf(spec)
    with vfioctl.open(spec) as h:
        h.forget_token("0000:03:00.0")
    uid = api.add_claim("vf", [("vf", "pci-0000-03-02-1")])
    _, kubelet = start_plugin(spec)
    kubelet.register()
    error = kubelet.prepare(("default", "vf", uid)).claims[uid].error
    assert "no VF token stored for PF 0000:03:00.0" in error
    assert uid not in held(spec).values()         # refused before the host changed


def test_a_uid_that_is_no_uid_is_refused(host: Any, start_plugin: Any,
                                         api: FakeApiServer, root: Path) -> None:
    _, kubelet = start_plugin(host("workstation"))
    kubelet.register()
    response = kubelet.prepare(("default", "x", "../../etc"))
    assert "is not a claim UID" in response.claims["../../etc"].error
    response = kubelet.unprepare(("default", "x", "../../etc"))
    assert "is not a claim UID" in response.claims["../../etc"].error


def test_socket_path_over_sun_path_is_refused_before_anything_starts(
        host: Any, root: Path, api: FakeApiServer) -> None:
    import subprocess

    long_dir = root / ("d" * 100)
    result = subprocess.run(
        [sys.executable, "-m", "vfioctl", "--host", host("workstation"), "dra", "plugin",
         "--node-name", NODE, "--registry-dir", str(long_dir), "--plugins-dir",
         str(root / "p"), "--kubeconfig", str(api.kubeconfig(root / "kc"))],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "a unix socket path must be under 108 bytes" in result.stderr
    assert not long_dir.exists() and not (root / "p").exists()


def test_no_kubernetes_credentials_is_a_config_error(host: Any, root: Path) -> None:
    import subprocess

    result = subprocess.run(
        [sys.executable, "-m", "vfioctl", "--host", host("workstation"), "dra", "plugin",
         "--node-name", NODE, "--registry-dir", str(root / "r"), "--plugins-dir",
         str(root / "p"), "--kubeconfig", str(root / "missing")],
        capture_output=True, text=True, timeout=600,
        env={k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"})
    assert result.returncode == 3
    assert result.stderr.startswith("vfioctl: error: cannot load Kubernetes credentials")
    assert result.stderr.count("\n") == 1
    assert not (root / "r").exists()


def test_kernel_with_vfio_cdev_gets_the_cdev_node_and_dev_iommu_too(
        host: Any, start_plugin: Any, api: FakeApiServer, root: Path) -> None:
    spec = host("workstation")
    path = Path(spec.removeprefix("sim:"))
    path.write_text(path.read_text().replace("[host]\n", "[host]\niommufd = true\n", 1))
    uid = api.add_claim("nvme", [("r", "pci-0000-06-00-0")])
    _, kubelet = start_plugin(spec)
    kubelet.register()
    assert kubelet.prepare(("default", "nvme", uid)).claims[uid].error == ""
    [cdi] = cdi_specs(root)
    jsonschema.validate(cdi, SCHEMA)
    [dev] = cdi["devices"]
    nodes = [n["path"] for n in dev["containerEdits"]["deviceNodes"]]
    with vfioctl.open(spec) as h:
        group = h.device("0000:06:00.0").iommu_group
        [cdev] = [f"/dev/vfio/devices/{n}" for n in
                  h.host.listdir("sys/bus/pci/devices/0000:06:00.0/vfio-dev")]
    assert nodes == [f"/dev/vfio/{group}", cdev]
    assert device_nodes(cdi) == {"/dev/vfio/vfio", "/dev/iommu", f"/dev/vfio/{group}", cdev}
