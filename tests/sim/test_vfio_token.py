"""The VFIO device layer and every row of docs/kernel.md "VF token table", through
SimHost's open/ioctl/close, in the order of that table."""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import PurePosixPath

import pytest
from simtest import DEV, make_host, oserrno

from vfioctl.host import uapi
from vfioctl.sim.blocking import SimWouldBlock
from vfioctl.sim.host import SimHost

PF, VF, PLAIN = "0000:01:00.0", "0000:01:00.1", "0000:02:00.0"
TOK = uuid.UUID("11111111-2222-3333-4444-555555555555")
WRONG = uuid.UUID("99999999-8888-7777-6666-555555555555")
TOK2 = uuid.UUID("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee")
VFIO = PurePosixPath("dev/vfio")


def bind_vfio(host: SimHost, name: str) -> None:
    host.write(DEV / name / "driver_override", "vfio-pci")
    if host.exists(DEV / name / "driver"):
        host.write(DEV / name / "driver/unbind", name)
    host.write(DEV.parent / "drivers_probe", name)


def group(host: SimHost, name: str) -> int:
    return int(host.readlink(DEV / name / "iommu_group").rsplit("/", 1)[1])


class Vfio:
    """The guest test's helpers over a Host."""

    def __init__(self, host: SimHost) -> None:
        self.h = host
        self.c = host.open(VFIO / "vfio")
        self.g: dict[int, int] = {}

    def attach(self, g: int) -> int:
        fd = self.h.open(VFIO / str(g))
        self.h.ioctl(fd, uapi.VFIO_GROUP_SET_CONTAINER, uapi.pack_fd(self.c))
        if len(self.g) == 0:
            self.h.ioctl(self.c, uapi.VFIO_SET_IOMMU, uapi.VFIO_TYPE1v2_IOMMU)
        self.g[g] = fd
        return fd

    def dev(self, name: str, text: str | None = None) -> int:
        return self.h.ioctl(self.g[group(self.h, name)], uapi.VFIO_GROUP_GET_DEVICE_FD,
                            uapi.pack_device_name(text if text is not None else name))

    def probe(self, name: str, text: str | None = None) -> int | None:
        """errno of an open+close of the device, None if it opened."""
        def go() -> None:
            self.h.close(self.dev(name, text))
        return oserrno(go)

    def feature(self, fd: int, flags: int, tok: uuid.UUID | None = None) -> int | None:
        data = tok.bytes if tok is not None else bytes(16)
        return oserrno(lambda: self.h.ioctl(fd, uapi.VFIO_DEVICE_FEATURE,
                                            uapi.pack_feature(flags, data)))


@pytest.fixture
def env() -> Vfio:
    host = make_host("q35-vmtest")
    host.load_module("vfio-pci")
    bind_vfio(host, PF)
    host.write(DEV / PF / "reset_method", "\n")
    host.write(PurePosixPath("sys/module/vfio_pci/parameters/enable_sriov"), "Y")
    host.write(DEV / PF / "sriov_numvfs", "2")
    bind_vfio(host, PLAIN)
    v = Vfio(host)
    for name in (PF, VF, PLAIN):
        if group(host, name) not in v.g:
            v.attach(group(host, name))
    return v


def named(name: str, tok: uuid.UUID | str) -> str:
    return f"{name} vf_token={tok}"


SET = uapi.VFIO_DEVICE_FEATURE_SET | uapi.VFIO_DEVICE_FEATURE_PCI_VF_TOKEN
GET = uapi.VFIO_DEVICE_FEATURE_GET | uapi.VFIO_DEVICE_FEATURE_PCI_VF_TOKEN
PROBE = uapi.VFIO_DEVICE_FEATURE_PROBE | uapi.VFIO_DEVICE_FEATURE_PCI_VF_TOKEN


def test_container_basics(env: Vfio) -> None:
    h = env.h
    assert h.ioctl(env.c, uapi.VFIO_GET_API_VERSION) == 0
    assert h.ioctl(env.c, uapi.VFIO_CHECK_EXTENSION, uapi.VFIO_TYPE1v2_IOMMU) == 1
    assert h.ioctl(env.c, uapi.VFIO_CHECK_EXTENSION, uapi.VFIO_NOIOMMU_IOMMU) == 0
    assert oserrno(lambda: h.open(VFIO / str(group(h, PF)))) == errno.EBUSY
    buf = uapi.pack_group_status()
    h.ioctl(env.g[group(h, PF)], uapi.VFIO_GROUP_GET_STATUS, buf)
    assert uapi.unpack_group_status(buf) == 3


def test_vf_token_rows_in_the_guest_order(env: Vfio) -> None:
    h = env.h
    # [A] before the PF is opened: the random token is unknown to everybody
    assert env.probe(VF) == errno.EACCES
    assert env.probe(VF, named(VF, uuid.UUID(int=0))) == errno.EACCES
    # [B] PF open, token feature
    pf1 = env.dev(PF)
    info = uapi.pack_device_info()
    h.ioctl(pf1, uapi.VFIO_DEVICE_GET_INFO, info)
    assert uapi.unpack_device_info(info).num_regions == 9
    assert not uapi.unpack_device_info(info).reset      # reset_method disabled
    assert env.feature(pf1, PROBE) is None
    assert env.feature(pf1, GET) == errno.EINVAL
    assert env.feature(pf1, SET, TOK) is None
    # [C] VF opens against the token
    assert env.probe(VF) == errno.EACCES
    assert env.probe(VF, named(VF, WRONG)) == errno.EACCES
    assert env.probe(VF, f"{VF} vf_token=xyz") == errno.EINVAL
    assert env.probe(VF, f"{VF} foo=bar") == errno.EINVAL
    assert env.probe(VF, f"{named(VF, TOK)} foo=bar") == errno.EINVAL
    assert env.probe(VF, f"{named(VF, TOK)} vf_token={TOK}") == errno.EINVAL
    assert env.probe(VF, f"{VF}\tvf_token={TOK}") == errno.ENODEV
    assert env.probe(VF, named(VF, str(TOK).upper())) is None
    vf1 = env.dev(VF, named(VF, TOK))
    assert env.feature(vf1, SET, TOK) == errno.ENOTTY
    assert env.feature(vf1, PROBE) == errno.ENOTTY
    # [D] PF re-open while a VF is open
    assert env.probe(PF) == errno.EACCES
    assert env.probe(PF, named(PF, WRONG)) == errno.EACCES
    assert env.probe(PF, f"{PF} foo=bar") == errno.EINVAL
    pf2 = env.dev(PF, named(PF, TOK))
    assert env.feature(pf1, SET, TOK2) is None             # also while a VF is open
    assert env.probe(VF, named(VF, TOK)) == errno.EACCES
    vf2 = env.dev(VF, named(VF, TOK2))
    for fd in (vf1, vf2, pf2):
        h.close(fd)
    # [E] no VF users: a PF open with a token sets it
    assert env.probe(PF) is None
    pf3 = env.dev(PF, named(PF, WRONG))
    assert env.probe(VF, named(VF, WRONG)) is None
    assert env.probe(VF, named(VF, TOK2)) == errno.EACCES
    h.close(pf3)
    h.close(pf1)
    # [F] all PF fds closed: the token persists
    assert env.probe(VF, named(VF, WRONG)) is None
    assert env.probe(VF) == errno.EACCES
    # [G] a non-SR-IOV device
    assert env.probe(PLAIN, named(PLAIN, TOK)) == errno.EINVAL
    pl = env.dev(PLAIN)
    assert env.feature(pl, SET, TOK) == errno.ENOTTY
    assert env.feature(pl, PROBE) == errno.ENOTTY
    assert env.probe(PF, "0000:ff:1f.7") == errno.ENODEV


def test_vf_of_kernel_driver_pf_takes_no_token() -> None:
    host = make_host("q35-vmtest")
    host.load_module("vfio-pci")
    host.write(DEV / PF / "sriov_numvfs", "1")             # PF stays on nvme
    bind_vfio(host, VF)
    v = Vfio(host)
    v.attach(group(host, VF))
    assert v.probe(VF, named(VF, TOK)) == errno.EINVAL
    assert v.probe(VF) is None


def test_group_status_follows_dma_ownership() -> None:
    host = make_host("q35-vmtest")
    host.load_module("vfio-pci")
    bind_vfio(host, "0000:04:01.0")                         # e1000 behind the bridge
    g = host.open(VFIO / str(group(host, "0000:04:01.0")))
    buf = uapi.pack_group_status()
    host.ioctl(g, uapi.VFIO_GROUP_GET_STATUS, buf)
    assert uapi.unpack_group_status(buf) == 0               # virtio-rng still on virtio-pci
    c = host.open(VFIO / "vfio")
    assert oserrno(lambda: host.ioctl(g, uapi.VFIO_GROUP_SET_CONTAINER,
                                      uapi.pack_fd(c))) == errno.EPERM
    bind_vfio(host, "0000:08:00.0")                         # downstream port on pcieport
    g2 = host.open(VFIO / str(group(host, "0000:08:00.0")))
    buf = uapi.pack_group_status()
    host.ioctl(g2, uapi.VFIO_GROUP_GET_STATUS, buf)
    assert uapi.unpack_group_status(buf) == uapi.VFIO_GROUP_FLAGS_VIABLE
    # no IOMMU set on the container yet: GET_DEVICE_FD is EINVAL
    host.ioctl(g2, uapi.VFIO_GROUP_SET_CONTAINER, uapi.pack_fd(c))
    assert oserrno(lambda: host.ioctl(g2, uapi.VFIO_GROUP_GET_DEVICE_FD,
                                      uapi.pack_device_name("0000:08:00.0"))) == errno.EINVAL


def test_unbinding_an_open_vfio_device_would_block(env: Vfio) -> None:
    fd = env.dev(PLAIN)
    with pytest.raises(SimWouldBlock, match=f"pid {os.getpid()}"):
        env.h.write(DEV / PLAIN / "driver/unbind", PLAIN)
    assert env.h.writes[-1].blocked and env.h.kernel.driver_of(PLAIN) == "vfio-pci"
    env.h.close(fd)
    env.h.write(DEV / PLAIN / "driver/unbind", PLAIN)
    assert env.h.kernel.driver_of(PLAIN) is None


def test_token_is_random_per_bind_and_never_in_sysfs() -> None:
    host = make_host("q35-vmtest")
    host.load_module("vfio-pci")
    bind_vfio(host, PF)
    first = host.kernel.vf_tokens[PF]
    host.write(DEV / PF / "driver/unbind", PF)
    assert PF not in host.kernel.vf_tokens
    host.write(DEV.parent / "drivers_probe", PF)
    assert host.kernel.vf_tokens[PF] != first
    text = b"".join(host.read_bytes(DEV / PF / f) for f in host.listdir(DEV / PF)
                    if not host.is_link(DEV / PF / f) and f not in ("bind", "reset")
                    and host.exists(DEV / PF / f) and f not in ("vfio-dev",))
    assert str(host.kernel.vf_tokens[PF]).encode() not in text
