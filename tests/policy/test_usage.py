"""Host-usage detection on a hand-made tree in the real kernel's layout (LinuxHost(DIR)).

The simulator models routes, mounts and the boot GPU; this covers what it does not:
IPv6 addresses and routes, link-local-only interfaces, interfaces that are down, bridge
ports, LVM volumes stacked on a partition, swap, and mounts through /dev symlinks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from vfioctl.address import PciAddress
from vfioctl.host.linux import LinuxHost
from vfioctl.pci.device import PciDevice
from vfioctl.pci.usage import find_host_uses

ADDR = "0000:03:00.0"
REAL = f"sys/devices/pci0000:00/0000:00:1c.0/{ADDR}"
ROUTE_HEADER = ("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\t"
                "Window\tIRTT\n")


@dataclass(frozen=True)
class UsageCase:
    name: str
    files: dict[str, str] = field(default_factory=dict)    # path -> content
    links: dict[str, str] = field(default_factory=dict)    # path -> target
    uses: tuple[str, ...] = ()


NET = {f"{REAL}/net/eth0/operstate": "up\n"}
DISK = {"sys/block/sda": f"../devices/pci0000:00/0000:00:1c.0/{ADDR}/ata1/host0/block/sda"}
LINK6 = "fe800000000000000000000000000001 02 40 20 80 eth0\n"
GLOBAL6 = "20010db8000000000000000000000001 02 40 00 80 eth0\n"
ROUTE6 = ("fe800000000000000000000000000000 40 00000000000000000000000000000000 00 "
          "00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0\n")

CASES = [
    UsageCase("nothing"),
    UsageCase("up-link-local-only", {**NET, "proc/net/if_inet6": LINK6,
                                     "proc/net/ipv6_route": ROUTE6}),
    UsageCase("up-ipv6-global-address", {**NET, "proc/net/if_inet6": LINK6 + GLOBAL6},
              uses=("interface eth0 is up with addresses",)),
    UsageCase("up-ipv4-route", {**NET, "proc/net/route": ROUTE_HEADER +
                                "eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"},
              uses=("interface eth0 is up with routes",)),
    UsageCase("down-with-route", {f"{REAL}/net/eth0/operstate": "down\n",
                                  f"{REAL}/net/eth0/flags": "0x1002\n",
                                  "proc/net/route": ROUTE_HEADER + "eth0" + "\t0" * 10 + "\n"}),
    UsageCase("bridge-port", {**NET}, links={f"{REAL}/net/eth0/master": "../br0"},
              uses=("interface eth0 is up as a port of br0",)),
    UsageCase("disk-unmounted", {f"{REAL}/ata1/host0/block/sda/sda1/partition": "1\n"},
              links=DISK),
    UsageCase("partition-mounted", {
        f"{REAL}/ata1/host0/block/sda/sda1/partition": "1\n",
        "proc/mounts": "/dev/sda1 /srv\\040data ext4 rw 0 0\n"}, links=DISK,
        uses=("disk sda: sda1 is mounted on /srv data",)),
    UsageCase("lvm-root-on-partition", {
        f"{REAL}/ata1/host0/block/sda/sda2/partition": "2\n",
        f"{REAL}/ata1/host0/block/sda/sda2/holders/dm-0": "",
        "sys/devices/virtual/block/dm-0/dm/name": "vg-root\n",
        "proc/mounts": "/dev/mapper/vg-root / ext4 rw 0 0\n"},
        links={**DISK, "sys/block/dm-0": "../devices/virtual/block/dm-0"},
        uses=("disk sda: mapper/vg-root holds the root filesystem /",)),
    UsageCase("swap-through-by-uuid", {
        f"{REAL}/ata1/host0/block/sda/sda3/partition": "3\n",
        "proc/swaps": "Filename Type Size Used Priority\n/dev/disk/by-uuid/abc partition 1 0 -2\n"},
        links={**DISK, "dev/disk/by-uuid/abc": "../../sda3"},
        uses=("disk sda: sda3 is in use as swap",)),
    UsageCase("boot-gpu", {f"{REAL}/boot_vga": "1\n"},
              uses=("it is the boot GPU (boot_vga=1) the console uses",)),
]


def _tree(root: Path, case: UsageCase) -> LinuxHost:
    (root / REAL).mkdir(parents=True)
    (root / "sys/bus/pci/devices").mkdir(parents=True)
    os.symlink(f"../../../devices/pci0000:00/0000:00:1c.0/{ADDR}",
               root / "sys/bus/pci/devices" / ADDR)
    (root / "sys/block").mkdir(parents=True)
    for rel, content in case.files.items():
        path = root / rel
        if rel.endswith("/dm-0") and content == "":
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    for rel, target in case.links.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, path)
    return LinuxHost(root)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_host_uses(case: UsageCase, tmp_path: Path) -> None:
    host = _tree(tmp_path, case)
    dev = PciDevice(host, PciAddress.parse(ADDR))
    assert tuple(u.detail for u in find_host_uses(dev)) == case.uses
