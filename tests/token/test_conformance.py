"""The VF token contract, scenario by scenario and path by path, on the simulator.

The scenarios and their expected answers are tests/realkernel/test_55_token_conformance.py
(each expectation a literal from the kernel source, the function named there); here they
run on simulated kernels of every generation the cdev path has:

- 6.1 (``sim:q35-vmtest``, the test guest): no cdev; the group path only;
- 6.8: a cdev whose ``VFIO_DEVICE_BIND_IOMMUFD`` takes no flag and checks no token
  (``vfio_df_ioctl_bind_iommufd()`` before 6.17);
- 6.17: the token flag, but the struct copy fails with E2BIG when ``token_uuid_ptr`` is
  set (``copy_struct_from_user()`` given ``offsetofend(out_devid)`` as the kernel size);
- 7.3: the token flag and ``vfio_df_check_token()`` (``vfio_pci_core_match_token_uuid()``).

The raw tests below hold the simulator's cdev to the same source without the product in
between: ``vfio_df_ioctl_bind_iommufd()``'s checks in order, ``vfio_df_open()``'s
exclusivity, ``vfio_device_block_group()`` and ``vfio_group_fops_open()``.
"""

from __future__ import annotations

import ctypes
import errno
import importlib.util
import struct
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from tokentest import Q35_PF, Q35_PLAIN, Q35_VF, Q35_VF2, userspace_pf

from vfioctl.host import uapi
from vfioctl.sim.host import SimHost
from vfioctl.sim.loader import bundled_text
from vfioctl.vfio.device import PATH_CDEV, PATH_GROUP, VfTokenRejected, open_device


def _scenario() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "realkernel" / \
        "test_55_token_conformance.py"
    spec = importlib.util.spec_from_file_location("token_conformance_scenario", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


S = _scenario()
BOOT_RELEASE = "6.1.0-56-amd64"
RELEASES = {"6.1": BOOT_RELEASE, "6.8": "6.8.0-45-generic", "6.17": "6.17.0-1-amd64",
            "7.3": "7.3.0-1-amd64"}


def q35_on(tmp_path: Path, release: str) -> SimHost:
    """sim:q35-vmtest booted with another kernel: ``release``, and iommufd with the vfio
    cdev from 6.6 on (as a kernel built with CONFIG_IOMMUFD and CONFIG_VFIO_DEVICE_CDEV)."""
    text = bundled_text("q35-vmtest")
    assert f'kernel = "{BOOT_RELEASE}"' in text
    text = text.replace(f'kernel = "{BOOT_RELEASE}"', f'kernel = "{release}"', 1)
    if release != BOOT_RELEASE:
        text = text.replace("[host]\n", "[host]\niommufd = true\n", 1)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "q35.toml"
    path.write_text(text)
    return SimHost.from_file(path)


@pytest.fixture(params=sorted(RELEASES))
def kernel_host(request: pytest.FixtureRequest, tmp_path: Path) -> SimHost:
    """The guest on each kernel: NVMe PF on vfio-pci with 2 VFs, nothing opened yet."""
    host = q35_on(tmp_path, RELEASES[request.param])
    userspace_pf(host, Q35_PF, 2, plain=Q35_PLAIN)
    return host


def test_scenario_module_is_the_real_kernel_one() -> None:
    assert (S.PF, S.VF, S.VF2) == (Q35_PF, Q35_VF, Q35_VF2)
    assert next(iter(S.SCENARIOS)) == "fresh bind"       # needs an unopened PF


@pytest.mark.parametrize("path", ["group", "cdev"])
def test_every_scenario_on_every_kernel(kernel_host: SimHost, path: str) -> None:
    """All scenarios in their order on one host (as the tier runs them on one kernel)."""
    release = S.release_of(kernel_host)
    assert S.has_cdev(kernel_host) == (S.generation(release) != "none")
    bad: list[str] = []
    count = 0
    for name in S.SCENARIOS:
        steps = S.run_scenario(kernel_host, name, path, release)
        count += len(steps)
        bad += [str(s) for s in steps if not s.ok]
    assert not bad, "\n".join(bad)
    assert count >= 40


def _answers(host: SimHost, path: str, name: str) -> dict[str, str]:
    return {s.name: s.got for s in S.run_scenario(host, name, path, S.release_of(host))}


# -- the kernel facts the rule in expect() encodes, spelled out per kernel ------------------
def test_7_3_cdev_checks_the_token_like_the_group_path(tmp_path: Path) -> None:
    """``vfio_df_check_token()``: same EACCES for a wrong and a missing token, and every
    success on the cdev (no fallback)."""
    host = q35_on(tmp_path, RELEASES["7.3"])
    userspace_pf(host, Q35_PF, 2, plain=Q35_PLAIN)
    got = _answers(host, "cdev", "match while the PF is open")
    assert got == {"PF, token A, no VF open (sets A)": "OK:cdev", "VF, token A": "OK:cdev",
                   "VF, token B": "EACCES", "VF, no token": "EACCES",
                   "VF2, token A": "OK:cdev"}


def test_6_8_cdev_opens_a_vf_without_any_token(tmp_path: Path) -> None:
    """6.6-6.16: ``bind.flags`` must be 0 and nothing calls a token check on the cdev,
    so a VF of a userspace PF binds with no token at all (the hole 6.17 closed); a
    token is EINVAL there and the product takes the group path, which checks it."""
    host = q35_on(tmp_path, RELEASES["6.8"])
    userspace_pf(host, Q35_PF, 2, plain=Q35_PLAIN)
    got = _answers(host, "cdev", "match while the PF is open")
    assert got["VF, no token"] == "OK:cdev"
    assert got["VF, token A"] == "OK:group"
    assert got["VF, token B"] == "EACCES"


def test_6_17_cdev_e2big_with_a_token_checks_without(tmp_path: Path) -> None:
    host = q35_on(tmp_path, RELEASES["6.17"])
    userspace_pf(host, Q35_PF, 2, plain=Q35_PLAIN)
    got = _answers(host, "cdev", "PF closed early")
    assert got == {"PF, token A (sets A)": "OK:group", "PF closed; VF, token A": "OK:group",
                   "PF closed; VF, token B": "EACCES", "PF closed; VF, no token": "EACCES"}


def test_a_wrong_cdev_token_is_reported_not_retried(tmp_path: Path) -> None:
    """EACCES from the bind is the token refusal: the product reports it and does not
    retry on the group path (which would answer the same)."""
    host = q35_on(tmp_path, RELEASES["7.3"])
    userspace_pf(host, Q35_PF, 2, plain=Q35_PLAIN)
    with open_device(host, Q35_PF, token=S.A):
        pass
    before = dict(host.kernel.vfio.fds)
    with pytest.raises(VfTokenRejected, match=f"VF token incorrect for {Q35_VF}"), \
            open_device(host, Q35_VF, token=S.B):
        pass
    assert host.kernel.vfio.fds == before, "every fd of the attempt is closed"
    with open_device(host, Q35_VF, token=S.A) as h:
        assert h.path == PATH_CDEV
    with open_device(host, Q35_VF, token=S.A, cdev=False) as h:
        assert h.path == PATH_GROUP


# -- the simulator's cdev, raw ------------------------------------------------------------
VFIO_DEVICE_BIND_IOMMUFD = (ord(";") << 8) | (100 + 18)       # include/uapi/linux/vfio.h


def _cdev_of(host: SimHost, name: str) -> str:
    (node,) = host.listdir(f"sys/bus/pci/devices/{name}/vfio-dev")
    return f"dev/vfio/devices/{node}"


def _bind(host: SimHost, fd: int, iommufd: int, *, argsz: int = 16, flags: int = 0,
          token: uuid.UUID | None = None, ptr: int | None = None) -> bytearray:
    raw = ctypes.create_string_buffer(token.bytes, 16) if token is not None else None
    address = ptr if ptr is not None else (ctypes.addressof(raw) if raw is not None else 0)
    buf = bytearray(struct.pack("<IIiIQ", argsz, flags, iommufd, 0, address)[:max(argsz, 16)])
    host.ioctl(fd, VFIO_DEVICE_BIND_IOMMUFD, buf)
    return buf


def _errno(fn: Callable[[], object]) -> int | None:
    try:
        fn()
    except OSError as err:
        return err.errno
    return None


def _raw_host(tmp_path: Path, release: str) -> SimHost:
    host = q35_on(tmp_path, release)
    userspace_pf(host, Q35_PF, 2, plain=Q35_PLAIN)
    return host


def test_bind_checks_in_the_kernels_order(tmp_path: Path) -> None:
    host = _raw_host(tmp_path, RELEASES["7.3"])
    fd, ictx = host.open(_cdev_of(host, Q35_PLAIN)), host.open("dev/iommu")
    info = uapi.pack_device_info()
    # before the bind every other ioctl is EINVAL (df->access_granted)
    assert _errno(lambda: host.ioctl(fd, uapi.VFIO_DEVICE_GET_INFO, info)) == errno.EINVAL
    assert _errno(lambda: _bind(host, fd, ictx, argsz=12)) == errno.EINVAL
    longer = bytearray(struct.pack("<IIiIQQ", 32, 0, ictx, 0, 0, 1))
    assert _errno(lambda: host.ioctl(fd, VFIO_DEVICE_BIND_IOMMUFD, longer)) == \
        errno.E2BIG                                       # nonzero past the kernel's size
    assert _errno(lambda: _bind(host, fd, ictx, flags=2)) == errno.EINVAL
    assert _errno(lambda: _bind(host, fd, -1)) == errno.EINVAL
    assert _errno(lambda: _bind(host, fd, ictx, argsz=24, flags=1, ptr=0)) == errno.EFAULT
    # a device that is neither PF nor VF: a token is "incorrectly provided"
    assert _errno(lambda: _bind(host, fd, ictx, argsz=24, flags=1,
                                token=uuid.uuid4())) == errno.EINVAL
    assert _errno(lambda: _bind(host, fd, 4242)) == errno.EBADF
    container = host.open("dev/vfio/vfio")
    assert _errno(lambda: _bind(host, fd, container)) == errno.EBADFD
    out = _bind(host, fd, ictx)
    assert struct.unpack_from("<I", out, 12)[0] > 0          # out_devid
    host.ioctl(fd, uapi.VFIO_DEVICE_GET_INFO, info)
    assert uapi.unpack_device_info(info).flags & uapi.VFIO_DEVICE_FLAGS_PCI
    assert _errno(lambda: _bind(host, fd, ictx)) == errno.EINVAL     # bound already
    for f in (fd, ictx, container):
        host.close(f)


@pytest.mark.parametrize("release,with_token,without", [
    ("6.17", errno.E2BIG, errno.EACCES),    # checks the token without the flag
    ("6.8", errno.EINVAL, None),            # checks nothing
])
def test_6_17_e2big_and_6_8_flags_zero(tmp_path: Path, release: str, with_token: int,
                                       without: int | None) -> None:
    host = _raw_host(tmp_path, RELEASES[release])
    fd, ictx = host.open(_cdev_of(host, Q35_VF)), host.open("dev/iommu")
    assert _errno(lambda: _bind(host, fd, ictx, argsz=24, flags=1,
                                token=uuid.uuid4())) == with_token
    assert _errno(lambda: _bind(host, fd, ictx)) == without
    host.close(fd)
    host.close(ictx)


def test_no_cdev_before_6_6(tmp_path: Path) -> None:
    host = q35_on(tmp_path / "6.1", "6.1.0-56-amd64")
    assert not host.exists("dev/vfio/devices") and not host.exists("dev/iommu")
    host = q35_on(tmp_path / "6.5", "6.5.0-1-amd64")          # iommufd claimed, no vfio cdev yet
    userspace_pf(host, Q35_PF, 0, plain=Q35_PLAIN)
    assert _errno(lambda: host.open(_cdev_of(host, Q35_PLAIN))) == errno.ENXIO
    with open_device(host, Q35_PLAIN) as h:
        assert h.path == PATH_GROUP


def test_cdev_and_group_exclude_each_other(tmp_path: Path) -> None:
    """``vfio_device_block_group()``: a bound cdev makes ``/dev/vfio/N`` EBUSY, an open
    group makes the bind EBUSY; ``vfio_df_open()``: a second cdev of an open device EINVAL."""
    host = _raw_host(tmp_path, RELEASES["7.3"])
    group = host.readlink(f"sys/bus/pci/devices/{Q35_PLAIN}/iommu_group").rsplit("/", 1)[1]
    node = _cdev_of(host, Q35_PLAIN)
    fd, ictx = host.open(node), host.open("dev/iommu")
    g = host.open(f"dev/vfio/{group}")
    assert _errno(lambda: _bind(host, fd, ictx)) == errno.EBUSY
    host.close(g)
    _bind(host, fd, ictx)
    assert _errno(lambda: host.open(f"dev/vfio/{group}")) == errno.EBUSY
    other = host.open(node)
    assert _errno(lambda: _bind(host, other, ictx)) == errno.EINVAL
    links = {host.readlink(f"proc/self/fd/{n}") for n in host.listdir("proc/self/fd")}
    assert {"/" + node, "/dev/iommu"} <= links
    for f in (other, fd, ictx):
        host.close(f)
    host.close(host.open(f"dev/vfio/{group}"))            # free again


def test_a_cdev_vf_counts_as_a_vf_user(tmp_path: Path) -> None:
    """``vfio_pci_core_finish_enable()`` raises the PF's ``vf_token->users`` for a cdev
    open too: the PF then needs the token on either path."""
    host = _raw_host(tmp_path, RELEASES["7.3"])
    with open_device(host, Q35_PF, token=S.A):
        pass
    with open_device(host, Q35_VF, token=S.A) as vf:
        assert vf.path == PATH_CDEV
        with pytest.raises(VfTokenRejected), open_device(host, Q35_PF, cdev=False):
            pass
        with open_device(host, Q35_PF, token=S.A, cdev=False) as pf:
            assert pf.path == PATH_GROUP


def test_a_blocked_group_answers_before_the_token(tmp_path: Path) -> None:
    """``vfio_device_block_group()`` comes before ``vfio_df_check_token()``: with the
    VF's group node open, a bind with a wrong token is EBUSY, not EACCES."""
    host = _raw_host(tmp_path, RELEASES["7.3"])
    group = host.readlink(f"sys/bus/pci/devices/{Q35_VF}/iommu_group").rsplit("/", 1)[1]
    g = host.open(f"dev/vfio/{group}")
    fd, ictx = host.open(_cdev_of(host, Q35_VF)), host.open("dev/iommu")
    assert _errno(lambda: _bind(host, fd, ictx, argsz=24, flags=1,
                                token=uuid.uuid4())) == errno.EBUSY
    host.close(g)
    assert _errno(lambda: _bind(host, fd, ictx, argsz=24, flags=1,
                                token=uuid.uuid4())) == errno.EACCES
    host.close(fd)
    host.close(ictx)


def test_a_vf_whose_group_is_held_is_group_busy_on_the_cdev(tmp_path: Path) -> None:
    """``vfio_device_block_group()``: a cdev bind while the group is open through
    ``/dev/vfio/N`` is EBUSY, which the product reports as the group being held (naming
    the group), the same error class the group path gives, with nothing left open."""
    from vfioctl.vfio.device import GroupBusy, VfioSession

    host = q35_on(tmp_path, RELEASES["7.3"])
    userspace_pf(host, Q35_PF, 2, plain=Q35_PLAIN)
    link = host.readlink(f"sys/bus/pci/devices/{Q35_VF}/iommu_group")
    group = int(str(link).rsplit("/", 1)[1])
    with VfioSession(host) as session:
        session.group(group)
        before = dict(host.kernel.vfio.fds)
        with pytest.raises(GroupBusy, match=f"IOMMU group {group} of {Q35_VF} is already "
                           f"open by another VFIO user \\(through /dev/vfio/{group}\\)"), \
                open_device(host, Q35_VF, token=S.A):
            pass
        assert host.kernel.vfio.fds == before
