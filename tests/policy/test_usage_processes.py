"""Host use by processes: a display server, a CUDA program or a sound server holding a
GPU's or sound card's device nodes open, found through ``proc/PID/fd`` on a simulated
host (``[[process]]``) and on a hand-made tree in the kernel's layout; and disks under
an active device-mapper/MD device with nothing mounted."""

from __future__ import annotations

import io
import os
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from vfioctl.address import PciAddress
from vfioctl.cli.main import main
from vfioctl.errors import ConfigError
from vfioctl.host.linux import LinuxHost
from vfioctl.pci.device import PciDevice
from vfioctl.pci.usage import device_nodes, find_host_uses
from vfioctl.sim.host import SimHost

GPU, AUDIO = "0000:01:00.0", "0000:01:00.1"

HOST = """
[host]
iommu = "intel"

[[driver]]
name = "nvidia"
ids = ["10de:2504"]
[[driver]]
name = "snd_hda_intel"
ids = ["10de:228e"]
[[driver]]
name = "vfio-pci"
loaded = false
sriov = true
[[driver]]
name = "pcieport"
classes = ["060400"]
module = ""

[[device]]
addr = "0000:00:00.0"
kind = "host-bridge"
id = "8086:1237"
[[device]]
addr = "0000:00:01.0"
kind = "root-port"
id = "8086:1901"
[[device]]
addr = "0000:01:00.0"
parent = "0000:00:01.0"
id = "10de:2504"
class = "030000"
drm = ["card1", "renderD129"]
nvidia_minor = 0
[[device]]
addr = "0000:01:00.1"
parent = "0000:00:01.0"
id = "10de:228e"
class = "040300"
sound_card = 1
"""


def sim(processes: str = "") -> SimHost:
    return SimHost.from_text(HOST + processes)


def uses(h: SimHost | LinuxHost, addr: str) -> list[str]:
    return [u.detail for u in find_host_uses(PciDevice(h, PciAddress.parse(addr)))]


XORG = """
[[process]]
pid = 1234
comm = "Xorg"
open = ["/dev/null", "/dev/dri/card1", "/dev/dri/card1"]
"""


def test_nodes_of_a_gpu_and_its_audio_function() -> None:
    h = sim()
    assert device_nodes(PciDevice(h, PciAddress.parse(GPU))) == [
        "/dev/dri/card1", "/dev/dri/renderD129", "/dev/nvidia0"]
    assert device_nodes(PciDevice(h, PciAddress.parse(AUDIO))) == [
        "/dev/snd/controlC1", "/dev/snd/hwC1D0", "/dev/snd/pcmC1D0p"]


def test_free_when_no_process_holds_them() -> None:
    other = """
[[process]]
pid = 99
comm = "bash"
open = ["/dev/dri/card0", "/dev/nvidiactl", "/dev/snd/controlC0"]
"""
    h = sim(other)
    assert uses(h, GPU) == [] and uses(h, AUDIO) == []


def test_display_server_named_once_per_node() -> None:
    assert uses(sim(XORG), GPU) == ["/dev/dri/card1 is open by pid 1234 (Xorg)"]


def test_cuda_process_on_the_nvidia_minor() -> None:
    cuda = """
[[process]]
pid = 4242
comm = "python3"
open = ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia0"]
[[process]]
pid = 4243
comm = "ollama"
open = ["/dev/nvidia0", "/dev/dri/renderD129"]
"""
    assert uses(sim(cuda), GPU) == [
        "/dev/dri/renderD129 is open by pid 4243 (ollama)",
        "/dev/nvidia0 is open by pid 4242 (python3), pid 4243 (ollama)"]


def test_sound_server_on_the_hdmi_audio() -> None:
    pw = """
[[process]]
pid = 2001
comm = "pipewire"
open = ["/dev/snd/controlC1", "/dev/snd/pcmC1D0p"]
"""
    assert uses(sim(pw), AUDIO) == ["/dev/snd/controlC1 is open by pid 2001 (pipewire)",
                                    "/dev/snd/pcmC1D0p is open by pid 2001 (pipewire)"]


def test_many_processes_are_counted() -> None:
    many = "".join(f'[[process]]\npid = {100 + i}\ncomm = "p{i}"\n'
                   f'open = ["/dev/dri/card1"]\n' for i in range(5))
    assert uses(sim(many), GPU) == [
        "/dev/dri/card1 is open by pid 100 (p0), pid 101 (p1), pid 102 (p2) (+2 more)"]


def test_nodes_vanish_with_the_driver(tmp_path: Path) -> None:
    """On vfio-pci the DRM/sound nodes are gone, so a stale fd no longer counts."""
    h = sim(XORG)
    h.load_module("vfio_pci")
    h.write(f"sys/bus/pci/devices/{GPU}/driver_override", "vfio-pci")
    h.write(f"sys/bus/pci/devices/{GPU}/driver/unbind", GPU)
    h.write("sys/bus/pci/drivers_probe", GPU)
    assert uses(h, GPU) == []


def test_detach_refusal_names_the_process(tmp_path: Path) -> None:
    path = tmp_path / "h.toml"
    path.write_text(HOST + XORG)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["--host", f"sim:{path}", "detach", "--group", GPU])
    assert code == 5, err.getvalue()
    assert (f"PCI device {GPU} is in use by the host: /dev/dri/card1 is open by pid "
            "1234 (Xorg)") in err.getvalue()
    assert "Xorg" in path.read_text()   # nothing changed: the process is still declared
    assert "[state]" not in path.read_text()


@pytest.mark.parametrize(("entry", "message"), [
    ('[[process]]\npid = 1\ncomm = "x"\n', "pid must be"),
    ('[[process]]\npid = 50\ncomm = "x"\nopen = ["dev/dri/card0"]\n', "absolute path"),
    ('[[process]]\npid = 50\ncomm = "x"\n[[process]]\npid = 50\ncomm = "y"\n',
     "declared twice"),
    ('[[process]]\npid = 50\ncomm = "a-name-longer-than-15"\n', "comm must be"),
    ('[[process]]\npid = 50\n', "comm is required"),
])
def test_bad_process_entries_are_config_errors(entry: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        sim(entry)


def test_bad_drm_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="must look like 'card1'"):
        SimHost.from_text(HOST.replace('"renderD129"', '"render129"'))


# -- a tree in the real kernel's layout -----------------------------------------------

REAL = f"sys/devices/pci0000:00/0000:00:01.0/{GPU}"


def _tree(root: Path, files: dict[str, str], links: dict[str, str]) -> LinuxHost:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    for rel, target in links.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, p)
    (root / "sys/bus/pci/devices").mkdir(parents=True, exist_ok=True)
    os.symlink(f"../../../../{REAL}", root / "sys/bus/pci/devices" / GPU)
    return LinuxHost(str(root))


def test_linux_tree_nvidia_minor_and_drm(tmp_path: Path) -> None:
    h = _tree(tmp_path, {
        f"{REAL}/vendor": "0x10de\n", f"{REAL}/class": "0x030000\n",
        f"{REAL}/drm/card0/dev": "226:0\n",
        f"proc/driver/nvidia/gpus/{GPU}/information":
            "Model: \t\t NVIDIA GeForce RTX 3060\nDevice Minor: \t 3\n",
        "proc/777/comm": "Xorg\n", "proc/888/comm": "blender\n",
    }, {"proc/777/fd/5": "/dev/dri/card0", "proc/888/fd/9": "/dev/nvidia3",
        "proc/888/fd/10": "/dev/nvidiactl"})
    assert uses(h, GPU) == ["/dev/dri/card0 is open by pid 777 (Xorg)",
                            "/dev/nvidia3 is open by pid 888 (blender)"]


NVME = "0000:02:00.0"
NREAL = f"sys/devices/pci0000:00/0000:00:1d.0/{NVME}"


@pytest.mark.parametrize(("files", "expect"), [
    ({f"{NREAL}/nvme/nvme0/nvme0n1/nvme0n1p2/partition": "2\n"}, []),
    ({f"{NREAL}/nvme/nvme0/nvme0n1/nvme0n1p2/partition": "2\n",
      f"{NREAL}/nvme/nvme0/nvme0n1/nvme0n1p2/holders/dm-0/.keep": "",
      "sys/block/dm-0/dm/name": "cryptdata\n"},
     ["disk nvme0n1: nvme0n1p2 is held by dm-0 (mapper/cryptdata)"]),
    ({f"{NREAL}/nvme/nvme0/nvme0n1/holders/md127/.keep": ""},
     ["disk nvme0n1: nvme0n1 is held by md127"]),
])
def test_disk_under_an_unmounted_stacked_device(tmp_path: Path, files: dict[str, str],
                                               expect: list[str]) -> None:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    (tmp_path / "sys/block").mkdir(parents=True, exist_ok=True)
    os.symlink(f"../devices/pci0000:00/0000:00:1d.0/{NVME}/nvme/nvme0/nvme0n1",
               tmp_path / "sys/block/nvme0n1")
    (tmp_path / "sys/bus/pci/devices").mkdir(parents=True)
    os.symlink(f"../../../../{NREAL}", tmp_path / "sys/bus/pci/devices" / NVME)
    h = LinuxHost(str(tmp_path))
    found = [u.detail for u in find_host_uses(PciDevice(h, PciAddress.parse(NVME)))]
    assert found == expect
