"""The VFIO ioctl numbers and struct layouts match docs/kernel.md "Ioctl numbers and
structs" (x86-64)."""

from __future__ import annotations

import uuid

from vfioctl.host import uapi


def test_ioctl_numbers_match_kernel_md() -> None:
    assert uapi.VFIO_GET_API_VERSION == 0x3B64
    assert uapi.VFIO_CHECK_EXTENSION == 0x3B65
    assert uapi.VFIO_SET_IOMMU == 0x3B66
    assert uapi.VFIO_GROUP_GET_STATUS == 0x3B67
    assert uapi.VFIO_GROUP_SET_CONTAINER == 0x3B68
    assert uapi.VFIO_GROUP_GET_DEVICE_FD == 0x3B6A
    assert uapi.VFIO_DEVICE_GET_INFO == 0x3B6B
    assert uapi.VFIO_DEVICE_FEATURE == 0x3B75
    assert uapi.VFIO_TYPE1v2_IOMMU == 3


def test_vf_token_feature_layout() -> None:
    token = uuid.UUID("11111111-2222-3333-4444-555555555555")
    buf = uapi.pack_vf_token_set(token)
    argsz, flags, data = uapi.unpack_feature(buf)
    assert (argsz, len(buf)) == (24, 24)
    assert flags == 1 << 17
    assert data == token.bytes


def test_device_name_round_trip_stops_at_nul() -> None:
    buf = uapi.pack_device_name("0000:01:00.1 vf_token=abc") + b"junk"
    assert uapi.unpack_device_name(buf) == "0000:01:00.1 vf_token=abc"


def test_group_status_and_info_unpack() -> None:
    buf = uapi.pack_group_status()
    buf[4] = 3
    assert uapi.unpack_group_status(buf) == (uapi.VFIO_GROUP_FLAGS_VIABLE
                                             | uapi.VFIO_GROUP_FLAGS_CONTAINER_SET)
    info = uapi.pack_device_info()
    info[4] = 3
    info[8] = 9
    assert uapi.unpack_device_info(info) == uapi.DeviceInfo(3, 9, 0)
