"""Where the DRA driver puts its sockets and files, checked before anything listens.

The kubelet finds plugins by the sockets in its ``plugins_registry`` directory and
talks to the DRA service on the endpoint the registration names; the CDI directory is
where the container runtime looks for device specs; the state directory holds the
per-claim files mounted into containers (the VF token, device metadata) on the host.
A unix socket path is limited by ``sun_path`` (108 bytes, the terminating NUL
included): a longer one cannot be bound at all, so it is refused up front with the
path and its length instead of an opaque bind error.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from vfioctl.dra.cdi import CDI_VERSION
from vfioctl.errors import UsageError

DEFAULT_DRIVER = "vfio.vfioctl.io"
KUBELET_DIR = Path("/var/lib/kubelet")
DEFAULT_CDI_DIR = Path("/var/run/cdi")
DEFAULT_STATE_DIR = Path("/var/run/vfioctl-dra")
#: sizeof(struct sockaddr_un.sun_path) on Linux; the path needs a NUL after it.
SUN_PATH_MAX = 108

# A DNS subdomain (RFC 1123), what Kubernetes requires of a DRA driver name.
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


class SocketPathTooLong(UsageError):
    """A unix socket path over the kernel's ``sun_path`` limit."""


def check_socket_path(path: Path) -> Path:
    """``path`` if a unix socket can be bound there.

    Raises:
        SocketPathTooLong: the path, as bytes, does not fit ``sun_path`` with its NUL.
    """
    size = len(os.fsencode(path))
    if size >= SUN_PATH_MAX:
        raise SocketPathTooLong(
            f"socket path '{path}' is {size} bytes; a unix socket path must be under "
            f"{SUN_PATH_MAX} bytes", hint="choose a shorter --plugins-dir or "
            "--registry-dir (or a shorter driver name)")
    return path


def check_driver_name(name: str) -> str:
    """``name`` if Kubernetes accepts it as a DRA driver name (a DNS subdomain)."""
    if len(name) > 63 or not _SUBDOMAIN.fullmatch(name) or "." not in name:
        raise UsageError(f"driver name '{name}' is not a DNS subdomain of at most 63 "
                         "characters with a dot", hint="use one like vfio.example.com")
    return name


@dataclass(frozen=True)
class DriverConfig:
    """The DRA driver's names and paths (each a ``vfioctl dra plugin`` option)."""

    node_name: str
    driver_name: str = DEFAULT_DRIVER
    registry_dir: Path = KUBELET_DIR / "plugins_registry"
    plugins_dir: Path = KUBELET_DIR / "plugins"
    cdi_dir: Path = DEFAULT_CDI_DIR
    state_dir: Path = DEFAULT_STATE_DIR
    host: str | None = None
    cdi_version: str = CDI_VERSION

    def __post_init__(self) -> None:
        check_driver_name(self.driver_name)
        if not self.node_name:
            raise UsageError("the DRA driver needs the node's name",
                             hint="pass --node-name or set NODE_NAME (the downward API)")

    @property
    def registration_socket(self) -> Path:
        """``<registry>/<driver>-reg.sock``: where the kubelet's plugin watcher looks."""
        return check_socket_path(self.registry_dir / f"{self.driver_name}-reg.sock")

    @property
    def dra_socket(self) -> Path:
        """``<plugins>/<driver>/dra.sock``: the DRA service the registration names."""
        return check_socket_path(self.plugins_dir / self.driver_name / "dra.sock")


__all__ = ["DEFAULT_CDI_DIR", "DEFAULT_DRIVER", "DEFAULT_STATE_DIR", "SUN_PATH_MAX",
           "DriverConfig", "SocketPathTooLong", "check_driver_name", "check_socket_path"]
