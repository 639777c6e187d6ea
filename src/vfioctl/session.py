"""The facade's host handle: one object per host with every read and every change.

:class:`Session` is the manager (every change: plans, detach, reattach, SR-IOV, tokens;
:class:`vfioctl.manager.HostdevManager`) plus the read model (devices, groups, why a
group is what it is), opened by spec like the CLI's ``--host``. It is what the CLI,
the launcher and later front ends (libvirt's hook, boot-time persistence, the DRA
driver) share, so none of them re-derives a rule another one implements.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

from vfioctl.address import PciAddress
from vfioctl.errors import OperationInvalid
from vfioctl.explain import Explanation, explain_device
from vfioctl.host.base import Host
from vfioctl.hosts import open_host
from vfioctl.manager import HostdevManager
from vfioctl.model import DeviceDetail, DeviceInfo, GroupInfo
from vfioctl.model import read as model


class Session(HostdevManager):
    """A host, opened: ``with vfioctl.open("sim:ws.toml") as host: host.detach([...])``.

    Constructing one does no I/O beyond opening the backend; the context manager exists
    so a caller's scope says when it is done with the host (nothing stays open between
    calls: every change takes and drops the writer lock itself).
    """

    def __init__(self, host: Host, *, lock_timeout: float | None = None) -> None:
        super().__init__(host, lock_timeout=lock_timeout)

    @property
    def name(self) -> str:
        """How the host was named (``linux``, ``sim:ws.toml`` …)."""
        return self.host.name

    def __enter__(self) -> Session:
        return self

    def __exit__(self, et: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None

    # -- reads --------------------------------------------------------------------------
    def devices(self) -> list[DeviceInfo]:
        """Every PCI function, in address order (``vfioctl list``)."""
        return model.list_devices(self.host)

    def device(self, addr: PciAddress | str) -> DeviceDetail:
        """Everything known about one function (``vfioctl show``).

        Raises:
            UsageError: malformed address. DeviceNotFound: no such device.
        """
        return model.get_device_info(self.host, addr)

    def groups(self) -> list[GroupInfo]:
        """Every IOMMU group with its members and viability (``vfioctl groups``)."""
        return model.list_groups(self.host)

    def vfio_cdev(self, addr: PciAddress | str) -> str | None:
        """The device's VFIO cdev node (``/dev/vfio/devices/vfioX``, used with
        ``/dev/iommu``) while it is bound to vfio-pci on a kernel with the VFIO device
        cdev and iommufd; None otherwise (the group node is then the only way in)."""
        from vfioctl.host.base import DEV_IOMMU, DEV_VFIO_DEVICES
        from vfioctl.pci.device import get_device

        dev = get_device(self.host, addr)
        try:
            names = [n for n in self.host.listdir(dev.path / "vfio-dev")
                     if n.startswith("vfio")]
        except OSError:
            return None
        if len(names) != 1:
            return None
        node = f"{DEV_VFIO_DEVICES}/{names[0]}"    # host paths are relative to its root
        if self.host.exists(node) and self.host.exists(DEV_IOMMU):
            return f"/{node}"
        return None

    def explain(self, addr: PciAddress | str) -> Explanation:
        """Why a device's IOMMU group is what it is (``vfioctl explain``)."""
        return explain_device(self.host, addr)


def open_session(spec: str | None = None, *, lock_timeout: float | None = None) -> Session:
    """Open the host named by ``spec`` (``linux``, ``linux:DIR``, ``sim:NAME|FILE``;
    default ``VFIOCTL_HOST``, then the running kernel)."""
    return Session(open_host(spec), lock_timeout=lock_timeout)


def copy_simulated_host(name: str, path: str | os.PathLike[str], *,
                        overwrite: bool = False) -> str:
    """Write bundled simulated host ``name`` to ``path`` (what ``vfioctl sim copy`` does)
    and return the spec that opens it, ``sim:PATH``: a bundled host is read-only, its
    copy takes every change.

    Raises:
        NotFound: no bundled host of that name. OperationInvalid: ``path`` exists and
        ``overwrite`` is not set.
    """
    from vfioctl.sim.loader import bundled_text

    target = Path(path)
    text = bundled_text(name)
    if target.exists() and not overwrite:
        raise OperationInvalid(f"{target} exists", hint="pass overwrite=True to replace it")
    target.write_text(text)
    return f"sim:{os.fspath(path)}"
