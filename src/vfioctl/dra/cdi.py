"""The CDI spec of a prepared claim: what the container runtime adds to a container.

One spec file per claim (``<cdi dir>/<driver>-claim_<uid>.json``), written atomically
(a temporary file renamed over it: a runtime never reads half a spec, a retried prepare
rewrites the same bytes). The claim-wide edits — ``/dev/vfio/vfio`` and the device
metadata files KubeVirt reads — are the spec's ``containerEdits``, applied once when any
of its devices is requested; each device adds its group's ``/dev/vfio/N`` (and, on a
kernel with the VFIO device cdev, its ``/dev/vfio/devices/vfioX``, with ``/dev/iommu``
once for the claim) and, for a VF of a PF driven from userspace, its VF token as a
read-only bind mount with the *path* in ``VFIOCTL_VF_TOKEN_FILE``. The token itself is
never in the spec.

``CDI_VERSION`` is the version of the CDI specification these files follow by default,
the current one (0.8.0). The fields used — deviceNodes, mounts, env — are in every
version since 0.3.0, and a runtime refuses a spec newer than the CDI library it was
built with, so an older runtime is served with ``--cdi-version`` (one of
``CDI_VERSIONS``): the document is the same, only the version it claims differs.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CDI_VERSION = "0.8.0"
CDI_VERSIONS = ("0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0")
CDI_CLASS = "vfio"
VFIO_CONTAINER = "/dev/vfio/vfio"
#: iommufd, which a device's cdev node is used with (once per spec).
IOMMU = "/dev/iommu"
#: Where a VF token file appears in the container; the env var names the file.
TOKEN_MOUNT_DIR = "/var/run/vfioctl/vf-token"
TOKEN_ENV = "VFIOCTL_VF_TOKEN_FILE"
#: KubeVirt's (and KEP-5304's) device metadata directory in the container.
METADATA_DIR = "/var/run/kubernetes.io/dra-device-attributes"

_RO_MOUNT = ["ro", "bind", "nosuid", "nodev", "noexec"]


@dataclass(frozen=True)
class CdiDevice:
    """One allocated device's edits."""

    name: str
    group_node: str
    token_file: Path | None = None
    token_name: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    cdev_node: str | None = None


def kind(driver: str) -> str:
    """The CDI kind of this driver's devices: ``vfio.vfioctl.io/vfio``."""
    return f"{driver}/{CDI_CLASS}"


def spec_path(cdi_dir: Path, driver: str, uid: str) -> Path:
    return cdi_dir / f"{driver}-claim_{uid}.json"


def cdi_name(uid: str, device: str) -> str:
    """The CDI device name of ``device`` in claim ``uid`` (unique across claims)."""
    return f"{uid}-{device}"


def qualified(driver: str, uid: str, device: str) -> str:
    """The fully qualified CDI device ID the kubelet hands to the runtime."""
    return f"{kind(driver)}={cdi_name(uid, device)}"


def token_container_path(device: str) -> str:
    return f"{TOKEN_MOUNT_DIR}/{device}"


def build_spec(driver: str, uid: str, devices: Sequence[CdiDevice],
               metadata_mounts: Sequence[tuple[Path, str]], *,
               version: str = CDI_VERSION) -> dict[str, Any]:
    """The spec document (see the module docstring)."""
    out_devices: list[dict[str, Any]] = []
    for dev in devices:
        nodes = [dev.group_node, *([dev.cdev_node] if dev.cdev_node else [])]
        edits: dict[str, Any] = {
            "deviceNodes": [{"path": n, "type": "c", "permissions": "rw"} for n in nodes],
        }
        env = dict(dev.env)
        if dev.token_file is not None:
            target = token_container_path(dev.token_name or dev.name)
            edits["mounts"] = [{"hostPath": str(dev.token_file), "containerPath": target,
                                "options": list(_RO_MOUNT)}]
            env[TOKEN_ENV] = target
        if env:
            edits["env"] = [f"{k}={v}" for k, v in sorted(env.items())]
        out_devices.append({"name": cdi_name(uid, dev.name), "containerEdits": edits})
    common_nodes = [VFIO_CONTAINER, *([IOMMU] if any(d.cdev_node for d in devices) else [])]
    common: dict[str, Any] = {
        "deviceNodes": [{"path": n, "type": "c", "permissions": "rw"} for n in common_nodes],
    }
    if metadata_mounts:
        common["mounts"] = [{"hostPath": str(host), "containerPath": target,
                             "options": list(_RO_MOUNT)} for host, target in metadata_mounts]
    return {"cdiVersion": version, "kind": kind(driver), "devices": out_devices,
            "containerEdits": common}


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` with ``mode`` from the start, by rename: no reader sees
    a partial file, and no moment where the file has looser permissions."""
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_spec(path: Path, spec: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(spec, indent=2, sort_keys=True) + "\n").encode(), 0o644)


def remove_spec(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


__all__ = ["CDI_CLASS", "CDI_VERSION", "CDI_VERSIONS", "IOMMU", "METADATA_DIR",
           "TOKEN_ENV", "TOKEN_MOUNT_DIR", "VFIO_CONTAINER", "CdiDevice", "build_spec",
           "cdi_name", "kind", "qualified", "remove_spec", "spec_path",
           "token_container_path", "write_atomic", "write_spec"]
