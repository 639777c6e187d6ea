"""The emulator wrapper: the argv rewrite (pure), and the real QEMU 10 reading the moved
devices with their token from a pipe — the token on no command line, in no environment."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from vfioctl.libvirt.emulator import WrapperError, read_handoff, rewrite

TOKEN = "3f6c2a1e-8b4d-4c7a-9e2f-5d1b0a9c8e7f"
VF = "0000:01:00.1"
ROOT_PORT = ('{"driver":"pcie-root-port","port":16,"chassis":1,"id":"pci.1","bus":"pcie.0",'
             '"multifunction":true,"addr":"0x2"}')
NIC = '{"driver":"e1000","id":"net0","bus":"pcie.0","addr":"0x3"}'
HOSTDEV = f'{{"driver":"vfio-pci","host":"{VF}","id":"hostdev0","bus":"pci.1","addr":"0x0"}}'
QEMU = shutil.which("qemu-system-x86_64")


def test_the_vf_and_the_controllers_it_sits_behind_move_into_configuration() -> None:
    argv = ["-S", "-device", ROOT_PORT, "-device", NIC, "-device", HOSTDEV, "-msg",
            "timestamp=on"]
    out, config = rewrite(argv, {VF: TOKEN})
    assert out == ["-S", "-readconfig", "@CONFIG@", "-device", NIC, "-msg", "timestamp=on"]
    assert config == (
        '[device "pci.1"]\n  driver = "pcie-root-port"\n  port = "16"\n  chassis = "1"\n'
        '  bus = "pcie.0"\n  multifunction = "on"\n  addr = "0x2"\n'
        '[device "hostdev0"]\n  driver = "vfio-pci"\n  host = "0000:01:00.1"\n'
        f'  bus = "pci.1"\n  addr = "0x0"\n  vf-token = "{TOKEN}"\n')
    assert not any(TOKEN in a for a in out)


@pytest.mark.parametrize("argv,why", [
    (["-device", NIC], "has 0 vfio-pci devices for VF 0000:01:00.1"),
    (["-device", HOSTDEV, "-device", HOSTDEV.replace("hostdev0", "hostdev1")],
     "has 2 vfio-pci devices"),
    (["-device", HOSTDEV.replace('"addr":"0x0"', '"addr":["x"]')], "is not a plain value"),
    (["-device", HOSTDEV.replace('"addr":"0x0"', '"addr":"a\\"b"')], "cannot be written"),
])
def test_what_cannot_be_moved_is_refused(argv: list[str], why: str) -> None:
    with pytest.raises(WrapperError, match=why):
        rewrite(argv, {VF: TOKEN})


def _handoff(run_dir: Path, uuid: str, token: str = TOKEN, mode: int = 0o400) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / f"{uuid}.json"
    path.write_text(json.dumps({"devices": [{"host": VF, "vf-token": token}]}))
    path.chmod(mode)
    return path


def test_the_handoff_file_must_be_private(tmp_path: Path) -> None:
    uuid = "2b7c0a56-37d7-4c5e-9a0c-0d2f4e5a6b7c"
    assert read_handoff(str(tmp_path), uuid) is None
    path = _handoff(tmp_path, uuid, mode=0o444)
    with pytest.raises(WrapperError, match="not a private file"):
        read_handoff(str(tmp_path), uuid)
    path.chmod(0o400)
    assert read_handoff(str(tmp_path), uuid) == {VF: TOKEN}
    path.unlink()
    os.symlink("/etc/passwd", path)
    with pytest.raises(WrapperError, match="cannot open"):
        read_handoff(str(tmp_path), uuid)
    with pytest.raises(WrapperError, match="invalid domain uuid"):
        read_handoff(str(tmp_path), "../x")


def test_an_unreadable_run_directory_starts_qemu_unchanged(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A domain without token VFs must start even where QEMU's user cannot reach the
    run directory (the VF of one that has them fails in QEMU, with EACCES)."""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    if os.geteuid() == 0:
        pid = os.fork()
        if pid == 0:  # an unprivileged child: root reads everything
            code = 1
            try:
                os.setuid(65534)
                code = 0 if read_handoff(str(locked), "2b7c0a56-37d7-4c5e-9a0c-0d2f4e5a6b7c"
                                         ) is None else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    else:
        assert read_handoff(str(locked), "2b7c0a56-37d7-4c5e-9a0c-0d2f4e5a6b7c") is None


needs_qemu = pytest.mark.skipif(QEMU is None, reason="no qemu-system-x86_64")


def _spawn(wrapper: Path, args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as f:
        return subprocess.Popen([str(wrapper), *args], stdin=subprocess.DEVNULL, stdout=f,
                                stderr=subprocess.STDOUT, env={"PATH": "/usr/bin:/bin"})


def _wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, "QEMU exited early"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


@needs_qemu
def test_real_qemu_reads_the_token_device_from_the_pipe(tmp_path: Path, wrapper: Path,
                                                        run_dir: Path) -> None:
    """QEMU 10 as libvirt starts it (q35, the VF behind a root port), held at a
    ``wait=on`` socket after reading its configuration: its pid is the wrapper's, the
    token is in none of its command line, environment or open files' names; then it
    realizes the devices in order (the root port exists) and fails only at the VF,
    which this machine does not have."""
    uuid = "2b7c0a56-37d7-4c5e-9a0c-0d2f4e5a6b7c"
    _handoff(run_dir, uuid)
    gate = tmp_path / "gate.sock"
    args = ["-name", "guest=vm", "-S", "-machine", "q35,accel=tcg", "-m", "64",
            "-nodefaults", "-display", "none", "-uuid", uuid,
            "-chardev", f"socket,id=gate,path={gate},server=on,wait=on",
            "-mon", "chardev=gate,mode=control", "-device", ROOT_PORT, "-device", HOSTDEV]
    log = tmp_path / "qemu.log"
    proc = _spawn(wrapper, args, log)
    try:
        _wait_for(gate, proc)
        assert os.readlink(f"/proc/{proc.pid}/exe") == os.path.realpath(QEMU or "")
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes()
        assert TOKEN.encode() not in b"\0".join(cmdline) and TOKEN.encode() not in environ
        assert b"-readconfig" in cmdline and HOSTDEV.encode() not in cmdline
        fd_path = cmdline[cmdline.index(b"-readconfig") + 1].decode()
        assert fd_path.startswith("/proc/self/fd/")
        fd = fd_path.rsplit("/", 1)[1]
        # the pipe was read: nothing is left in it for anyone else
        with open(f"/proc/{proc.pid}/fd/{fd}", "rb") as pipe:
            assert pipe.read() == b""
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(gate))
            proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    said = log.read_text()
    assert proc.returncode == 1
    assert f"vfio /sys/bus/pci/devices/{VF}: no such host device" in said, said
    assert "Bus 'pci.1' not found" not in said and TOKEN not in said


@needs_qemu
def test_real_qemu_parses_the_token_as_vf_token(tmp_path: Path, wrapper: Path,
                                                run_dir: Path) -> None:
    """The control: a malformed token in the handoff reaches QEMU's vf-token property
    parser (so the well-formed one above was QEMU's vf-token too)."""
    uuid = "2b7c0a56-37d7-4c5e-9a0c-0d2f4e5a6b7c"
    _handoff(run_dir, uuid, token="not-a-uuid")
    args = ["-S", "-machine", "q35,accel=tcg", "-m", "64", "-nodefaults", "-display", "none",
            "-uuid", uuid, "-device", ROOT_PORT, "-device", HOSTDEV]
    log = tmp_path / "qemu.log"
    proc = _spawn(wrapper, args, log)
    assert proc.wait(timeout=600) == 1
    assert "vf-token" in log.read_text(), log.read_text()


@needs_qemu
def test_without_a_handoff_the_arguments_pass_unchanged(tmp_path: Path, wrapper: Path,
                                                        run_dir: Path) -> None:
    args = ["-S", "-machine", "none", "-nodefaults", "-display", "none", "-uuid",
            "2b7c0a56-37d7-4c5e-9a0c-0d2f4e5a6b7c", "-version"]
    out = subprocess.run([str(wrapper), *args], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin"}, timeout=600)
    assert out.stdout.startswith("QEMU emulator version ")
