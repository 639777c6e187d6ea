"""The DRA driver on the real kernel: a test kubelet prepares claims over the gRPC wire.

The plugin runs in this process (every Python start costs seconds under TCG) but is the
same :class:`vfioctl.dra.server.Plugin` the DaemonSet runs: the test kubelet
(tests/dra/drahelp.py, stubs generated from our .proto files) registers over the
registration socket and calls NodePrepareResources / NodeUnprepareResources on the DRA
socket. Claims come from an in-memory API (the claim documents the API server would
return). The oracle is the guest's kernel read raw (:class:`GuestKernel`).

1. A VF of the userspace-driven NVMe PF 01:00.0 (vfio-pci, 2 VFs, a VF token): the CDI
   spec names /dev/vfio/vfio and the VF's group node, which exist; the token file is
   0400 and its token opens the VF on this kernel; unprepare leaves the VF as found.
2. The bridge group 04:01.0 e1000 + 04:02.0 virtio-rng: refused without the opt-in
   (nothing moves), prepared whole with it, and unprepare puts e1000 and virtio-pci back.

Starts from: the boot drivers. Leaves: the PF on nvme without VFs, enable_sriov N, the
bridge group on its boot drivers, nothing held, no token stored.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .guest_kernel import PCI_DEVICES, GuestKernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dra"))

PF, VF = "0000:01:00.0", "0000:01:00.1"
BR_E1000, BR_RNG = "0000:04:01.0", "0000:04:02.0"


@pytest.fixture(scope="module")
def dra(kernel: GuestKernel) -> Iterator[dict[str, Any]]:
    pytest.importorskip("grpc")
    from drahelp import NODE, FakeApiServer, TestKubelet, gen_stubs

    import vfioctl
    from vfioctl.dra.config import DriverConfig
    from vfioctl.dra.driver import Driver
    from vfioctl.dra.server import Plugin

    gen_stubs()
    root = Path(tempfile.mkdtemp(prefix="dra-", dir="/tmp"))
    os.environ["VFIOCTL_STATE_DIR"] = str(root / "vfioctl-state")
    host = vfioctl.open("linux")
    host.detach([PF])
    # docs/kernel.md "The test guest": no resets of QEMU 7.2's NVMe before it is opened
    kernel.write(PCI_DEVICES / PF / "reset_method", "\n")
    api = FakeApiServer()        # its claim store only: no HTTP in this process
    config = DriverConfig(node_name=NODE, registry_dir=root / "registry",
                          plugins_dir=root / "plugins", cdi_dir=root / "cdi",
                          state_dir=root / "state", host="linux")
    driver = Driver(config, lambda: vfioctl.open("linux"),
                    lambda ref: api.claims[(ref.namespace, ref.name)])
    plugin = Plugin(driver)
    try:
        host.set_numvfs(PF, 2, allow_enable_sriov=True)
        kernel.wait_for("VF on vfio-pci", lambda: kernel.exists(VF)
                        and kernel.driver(VF) == "vfio-pci")
        host.set_token(PF)
        plugin.start()
        kubelet = TestKubelet(config.registration_socket)
        kubelet.register()
        yield {"api": api, "kubelet": kubelet, "root": root, "host": host}
        kubelet.close()
    finally:
        plugin.stop()
        host.forget_token(PF)
        host.set_numvfs(PF, 0)
        host.reattach([PF])
        if kernel.vfio_pci_param("enable_sriov") != "N":
            kernel.set_vfio_pci_param("enable_sriov", "N")
        os.environ.pop("VFIOCTL_STATE_DIR", None)
        shutil.rmtree(root, ignore_errors=True)


def _spec(root: Path) -> dict[str, Any]:
    [path] = (root / "cdi").glob("*.json")
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def _schema_check(doc: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((Path(__file__).resolve().parents[1] / "dra/data/cdi-schema.json")
                        .read_text())
    jsonschema.validate(doc, schema)


def test_vf_of_the_userspace_pf_prepared_with_its_token_file(
        dra: dict[str, Any], kernel: GuestKernel) -> None:
    from vfioctl import VfToken

    api, kubelet, root, host = dra["api"], dra["kubelet"], dra["root"], dra["host"]
    uid = api.add_claim("vf", [("vf", "pci-0000-01-00-1")])
    entry = kubelet.prepare(("default", "vf", uid)).claims[uid]
    assert entry.error == ""
    assert kernel.driver(VF) == "vfio-pci"
    doc = _spec(root)
    _schema_check(doc)
    [dev] = doc["devices"]
    group = kernel.group_of(VF)
    nodes = [n["path"] for n in dev["containerEdits"]["deviceNodes"]]
    # a kernel with the VFIO device cdev (the tier kernel) gives the VF's cdev too
    cdevs = sorted(f"/dev/vfio/devices/{n}" for n in os.listdir(
        f"/sys/bus/pci/devices/{VF}/vfio-dev")) if os.path.isdir(
        f"/sys/bus/pci/devices/{VF}/vfio-dev") and os.path.exists("/dev/iommu") else []
    assert nodes == [f"/dev/vfio/{group}", *cdevs]
    for node in [*nodes, "/dev/vfio/vfio"]:
        assert stat.S_ISCHR(os.stat(node).st_mode), node
    [mount] = dev["containerEdits"]["mounts"]
    token_file = Path(mount["hostPath"])
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o400
    token = VfToken.parse(token_file.read_text())
    assert token.reveal() not in json.dumps(doc)
    # the file's token is the one this kernel accepts for the VF
    with host.open_vf(VF, token=token) as handle:
        assert handle.info.num_regions > 0
    assert kubelet.unprepare(("default", "vf", uid)).claims[uid].error == ""
    assert kernel.driver(VF) == "vfio-pci"      # it was there before the claim
    assert not token_file.exists() and not list((root / "cdi").glob("*.json"))
    assert all(s.record.owner != uid for s in host.status())


def test_bridge_group_refused_alone_then_prepared_whole_and_given_back(
        dra: dict[str, Any], kernel: GuestKernel) -> None:
    api, kubelet, root = dra["api"], dra["kubelet"], dra["root"]
    before = (kernel.driver(BR_E1000), kernel.driver(BR_RNG))
    alone = api.add_claim("nic", [("nic", "pci-0000-04-01-0")])
    entry = kubelet.prepare(("default", "nic", alone)).claims[alone]
    assert "alone" in entry.error and BR_RNG in entry.error
    assert (kernel.driver(BR_E1000), kernel.driver(BR_RNG)) == before

    uid = api.add_claim("nic2", [("nic", "pci-0000-04-01-0")], take_group=True)
    entry = kubelet.prepare(("default", "nic2", uid)).claims[uid]
    assert entry.error == ""
    assert (kernel.driver(BR_E1000), kernel.driver(BR_RNG)) == ("vfio-pci", "vfio-pci")
    doc = _spec(root)
    _schema_check(doc)
    [dev] = doc["devices"]
    node = dev["containerEdits"]["deviceNodes"][0]["path"]
    assert node == f"/dev/vfio/{kernel.group_of(BR_E1000)}"
    assert stat.S_ISCHR(os.stat(node).st_mode)
    assert kubelet.unprepare(("default", "nic2", uid)).claims[uid].error == ""
    kernel.wait_for("boot drivers back", lambda: (
        kernel.driver(BR_E1000), kernel.driver(BR_RNG)) == before)
