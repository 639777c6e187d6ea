"""A real container runtime consumes the plugin's CDI spec: podman (Debian's 4.3).

podman resolves the CDI devices a container asks for and writes the OCI spec it hands
to the OCI runtime (``userdata/config.json``) at ``podman init``; that spec is the
oracle: the container's device nodes are exactly /dev/vfio/vfio and the VF's group
node, the VF token file is bind-mounted read-only at the path the environment names,
and the token itself is nowhere in it. (Starting the container needs setrlimit, which
this sandbox denies; the OCI spec is complete before that.)

podman reads specs from /etc/cdi and /var/run/cdi only, so the test copies the spec
there under a name of its own and removes it. The simulator's /dev/vfio nodes do not
exist on this machine: the copy points them at /dev/null (podman reads the host node's
major/minor), keeping every container path as the plugin wrote it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_dra_plugin import _userspace_pf, cdi_specs

PODMAN = shutil.which("podman")
pytestmark = pytest.mark.skipif(PODMAN is None, reason="podman is not installed "
                                "(Debian: apt-get install podman)")
RUN_CDI = Path("/var/run/cdi")


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """podman on its own storage, with a busybox image made with ``podman import``."""
    base = tmp_path_factory.mktemp("podman")
    rootfs = base / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("no busybox to build an image from")
    shutil.copy(busybox, rootfs / "bin/busybox")
    for name in ("sh", "ls", "cat"):
        (rootfs / "bin" / name).symlink_to("busybox")
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(base / "rootfs.tar"), "."],
                   check=True)
    cmd = [str(PODMAN), "--root", str(base / "root"), "--runroot", str(base / "run"),
           "--storage-driver", "vfs"]
    subprocess.run([*cmd, "import", "-q", str(base / "rootfs.tar"), "localhost/bb:test"],
                   check=True, capture_output=True, timeout=600)
    yield cmd
    subprocess.run([*cmd, "rm", "-af"], capture_output=True, timeout=600)


def _install(spec: dict[str, Any]) -> Path:
    copy = json.loads(json.dumps(spec))
    for edits in [copy.get("containerEdits", {})] + [d["containerEdits"]
                                                     for d in copy["devices"]]:
        for node in edits.get("deviceNodes", []):
            node["hostPath"] = "/dev/null"
    RUN_CDI.mkdir(parents=True, exist_ok=True)
    path = RUN_CDI / f"vfioctl-test-{uuid.uuid4().hex}.json"
    path.write_text(json.dumps(copy))
    return path


def _oci_spec(podman: list[str], device: str) -> tuple[str, dict[str, Any] | None]:
    """What podman said (create and init) and the OCI spec it wrote, if any."""
    made = subprocess.run([*podman, "create", "--network", "none", "--device", device,
                           "localhost/bb:test", "true"], capture_output=True, text=True,
                          timeout=600)
    if made.returncode != 0:
        return made.stderr, None
    cid = made.stdout.strip()
    init = subprocess.run([*podman, "init", cid], capture_output=True, text=True,
                          timeout=600)
    root = Path(podman[podman.index("--root") + 1])
    config = root / "vfs-containers" / cid / "userdata" / "config.json"
    doc = json.loads(config.read_text()) if config.exists() else None
    subprocess.run([*podman, "rm", "-f", cid], capture_output=True, timeout=600)
    return init.stderr, doc


def test_podman_applies_the_vfio_nodes_and_the_token_file(
        podman: list[str], host: Any, start_plugin: Any, api: Any, root: Path) -> None:
    spec = host("sriov-server")
    token = _userspace_pf(spec)
    uid = api.add_claim("vf", [("vf", "pci-0000-03-02-0")])
    # Debian 12's podman (CDI library 0.5) refuses specs newer than 0.5.0
    _, kubelet = start_plugin(spec, extra=["--cdi-version", "0.5.0"])
    kubelet.register()
    entry = kubelet.prepare(("default", "vf", uid)).claims[uid]
    assert entry.error == ""
    [cdi] = cdi_specs(root)
    [cdi_id] = entry.devices[0].cdi_device_ids
    installed = _install(cdi)
    try:
        said, oci = _oci_spec(podman, cdi_id)
    finally:
        installed.unlink()
    assert oci is not None, f"podman wrote no OCI spec: {said}"
    group = cdi["devices"][0]["containerEdits"]["deviceNodes"][0]["path"]
    assert sorted(d["path"] for d in oci["linux"]["devices"]) == \
        sorted(["/dev/vfio/vfio", group])
    target = "/var/run/vfioctl/vf-token/pci-0000-03-02-0"
    [mount] = [m for m in oci["mounts"] if m["destination"] == target]
    assert Path(mount["source"]).read_text().strip() == token
    assert "ro" in mount["options"] and "bind" in mount["options"]
    assert f"VFIOCTL_VF_TOKEN_FILE={target}" in oci["process"]["env"]
    assert token not in json.dumps(oci)


def test_a_runtime_older_than_the_spec_version_refuses_it(
        podman: list[str], host: Any, start_plugin: Any, api: Any, root: Path) -> None:
    version = subprocess.run([*podman, "--version"], capture_output=True, text=True,
                             check=True).stdout.split()[-1]
    if int(version.split(".")[0]) >= 5:
        pytest.skip(f"podman {version} reads CDI 0.8.0 specs")
    spec = host("workstation")
    uid = api.add_claim("nvme", [("r", "pci-0000-06-00-0")])
    _, kubelet = start_plugin(spec)           # the default: the current CDI version
    kubelet.register()
    entry = kubelet.prepare(("default", "nvme", uid)).claims[uid]
    [cdi] = cdi_specs(root)
    assert cdi["cdiVersion"] == "0.8.0"
    installed = _install(cdi)
    try:
        said, oci = _oci_spec(podman, entry.devices[0].cdi_device_ids[0])
    finally:
        installed.unlink()
    # why --cdi-version exists: this runtime cannot resolve the device at all
    assert "unresolvable CDI devices" in said
    assert oci is None or not oci["linux"].get("devices")
