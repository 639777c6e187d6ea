"""The CLI story on a simulated workstation (a writable copy): groups, a refused detach of
the GPU's audio function alone, the --group detach, status, reattach --group; and the
one-line-per-device recovery report after a crash."""

from __future__ import annotations

import io
import json
import re
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from vfioctl.cli.main import main
from vfioctl.sim.faults import SimCrash


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("VFIOCTL_HOST", raising=False)
    path = tmp_path / "ws.toml"
    code, _, _ = run("sim", "copy", "workstation", str(path))
    assert code == 0
    return path


def test_workstation_story(ws: Path) -> None:
    host = f"sim:{ws}"
    code, out, _ = run("--host", host, "groups")
    assert code == 0
    row = re.compile(r"^(\d+)\s+(yes|no)\s+(.+?)\s+([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.\d)"
                     r"\s+(\S+)")
    rows = [m.groups() for m in map(row.match, out.splitlines()) if m]
    assert [r for r in rows if r[0] == "1"] == [
        ("1", "no", "stays", "0000:00:01.0", "pcieport"),
        ("1", "no", "with 1 other", "0000:01:00.0", "nouveau"),
        ("1", "no", "with 1 other", "0000:01:00.1", "snd_hda_intel")]

    code, out, err = run("--host", host, "detach", "0000:01:00.1")
    assert (code, out) == (5, "")
    assert err == (
        "vfioctl: error: cannot detach 0000:01:00.1 alone: IOMMU group 1 also holds "
        "0000:01:00.0 (nouveau); detach the whole group with 'vfioctl detach --group "
        "0000:01:00.1', or move the device to a slot with its own group (see 'vfioctl "
        "explain 0000:01:00.1')\n")

    code, out, err = run("--host", host, "detach", "--group", "0000:01:00.1")
    assert (code, err) == (0, "")
    assert out == ("0000:00:01.0: left alone: pcieport\n"
                   "0000:01:00.0: nouveau -> vfio-pci\n"
                   "0000:01:00.1: snd_hda_intel -> vfio-pci\n")

    code, out, _ = run("--host", host, "status")
    assert code == 0
    rows = [line.split()[:5] for line in out.splitlines()]
    assert rows == [["ADDRESS", "GROUP", "DRIVER", "ORIGINAL", "OWNER"],
                    ["0000:01:00.0", "1", "vfio-pci", "nouveau", "-"],
                    ["0000:01:00.1", "1", "vfio-pci", "snd_hda_intel", "-"]]
    code, out, _ = run("--host", host, "status", "--json")
    doc = json.loads(out)
    assert doc["host"] == host
    assert [(d["address"], d["original_driver"]) for d in doc["devices"]] == [
        ("0000:01:00.0", "nouveau"), ("0000:01:00.1", "snd_hda_intel")]

    code, out, err = run("--host", host, "reattach", "--group", "0000:01:00.0")
    assert (code, err) == (0, "")
    assert out == ("0000:00:01.0: left alone: pcieport\n"
                   "0000:01:00.0: vfio-pci -> nouveau\n"
                   "0000:01:00.1: vfio-pci -> snd_hda_intel\n")
    assert run("--host", host, "status")[1] == "vfioctl holds no devices on this host\n"


def test_host_in_use_is_refused_with_one_line(ws: Path) -> None:
    code, out, err = run("--host", f"sim:{ws}", "detach", "--group", "0000:04:00.0")
    assert (code, out) == (5, "")
    assert err == (
        "vfioctl: error: devices are in use by the host: 0000:04:00.0 (interface enp4s0 is "
        "up with address 192.168.1.23/24 and routes), 0000:05:00.0 (disk sda: sda1 is "
        "mounted on /boot/efi, sda2 holds "
        "the root filesystem /); stop using them first, or pass --force to detach anyway\n")


def test_owner_on_the_command_line(ws: Path) -> None:
    host = f"sim:{ws}"
    assert run("--host", host, "detach", "--owner", "vm1", "0000:06:00.0")[1] == (
        "0000:06:00.0: nvme -> vfio-pci (held for 'vm1')\n")
    code, _, err = run("--host", host, "detach", "--owner", "vm2", "0000:06:00.0")
    assert code == 5 and "is in use by 'vm1'" in err and err.count("\n") == 1
    code, _, err = run("--host", host, "reattach", "0000:06:00.0")
    assert code == 5 and "is in use by 'vm1'" in err
    assert run("--host", host, "reattach", "--owner", "vm1", "0000:06:00.0")[1] == (
        "0000:06:00.0: vfio-pci -> nvme\n")


def test_a_crashed_detach_is_recovered_by_the_next_command(ws: Path) -> None:
    hardware = ws.read_text()
    ws.write_text(hardware + "\n[crash]\nat_write = 5\napplied = true\n")
    with pytest.raises(SimCrash):
        run("--host", f"sim:{ws}", "detach", "--group", "0000:01:00.0")
    # drop the [crash] table, keep the state the crash left behind
    ws.write_text(ws.read_text().replace("\n[crash]\nat_write = 5\napplied = true\n", ""))
    assert "[crash]" not in ws.read_text()
    # any command recovers first, a read-only one such as `list` included
    code, out, err = run("--host", f"sim:{ws}", "list", "--json")
    assert code == 0 and '"driver": "nouveau"' in out
    assert err == (
        "vfioctl: recovered 0000:01:00.0: rolled back an interrupted detach, now on nouveau\n"
        "vfioctl: recovered 0000:01:00.1: rolled back an interrupted detach, now on "
        "snd_hda_intel\n")
    code, out, err = run("--host", f"sim:{ws}", "status")
    assert (code, out, err) == (0, "vfioctl holds no devices on this host\n", "")


def test_help_lists_the_commands() -> None:
    code, out, _ = run("--help")
    assert code == 0
    for name in ("detach", "reattach", "status"):
        assert f"  {name} " in out
    for name in ("detach", "reattach", "status"):
        code, out, _ = run(name, "--help")
        assert code == 0 and "Usage: vfioctl " + name in out

