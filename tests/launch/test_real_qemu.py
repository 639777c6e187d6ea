"""``start`` against Debian's real QEMU 7.2 (TCG, paused, QMP), with stand-in devices.

The manager side runs on a simulated host file; QEMU gets ``pci-testdev`` (or a
token-carrying stand-in) where vfio-pci would be, at the same id/bus/addr, through the
very same paths: cold devices on the command line, token-bearing ones via QMP
``device_add``, then ``cont``. The devices' real vfio-pci properties (with the token)
are what the plan would have sent; the tests check both.

Secrecy: the VF token must never be in QEMU's argv (/proc/PID/cmdline), environment
(/proc/PID/environ), vfioctl's or qemu.qmp's logs (even at DEBUG), the CLI's output,
or any file written (the launch record, QEMU's log, the sim host and its state).
"""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from launchtest import CAPS_81, DATA, QEMU, TOKEN, needs_qemu, qmp_query, vfioctl_argv

from vfioctl.conf import load_domain
from vfioctl.errors import GroupNotViable, OperationInvalid
from vfioctl.launch import (
    Launch,
    QemuDevice,
    QemuExited,
    QmpCommandFailed,
    QmpTimeout,
    release,
    standin_device,
    start,
)
from vfioctl.manager import HostdevManager
from vfioctl.pci.device import PciDevice
from vfioctl.qemu.caps import caps_for_version, load_caps_file
from vfioctl.qemu.props import Props
from vfioctl.sim.host import SimHost

pytestmark = [pytest.mark.qemu, needs_qemu]

DOMAIN = DATA / "dryrun" / "token-pc.xml"      # 03:00.0 with token at 0x5, 04:00.0 at 0x2
MULTI = DATA / "dryrun" / "multifunction.xml"  # 04:00.0 fn0 + 03:00.0 fn1 (token), slot 6


def _pci_devices(socket: Path) -> dict[str, tuple[int, int, int]]:
    """qdev id -> (bus, slot, function) from QMP query-pci."""
    out = {}
    for bus in qmp_query(socket, "query-pci"):
        for dev in bus["devices"]:
            if dev.get("qdev_id"):
                out[dev["qdev_id"]] = (dev["bus"], dev["slot"], dev["function"])
    return out


def _drivers(host_file: Path, *addrs: str) -> dict[str, str | None]:
    host = SimHost.from_file(host_file)
    return {a: PciDevice(host, a).driver for a in addrs}  # type: ignore[arg-type]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _proc_bytes(pid: int, what: str) -> bytes:
    with open(f"/proc/{pid}/{what}", "rb") as f:
        return f.read()


def _files_under(*roots: Path) -> Iterator[Path]:
    for root in roots:
        if root.exists():
            yield from (p for p in root.rglob("*") if p.is_file() and not p.is_socket())


def _contains_token(data: bytes) -> bool:
    low = data.lower()
    return TOKEN.encode() in low or TOKEN.replace("-", "").encode() in low




def test_start_hot_adds_token_device_at_its_address(
        host: SimHost, host_file: Path, launched: list[Launch], tmp_path: Path) -> None:
    doc = load_domain(DOMAIN)
    sent: list[tuple[str, Mapping[str, object] | None]] = []
    launch = start(host, doc, load_caps_file(CAPS_81), binary=QEMU,
                   standin=standin_device("pci-testdev"),
                   on_send=lambda cmd, args: sent.append((cmd, args)))
    launched.append(launch)

    # The guest runs (cont succeeded) with both devices where the XML put them.
    assert qmp_query(launch.qmp_socket, "query-status")["status"] == "running"
    assert _pci_devices(launch.qmp_socket) == {"ua-pf0": (0, 5, 0), "hostdev0": (0, 2, 0)}
    # The token device went through QMP; the plain one was on the command line.
    assert [c for c, _ in sent] == ["device_add", "cont"]
    assert sent[0][1] == {"driver": "pci-testdev", "id": "ua-pf0", "bus": "pci.0",
                          "addr": "0x5"}
    real = launch.plan.hotplugs[0].props
    assert real == {"driver": "vfio-pci", "host": "0000:03:00.0", "vf-token": TOKEN,
                    "id": "ua-pf0", "bus": "pci.0", "addr": "0x5"}
    cmdline = _proc_bytes(launch.pid, "cmdline").split(b"\0")
    assert b"-S" in cmdline
    assert b'{"driver":"pci-testdev","id":"hostdev0","bootindex":1,' not in cmdline
    assert not _contains_token(b" ".join(cmdline))
    assert not _contains_token(_proc_bytes(launch.pid, "environ"))
    # QEMU is in its own session, so it outlives the caller.
    assert os.getsid(launch.pid) == launch.pid
    # The manager holds both devices for the domain's name.
    held = {str(s.record.addr): s.record.owner for s in HostdevManager(host).status()}
    assert held == {"0000:03:00.0": "vm1", "0000:04:00.0": "vm1"}
    assert _drivers(host_file, "0000:03:00.0", "0000:04:00.0") == {
        "0000:03:00.0": "vfio-pci", "0000:04:00.0": "vfio-pci"}
    # Private runtime directory; record and log 0600 and free of the token.
    assert stat.S_IMODE(os.stat(launch.runtime_dir).st_mode) == 0o700
    for name in ("launch.json", "qemu.log"):
        path = launch.runtime_dir / name
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    record = json.loads((launch.runtime_dir / "launch.json").read_text())
    assert record["pid"] == launch.pid and record["qmp_socket"] == str(launch.qmp_socket)
    for path in _files_under(tmp_path):
        assert not _contains_token(path.read_bytes()), f"token in {path}"

    # release refuses while QEMU runs, then --stop ends it and gives everything back.
    with pytest.raises(OperationInvalid, match="still running"):
        release(host, "vm1")
    result = release(host, "vm1", stop=True)
    assert result.stopped_pid == launch.pid and not _alive(launch.pid)
    assert {a.kind for a in result.report.actions} == {"reattached"}
    assert _drivers(host_file, "0000:03:00.0", "0000:04:00.0") == {
        "0000:03:00.0": "i40e", "0000:04:00.0": "i40e"}
    assert HostdevManager(host).status() == []


def test_multifunction_slot_is_hot_added_function_zero_last(
        host: SimHost, launched: list[Launch]) -> None:
    sent: list[Any] = []
    launch = start(host, load_domain(MULTI), caps_for_version("8.1"), binary=QEMU,
                   extra_args=["-accel", "tcg"], standin=standin_device("pci-testdev"),
                   on_send=lambda cmd, args: sent.append(args))
    launched.append(launch)
    assert [a["addr"] for a in sent if a] == ["0x6.0x1", "0x6"]
    assert _pci_devices(launch.qmp_socket) == {"hostdev1": (0, 6, 1), "hostdev0": (0, 6, 0)}
    release(host, "mf", stop=True)


def test_q35_token_device_hot_added_behind_root_port(host: SimHost, tmp_path: Path,
                                                    launched: list[Launch]) -> None:
    xml = tmp_path / "q35.xml"
    xml.write_text((DATA / "dryrun" / "q35-root-port.xml").read_text()
                   .replace("type='kvm'", "type='qemu'"))
    launch = start(host, load_domain(xml), caps_for_version("8.1"), binary=QEMU,
                   standin=standin_device("pci-testdev"))
    launched.append(launch)
    # the root port from <controller>, the token device behind it (bus 1), the plain
    # device on pcie.0. query-pci lists a device behind a port once the port's bus
    # number is programmed, which the firmware does after cont: poll briefly.
    want = {"ua-rp1": (0, 2, 0), "hostdev0": (1, 0, 0), "hostdev1": (0, 3, 0)}
    found: dict[str, tuple[int, int, int]] = {}
    deadline = time.monotonic() + 20
    while found != want and time.monotonic() < deadline:
        found = {}
        for bus in qmp_query(launch.qmp_socket, "query-pci"):
            for dev in bus["devices"]:
                below = (dev.get("pci_bridge") or {}).get("devices") or []
                for d in [dev, *below]:
                    if d.get("qdev_id"):
                        found[d["qdev_id"]] = (d["bus"], d["slot"], d["function"])
        time.sleep(0.2)
    assert found == want
    release(host, "q35vm", stop=True)


def _token_as_id(dev: QemuDevice) -> Props:
    """A stand-in that carries the token *through QMP* (as the device id), so the test can
    prove the secret travelled over the socket and nowhere else."""
    props = standin_device("pci-testdev")(dev)
    if dev.has_token:
        props["id"] = str(dev.props["vf-token"])
    return props


def test_token_travels_only_over_qmp(host: SimHost, launched: list[Launch], tmp_path: Path,
                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # qemu.qmp logs every message at DEBUG ("--> {…}")
    launch = start(host, load_domain(DOMAIN), load_caps_file(CAPS_81), binary=QEMU,
                   standin=_token_as_id)
    launched.append(launch)
    records = list(caplog.records)  # before this test's own QMP client logs anything
    # QEMU got the token, so it crossed the QMP socket ...
    assert TOKEN in _pci_devices(launch.qmp_socket)
    # ... and nothing else has it.
    assert not _contains_token(_proc_bytes(launch.pid, "cmdline"))
    assert not _contains_token(_proc_bytes(launch.pid, "environ"))
    assert any("device_add" in r.getMessage() for r in records), "no QMP debug log"
    for r in records:
        assert not _contains_token(r.getMessage().encode()), f"token logged by {r.name}"
    for path in _files_under(tmp_path):
        assert not _contains_token(path.read_bytes()), f"token in {path}"
    release(host, "vm1", stop=True)


# -- failure paths: QEMU killed, host as it was ------------------------------------------------
def _assert_rolled_back(host: SimHost, host_file: Path, pid: int | None) -> None:
    assert _drivers(host_file, "0000:03:00.0", "0000:04:00.0") == {
        "0000:03:00.0": "i40e", "0000:04:00.0": "i40e"}
    assert HostdevManager(host).status() == []
    if pid is not None:
        assert not _alive(pid)


def test_device_add_refused_rolls_back(host: SimHost, host_file: Path) -> None:
    def bad_hotplug(dev: QemuDevice) -> Props:
        props = standin_device("pci-testdev")(dev)
        if dev.hotplug:
            props["driver"] = "no-such-device"
        return props

    with pytest.raises(QmpCommandFailed, match="refused device_add for ua-pf0") as exc:
        start(host, load_domain(DOMAIN), load_caps_file(CAPS_81), binary=QEMU,
              standin=bad_hotplug)
    assert exc.value.error_class == "GenericError"
    assert "given back" in (exc.value.hint or "")
    _assert_rolled_back(host, host_file, exc.value.pid)
    assert not (Path(str(host.state_dir)) / "qemu" / "vm1" / "qmp.sock").exists()


def test_qemu_exiting_at_start_rolls_back(host: SimHost, host_file: Path) -> None:
    with pytest.raises(QemuExited, match="exited with status 1") as exc:
        start(host, load_domain(DOMAIN), load_caps_file(CAPS_81), binary=QEMU,
              standin=standin_device("pci-testdev"), extra_args=["-device", "no-such"])
    assert "QEMU said:" in (exc.value.hint or "") and "no-such" in (exc.value.hint or "")
    _assert_rolled_back(host, host_file, exc.value.pid)


def test_qmp_timeout_rolls_back(host: SimHost, host_file: Path, tmp_path: Path) -> None:
    fake = tmp_path / "fake-qemu"
    fake.write_text("#!/bin/sh\nexec sleep 60\n")
    fake.chmod(0o755)
    with pytest.raises(QmpTimeout, match="did not accept a QMP connection") as exc:
        start(host, load_domain(DOMAIN), caps_for_version("8.1"), binary=str(fake),
              timeout=1.0)
    _assert_rolled_back(host, host_file, exc.value.pid)


def test_second_prepare_failing_undoes_the_first(host: SimHost, host_file: Path,
                                                 tmp_path: Path) -> None:
    # 03:00.0 (group='allow', first prepare call) is taken, then 05:00.0 (igb, shares
    # group 3 with the boot VGA, no group='allow') is refused: 03:00.0 must go back.
    xml = tmp_path / "two.xml"
    xml.write_text(DOMAIN.read_text()
                   .replace("<driver name='vfio'/>", "<driver name='vfio' group='allow'/>")
                   .replace("bus='0x04' slot='0x00'", "bus='0x05' slot='0x00'"))
    with pytest.raises(GroupNotViable):
        start(host, load_domain(xml), load_caps_file(CAPS_81), binary=QEMU,
              standin=standin_device("pci-testdev"))
    assert _drivers(host_file, "0000:03:00.0", "0000:05:00.0") == {
        "0000:03:00.0": "i40e", "0000:05:00.0": "igb"}
    assert HostdevManager(host).status() == []


def test_start_twice_is_refused(host: SimHost, launched: list[Launch]) -> None:
    doc = load_domain(DOMAIN)
    launch = start(host, doc, load_caps_file(CAPS_81), binary=QEMU,
                   standin=standin_device("pci-testdev"))
    launched.append(launch)
    with pytest.raises(OperationInvalid, match=f"QEMU \\(pid {launch.pid}\\) of domain vm1"):
        start(host, doc, load_caps_file(CAPS_81), binary=QEMU,
              standin=standin_device("pci-testdev"))
    # QEMU gone, devices still held: start again needs a release first.
    launch.process.kill() if launch.process else None
    if launch.process:
        launch.process.wait(10)
    with pytest.raises(OperationInvalid, match="still holds"):
        start(host, doc, load_caps_file(CAPS_81), binary=QEMU,
              standin=standin_device("pci-testdev"))
    result = release(host, "vm1")
    assert result.stopped_pid is None
    assert {str(a.addr) for a in result.report.actions} == {"0000:03:00.0", "0000:04:00.0"}


# -- the CLI, as a user runs it (separate processes) ------------------------------------------
def test_cli_start_status_release(host_file: Path, cli_env: dict[str, str],
                                  tmp_path: Path) -> None:
    base = ["--debug", "--host", f"sim:{host_file}"]
    run = subprocess.run(
        vfioctl_argv(*base, "start", str(DOMAIN), "--qemu", QEMU, "--qemu-caps",
                     str(CAPS_81), "--standin", "pci-testdev", "--json"),
        capture_output=True, text=True, env=cli_env, timeout=600)
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    pid = doc["pid"]
    try:
        assert _alive(pid)  # the CLI has exited; QEMU keeps running
        assert not _contains_token((run.stdout + run.stderr).encode())
        assert "device_add" in run.stderr  # --debug logged the QMP traffic, redacted
        assert _pci_devices(Path(doc["qmp_socket"]))["ua-pf0"] == (0, 5, 0)
        assert not _contains_token(_proc_bytes(pid, "cmdline"))
        status = subprocess.run(vfioctl_argv(*base, "status", "--json"), capture_output=True,
                                text=True, env=cli_env, timeout=600)
        owners = {d["address"]: d["owner"] for d in json.loads(status.stdout)["devices"]}
        assert owners == {"0000:03:00.0": "vm1", "0000:04:00.0": "vm1"}
        refused = subprocess.run(vfioctl_argv(*base, "release", "vm1"), capture_output=True,
                                 text=True, env=cli_env, timeout=600)
        assert refused.returncode == 5 and "--stop" in refused.stderr
    finally:
        rel = subprocess.run(vfioctl_argv(*base, "release", str(DOMAIN), "--stop"),
                             capture_output=True, text=True, env=cli_env, timeout=600)
    assert rel.returncode == 0, rel.stderr
    assert rel.stdout.splitlines() == [
        f"stopped QEMU pid {pid} of domain vm1",
        "0000:03:00.0: vfio-pci -> i40e",
        "0000:04:00.0: vfio-pci -> i40e",
    ]
    assert not _alive(pid)
    for path in _files_under(tmp_path):
        assert not _contains_token(path.read_bytes()), f"token in {path}"
