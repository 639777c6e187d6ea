"""Mechanics: VFIO container, group and device file descriptors through the Host seam.

Two ways into a device, both in ``include/uapi/linux/vfio.h``:

- the **group path** (every kernel with VFIO; the one the real-kernel tier measures,
  docs/kernel.md "Opening groups and devices"): open ``/dev/vfio/vfio`` (container) and
  ``/dev/vfio/N`` (group), check the group is viable (``GROUP_GET_STATUS``),
  ``GROUP_SET_CONTAINER``, ``SET_IOMMU(TYPE1v2)``, then
  ``GROUP_GET_DEVICE_FD("ADDR[ vf_token=UUID]")``;
- the **cdev path** (``/dev/vfio/devices/vfioN`` + ``/dev/iommu``,
  ``VFIO_DEVICE_BIND_IOMMUFD``), which takes a VF token only from 6.17
  (``VFIO_DEVICE_BIND_FLAG_TOKEN``). It is tried first where the node exists; a kernel
  without the node, one that rejects the flag (EINVAL before 6.17, ENOTTY without
  iommufd) or an early 6.17 that fails with E2BIG falls back to the group path.

Every kernel refusal is wrapped once, here, into the product's error tree with the device
named and the next step in the hint (docs/kernel.md "VF token table"). The device string
handed to ``GET_DEVICE_FD`` holds the token: it is built only inside :func:`open_device` /
:meth:`VfioGroup.get_device_fd` and never logged or put in an error.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

from vfioctl.address import PciAddress
from vfioctl.errors import (
    DeviceInUse,
    GroupNotViable,
    HostError,
    NotDetached,
    OperationInvalid,
    PermissionDenied,
    VfioIoctlError,
)
from vfioctl.host import uapi
from vfioctl.host.base import DEV_IOMMU, DEV_VFIO, DEV_VFIO_DEVICES, Host
from vfioctl.pci.device import VFIO_DRIVER, PciDevice, get_device
from vfioctl.pci.iommu import IommuGroup
from vfioctl.secret import REDACTED, VfToken
from vfioctl.vfio import uapi_cdev

log = logging.getLogger(__name__)

PATH_GROUP: Final = "group"
PATH_CDEV: Final = "cdev"

# cdev BIND_IOMMUFD answers that mean "this kernel cannot take the token this way":
# E2BIG (early 6.17 with token_uuid_ptr), EINVAL (flags must be 0 before 6.17),
# ENOTTY/EOPNOTSUPP (no iommufd support behind the node).
_CDEV_FALLBACK_ERRNOS: Final = frozenset({errno.E2BIG, errno.EINVAL, errno.ENOTTY,
                                          errno.EOPNOTSUPP})


# -- errors (subclasses of the tree in vfioctl.errors) -----------------------------------------
class VfTokenRejected(VfioIoctlError):
    """The kernel refused a device open for its VF token (EACCES from GET_DEVICE_FD).

    ``addr`` is the device opened, ``pf`` its PF (the PF itself for a PF open).
    """

    def __init__(self, message: str, *, addr: PciAddress, pf: PciAddress | None,
                 hint: str | None = None) -> None:
        super().__init__(message, errno=errno.EACCES, hint=hint)
        self.addr = addr
        self.pf = pf


class TokenNotAccepted(OperationInvalid):
    """A VF token was offered for a device that takes none (EINVAL from the kernel, or
    ENOTTY from ``DEVICE_FEATURE`` on a VF or a non-SR-IOV device)."""

    def __init__(self, message: str, *, addr: PciAddress, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.addr = addr


class GroupBusy(DeviceInUse):
    """``/dev/vfio/N`` is already open: another VFIO user (QEMU, DPDK, a vfioctl) has the
    group (EBUSY: a group node has one opener at a time, docs/kernel.md "Opening groups
    and devices")."""


# -- container and group ---------------------------------------------------------------------
class VfioContainer:
    """An open ``/dev/vfio/vfio``."""

    def __init__(self, host: Host) -> None:
        self.host = host
        try:
            self.fd = host.open(DEV_VFIO / "vfio")
        except OSError as err:
            raise _open_error(err, "cannot open /dev/vfio/vfio",
                              hint="load vfio-pci ('modprobe vfio-pci') and run as root") \
                from err

    def api_version(self) -> int:
        return self.host.ioctl(self.fd, uapi.VFIO_GET_API_VERSION)

    def check_extension(self, extension: int) -> bool:
        return self.host.ioctl(self.fd, uapi.VFIO_CHECK_EXTENSION, extension) > 0

    def set_iommu(self, iommu_type: int) -> None:
        try:
            self.host.ioctl(self.fd, uapi.VFIO_SET_IOMMU, iommu_type)
        except OSError as err:
            raise VfioIoctlError("VFIO_SET_IOMMU failed", errno=err.errno) from err

    def close(self) -> None:
        self.host.close(self.fd)


class VfioGroup:
    """An open ``/dev/vfio/N``."""

    def __init__(self, host: Host, number: int, *, for_device: PciAddress | None = None
                 ) -> None:
        self.host = host
        self.number = number
        what = f" of {for_device}" if for_device is not None else ""
        try:
            self.fd = host.open(DEV_VFIO / str(number))
        except OSError as err:
            if err.errno == errno.EBUSY:
                raise GroupBusy(
                    f"IOMMU group {number}{what} is already open by another VFIO user",
                    addr=for_device,
                    hint="a running QEMU, a DPDK application or another vfioctl holds it; "
                    "stop it first (only one process can open a VFIO group)") from err
            if err.errno in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
                raise NotDetached(
                    f"IOMMU group {number}{what} has no /dev/vfio/{number}: no member is "
                    "bound to vfio-pci",
                    hint=f"detach it first: 'vfioctl detach {for_device or 'ADDR'}'") \
                    from err
            raise _open_error(err, f"cannot open /dev/vfio/{number}") from err

    def status(self) -> int:
        buf = uapi.pack_group_status()
        try:
            self.host.ioctl(self.fd, uapi.VFIO_GROUP_GET_STATUS, buf)
        except OSError as err:
            raise VfioIoctlError(f"VFIO_GROUP_GET_STATUS on group {self.number} failed",
                                 errno=err.errno) from err
        return uapi.unpack_group_status(buf)

    @property
    def viable(self) -> bool:
        return bool(self.status() & uapi.VFIO_GROUP_FLAGS_VIABLE)

    def set_container(self, container: VfioContainer) -> None:
        try:
            self.host.ioctl(self.fd, uapi.VFIO_GROUP_SET_CONTAINER, uapi.pack_fd(container.fd))
        except OSError as err:
            if err.errno == errno.EPERM:
                raise _not_viable(self.host, self.number) from err
            raise VfioIoctlError(f"VFIO_GROUP_SET_CONTAINER on group {self.number} failed",
                                 errno=err.errno) from err

    def get_device_fd(self, text: str) -> int:
        """Raw ``GROUP_GET_DEVICE_FD``: ``text`` is ``"ADDR[ opt=val…]"`` and may hold a
        secret. Raises the kernel's OSError unchanged (the caller knows the context)."""
        return self.host.ioctl(self.fd, uapi.VFIO_GROUP_GET_DEVICE_FD,
                               uapi.pack_device_name(text))

    def close(self) -> None:
        self.host.close(self.fd)


def _open_error(err: OSError, message: str, *, hint: str | None = None) -> HostError:
    code = err.errno
    if code in (errno.EACCES, errno.EPERM):
        return PermissionDenied(message, errno=code, hint="run vfioctl as root")
    return HostError(message, errno=code, hint=hint)


def _not_viable(host: Host, number: int) -> GroupNotViable:
    blockers = IommuGroup(host, number).blockers()
    offenders = tuple((str(b.addr), b.driver) for b in blockers)
    named = ", ".join(f"{a} is bound to {d}" for a, d in offenders) or "a member is in use"
    return GroupNotViable(
        f"IOMMU group {number} is not viable: {named}", group=number, offenders=offenders,
        hint=f"detach all of group {number} first ('vfioctl detach --group ADDR')")


# -- device handle -----------------------------------------------------------------------------
@dataclass
class DeviceHandle:
    """An open VFIO device: its fd and ``DEVICE_GET_INFO``. Holds no token.

    ``path`` says how it was opened: ``"group"`` or ``"cdev"``.
    """

    host: Host
    addr: PciAddress
    fd: int
    info: uapi.DeviceInfo
    path: str
    _fds: list[int] = field(default_factory=list, repr=False)

    def probe_vf_token(self) -> bool:
        """``DEVICE_FEATURE`` PROBE of PCI_VF_TOKEN: True on a vfio-pci SR-IOV PF
        (ENOTTY on a VF or a non-SR-IOV device, docs/kernel.md "VF token")."""
        try:
            self.host.ioctl(self.fd, uapi.VFIO_DEVICE_FEATURE, uapi.pack_vf_token_probe())
        except OSError as err:
            if err.errno == errno.ENOTTY:
                return False
            raise VfioIoctlError(f"VFIO_DEVICE_FEATURE PROBE on {self.addr} failed",
                                 errno=err.errno) from err
        return True

    def set_vf_token(self, token: VfToken) -> None:
        """``DEVICE_FEATURE`` SET of PCI_VF_TOKEN: VFs opened from now on need ``token``
        (VFs already open stay open, docs/kernel.md "VF token").

        Raises:
            TokenNotAccepted: if the device is not an SR-IOV PF on vfio-pci (ENOTTY).
            VfioIoctlError: for any other refusal.
        """
        buf = uapi.pack_feature(uapi.VFIO_DEVICE_FEATURE_SET
                                | uapi.VFIO_DEVICE_FEATURE_PCI_VF_TOKEN, token.raw)
        try:
            self.host.ioctl(self.fd, uapi.VFIO_DEVICE_FEATURE, buf)
        except OSError as err:
            if err.errno == errno.ENOTTY:
                raise not_an_sriov_pf(self.addr) from err
            raise VfioIoctlError(f"VFIO_DEVICE_FEATURE SET PCI_VF_TOKEN on {self.addr} "
                                 "failed", errno=err.errno) from err
        log.debug("set the VF token of %s (value %s)", self.addr, REDACTED)

    def close(self) -> None:
        for fd in reversed(self._fds):
            with contextlib.suppress(OSError):
                self.host.close(fd)
        self._fds.clear()


def not_an_sriov_pf(addr: PciAddress, detail: str = "") -> TokenNotAccepted:
    return TokenNotAccepted(
        f"{addr} is not an SR-IOV PF bound to vfio-pci{detail}", addr=addr,
        hint="a VF token belongs to a PF: give its PF's address (see 'vfioctl sriov PF'), "
        "detached onto vfio-pci ('vfioctl detach PF')")


def device_name(addr: PciAddress, token: VfToken | None,
                extra_options: Sequence[str] = ()) -> str:
    """The ``GET_DEVICE_FD`` string, ``"ADDR vf_token=UUID opt…"``: a secret when
    ``token`` is set; never log it."""
    parts = [str(addr)]
    if token is not None:
        parts.append(f"vf_token={token.reveal()}")
    parts.extend(extra_options)
    return " ".join(parts)


@contextlib.contextmanager
def open_device(host: Host, addr: PciAddress | str, *, token: VfToken | None = None,
                cdev: bool = True, extra_options: Sequence[str] = ()
                ) -> Iterator[DeviceHandle]:
    """Open a device bound to vfio-pci through VFIO, read ``DEVICE_GET_INFO``, and close
    everything on exit.

    Args:
        host: the host.
        addr: the device.
        token: the VF token to present (a VF of a userspace PF; a PF whose VFs are in
            use; a PF open with a token while no VF is open *sets* the token,
            docs/kernel.md "Token lifetime").
        cdev: try ``/dev/vfio/devices/vfioN`` first where it exists.
        extra_options: more ``key=value`` options (tests of the kernel's parser).

    Raises:
        DeviceNotFound: no such device.
        NotDetached: the device is not bound to vfio-pci.
        GroupBusy: its IOMMU group is open by another VFIO user.
        GroupNotViable: a member of the group is on a DMA-owning host driver.
        VfTokenRejected: the kernel wants a (different) VF token (EACCES).
        TokenNotAccepted: a token was given for a device that takes none (EINVAL).
        PermissionDenied: not allowed to open the VFIO nodes.
        VfioIoctlError: any other refusal, with the kernel's errno.
    """
    dev = _vfio_device(host, addr)
    handle = _open_cdev(host, dev, token) if cdev and not extra_options else None
    if handle is not None:
        try:
            yield handle
        finally:
            handle.close()
        return
    with VfioSession(host) as session:
        yield session.open_device(dev.addr, token=token, extra_options=extra_options)


class VfioSession:
    """One container and the groups opened into it, for several devices at once.

    A process can open each ``/dev/vfio/N`` only once (EBUSY), so devices of one group
    (or a PF and a VF opened together) share the session's group fds. Closing the session
    closes every device, group and the container.
    """

    def __init__(self, host: Host) -> None:
        self.host = host
        self._container: VfioContainer | None = None
        self._groups: dict[int, VfioGroup] = {}
        self._handles: list[DeviceHandle] = []

    def __enter__(self) -> VfioSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def group(self, number: int, *, for_device: PciAddress | None = None) -> VfioGroup:
        """The group, opened, checked viable and attached to the container."""
        found = self._groups.get(number)
        if found is not None:
            return found
        if self._container is None:
            self._container = VfioContainer(self.host)
        container = self._container
        group = VfioGroup(self.host, number, for_device=for_device)
        try:
            # A group that is not viable is refused before SET_CONTAINER, so the error
            # names the members at fault.
            if not group.viable:
                raise _not_viable(self.host, number)
            group.set_container(container)
            if not self._groups:
                iommu = uapi.VFIO_TYPE1v2_IOMMU if container.check_extension(
                    uapi.VFIO_TYPE1v2_IOMMU) else uapi.VFIO_TYPE1_IOMMU
                container.set_iommu(iommu)
        except BaseException:
            _quiet_close(self.host, group.fd)
            raise
        self._groups[number] = group
        return group

    def open_device(self, addr: PciAddress | str, *, token: VfToken | None = None,
                    extra_options: Sequence[str] = ()) -> DeviceHandle:
        """``GROUP_GET_DEVICE_FD`` + ``DEVICE_GET_INFO``; raises as :func:`open_device`."""
        dev = _vfio_device(self.host, addr)
        number = dev.iommu_group
        if number is None:
            raise NotDetached(f"{dev.name} has no IOMMU group: VFIO cannot use it",
                              hint="enable the IOMMU (see 'vfioctl doctor')")
        group = self.group(number, for_device=dev.addr)
        log.debug("opening %s through group %d%s", dev.name, number,
                  " with a VF token" if token is not None else "")
        try:
            fd = group.get_device_fd(device_name(dev.addr, token, extra_options))
        except OSError as err:
            raise device_open_error(dev, err, token_given=token is not None) from err
        try:
            info = _device_info(self.host, fd, dev.addr)
        except BaseException:
            _quiet_close(self.host, fd)
            raise
        handle = DeviceHandle(self.host, dev.addr, fd, info, PATH_GROUP, [fd])
        self._handles.append(handle)
        return handle

    def close(self) -> None:
        for handle in reversed(self._handles):
            handle.close()
        self._handles.clear()
        for group in reversed(list(self._groups.values())):
            _quiet_close(self.host, group.fd)
        self._groups.clear()
        if self._container is not None:
            _quiet_close(self.host, self._container.fd)
            self._container = None


def _vfio_device(host: Host, addr: PciAddress | str) -> PciDevice:
    dev = get_device(host, addr)
    if dev.driver != VFIO_DRIVER and not dev.is_vfio_variant:
        raise NotDetached(f"{dev.name} is not bound to vfio-pci (driver: "
                          f"{dev.driver or 'none'})",
                          hint=f"detach it first: 'vfioctl detach {dev.name}'")
    return dev


def _open_cdev(host: Host, dev: PciDevice, token: VfToken | None) -> DeviceHandle | None:
    """The cdev path, or None when this kernel has no usable one (fall back)."""
    try:
        names = [n for n in host.listdir(dev.path / "vfio-dev") if n.startswith("vfio")]
    except OSError:
        return None
    if len(names) != 1:
        return None
    node = f"{DEV_VFIO_DEVICES}/{names[0]}"
    if not host.exists(node) or not host.exists(DEV_IOMMU):
        return None
    with contextlib.ExitStack() as undo:
        try:
            fd = host.open(node)
            undo.callback(_quiet_close, host, fd)
            iommufd = host.open(DEV_IOMMU)
            undo.callback(_quiet_close, host, iommufd)
        except OSError as err:
            log.debug("cdev %s unusable (%s): using the group path", node,
                      errno.errorcode.get(err.errno or 0, err.errno))
            return None
        # The kernel reads the 16 bytes at token_uuid_ptr during the call; the buffer
        # lives until the ExitStack closes.
        raw = ctypes.create_string_buffer(token.raw, 16) if token is not None else None
        ptr = ctypes.addressof(raw) if raw is not None else None
        try:
            host.ioctl(fd, uapi_cdev.VFIO_DEVICE_BIND_IOMMUFD,
                       uapi_cdev.pack_bind_iommufd(iommufd, ptr))
        except OSError as err:
            if err.errno in _CDEV_FALLBACK_ERRNOS:
                log.debug("VFIO_DEVICE_BIND_IOMMUFD on %s: %s: using the group path",
                          dev.name, errno.errorcode.get(err.errno or 0, err.errno))
                return None
            if err.errno == errno.EBUSY:
                # vfio_device_block_group(): the bind is refused while anyone has the
                # device's group open through /dev/vfio/N (the group interface).
                raise GroupBusy(
                    f"IOMMU group {dev.iommu_group} of {dev.name} is already open by "
                    f"another VFIO user (through /{DEV_VFIO}/{dev.iommu_group})",
                    addr=dev.addr,
                    hint="a running QEMU, a DPDK application or another vfioctl holds it; "
                    "stop it first (a device cannot be bound through its cdev while its "
                    "group is open)") from err
            raise device_open_error(dev, err, token_given=token is not None) from err
        finally:
            if raw is not None:
                ctypes.memset(raw, 0, 16)
        info = _device_info(host, fd, dev.addr)
        undo.pop_all()
    log.debug("opened %s through %s", dev.name, node)
    return DeviceHandle(host, dev.addr, fd, info, PATH_CDEV, [iommufd, fd])


def _device_info(host: Host, fd: int, addr: PciAddress) -> uapi.DeviceInfo:
    buf = uapi.pack_device_info()
    try:
        host.ioctl(fd, uapi.VFIO_DEVICE_GET_INFO, buf)
    except OSError as err:
        raise VfioIoctlError(f"VFIO_DEVICE_GET_INFO on {addr} failed", errno=err.errno) \
            from err
    return uapi.unpack_device_info(buf)


def _quiet_close(host: Host, fd: int) -> None:
    with contextlib.suppress(OSError):
        host.close(fd)


def device_open_error(dev: PciDevice, err: OSError, *, token_given: bool) -> HostError | \
        OperationInvalid:
    """The product's error for a refused ``GET_DEVICE_FD``/``BIND_IOMMUFD``
    (docs/kernel.md "VF token table", "The cdev path and iommufd"). Never carries the
    device string: it may hold the token."""
    code = err.errno
    pf_addr = dev.physfn
    if code == errno.EACCES:
        if pf_addr is not None:
            state = "incorrect" if token_given else "required"
            return VfTokenRejected(
                f"VF token {state} for {dev.name}; its PF {pf_addr} is driven from "
                "userspace", addr=dev.addr, pf=pf_addr,
                hint=f"the VF's user must present the PF's token: 'vfioctl token set "
                f"{pf_addr}' sets one, 'vfioctl token check {dev.name}' opens the VF with "
                "it (a PF rebound to vfio-pci since gets a new random token)")
        if token_given:
            return VfTokenRejected(
                f"VF token incorrect for PF {dev.name}: its VFs are in use by a VFIO user "
                "given another token", addr=dev.addr, pf=dev.addr,
                hint="only the PF driver that set the token may reopen the PF while VFs "
                "are open; stop the VF users or use their token")
        return VfTokenRejected(
            f"PF {dev.name} has VFs in use by another VFIO user: opening it needs their "
            "current VF token", addr=dev.addr, pf=dev.addr,
            hint=f"'vfioctl token set {dev.name}' uses the stored token when it has one; "
            "otherwise stop the VF users first")
    if code == errno.EINVAL and token_given:
        if pf_addr is not None:
            pf = PciDevice(dev.host, pf_addr)
            return TokenNotAccepted(
                f"{dev.name} takes no VF token: its PF {pf_addr} is driven by "
                f"{pf.driver or 'no driver'}, not from userspace", addr=dev.addr,
                hint="open it without a token")
        if dev.sriov_totalvfs:
            return VfioIoctlError(f"the kernel refused the VF token for {dev.name}",
                                  errno=code)
        return not_an_sriov_pf(dev.addr, ": it takes no VF token")
    if code == errno.ENODEV:
        return NotDetached(f"{dev.name} is not a VFIO device of IOMMU group "
                           f"{dev.iommu_group}", hint=f"'vfioctl detach {dev.name}'")
    if code == errno.EBUSY:
        return DeviceInUse(f"{dev.name} is already open through VFIO", addr=dev.addr,
                           hint="another VFIO user holds it")
    return VfioIoctlError(f"cannot open {dev.name} through VFIO", errno=code)
