"""VFIO user ABI: ioctl numbers, flags and struct packing (pure; shared by vfio/ and sim/).

Everything here is a transcription of ``include/uapi/linux/vfio.h``: the ioctls are all
``_IO(VFIO_TYPE, VFIO_BASE + n)`` (no size or direction bits), with ``VFIO_TYPE = ';'``
and ``VFIO_BASE = 100``. docs/kernel.md "Ioctl numbers and structs" lists the numbers on
x86-64; the test suite checks the two agree. Structs are little-endian ``__u32`` fields,
as on every architecture Linux runs VFIO on, so they are packed with explicit ``<``
formats.

Nothing in this module touches a file descriptor: callers hand the packed ``bytearray`` to
``Host.ioctl`` and unpack the result with the helpers below.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from typing import Final

VFIO_TYPE: Final = ord(";")
VFIO_BASE: Final = 100
VFIO_API_VERSION: Final = 0


def _io(nr: int) -> int:
    """``_IO(VFIO_TYPE, VFIO_BASE + nr)`` from include/uapi/asm-generic/ioctl.h."""
    return (VFIO_TYPE << 8) | (VFIO_BASE + nr)


# -- container (/dev/vfio/vfio) ----------------------------------------------------------
VFIO_GET_API_VERSION: Final = _io(0)         # 0x3b64
VFIO_CHECK_EXTENSION: Final = _io(1)         # 0x3b65
VFIO_SET_IOMMU: Final = _io(2)               # 0x3b66
# -- group (/dev/vfio/N) -------------------------------------------------------------------
VFIO_GROUP_GET_STATUS: Final = _io(3)        # 0x3b67
VFIO_GROUP_SET_CONTAINER: Final = _io(4)     # 0x3b68
VFIO_GROUP_UNSET_CONTAINER: Final = _io(5)   # 0x3b69
VFIO_GROUP_GET_DEVICE_FD: Final = _io(6)     # 0x3b6a
# -- device fd -------------------------------------------------------------------------------
VFIO_DEVICE_GET_INFO: Final = _io(7)         # 0x3b6b
VFIO_DEVICE_RESET: Final = _io(11)           # 0x3b6f
VFIO_DEVICE_FEATURE: Final = _io(17)         # 0x3b75

IOCTL_NAMES: Final[dict[int, str]] = {
    VFIO_GET_API_VERSION: "GET_API_VERSION",
    VFIO_CHECK_EXTENSION: "CHECK_EXTENSION",
    VFIO_SET_IOMMU: "SET_IOMMU",
    VFIO_GROUP_GET_STATUS: "GROUP_GET_STATUS",
    VFIO_GROUP_SET_CONTAINER: "GROUP_SET_CONTAINER",
    VFIO_GROUP_UNSET_CONTAINER: "GROUP_UNSET_CONTAINER",
    VFIO_GROUP_GET_DEVICE_FD: "GROUP_GET_DEVICE_FD",
    VFIO_DEVICE_GET_INFO: "DEVICE_GET_INFO",
    VFIO_DEVICE_RESET: "DEVICE_RESET",
    VFIO_DEVICE_FEATURE: "DEVICE_FEATURE",
}

# IOMMU types / extensions (VFIO_CHECK_EXTENSION, VFIO_SET_IOMMU)
VFIO_TYPE1_IOMMU: Final = 1
VFIO_SPAPR_TCE_IOMMU: Final = 2
VFIO_TYPE1v2_IOMMU: Final = 3
VFIO_DMA_CC_IOMMU: Final = 4
VFIO_NOIOMMU_IOMMU: Final = 8
VFIO_UNMAP_ALL: Final = 9
VFIO_UPDATE_VADDR: Final = 10

# struct vfio_group_status.flags
VFIO_GROUP_FLAGS_VIABLE: Final = 1 << 0
VFIO_GROUP_FLAGS_CONTAINER_SET: Final = 1 << 1

# struct vfio_device_info.flags
VFIO_DEVICE_FLAGS_RESET: Final = 1 << 0
VFIO_DEVICE_FLAGS_PCI: Final = 1 << 1
VFIO_PCI_NUM_REGIONS: Final = 9   # BAR0-5, ROM, CONFIG, VGA
VFIO_PCI_NUM_IRQS: Final = 5      # INTX, MSI, MSIX, ERR, REQ

# struct vfio_device_feature.flags
VFIO_DEVICE_FEATURE_MASK: Final = 0xFFFF
VFIO_DEVICE_FEATURE_GET: Final = 1 << 16
VFIO_DEVICE_FEATURE_SET: Final = 1 << 17
VFIO_DEVICE_FEATURE_PROBE: Final = 1 << 18
VFIO_DEVICE_FEATURE_PCI_VF_TOKEN: Final = 0

_U32x2: Final = struct.Struct("<II")
_U32x4: Final = struct.Struct("<IIII")
_I32: Final = struct.Struct("<i")

GROUP_STATUS_SIZE: Final = _U32x2.size            # argsz, flags
DEVICE_INFO_SIZE: Final = 24                       # argsz flags num_regions num_irqs
#                                                    cap_offset pad
DEVICE_INFO_MINSZ: Final = _U32x4.size            # offsetofend(num_irqs)
DEVICE_FEATURE_MINSZ: Final = _U32x2.size         # argsz, flags (data[] follows)
VF_TOKEN_FEATURE_SIZE: Final = DEVICE_FEATURE_MINSZ + 16


def pack_group_status() -> bytearray:
    """A ``struct vfio_group_status`` with ``argsz`` filled in, for GROUP_GET_STATUS."""
    return bytearray(_U32x2.pack(GROUP_STATUS_SIZE, 0))


def unpack_group_status(buf: bytes | bytearray) -> int:
    """The ``flags`` of a ``struct vfio_group_status``."""
    return int(_U32x2.unpack_from(buf)[1])


def pack_fd(fd: int) -> bytearray:
    """The ``__s32`` container fd argument of GROUP_SET_CONTAINER."""
    return bytearray(_I32.pack(fd))


def unpack_fd(buf: bytes | bytearray) -> int:
    return int(_I32.unpack_from(buf)[0])


def pack_device_name(name: str) -> bytearray:
    """The NUL-terminated device string of GROUP_GET_DEVICE_FD (``"ADDR vf_token=UUID"``)."""
    return bytearray(name.encode() + b"\0")


def unpack_device_name(buf: bytes | bytearray) -> str:
    """Inverse of :func:`pack_device_name`: the bytes up to the first NUL, as the kernel's
    ``strndup_user`` reads them."""
    raw = bytes(buf)
    end = raw.find(b"\0")
    return (raw if end < 0 else raw[:end]).decode("utf-8", "replace")


@dataclass(frozen=True)
class DeviceInfo:
    """``struct vfio_device_info`` as returned by DEVICE_GET_INFO."""

    flags: int
    num_regions: int
    num_irqs: int

    @property
    def reset(self) -> bool:
        return bool(self.flags & VFIO_DEVICE_FLAGS_RESET)


def pack_device_info() -> bytearray:
    return bytearray(struct.pack("<IIIIII", DEVICE_INFO_SIZE, 0, 0, 0, 0, 0))


def unpack_device_info(buf: bytes | bytearray) -> DeviceInfo:
    _, flags, nreg, nirq = _U32x4.unpack_from(buf)
    return DeviceInfo(flags, nreg, nirq)


def pack_feature(flags: int, data: bytes = b"") -> bytearray:
    """A ``struct vfio_device_feature`` header followed by ``data``."""
    return bytearray(_U32x2.pack(DEVICE_FEATURE_MINSZ + len(data), flags) + data)


def unpack_feature(buf: bytes | bytearray) -> tuple[int, int, bytes]:
    """``(argsz, flags, data)`` of a ``struct vfio_device_feature``."""
    argsz, flags = _U32x2.unpack_from(buf)
    return int(argsz), int(flags), bytes(buf[DEVICE_FEATURE_MINSZ:])


def pack_vf_token_set(token: uuid.UUID) -> bytearray:
    """DEVICE_FEATURE SET|PCI_VF_TOKEN with the 16 raw bytes of the UUID (argsz 24)."""
    return pack_feature(VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_PCI_VF_TOKEN,
                        token.bytes)


def pack_vf_token_probe() -> bytearray:
    """DEVICE_FEATURE PROBE|SET|PCI_VF_TOKEN: does this device take a VF token?"""
    return pack_feature(VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_SET
                        | VFIO_DEVICE_FEATURE_PCI_VF_TOKEN, bytes(16))


def device_name_with_token(addr: str, token: uuid.UUID | None) -> str:
    """The GET_DEVICE_FD string: ``"0000:bb:dd.f"`` or ``"0000:bb:dd.f vf_token=UUID"``.

    The result contains the secret token: never log it.
    """
    return addr if token is None else f"{addr} vf_token={token}"
