"""Policy checks shared by the planners: a writable host, host use, open VFIO files,
ownership.

Each returns the error the operation is refused with (or None), so a planner can put it
in its :class:`~vfioctl.manager.plan.Plan` instead of raising half-way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from vfioctl.address import PciAddress
from vfioctl.errors import DeviceInUse, ReadOnlyHost
from vfioctl.host.base import Host
from vfioctl.pci.device import PciDevice
from vfioctl.pci.driver import HOLDING_DRIVERS
from vfioctl.pci.usage import find_host_uses
from vfioctl.state import DeviceRecord
from vfioctl.vfio.holders import device_users


def require_writable(host: Host, what: str) -> None:
    """The one refusal for a change on a host that cannot change (a snapshot, a bundled
    simulated host), with the way to get a writable one.

    Raises:
        ReadOnlyHost: if ``host`` is read-only.
    """
    if not host.readonly and host.state_dir is not None:
        return
    name = host.name
    if name.startswith("sim:"):
        hint = (f"copy it first: 'vfioctl sim copy {name[4:]} FILE', then use "
                f"--host sim:FILE")
    else:
        hint = ("a snapshot cannot change; use the live host (--host linux) or a "
                "simulated one (--host sim:FILE)")
    raise ReadOnlyHost(f"host {name} is read-only: cannot {what}", hint=hint)


def held_by(addr: PciAddress, owner: str | None) -> DeviceInUse:
    return DeviceInUse(
        f"PCI device {addr} is in use by '{owner}'", addr=addr, owner=owner,
        hint=f"release it from {owner} first ('vfioctl reattach --owner {owner} {addr}')",
    )


def host_uses(devs: Iterable[PciDevice]) -> DeviceInUse | None:
    """The refusal for devices the host relies on (network, storage, the boot GPU)."""
    blocked = []
    for dev in devs:
        uses = find_host_uses(dev)
        if uses:
            blocked.append((dev, "; ".join(u.detail for u in uses)))
    if not blocked:
        return None
    first = blocked[0][0]
    if len(blocked) == 1:
        message = f"PCI device {first.name} is in use by the host: {blocked[0][1]}"
    else:
        message = "devices are in use by the host: " + ", ".join(
            f"{dev.name} ({why})" for dev, why in blocked)
    them = "it" if len(blocked) == 1 else "them"
    return DeviceInUse(message, addr=first.addr,
                       hint=f"stop using {them} first, or pass --force to detach anyway")


def on_vfio(dev: PciDevice) -> bool:
    current = dev.driver
    return current in HOLDING_DRIVERS or (current is not None and dev.is_vfio_variant)


def open_by_user(dev: PciDevice, *, what: str | None = None) -> DeviceInUse | None:
    """Refuse unbinding a device a VFIO user has open: the kernel would not fail the
    write but wait, in vfioctl, until the user lets go (docs/kernel.md, "Unbinds that
    block"). ``what`` names the device in the message when it is not the one unbound
    (a VF of a PF being changed)."""
    users = device_users(dev)
    if users is None:
        return None
    number = dev.iommu_group
    who = (", ".join(h.describe() for h in users) if users
           else "a VFIO user (a running guest?)")
    subject = what or f"PCI device {dev.name}"
    return DeviceInUse(
        f"{subject} is in use: IOMMU group {number} is open by {who}",
        addr=dev.addr,
        hint="stop the guest or program using it first (unbinding it now would hang "
             "until it lets go)",
    )


def vfs_held(pf: PciDevice, records: Mapping[PciAddress, DeviceRecord],
             *, verb: str) -> DeviceInUse | None:
    """A PF's VFs held by vfioctl (for an owner or not) stop any change that would
    remove them: a guest would lose its device and vfioctl's record would dangle."""
    for vf_addr in pf.virtfns:
        rec = records.get(vf_addr)
        if rec is None:
            continue
        who = f"'{rec.owner}'" if rec.owner else "vfioctl"
        release = (f"'vfioctl reattach --owner {rec.owner} {vf_addr}'" if rec.owner
                   else f"'vfioctl reattach {vf_addr}'")
        return DeviceInUse(
            f"cannot {verb} PF {pf.name}: its VF {vf_addr} is held by {who}, and the VF "
            f"would be removed", addr=vf_addr, owner=rec.owner,
            hint=f"give the VF back first ({release})")
    return None


def vfs_open(pf: PciDevice, *, verb: str) -> DeviceInUse | None:
    """A PF's VFs open by a VFIO user stop any change that removes them (it would
    block until the user closes them)."""
    for vf_addr in pf.virtfns:
        vf = PciDevice(pf.host, vf_addr)
        err = open_by_user(vf, what=f"cannot {verb} PF {pf.name}: its VF {vf_addr}")
        if err is not None:
            return err
    return None
