"""Simulator: the VFIO character devices and ioctls (legacy container/group API).

Transcribes the behaviour of ``drivers/vfio/vfio_main.c``/``group.c`` (6.1) and
``drivers/vfio/pci/vfio_pci_core.c``, errno for errno, as measured on a real kernel
(docs/kernel.md):

``dev/vfio/vfio`` (container)
  GET_API_VERSION -> 0; CHECK_EXTENSION(type) -> 1 for TYPE1, TYPE1v2, DMA_CC, UNMAP_ALL,
  UPDATE_VADDR, else 0; SET_IOMMU(type): no group attached or already set EINVAL,
  unsupported type ENODEV. Other requests: EINVAL.
``dev/vfio/N`` (group; the node exists while a member is bound to vfio-pci, and while
  someone still holds the group open after its last member left: the open file keeps the
  ``vfio_group`` and its IOMMU group number alive)
  open: already open (by this process or another VFIO user) EBUSY
  (``vfio_group_fops_open``).
  GROUP_GET_STATUS: argsz < 8 EINVAL; flags VIABLE when a container is set or no member
  is bound to a driver that claims DMA (anything but vfio-pci, pci-stub, pcieport);
  CONTAINER_SET. GROUP_SET_CONTAINER: not a fd EBADF, not a container EINVAL, already
  set EINVAL, not viable EPERM. GROUP_UNSET_CONTAINER: none EINVAL, devices open EBUSY.
  GROUP_GET_DEVICE_FD(``"ADDR[ opt=val...]"``): the first member whose name is a prefix
  followed by end or a space matches (another separator: ENODEV); options: only one
  ``vf_token=<36-char UUID>`` (any case); short/invalid UUID, unknown or repeated option
  EINVAL; then the VF-token rules (``vfio_pci_validate_vf_token``); then no
  container/IOMMU EINVAL. Other requests: ENOTTY.
device fd
  DEVICE_GET_INFO: argsz < 16 EINVAL; flags PCI (+RESET when a reset method is enabled);
  9 regions, 5 irqs. DEVICE_RESET: no reset method EINVAL. DEVICE_FEATURE: argsz < 8,
  unknown flags, GET|SET without PROBE: EINVAL; PCI_VF_TOKEN on anything but a vfio-pci
  PF: ENOTTY; GET: EINVAL (never readable); SET: argsz < 24 EINVAL, else sets the token
  (also while VFs are open). Other features ENOTTY; other requests ENOTTY.

``dev/vfio/devices/vfioN`` (device cdev; listed where the host has ``iommufd = true``,
  the device on vfio-pci whose ``vfio-dev/vfioN`` it is) and
  ``dev/iommu`` (an iommufd), ``drivers/vfio/device_cdev.c``:
  open: a release before 6.6 has no cdev: ENXIO. BIND_IOMMUFD (argsz, flags, iommufd,
  out_devid, token_uuid_ptr): argsz < 16 EINVAL; the struct copy
  (``copy_struct_from_user``) is E2BIG when bytes past what the kernel knows are not zero
  — 6.17.y knows only 16 bytes, so a set ``token_uuid_ptr`` is E2BIG there (the
  simulator takes every 6.17.y as unfixed: which stable update took the fix is not
  established here); 6.6-6.16: any flag EINVAL and no token check at all (a VF of a
  userspace PF binds without one); 6.17 on: unknown flags EINVAL, then
  then (every generation) the device's group open through the group API EBUSY
  (``vfio_device_block_group``), a second bind on the fd EINVAL; then, 6.17 on,
  ``vfio_df_check_token``: the token rules of the group path with the flag's UUID
  (read from ``token_uuid_ptr``; a zero pointer EFAULT) or with none; then iommufd not
  open EBADF, not an iommufd EBADFD; the device already open (either path) EINVAL
  (``vfio_df_open``: only the group path opens a device twice).
  Before the bind every other ioctl on the cdev is EINVAL; after it the device fd
  ioctls above. While a cdev is bound, opening its ``dev/vfio/N`` is EBUSY.

File descriptors belong to the process (the :class:`VfioLayer` of one SimHost); the VF
token is kernel state and is persisted with the host, and so are the other processes
that hold VFIO files (:mod:`vfioctl.sim.users`). A group claimed by a container makes
the driver core refuse non-DMA-safe drivers in it (EBUSY), as the kernel does; a device
file held open makes unbinding the device block (:mod:`vfioctl.sim.blocking`).
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import struct
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vfioctl.host import uapi
from vfioctl.sim.users import CONTAINER, DEVICE_FILE, STDIO, VfioUser

if TYPE_CHECKING:
    from vfioctl.sim.device import SimDevice
    from vfioctl.sim.kernel import SimKernel

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                   r"[0-9a-fA-F]{12}$")
_VF_TOKEN_ARG = "vf_token="
_SAFE_DMA_DRIVERS = ("vfio-pci", "pci-stub", "pcieport")
_EXTENSIONS = (uapi.VFIO_TYPE1_IOMMU, uapi.VFIO_TYPE1v2_IOMMU, uapi.VFIO_DMA_CC_IOMMU,
               uapi.VFIO_UNMAP_ALL, uapi.VFIO_UPDATE_VADDR)
FIRST_FD = 100


def _e(code: int) -> OSError:
    from vfioctl.sim.kernel import kerr
    return kerr(code)


@dataclass(eq=False)
class Container:
    groups: list[Group] = field(default_factory=list)
    iommu: int | None = None


@dataclass(eq=False)
class Group:
    number: int
    container: Container | None = None
    closed: bool = False
    open_devices: int = 0


@dataclass(eq=False)
class DeviceFile:
    name: str
    group: Group


@dataclass(eq=False)
class CdevFile:
    """An open ``/dev/vfio/devices/vfioN``: usable only once bound to an iommufd."""

    name: str
    index: int
    bound: bool = False


@dataclass(eq=False)
class IommufdFile:
    """An open ``/dev/iommu``."""


OpenFile = Container | Group | DeviceFile | CdevFile | IommufdFile

# include/uapi/linux/vfio.h: _IO(VFIO_TYPE, VFIO_BASE + 18), struct vfio_device_bind_iommufd
VFIO_DEVICE_BIND_IOMMUFD = (ord(";") << 8) | (100 + 18)
VFIO_DEVICE_BIND_FLAG_TOKEN = 1 << 0
_BIND_MINSZ = 16                    # offsetofend(out_devid)
_BIND_SIZE = 24                     # with token_uuid_ptr (6.17)
CDEV_SINCE = (6, 6)
BIND_TOKEN_SINCE = (6, 17)
BIND_FIXED_SINCE = (6, 18)          # the copy_struct_from_user size fix (see docstring)


def release_version(release: str) -> tuple[int, int]:
    """``"6.17.3-amd64"`` -> ``(6, 17)``; an unreadable release counts as 0.0."""
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


class VfioLayer:
    """The VFIO files one process has open, over one kernel."""

    def __init__(self, kernel: SimKernel) -> None:
        self.kernel = kernel
        self.fds: dict[int, OpenFile] = {}
        self.open_groups: dict[int, Group] = {}
        self.device_opens: dict[str, int] = {}
        self._next_fd = FIRST_FD

    # -- questions the driver core asks -----------------------------------------------------
    @property
    def users(self) -> dict[int, VfioUser]:
        """The other processes holding VFIO files (kernel state, saved with the host)."""
        return self.kernel.vfio_users

    def group_owned(self, group: int | None) -> bool:
        """A VFIO user holds the group's DMA ownership (its container is set)."""
        if group is None:
            return False
        g = self.open_groups.get(group)
        return (g is not None and g.container is not None) or any(
            u.group == group for u in self.users.values()) or \
            group in self._cdev_groups()

    def _cdev_groups(self) -> set[int]:
        """Groups with a device bound through its cdev (iommufd owns their DMA)."""
        out = set()
        for obj in self.fds.values():
            if isinstance(obj, CdevFile) and obj.bound:
                number = self.kernel.group_of(obj.name)
                if number is not None:
                    out.add(number)
        return out

    def device_open(self, name: str) -> bool:
        """Some process has a VFIO device file of ``name`` open."""
        return self.device_opens.get(name, 0) > 0 or any(
            name in u.devices for u in self.users.values())

    def holders(self, name: str) -> list[str]:
        """Who has ``name``'s device file open, for messages."""
        out = [u.describe() for u in self.users.values() if name in u.devices]
        if self.device_opens.get(name, 0) > 0:
            out.insert(0, f"this process (pid {os.getpid()})")
        return out

    def group_held(self, number: int) -> bool:
        """Some process has ``/dev/vfio/N`` open (its ``vfio_group`` and number live on)."""
        return number in self.open_groups or any(
            u.group == number for u in self.users.values())

    def held_groups(self) -> set[int]:
        return set(self.open_groups) | {u.group for u in self.users.values()}

    def viable(self, group: int) -> bool:
        """``!iommu_group_dma_owner_claimed()``: no member on a DMA-claiming driver."""
        return all(d.driver is None or d.driver in _SAFE_DMA_DRIVERS
                   for d in self.kernel.group_members(group))

    def fd_targets(self) -> dict[int, str]:
        """This process's fd table as ``proc/PID/fd`` shows it: stdio, then the VFIO
        files it holds."""
        out = {0: STDIO, 1: STDIO, 2: STDIO}
        for fd, obj in sorted(self.fds.items()):
            if isinstance(obj, Container):
                out[fd] = CONTAINER
            elif isinstance(obj, Group):
                out[fd] = f"/dev/vfio/{obj.number}"
            elif isinstance(obj, CdevFile):
                out[fd] = f"/dev/vfio/devices/vfio{obj.index}"
            elif isinstance(obj, IommufdFile):
                out[fd] = "/dev/iommu"
            else:
                out[fd] = DEVICE_FILE
        return out

    def cdev_device(self, index: int) -> SimDevice | None:
        """The device behind ``vfio-dev/vfio<index>`` (its index, given when vfio-pci
        bound it: :meth:`vfioctl.sim.kernel.SimKernel.free_vfio_index`)."""
        return next((d for d in self.kernel.devices.values()
                     if d.driver == "vfio-pci" and d.vfio_index == index), None)

    # -- file operations ------------------------------------------------------------------------
    def _new_fd(self, obj: OpenFile) -> int:
        fd = self._next_fd
        self._next_fd += 1
        self.fds[fd] = obj
        self.kernel.version += 1          # proc/PID/fd changed
        return fd

    def open(self, key: str) -> int:
        if key == "container":
            return self._new_fd(Container())
        if key == "iommufd" or key.startswith("cdev:"):
            return self._open_cdev(key)
        number = int(key.split(":", 1)[1])
        if self.group_held(number) or number in self._cdev_groups():
            raise _e(errno.EBUSY)
        if not self.kernel.vfio_group_devices(number):
            raise _e(errno.ENODEV)
        group = Group(number)
        self.open_groups[number] = group
        return self._new_fd(group)

    def _open_cdev(self, key: str) -> int:
        if release_version(self.kernel.spec.kernel_release) < CDEV_SINCE:
            raise _e(errno.ENXIO)
        if key == "iommufd":
            return self._new_fd(IommufdFile())
        index = int(key.split(":", 1)[1])
        dev = self.cdev_device(index)
        if dev is None:
            raise _e(errno.ENXIO)
        return self._new_fd(CdevFile(dev.name, index))

    def _device_closed(self, name: str) -> None:
        self.device_opens[name] -= 1
        if not self.device_opens[name]:
            del self.device_opens[name]

    def close(self, fd: int) -> None:
        obj = self.fds.pop(fd, None)
        if obj is None:
            raise _e(errno.EBADF)
        self.kernel.version += 1
        if isinstance(obj, CdevFile):
            if obj.bound:
                self._device_closed(obj.name)
        elif isinstance(obj, IommufdFile):
            pass
        elif isinstance(obj, DeviceFile):
            self._device_closed(obj.name)
            obj.group.open_devices -= 1
            self._maybe_release(obj.group)
        elif isinstance(obj, Group):
            obj.closed = True
            self._maybe_release(obj)
        else:
            for g in list(obj.groups):
                g.container = None
            obj.groups.clear()

    def _maybe_release(self, group: Group) -> None:
        if group.closed and group.open_devices == 0:
            if group.container is not None:
                group.container.groups.remove(group)
                group.container = None
            if self.open_groups.get(group.number) is group:
                del self.open_groups[group.number]

    # -- ioctl ------------------------------------------------------------------------------------
    def ioctl(self, fd: int, request: int, arg: int | bytearray) -> int:
        obj = self.fds.get(fd)
        if obj is None:
            raise _e(errno.EBADF)
        if isinstance(obj, Container):
            return self._container_ioctl(obj, request, arg)
        if isinstance(obj, Group):
            return self._group_ioctl(obj, request, arg)
        if isinstance(obj, IommufdFile):
            raise _e(errno.ENOTTY)
        if isinstance(obj, CdevFile):
            if request == VFIO_DEVICE_BIND_IOMMUFD:
                return self._bind_iommufd(obj, arg)
            if not obj.bound:
                raise _e(errno.EINVAL)      # df->access_granted not yet set
        return self._device_ioctl(obj, request, arg)

    def _bind_iommufd(self, f: CdevFile, arg: int | bytearray) -> int:
        """``vfio_df_ioctl_bind_iommufd`` as each kernel generation has it."""
        version = release_version(self.kernel.spec.kernel_release)
        buf = _buf(arg, 4)
        argsz = struct.unpack_from("<I", buf)[0]
        if argsz < _BIND_MINSZ:
            raise _e(errno.EINVAL)
        if len(buf) < (_BIND_MINSZ if version < BIND_TOKEN_SINCE else argsz):
            raise _e(errno.EFAULT)          # the kernel reads argsz bytes from 6.17
        _, flags, iommufd, _ = struct.unpack_from("<IIiI", buf)
        if version < BIND_TOKEN_SINCE:
            known = _BIND_MINSZ             # copy_from_user(minsz); flags must be 0
            if flags or iommufd < 0:
                raise _e(errno.EINVAL)
        else:
            # copy_struct_from_user(&bind, ksize, arg, argsz): E2BIG when the user's
            # bytes past ksize are not zero. 6.17 passed minsz as ksize.
            known = _BIND_SIZE if version >= BIND_FIXED_SINCE else _BIND_MINSZ
            if any(bytes(buf[known:argsz])):
                raise _e(errno.E2BIG)
            if iommufd < 0 or flags & ~VFIO_DEVICE_BIND_FLAG_TOKEN:
                raise _e(errno.EINVAL)
        number = self.kernel.group_of(f.name)
        if number is not None and self.group_held(number):
            raise _e(errno.EBUSY)           # vfio_device_block_group
        if f.bound:
            raise _e(errno.EINVAL)          # "one device cannot be bound twice"
        dev = self.kernel.devices[f.name]
        if version >= BIND_TOKEN_SINCE:     # vfio_df_check_token
            token: uuid.UUID | None = None
            if flags & VFIO_DEVICE_BIND_FLAG_TOKEN:
                raw = bytes(buf[_BIND_MINSZ:min(argsz, known)]).ljust(8, b"\0")
                ptr = struct.unpack_from("<Q", raw)[0]
                if not ptr:
                    raise _e(errno.EFAULT)
                token = uuid.UUID(bytes=ctypes.string_at(ptr, 16))
            self._validate_token(dev, token)
        target = self.fds.get(iommufd)
        if target is None:
            raise _e(errno.EBADF)
        if not isinstance(target, IommufdFile):
            raise _e(errno.EBADFD)
        if self.device_open(f.name):
            raise _e(errno.EINVAL)          # vfio_df_open: cdev opens are exclusive
        f.bound = True
        self.device_opens[f.name] = self.device_opens.get(f.name, 0) + 1
        self.kernel.version += 1
        struct.pack_into("<I", buf, 12, f.index + 1)        # out_devid
        return 0

    def _container_ioctl(self, c: Container, request: int, arg: int | bytearray) -> int:
        if request == uapi.VFIO_GET_API_VERSION:
            return uapi.VFIO_API_VERSION
        if request == uapi.VFIO_CHECK_EXTENSION:
            return 1 if _int(arg) in _EXTENSIONS else 0
        if request == uapi.VFIO_SET_IOMMU:
            if not c.groups or c.iommu is not None:
                raise _e(errno.EINVAL)
            if _int(arg) not in (uapi.VFIO_TYPE1_IOMMU, uapi.VFIO_TYPE1v2_IOMMU):
                raise _e(errno.ENODEV)
            c.iommu = _int(arg)
            return 0
        raise _e(errno.EINVAL)

    def _group_ioctl(self, g: Group, request: int, arg: int | bytearray) -> int:
        if request == uapi.VFIO_GROUP_GET_STATUS:
            buf = _buf(arg, 8)
            argsz, _ = struct.unpack_from("<II", buf)
            if argsz < uapi.GROUP_STATUS_SIZE:
                raise _e(errno.EINVAL)
            flags = 0
            if g.container is not None:
                flags = uapi.VFIO_GROUP_FLAGS_VIABLE | uapi.VFIO_GROUP_FLAGS_CONTAINER_SET
            elif self.viable(g.number):
                flags = uapi.VFIO_GROUP_FLAGS_VIABLE
            struct.pack_into("<I", buf, 4, flags)
            return 0
        if request == uapi.VFIO_GROUP_SET_CONTAINER:
            cfd = uapi.unpack_fd(_buf(arg))
            c = self.fds.get(cfd)
            if c is None:
                raise _e(errno.EBADF)
            if not isinstance(c, Container) or g.container is not None:
                raise _e(errno.EINVAL)
            if not self.viable(g.number):
                raise _e(errno.EPERM)
            g.container = c
            c.groups.append(g)
            return 0
        if request == uapi.VFIO_GROUP_UNSET_CONTAINER:
            if g.container is None:
                raise _e(errno.EINVAL)
            if g.open_devices:
                raise _e(errno.EBUSY)
            g.container.groups.remove(g)
            g.container = None
            return 0
        if request == uapi.VFIO_GROUP_GET_DEVICE_FD:
            return self._get_device_fd(g, uapi.unpack_device_name(_buf(arg, 1)))
        raise _e(errno.ENOTTY)

    def _get_device_fd(self, g: Group, text: str) -> int:
        found: SimDevice | None = None
        for dev in self.kernel.vfio_group_devices(g.number):
            if self._match(dev, text):
                found = dev
                break
        if found is None:
            raise _e(errno.ENODEV)
        if g.container is None or g.container.iommu is None:
            raise _e(errno.EINVAL)
        self.device_opens[found.name] = self.device_opens.get(found.name, 0) + 1
        g.open_devices += 1
        return self._new_fd(DeviceFile(found.name, g))

    def _match(self, dev: SimDevice, text: str) -> bool:
        """``vfio_pci_core_match``: True on a match, False if not this device; raises
        the option/token errors."""
        if not text.startswith(dev.name):
            return False
        rest = text[len(dev.name):]
        token: uuid.UUID | None = None
        if rest:
            if rest[0] != " ":
                return False
            i = 0
            while i < len(rest):
                if rest[i] == " ":
                    i += 1
                    continue
                if token is None and rest.startswith(_VF_TOKEN_ARG, i):
                    i += len(_VF_TOKEN_ARG)
                    raw = rest[i:i + 36]
                    if len(raw) < 36 or not _UUID.match(raw):
                        raise _e(errno.EINVAL)
                    token = uuid.UUID(raw)
                    i += 36
                else:
                    raise _e(errno.EINVAL)      # unknown or repeated option
        self._validate_token(dev, token)
        return True

    def _validate_token(self, dev: SimDevice, token: uuid.UUID | None) -> None:
        """``vfio_pci_validate_vf_token``."""
        k = self.kernel
        if dev.is_vf:
            pf = dev.physfn
            assert pf is not None
            if pf.driver != "vfio-pci":
                if token is not None:
                    raise _e(errno.EINVAL)      # "VF token incorrectly provided"
                return
            if token is None or token != k.vf_tokens.get(pf.name):
                raise _e(errno.EACCES)
            return
        if dev.name in k.vf_tokens:
            users = sum(1 for vf in dev.vfs if self.device_open(vf.name))
            if users:
                if token is None or token != k.vf_tokens[dev.name]:
                    raise _e(errno.EACCES)
            elif token is not None:
                k.vf_tokens[dev.name] = token     # a PF open with a token sets it
                k.dirty = True
            return
        if token is not None:
            raise _e(errno.EINVAL)              # "not a PF or VF"

    def _device_ioctl(self, f: DeviceFile | CdevFile, request: int,
                      arg: int | bytearray) -> int:
        dev = self.kernel.devices[f.name]
        if request == uapi.VFIO_DEVICE_GET_INFO:
            buf = _buf(arg, 16)
            argsz = struct.unpack_from("<I", buf)[0]
            if argsz < uapi.DEVICE_INFO_MINSZ:
                raise _e(errno.EINVAL)
            flags = uapi.VFIO_DEVICE_FLAGS_PCI | (
                uapi.VFIO_DEVICE_FLAGS_RESET if dev.reset_methods else 0)
            struct.pack_into("<III", buf, 4, flags, uapi.VFIO_PCI_NUM_REGIONS,
                             uapi.VFIO_PCI_NUM_IRQS)
            return 0
        if request == uapi.VFIO_DEVICE_RESET:
            if not dev.reset_methods:
                raise _e(errno.EINVAL)
            return 0
        if request == uapi.VFIO_DEVICE_FEATURE:
            return self._feature(dev, _buf(arg, 8))
        raise _e(errno.ENOTTY)

    def _feature(self, dev: SimDevice, buf: bytearray) -> int:
        """``vfio_ioctl_device_feature`` + ``vfio_pci_core_feature_token``."""
        argsz, flags = struct.unpack_from("<II", buf)
        if argsz < uapi.DEVICE_FEATURE_MINSZ:
            raise _e(errno.EINVAL)
        known = (uapi.VFIO_DEVICE_FEATURE_MASK | uapi.VFIO_DEVICE_FEATURE_GET
                 | uapi.VFIO_DEVICE_FEATURE_SET | uapi.VFIO_DEVICE_FEATURE_PROBE)
        get, set_ = flags & uapi.VFIO_DEVICE_FEATURE_GET, flags & uapi.VFIO_DEVICE_FEATURE_SET
        probe = flags & uapi.VFIO_DEVICE_FEATURE_PROBE
        if flags & ~known or (not probe and get and set_):
            raise _e(errno.EINVAL)
        if flags & uapi.VFIO_DEVICE_FEATURE_MASK != uapi.VFIO_DEVICE_FEATURE_PCI_VF_TOKEN:
            raise _e(errno.ENOTTY)
        if dev.name not in self.kernel.vf_tokens:
            raise _e(errno.ENOTTY)
        # vfio_check_feature(flags, argsz, SET, sizeof(uuid))
        if get:
            raise _e(errno.EINVAL)
        if probe:
            return 0
        if not set_ or argsz - uapi.DEVICE_FEATURE_MINSZ < 16 or len(buf) < 24:
            raise _e(errno.EINVAL)
        self.kernel.vf_tokens[dev.name] = uuid.UUID(bytes=bytes(buf[8:24]))
        self.kernel.dirty = True
        return 0


def _int(arg: int | bytearray) -> int:
    if isinstance(arg, int):
        return arg
    return int.from_bytes(bytes(arg[:8]).ljust(8, b"\0"), "little")


def _buf(arg: int | bytearray, size: int = 4) -> bytearray:
    """An ioctl pointer argument: an int where a struct is expected, or a buffer shorter
    than what the kernel copies in, faults."""
    if not isinstance(arg, bytearray) or len(arg) < size:
        raise _e(errno.EFAULT)
    return arg
