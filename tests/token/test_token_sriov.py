"""``change_numvfs``/``vfioctl sriov``: the kernel's answers mapped to what the user must
do, enable_sriov consent, the host lock and held VFs."""

from __future__ import annotations

import errno
import os

import pytest
from tokenops import change_numvfs, open_vf, set_token
from tokentest import Q35_PF, Q35_VF, SRV_PF

from vfioctl.errors import Busy, DeviceInUse, OperationInvalid, UsageError, VfsEnabled
from vfioctl.manager import HostdevManager
from vfioctl.pci.sriov import ENABLE_SRIOV, EnableSriovRequired, get_sriov
from vfioctl.sim.host import SimHost
from vfioctl.state import StateStore


def test_vfio_pf_needs_consent_for_enable_sriov(make_host: object) -> None:
    assert callable(make_host)
    host: SimHost = make_host("sriov-server")
    HostdevManager(host).detach([SRV_PF])
    with pytest.raises(EnableSriovRequired) as exc:
        change_numvfs(host, SRV_PF, 2)
    assert "not isolated from the PF" in exc.value.notice
    assert "VF token" in exc.value.notice
    assert not host.kernel.enable_sriov and get_sriov(host, SRV_PF).sriov_numvfs == 0
    change = change_numvfs(host, SRV_PF, 2, allow_enable_sriov=True)
    assert change.enabled_sriov_param
    vfs = change.after.vfs
    assert [str(v.addr) for v in vfs] == ["0000:03:02.0", "0000:03:02.1"]
    assert all(v.driver == "vfio-pci" and v.iommu_group is not None for v in vfs)


def test_nonzero_to_nonzero_says_set_zero_first(q35: SimHost) -> None:
    with pytest.raises(VfsEnabled, match=f"PF {Q35_PF} already has 2 VFs") as exc:
        change_numvfs(q35, Q35_PF, 3, allow_enable_sriov=True)
    assert exc.value.hint is not None and "set --numvfs 0 first" in exc.value.hint


def test_kernel_ebusy_maps_to_set_zero_first(q35: SimHost) -> None:
    # the kernel's own EBUSY (a race with another writer) is mapped the same way
    from vfioctl.pci import sriov

    info = get_sriov(q35, Q35_PF)
    with pytest.raises(VfsEnabled, match="already has VFs") as exc:
        sriov.write_numvfs(q35, info, 3)
    assert exc.value.hint == "set --numvfs 0 first"


def test_kernel_enoent_on_a_vfio_pf_is_enable_sriov(q35: SimHost) -> None:
    q35.faults.fail_write(f"sys/bus/pci/devices/{Q35_PF}/sriov_numvfs", errno.ENOENT)
    with pytest.raises(EnableSriovRequired, match="only with enable_sriov=Y"):
        change_numvfs(q35, Q35_PF, 0, allow_enable_sriov=True)


def test_enable_sriov_write_refused(make_host: object) -> None:
    assert callable(make_host)
    host: SimHost = make_host("sriov-server")
    HostdevManager(host).detach([SRV_PF])
    host.faults.fail_write(str(ENABLE_SRIOV), errno.EACCES)
    from vfioctl.errors import PermissionDenied

    with pytest.raises(PermissionDenied):
        change_numvfs(host, SRV_PF, 1, allow_enable_sriov=True)


def test_driverless_pf_and_out_of_range(make_host: object) -> None:
    assert callable(make_host)
    host: SimHost = make_host("sriov-server")
    with pytest.raises(UsageError, match="supports 0 to 64 VFs, not 65"):
        change_numvfs(host, SRV_PF, 65)
    host.write(f"sys/bus/pci/devices/{SRV_PF}/driver/unbind", SRV_PF)
    with pytest.raises(OperationInvalid, match="has no driver"):
        change_numvfs(host, SRV_PF, 1)


def test_kernel_driver_without_sriov_configure_enoent(make_host: object) -> None:
    assert callable(make_host)
    host: SimHost = make_host("sriov-server")
    host.faults.fail_write(f"sys/bus/pci/devices/{SRV_PF}/sriov_numvfs", errno.ENOENT)
    with pytest.raises(OperationInvalid, match="driver i40e cannot change VFs"):
        change_numvfs(host, SRV_PF, 1)


def test_vf_and_non_sriov_device(q35: SimHost) -> None:
    with pytest.raises(OperationInvalid, match=f"{Q35_VF} is a VF of {Q35_PF}"):
        get_sriov(q35, Q35_VF)
    with pytest.raises(OperationInvalid, match="has no SR-IOV capability"):
        get_sriov(q35, "0000:02:00.0")


def test_refused_while_a_vf_is_held_by_an_owner(q35: SimHost) -> None:
    HostdevManager(q35).prepare("vm1", [Q35_VF])
    with pytest.raises(DeviceInUse, match=f"cannot remove the VFs of PF {Q35_PF}: its VF "
                       f"{Q35_VF} is held by 'vm1', and the VF would be removed"):
        change_numvfs(q35, Q35_PF, 0, allow_enable_sriov=True)
    assert get_sriov(q35, Q35_PF).sriov_numvfs == 2


def test_refused_while_a_vf_group_is_open(q35: SimHost) -> None:
    set_token(q35, Q35_PF)
    with open_vf(q35, Q35_VF), pytest.raises(
            DeviceInUse, match=f"its VF {Q35_VF} is in use: IOMMU group .* is open by pid "
            f"{os.getpid()} "):
        change_numvfs(q35, Q35_PF, 0, allow_enable_sriov=True)


def test_waits_for_the_host_lock(q35: SimHost) -> None:
    assert q35.state_dir is not None
    other = StateStore(q35.state_dir, timeout=0.1)
    with other.writer(), pytest.raises(Busy):
        change_numvfs(q35, Q35_PF, 0, allow_enable_sriov=True, lock_timeout=0.1)


def test_zero_then_n(q35: SimHost) -> None:
    change_numvfs(q35, Q35_PF, 0, allow_enable_sriov=True)
    after = change_numvfs(q35, Q35_PF, 3, allow_enable_sriov=True).after
    assert after.sriov_numvfs == 3 and len(after.vfs) == 3
