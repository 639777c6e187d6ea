"""Translation: a domain's PCI hostdevs -> QEMU arguments (``-device`` + JSON value).

Serialisation is libvirt 9.0's for QEMU >= 7.0: compact JSON, keys in build order,
booleans and integers unquoted, non-ASCII kept as UTF-8.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from vfioctl.conf.hostdev import DomainDef
from vfioctl.errors import UnsupportedConfig
from vfioctl.qemu.caps import JSON_DEVICE_MIN, VF_TOKEN_MIN, QemuCaps
from vfioctl.qemu.placement import place_hostdevs
from vfioctl.qemu.props import Props, build_vfio_pci_props, hostdev_ids


@dataclass(frozen=True)
class HostdevDevice:
    """One vfio-pci device to create: its properties and whether they carry a secret."""

    props: Props
    has_token: bool


def build_hostdev_devices(
    domain: DomainDef, caps: QemuCaps, *, reveal: bool = False
) -> list[HostdevDevice]:
    """The vfio-pci devices for every PCI hostdev of ``domain``, in document order.

    Raises:
        UnsupportedConfig: if the QEMU lacks vfio-pci, JSON ``-device`` (< 7.0) or
            ``vf-token`` (< 8.1) while a hostdev has one, or if placement fails.
    """
    if not domain.hostdevs:
        return []
    if not caps.has("host"):
        raise UnsupportedConfig(
            f"QEMU {caps.version_str} ({caps.source}) has no vfio-pci device",
            hint="use a QEMU built with VFIO support")
    if caps.version < JSON_DEVICE_MIN:
        raise UnsupportedConfig(
            f"QEMU {caps.version_str} ({caps.source}) is older than 7.0: vfioctl writes "
            "JSON -device arguments as libvirt 9.0 does for QEMU >= 7.0 only",
            hint="use QEMU 7.0 or newer")
    for hd in domain.hostdevs:
        if hd.vf_token is not None and not caps.has("vf-token"):
            minimum = ".".join(str(n) for n in VF_TOKEN_MIN[:2])
            raise UnsupportedConfig(
                f"{hd.where}: vf-token for PCI device {hd.source} needs QEMU >= {minimum}, "
                f"found QEMU {caps.version_str} ({caps.source}) without vfio-pci 'vf-token'",
                hint=f"use QEMU {minimum} or newer (--qemu BIN), or drop <vf-token> if the PF "
                "is not driven from userspace")
    placements = place_hostdevs(domain)
    ids = hostdev_ids(domain.hostdevs)
    return [
        HostdevDevice(build_vfio_pci_props(hd, dev_id=dev_id, placement=pl, reveal=reveal),
                      has_token=hd.vf_token is not None)
        for hd, dev_id, pl in zip(domain.hostdevs, ids, placements, strict=True)
    ]


def format_props_json(props: Props) -> str:
    """Compact JSON as libvirt's virJSONValueToString writes it for ``-device``."""
    return json.dumps(props, separators=(",", ":"), ensure_ascii=False)


def build_hostdev_args(domain: DomainDef, caps: QemuCaps, *, reveal: bool = False) -> list[str]:
    """``["-device", "{…}", …]`` for every PCI hostdev; see :func:`build_hostdev_devices`."""
    args: list[str] = []
    for dev in build_hostdev_devices(domain, caps, reveal=reveal):
        args += ["-device", format_props_json(dev.props)]
    return args
