"""Group viability: ``groups --json`` "viable" against the kernel's VFIO_GROUP_GET_STATUS.

Binding a device to vfio-pci creates ``/dev/vfio/N`` for its group, and then the kernel
itself says whether the group is viable. The bindings (raw sysfs, the recipe of
docs/kernel.md "Binding and driver override") cover the verdicts of docs/kernel.md "DMA
ownership and group viability" and the multifunction pair:

- 02:00.0 e1000e alone behind rp2                            -> viable
- {03:00.0 driverless bridge, 04:01.0 e1000 on vfio-pci,
   04:02.0 virtio-rng on virtio-pci}                         -> not viable
- {06:01.0 downstream port on pcieport, 08:00.0 on vfio-pci} -> viable
- {00:11.0 virtio-net on virtio-pci, 00:11.1 on vfio-pci}    -> not viable, and viable
  once virtio-net is unbound (driverless counts as safe)

Starts from: the boot state. Leaves: the boot state again (original drivers rebound),
with the vfio-pci module loaded.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator

import pytest

from . import topology
from .checks import (
    assert_doc_matches_sysfs,
    assert_groups_match_sysfs,
    assert_list_matches_sysfs,
)
from .differential import Differential
from .guest_kernel import DEV_VFIO, GuestKernel
from .vfioctl_cli import VfioctlCli

TO_VFIO = (topology.PLAIN_E1000E, topology.BRIDGE_E1000, topology.SWITCH_E1000E,
           topology.MF_RNG)


@pytest.fixture(scope="module")
def bound(kernel: GuestKernel) -> Iterator[dict[str, str | None]]:
    """Bind TO_VFIO to vfio-pci; on the way out, put every boot driver back."""
    kernel.modprobe("vfio-pci")
    for name in TO_VFIO:
        assert kernel.bind(name, "vfio-pci") == "vfio-pci", name
    yield {name: kernel.driver(name) for name in kernel.addresses()}
    restore_boot_drivers(kernel)


def restore_boot_drivers(kernel: GuestKernel) -> None:
    """Clear every override we set and reprobe: the kernel picks the boot driver again."""
    for slot in topology.BOOT:
        if slot.address in topology.NEVER_TOUCH or kernel.driver(slot.address) == slot.driver:
            continue
        kernel.clear_override(slot.address)
        kernel.unbind(slot.address)
        kernel.probe(slot.address)


def product_viable(vfioctl: VfioctlCli) -> dict[int, bool]:
    return {g["group"]: g["viable"] for g in vfioctl.json("groups")}


def test_dev_vfio_nodes_are_the_groups_with_a_vfio_member(
        bound: dict[str, str | None], kernel: GuestKernel,
        differential: Differential) -> None:
    differential.checkpoint("four devices bound to vfio-pci")
    expected = {kernel.group_of(n) for n, drv in bound.items() if drv == "vfio-pci"}
    assert set(kernel.vfio_group_nodes()) == expected


def test_viable_equals_group_get_status(bound: dict[str, str | None], kernel: GuestKernel,
                                        vfioctl: VfioctlCli) -> None:
    product = product_viable(vfioctl)
    nodes = kernel.vfio_group_nodes()
    assert nodes
    assert {g: product[g] for g in nodes} == {g: kernel.group_viable(g) for g in nodes}


@pytest.mark.parametrize(("member", "viable"), [
    (topology.PLAIN_E1000E, True),
    (topology.BRIDGE_E1000, False),
    (topology.SWITCH_E1000E, True),
    (topology.MF_RNG, False),
])
def test_kernel_md_verdicts(member: str, viable: bool, bound: dict[str, str | None],
                            kernel: GuestKernel, vfioctl: VfioctlCli) -> None:
    group = kernel.group_of(member)
    assert group is not None
    assert kernel.group_viable(group) is viable
    assert product_viable(vfioctl)[group] is viable


def test_blockers_name_the_kernel_bound_members(bound: dict[str, str | None],
                                                vfioctl: VfioctlCli) -> None:
    by_member = {m: g for g in vfioctl.json("groups") for m in g["devices"]}
    assert by_member[topology.BRIDGE]["blockers"] == [
        {"address": topology.BRIDGE_RNG, "driver": "virtio-pci"}]
    assert by_member[topology.MF_RNG]["blockers"] == [
        {"address": topology.MF_NET, "driver": "virtio-pci"}]
    assert by_member[topology.SWITCH_E1000E]["blockers"] == []


def test_documents_match_sysfs_after_binding(bound: dict[str, str | None],
                                             kernel: GuestKernel,
                                             vfioctl: VfioctlCli) -> None:
    assert_list_matches_sysfs(vfioctl.json("list"), kernel)
    assert_groups_match_sysfs(vfioctl.json("groups"), kernel)
    for name in TO_VFIO:
        doc = vfioctl.json("show", name)
        assert_doc_matches_sysfs(doc, kernel)
        assert doc["driver_override"] == "vfio-pci"


def test_second_group_open_is_ebusy(bound: dict[str, str | None], kernel: GuestKernel) -> None:
    group = kernel.group_of(topology.PLAIN_E1000E)
    node = f"/{DEV_VFIO}/{group}"
    fd = os.open(node, os.O_RDWR)
    try:
        with pytest.raises(OSError) as exc:
            os.close(os.open(node, os.O_RDWR))
        assert exc.value.errno == errno.EBUSY
    finally:
        os.close(fd)


def test_driverless_member_counts_as_safe(bound: dict[str, str | None], kernel: GuestKernel,
                                          vfioctl: VfioctlCli,
                                          differential: Differential) -> None:
    """Unbinding virtio-net from the multifunction pair makes the group viable."""
    group = kernel.group_of(topology.MF_RNG)
    assert group is not None
    kernel.unbind(topology.MF_NET)
    assert kernel.driver(topology.MF_NET) is None
    assert kernel.group_viable(group) is True
    assert product_viable(vfioctl)[group] is True
    differential.checkpoint("virtio-net unbound from the multifunction pair")


def test_boot_drivers_come_back(bound: dict[str, str | None], kernel: GuestKernel,
                                vfioctl: VfioctlCli, differential: Differential) -> None:
    """The raw reattach recipe (clear override, drivers_probe) restores every boot driver;
    the /dev/vfio nodes go away with the last vfio-pci member."""
    restore_boot_drivers(kernel)
    assert {s.address: kernel.driver(s.address) for s in topology.BOOT} == {
        s.address: s.driver for s in topology.BOOT}
    assert kernel.vfio_group_nodes() == []
    assert all(vfioctl.json("show", n)["driver_override"] is None for n in TO_VFIO)
    differential.checkpoint("boot drivers restored")
