"""VFIO user ABI, cdev path: ``/dev/vfio/devices/vfioN`` + ``/dev/iommu`` (pure).

Transcribed from ``include/uapi/linux/vfio.h`` (Linux 6.17). The cdev path exists since
6.6 (``CONFIG_VFIO_DEVICE_CDEV``); ``VFIO_DEVICE_BIND_FLAG_TOKEN`` and
``token_uuid_ptr`` since 6.17 (``drivers/vfio/device_cdev.c:
vfio_df_ioctl_bind_iommufd()``; docs/kernel.md "The cdev path and iommufd"). Older cdev
kernels reject the flag with EINVAL (``bind.flags`` must be 0); early 6.17 kernels have
been reported to fail with E2BIG when the pointer is set (fixed in stable; not verified
here, see that section). Callers fall back to the group path on either.

Additive to :mod:`vfioctl.host.uapi`, which holds the group-path ABI.
"""

from __future__ import annotations

import struct
from typing import Final

from vfioctl.host.uapi import VFIO_BASE, VFIO_TYPE

#: ``_IO(VFIO_TYPE, VFIO_BASE + 18)``: bind a cdev-opened device to an iommufd.
VFIO_DEVICE_BIND_IOMMUFD: Final = (VFIO_TYPE << 8) | (VFIO_BASE + 18)   # 0x3b76
VFIO_DEVICE_BIND_FLAG_TOKEN: Final = 1 << 0


# struct vfio_device_bind_iommufd { __u32 argsz; __u32 flags; __s32 iommufd;
#                                   __u32 out_devid; __aligned_u64 token_uuid_ptr; }
_BIND: Final = struct.Struct("<IIiIQ")
BIND_IOMMUFD_MINSZ: Final = 16                  # offsetofend(out_devid): pre-6.17 size
BIND_IOMMUFD_SIZE: Final = _BIND.size           # 24, with token_uuid_ptr


def pack_bind_iommufd(iommufd: int, token_ptr: int | None) -> bytearray:
    """The BIND_IOMMUFD argument; ``token_ptr`` is the address of 16 UUID bytes, or None.

    Without a token the pre-6.17 layout (argsz 16) is used, which every cdev kernel takes.
    """
    if token_ptr is None:
        return bytearray(_BIND.pack(BIND_IOMMUFD_MINSZ, 0, iommufd, 0, 0)[:BIND_IOMMUFD_MINSZ])
    return bytearray(_BIND.pack(BIND_IOMMUFD_SIZE, VFIO_DEVICE_BIND_FLAG_TOKEN, iommufd, 0,
                                token_ptr))


def unpack_bind_iommufd(buf: bytes | bytearray) -> tuple[int, int, int, int, int]:
    """``(argsz, flags, iommufd, out_devid, token_uuid_ptr)``; a 16-byte argument reads
    a zero pointer."""
    raw = bytes(buf).ljust(BIND_IOMMUFD_SIZE, b"\0")
    argsz, flags, iommufd, devid, ptr = _BIND.unpack_from(raw)
    return int(argsz), int(flags), int(iommufd), int(devid), int(ptr)
