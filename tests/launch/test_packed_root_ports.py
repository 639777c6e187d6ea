"""``start`` on ``virsh dumpxml``-style q35 XML, with Debian's real QEMU 7.2 (TCG).

libvirt packs pcie-root-ports as the functions of one slot (index 1 at ``0x2.0x0``
with ``multifunction='on'``, index 2 at ``0x2.0x1`` …). The firmware scans a slot only
when its function 0 exists, so a hostdev behind the port at ``0x2.0x4`` is in the guest
only if start also creates the port at ``0x2.0x0``. The oracle is QEMU's own
``query-pci`` after ``cont``: the device is listed behind its port, on the bus number
the firmware gave that port. The control case runs the same QEMU with only the port
the hostdev sits behind (what start used to create) and finds the device on no bus.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from launchtest import DATA, QEMU, needs_qemu, qmp_query

from vfioctl.conf import load_domain
from vfioctl.launch import Launch, release, standin_device, start
from vfioctl.qemu.caps import caps_for_version
from vfioctl.sim.host import SimHost

pytestmark = [pytest.mark.qemu, needs_qemu]

PORTS = DATA / "dryrun" / "dumpxml-ports.xml"  # ports 1..5 at 0x2.0..0x2.4, hostdev on 5


def _query_pci(socket: Path) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = qmp_query(socket, "query-pci")
    return result


def _topology(socket: Path) -> dict[str, tuple[str | None, int, int, int]]:
    """qdev id -> (the id of the port it sits behind or None, bus, slot, function)."""
    found: dict[str, tuple[str | None, int, int, int]] = {}
    for bus in _query_pci(socket):
        for dev in bus["devices"]:
            if dev.get("qdev_id"):
                found[dev["qdev_id"]] = (None, dev["bus"], dev["slot"], dev["function"])
            for below in (dev.get("pci_bridge") or {}).get("devices") or []:
                if below.get("qdev_id"):
                    found[below["qdev_id"]] = (dev.get("qdev_id"), below["bus"],
                                               below["slot"], below["function"])
    return found


def _poll_for(socket: Path, dev_id: str, seconds: float
              ) -> dict[str, tuple[str | None, int, int, int]]:
    """Bus numbers are assigned by the firmware after ``cont``: wait for ``dev_id`` to
    show up behind a port with a non-zero bus, at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        found = _topology(socket)
        where = found.get(dev_id)
        if (where is not None and where[0] is not None and where[1] != 0) \
                or time.monotonic() > deadline:
            return found
        time.sleep(0.2)




def test_hostdev_behind_function_4_port_is_in_the_guest(
        host: SimHost, tmp_path: Path, launched: list[Launch]) -> None:
    xml = tmp_path / "dump.xml"
    xml.write_text(PORTS.read_text().replace("type='kvm'", "type='qemu'"))
    launch = start(host, load_domain(xml), caps_for_version("8.1"), binary=QEMU,
                   standin=standin_device("pci-testdev"))
    launched.append(launch)
    found = _poll_for(launch.qmp_socket, "hostdev0", 20)
    ports = {k: v for k, v in found.items() if k.startswith("pci.")}
    assert ports == {f"pci.{i}": (None, 0, 2, i - 1) for i in range(1, 6)}
    behind, bus, slot, function = found["hostdev0"]
    assert behind == "pci.5" and (slot, function) == (0, 0)
    assert bus != 0  # the firmware scanned slot 2 and numbered the port's bus
    release(host, "dump", stop=True)


def test_control_without_function_0_the_device_gets_no_bus(tmp_path: Path) -> None:
    """What start emitted before: only the port at 0x2.0x4. The device never gets a bus
    (so the test above can fail)."""
    socket = tmp_path / "qmp.sock"
    proc = subprocess.Popen(
        [QEMU, "-machine", "q35", "-accel", "tcg", "-m", "64", "-nodefaults",
         "-no-user-config", "-display", "none",
         "-chardev", f"socket,id=qmp,path={socket},server=on,wait=off",
         "-mon", "chardev=qmp,mode=control",
         "-device", '{"driver":"pcie-root-port","port":20,"chassis":5,"id":"pci.5",'
                    '"bus":"pcie.0","addr":"0x2.0x4"}',
         "-device", '{"driver":"pci-testdev","id":"hostdev0","bus":"pci.5","addr":"0x0"}'],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not socket.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(3)  # ample for SeaBIOS's PCI scan under TCG (well under 1 s above)
        found = _poll_for(socket, "hostdev0", 2)
        where = found.get("hostdev0")
        assert where is None or where[1] == 0, found
    finally:
        proc.kill()
        proc.wait(10)
