"""``vfio-dev/vfioN`` (and ``/dev/vfio/devices/vfioN``): the kernel gives each vfio device
the lowest free index when vfio-pci binds it and frees it when vfio-pci lets go
(``drivers/vfio/vfio_main.c``: ``vfio_init_device()`` → ``ida_alloc_max()``,
``vfio_device_release()`` → ``ida_free()``; docs/kernel.md "The cdev path and iommufd").
So the numbers follow the order devices were bound in, not their addresses, and a freed
number is reused."""

from __future__ import annotations

from pathlib import Path

import pytest
from simtest import DEV, bind_vfio, file_host, make_host

from vfioctl.errors import ConfigError
from vfioctl.sim.host import SimHost
from vfioctl.sim.loader import bundled_text

PLAIN, BRIDGE_E1000, RNG, SWITCHED = ("0000:02:00.0", "0000:04:01.0", "0000:04:02.0",
                                      "0000:08:00.0")


def index(host: SimHost, name: str) -> int | None:
    try:
        (node,) = host.listdir(DEV / name / "vfio-dev")
    except OSError:
        return None
    assert node.startswith("vfio")
    return int(node[len("vfio"):])


def unbind(host: SimHost, name: str) -> None:
    host.write(DEV / name / "driver/unbind", name)


def test_indexes_follow_bind_order_and_reuse_the_lowest_free() -> None:
    host = make_host("q35-vmtest")
    host.load_module("vfio-pci")
    for name in (SWITCHED, PLAIN, BRIDGE_E1000):      # not in address order
        bind_vfio(host, name)
    assert [index(host, n) for n in (SWITCHED, PLAIN, BRIDGE_E1000)] == [0, 1, 2]
    unbind(host, PLAIN)
    assert index(host, PLAIN) is None
    bind_vfio(host, RNG)
    assert index(host, RNG) == 1                       # the freed number, not 3
    bind_vfio(host, PLAIN)
    assert index(host, PLAIN) == 3
    assert sorted(index(host, n) for n in (SWITCHED, PLAIN, BRIDGE_E1000, RNG)) == \
        [0, 1, 2, 3]


def test_cdev_nodes_are_the_bound_devices_indexes() -> None:
    text = (bundled_text("q35-vmtest")
            .replace("[host]\n", "[host]\niommufd = true\n", 1)
            .replace('kernel = "6.1.0-56-amd64"', 'kernel = "7.3.4-vmtest"', 1))
    host = SimHost.from_text(text)
    host.load_module("vfio-pci")
    bind_vfio(host, SWITCHED)
    bind_vfio(host, PLAIN)
    unbind(host, SWITCHED)
    assert sorted(host.listdir("dev/vfio/devices")) == ["vfio1"]
    fd = host.open("dev/vfio/devices/vfio1")           # PLAIN's node opens
    host.close(fd)


def two_bound(tmp_path: Path) -> Path:
    """A q35 host file with SWITCHED (vfio0) and then PLAIN (vfio1) on vfio-pci."""
    path, host = file_host(tmp_path)
    bind_vfio(host, SWITCHED)
    bind_vfio(host, PLAIN)
    return path


def test_a_host_file_keeps_the_indexes(tmp_path: Path) -> None:
    """Every command loads a host file afresh: the numbers survive it."""
    path = two_bound(tmp_path)
    unbind(SimHost.from_file(path), SWITCHED)
    again = SimHost.from_file(path)
    assert index(again, PLAIN) == 1 and index(again, SWITCHED) is None
    bind_vfio(again, RNG)
    assert index(SimHost.from_file(path), RNG) == 0


def test_a_state_with_one_index_twice_is_refused(tmp_path: Path) -> None:
    path = two_bound(tmp_path)
    text = path.read_text()
    assert "vfio_dev = 1" in text
    path.write_text(text.replace("vfio_dev = 1", "vfio_dev = 0"))
    with pytest.raises(ConfigError, match=r"vfio_dev = 0 is also 0000:0[28]:00.0's"):
        SimHost.from_file(path)

