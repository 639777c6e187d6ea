"""Translation: :class:`HostdevDef` -> the ordered QEMU property dict of one vfio-pci device.

Key order is libvirt 9.0's (``qemuBuildPCIHostdevDevProps`` then
``qemuBuildDeviceAddressProps`` then ``qemuBuildRomProps``), checked against
``virsh domxml-to-native``: driver, host, id, bootindex, bus, multifunction, addr,
rombar, romfile. ``vf-token`` goes right after ``host``, as in the unmerged libvirt
series (Vivek Kashyap, 2024; docs/rationale.md "The discussions"). Unset optional
properties are left out.
"""

from __future__ import annotations

from vfioctl.conf.hostdev import GuestPciAddress, HostdevDef
from vfioctl.errors import ConfigError
from vfioctl.qemu.placement import Placement
from vfioctl.secret import REDACTED, VfToken

PropValue = str | int | bool
Props = dict[str, PropValue]


def token_text(hd: HostdevDef) -> str:
    """The hostdev's VF token itself, for QEMU (the one place conf's token is revealed).

    Raises:
        ConfigError: the hostdev names the stored token (``<vf-token/>``) and it was not
            resolved from a host first (:func:`vfioctl.hostcheck.resolve_vf_tokens`).
    """
    token = hd.vf_token
    if isinstance(token, VfToken):
        return token.reveal()
    where = f"{hd.where}: " if hd.where is not None else ""
    raise ConfigError(f"{where}the VF token of PCI device {hd.source} is the one vfioctl "
                      "holds for its PF (<vf-token/>): it is known only on that host",
                      hint="name the host (--host, VFIOCTL_HOST) to resolve it")


def format_pci_addr(addr: GuestPciAddress) -> str:
    """QEMU's ``addr`` value: ``0x3`` or, for a non-zero function, ``0x11.0x1``."""
    if addr.function:
        return f"0x{addr.slot:x}.0x{addr.function:x}"
    return f"0x{addr.slot:x}"


def build_vfio_pci_props(
    hd: HostdevDef, *, dev_id: str, placement: Placement, reveal: bool = False
) -> Props:
    """The ``-device`` / ``device_add`` properties for one PCI hostdev.

    Args:
        hd: the hostdev.
        dev_id: the QEMU id (the ``ua-`` alias, or ``hostdevN``).
        placement: its guest bus and address.
        reveal: put the VF token itself in; otherwise :data:`vfioctl.secret.REDACTED`.
    """
    props: Props = {"driver": "vfio-pci", "host": str(hd.source)}
    if hd.vf_token is not None:
        props["vf-token"] = token_text(hd) if reveal else REDACTED
    props["id"] = dev_id
    if hd.boot_order is not None:
        props["bootindex"] = hd.boot_order
    props["bus"] = placement.bus
    if placement.address.multifunction is not None:
        props["multifunction"] = placement.address.multifunction
    props["addr"] = format_pci_addr(placement.address)
    rom = hd.rom
    if rom is not None:
        if rom.enabled is False:
            props["romfile"] = ""
        else:
            if rom.bar is not None:
                props["rombar"] = 1 if rom.bar else 0
            if rom.file is not None:
                props["romfile"] = rom.file
    return props


def hostdev_ids(hds: tuple[HostdevDef, ...]) -> list[str]:
    """QEMU ids like libvirt: the user's ``ua-`` alias, else ``hostdevN``.

    N counts only the hostdevs without an alias (libvirt's
    ``qemuAssignDeviceHostdevAlias`` takes the highest ``hostdevN`` so far plus one), so
    ``[ua-gpu, -, -]`` gives ``ua-gpu, hostdev0, hostdev1`` (checked with libvirt 9.0).
    """
    ids: list[str] = []
    n = 0
    for hd in hds:
        if hd.alias:
            ids.append(hd.alias)
        else:
            ids.append(f"hostdev{n}")
            n += 1
    return ids
