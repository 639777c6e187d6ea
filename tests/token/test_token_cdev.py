"""The cdev path (``/dev/vfio/devices/vfioN`` + ``VFIO_DEVICE_BIND_IOMMUFD`` with
``VFIO_DEVICE_BIND_FLAG_TOKEN``, Linux >= 6.17) and its fallback to the group path.

The product's side of it against a stand-in: :class:`CdevHost` puts a cdev in front of a
6.1 SimHost (which has none) and answers BIND_IOMMUFD the way a given kernel would: 6.17
(token rules of the group path, read through ``token_uuid_ptr``), early 6.17 (E2BIG with
a token), 6.6-6.16 (EINVAL for any flag), recording every bind. The simulator's own cdev
(a host with ``iommufd = true``) is held to the kernel source in
tests/token/test_conformance.py, and the kernel itself in the tier's 7.3 guest.
"""

from __future__ import annotations

import ctypes
import errno
import uuid
from pathlib import Path

import pytest
from tokenops import open_vf, set_token
from tokentest import Q35_PF, Q35_VF

from vfioctl.host import uapi
from vfioctl.host.base import DEV_IOMMU
from vfioctl.secret import VfToken
from vfioctl.sim.host import SimHost
from vfioctl.vfio import uapi_cdev
from vfioctl.vfio.device import PATH_CDEV, PATH_GROUP, VfTokenRejected, open_device

NODE_FD = 9000


class CdevHost:
    """A SimHost with a vfio cdev for one device; everything else passes through."""

    def __init__(self, sim: SimHost, name: str, mode: str) -> None:
        self.sim, self.name, self.mode = sim, name, mode
        vfio_dev = sim.listdir(f"sys/bus/pci/devices/{name}/vfio-dev")[0]
        self.node = f"dev/vfio/devices/{vfio_dev}"
        self.binds: list[tuple[int, int]] = []
        self.open_fds: set[int] = set()
        self.bound = False

    def __getattr__(self, attr: str) -> object:
        return getattr(self.sim, attr)

    def exists(self, path: object) -> bool:
        if str(path) in (self.node, str(DEV_IOMMU)):
            return True
        return self.sim.exists(str(path))

    def open(self, path: object) -> int:
        if str(path) in (self.node, str(DEV_IOMMU)):
            fd = NODE_FD + len(self.open_fds) + 1 + (10 if str(path) == self.node else 0)
            self.open_fds.add(fd)
            return fd
        return self.sim.open(str(path))

    def close(self, fd: int) -> None:
        if fd in self.open_fds:
            self.open_fds.discard(fd)
            return
        self.sim.close(fd)

    def ioctl(self, fd: int, request: int, arg: int | bytearray = 0) -> int:
        if fd not in self.open_fds:
            return self.sim.ioctl(fd, request, arg)
        if request == uapi_cdev.VFIO_DEVICE_BIND_IOMMUFD:
            assert isinstance(arg, bytearray)
            argsz, flags, _, _, ptr = uapi_cdev.unpack_bind_iommufd(arg)
            self.binds.append((argsz, flags))
            if flags and self.mode == "6.6":
                raise OSError(errno.EINVAL, "flags must be 0")
            if ptr and self.mode == "6.17-early":
                raise OSError(errno.E2BIG, "copy_struct_from_user")
            token = uuid.UUID(bytes=ctypes.string_at(ptr, 16)) if ptr else None
            pf = self.sim.kernel.devices[self.name].physfn
            assert pf is not None
            if token is None or token != self.sim.kernel.vf_tokens.get(pf.name):
                raise OSError(errno.EACCES, "vf token")
            self.bound = True
            return 0
        if request == uapi.VFIO_DEVICE_GET_INFO and self.bound:
            assert isinstance(arg, bytearray)
            arg[4:16] = (uapi.VFIO_DEVICE_FLAGS_PCI).to_bytes(4, "little") + \
                (9).to_bytes(4, "little") + (5).to_bytes(4, "little")
            return 0
        raise OSError(errno.ENOTTY, "")


TOK = VfToken(uuid.UUID("11111111-2222-3333-4444-555555555555"))


@pytest.fixture
def q35_token(q35: SimHost, tmp_path: Path) -> SimHost:
    set_token(q35, Q35_PF, TOK)
    return q35


def test_no_cdev_node_uses_the_group_path(q35_token: SimHost) -> None:
    with open_device(q35_token, Q35_VF, token=TOK) as h:
        assert h.path == PATH_GROUP


def test_6_17_opens_through_the_cdev_with_the_token(q35_token: SimHost) -> None:
    host = CdevHost(q35_token, Q35_VF, "6.17")
    with open_vf(host, Q35_VF) as h:      # type: ignore[arg-type]
        assert (h.path, h.info.num_regions) == (PATH_CDEV, 9)
    assert host.binds == [(24, uapi_cdev.VFIO_DEVICE_BIND_FLAG_TOKEN)]
    assert not host.open_fds, "the cdev and /dev/iommu fds are closed"


@pytest.mark.parametrize("mode,code", [("6.17-early", errno.E2BIG), ("6.6", errno.EINVAL)])
def test_kernels_without_cdev_tokens_fall_back(q35_token: SimHost, mode: str,
                                               code: int) -> None:
    host = CdevHost(q35_token, Q35_VF, mode)
    with open_vf(host, Q35_VF) as h:      # type: ignore[arg-type]
        assert h.path == PATH_GROUP
    assert len(host.binds) == 1 and not host.open_fds


def test_cdev_eacces_is_the_token_refusal_not_a_fallback(q35_token: SimHost) -> None:
    host = CdevHost(q35_token, Q35_VF, "6.17")
    wrong = VfToken(uuid.UUID(int=7))
    with pytest.raises(VfTokenRejected, match=f"VF token incorrect for {Q35_VF}"), \
            open_device(host, Q35_VF, token=wrong):     # type: ignore[arg-type]
        pass
    assert not host.open_fds


def test_bind_argument_layout() -> None:
    assert uapi_cdev.VFIO_DEVICE_BIND_IOMMUFD == 0x3B76
    assert len(uapi_cdev.pack_bind_iommufd(5, None)) == 16
    assert uapi_cdev.unpack_bind_iommufd(uapi_cdev.pack_bind_iommufd(5, 0x1000)) == \
        (24, 1, 5, 0, 0x1000)
