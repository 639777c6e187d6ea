"""Config-space decoding: capability chains built byte by byte, and robustness."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from vfioctl.pci.config import parse_config


def _space(size: int = 4096) -> bytearray:
    raw = bytearray(size)
    struct.pack_into("<HH", raw, 0, 0x8086, 0x10FB)
    return raw


def _with_caps() -> bytearray:
    raw = _space()
    raw[0x06] = 0x10  # status: capability list
    raw[0x0E] = 0x80  # type 0, multifunction
    raw[0x34] = 0x40
    raw[0x40:0x42] = bytes([0x01, 0x60])  # PM -> 0x60
    raw[0x60:0x62] = bytes([0x10, 0x00])  # PCIe, end
    struct.pack_into("<H", raw, 0x62, 0x0002 | (0x0 << 4))  # v2, endpoint
    struct.pack_into("<I", raw, 0x64, 1 << 28)  # DevCap: FLR
    # ext: ACS @0x100 -> SR-IOV @0x140 -> ARI @0x180
    struct.pack_into("<I", raw, 0x100, 0x000D | (1 << 16) | (0x140 << 20))
    struct.pack_into("<HH", raw, 0x104, 0b0011101, 0b0001101)  # cap SV RR CR UF; ctl no UF
    struct.pack_into("<I", raw, 0x140, 0x0010 | (1 << 16) | (0x180 << 20))
    struct.pack_into("<H", raw, 0x148, 0x11)  # VF enable + ARI hierarchy
    struct.pack_into("<HHH", raw, 0x14C, 8, 64, 4)  # initial, total, num
    struct.pack_into("<HH", raw, 0x154, 0x80, 2)  # offset, stride
    struct.pack_into("<H", raw, 0x15A, 0x10ED)
    struct.pack_into("<I", raw, 0x180, 0x000E | (1 << 16))
    struct.pack_into("<H", raw, 0x184, 1 << 8)
    return raw


def test_full_chain_is_decoded() -> None:
    cfg = parse_config(bytes(_with_caps()))
    assert [(c.id, c.extended) for c in cfg.capabilities] == [
        (0x01, False), (0x10, False), (0x0D, True), (0x10, True), (0x0E, True)]
    assert cfg.multifunction and not cfg.is_bridge
    assert cfg.pcie_port_type == "endpoint" and cfg.flr_capable
    acs = cfg.acs
    assert acs is not None
    assert acs.capability == {"SV", "RR", "CR", "UF"} and acs.control == {"SV", "RR", "CR"}
    assert not acs.isolates  # UF implemented but off
    sriov = cfg.sriov
    assert sriov is not None
    assert (sriov.total_vfs, sriov.num_vfs, sriov.vf_offset, sriov.vf_stride,
            sriov.vf_device, sriov.vf_enable) == (64, 4, 0x80, 2, 0x10ED, True)
    assert cfg.ari_next_function == 1


def test_acs_missing_capability_bits_count_as_enabled() -> None:
    raw = _with_caps()
    struct.pack_into("<HH", raw, 0x104, 0b0001101, 0b0001101)  # UF not implemented
    acs = parse_config(bytes(raw)).acs
    assert acs is not None and acs.isolates


def test_unprivileged_64_byte_config_stops_cleanly() -> None:
    cfg = parse_config(bytes(_with_caps()[:64]))
    assert cfg.capabilities == () and cfg.acs is None and cfg.sriov is None


def test_loops_end_the_walk() -> None:
    raw = _with_caps()
    raw[0x61] = 0x40  # PCIe -> PM again
    struct.pack_into("<I", raw, 0x180, 0x000E | (1 << 16) | (0x100 << 20))
    cfg = parse_config(bytes(raw))
    assert len(cfg.capabilities) == 5


@given(st.binary(max_size=4096))
def test_any_bytes_decode_without_error(raw: bytes) -> None:
    cfg = parse_config(raw)
    for cap in cfg.capabilities:
        assert 0 <= cap.offset < len(raw)
    _ = (cfg.acs, cfg.sriov, cfg.pcie_port_type, cfg.ari_next_function, cfg.flr_capable)
