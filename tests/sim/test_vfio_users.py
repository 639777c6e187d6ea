"""VFIO users the product can name: this process's VFIO files and other processes'
(``[[state.vfio_user]]``, ``SimHost.add_vfio_user``) under ``proc/PID/fd`` and
``proc/PID/comm``, and what holding a group does to the kernel's answers."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from simtest import DEV, DRV, VFIO, VfioSession, bind_vfio, group_of, make_host, oserrno

from vfioctl.cli.main import main
from vfioctl.sim.blocking import SimWouldBlock
from vfioctl.sim.host import SimHost
from vfioctl.sim.loader import STATE_MARKER, bundled_text

PF, VF0, VF1 = "0000:03:00.0", "0000:03:02.0", "0000:03:02.1"
ENABLE_SRIOV = "sys/module/vfio_pci/parameters/enable_sriov"
ME = str(os.getpid())


def fd_links(host: SimHost, pid: int | str) -> dict[str, str]:
    base = f"proc/{pid}/fd"
    return {fd: host.readlink(f"{base}/{fd}") for fd in host.listdir(base)}


def server_with_vfs(path: Path | None = None) -> SimHost:
    """sriov-server with PF 03:00.0 on vfio-pci and two VFs on vfio-pci."""
    if path is None:
        host = SimHost.bundled("sriov-server", writable=True)
    else:
        path.write_text(bundled_text("sriov-server"))
        host = SimHost.from_file(path)
    host.load_module("vfio-pci")
    bind_vfio(host, PF)
    host.write(ENABLE_SRIOV, "Y")
    host.write(DEV / PF / "sriov_numvfs", "2")
    return host


def test_this_process_is_in_proc_with_its_vfio_files() -> None:
    host = make_host("q35-vmtest")
    host.load_module("vfio-pci")
    plain = "0000:02:00.0"
    bind_vfio(host, plain)
    assert ME in host.listdir("proc") and host.readlink("proc/self") == ME
    assert host.read_text(f"proc/{ME}/comm").endswith("\n")
    assert fd_links(host, ME) == {"0": "/dev/null", "1": "/dev/null", "2": "/dev/null"}
    s = VfioSession(host)
    number = group_of(host, plain)
    dev = s.device(plain)
    assert fd_links(host, ME) == {
        "0": "/dev/null", "1": "/dev/null", "2": "/dev/null",
        str(s.c): "/dev/vfio/vfio", str(s.groups[number]): f"/dev/vfio/{number}",
        str(dev): "anon_inode:[vfio-device]"}
    host.close(s.groups[number])            # the device file keeps the group open
    assert oserrno(lambda: host.open(VFIO / str(number))) == errno.EBUSY
    assert f"/dev/vfio/{number}" not in fd_links(host, ME).values()
    host.close(dev)
    host.close(s.c)
    assert set(fd_links(host, ME)) == {"0", "1", "2"}
    host.close(host.open(VFIO / str(number)))   # free again


def test_another_process_holds_the_group_and_its_devices(tmp_path: Path) -> None:
    path = tmp_path / "srv.toml"
    host = server_with_vfs(path)
    g0, g1 = group_of(host, VF0), group_of(host, VF1)
    host.add_vfio_user(4242, "qemu-system-x86", g0, [VF0])
    # saved with the host: a fresh process sees it
    again = SimHost.from_file(path)
    assert "4242" in again.listdir("proc")
    assert again.read_text("proc/4242/comm") == "qemu-system-x86\n"
    assert fd_links(again, 4242) == {
        "0": "/dev/null", "1": "/dev/null", "2": "/dev/null", "3": "/dev/vfio/vfio",
        "4": f"/dev/vfio/{g0}", "5": "anon_inode:[vfio-device]"}
    assert "[[state.vfio_user]]" in path.read_text().split(STATE_MARKER)[1]
    # a second opener of the group: EBUSY, as vfio_group_fops_open answers
    assert oserrno(lambda: again.open(VFIO / str(g0))) == errno.EBUSY
    again.close(again.open(VFIO / str(g1)))
    # its device counts as open: the unbind would wait for pid 4242
    with pytest.raises(SimWouldBlock, match=r"pid 4242 \(qemu-system-x86\)"):
        again.write(DRV / "vfio-pci/unbind", VF0)
    again.remove_vfio_user(4242)
    assert "4242" not in SimHost.from_file(path).listdir("proc")
    again.write(DRV / "vfio-pci/unbind", VF0)
    assert again.kernel.driver_of(VF0) is None


def test_a_vfio_user_owns_its_group_for_the_driver_core() -> None:
    host = server_with_vfs()
    host.write(DEV / VF0 / "driver_override", "")
    host.write(DRV / "vfio-pci/unbind", VF0)
    host.write(DEV / VF0 / "driver_override", "vfio-pci")
    host.write(DEV.parent / "drivers_probe", VF0)
    host.add_vfio_user(77, "dpdk-testpmd", group_of(host, VF0))   # group file only
    host.write(DRV / "vfio-pci/unbind", VF0)                       # no device file: fine
    host.write(DEV / VF0 / "driver_override", "")
    assert oserrno(lambda: host.write(DRV / "iavf/bind", VF0)) == errno.EBUSY
    host.remove_vfio_user(77)
    host.write(DRV / "iavf/bind", VF0)
    assert host.kernel.driver_of(VF0) == "iavf"


def test_add_vfio_user_answers_as_the_kernel_would() -> None:
    host = server_with_vfs()
    g0 = group_of(host, VF0)
    nic_group = group_of(host, "0000:05:00.0")                     # igb, no vfio member
    assert oserrno(lambda: host.add_vfio_user(10, "a", nic_group)) == errno.ENOENT
    assert oserrno(lambda: host.add_vfio_user(10, "a", g0, [VF1])) == errno.ENODEV
    host.add_vfio_user(10, "a", g0)
    assert oserrno(lambda: host.add_vfio_user(11, "b", g0)) == errno.EBUSY
    s = VfioSession(host)
    s.attach(group_of(host, VF1))
    assert oserrno(lambda: host.add_vfio_user(12, "c", group_of(host, VF1))) == \
        errno.EBUSY
    for bad in ({"pid": 10}, {"pid": 1}, {"pid": os.getpid()}, {"pid": True},
                {"comm": "x" * 16}, {"comm": "a\0b"}, {"devices": "0000:03:02.0"},
                {"devices": ["zz"]}, {"devices": [VF0, VF0]}, {"group": -1}):
        args = {"pid": 99, "comm": "q", "group": g0, "devices": [], **bad}
        with pytest.raises(ValueError):
            host.add_vfio_user(**args)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no VFIO user with pid 5"):
        host.remove_vfio_user(5)


def test_not_viable_group_is_eperm() -> None:
    host = make_host("workstation")
    host.load_module("vfio-pci")
    bind_vfio(host, "0000:01:00.1")                  # the GPU's audio; the GPU on nouveau
    number = group_of(host, "0000:01:00.1")
    assert oserrno(lambda: host.add_vfio_user(50, "qemu", number)) == errno.EPERM


HAND_WRITTEN = """
[state]
[[state.vfio_user]]
pid = 4242
comm = "qemu-system-x86"
group = {group}
devices = ["0000:06:00.0"]
"""


def nvme_on_vfio() -> tuple[str, int]:
    """workstation with its NVMe on vfio-pci at boot, and the NVMe's group."""
    text = bundled_text("workstation").replace(
        'flr = true\ndisk = { name = "nvme0n1"', 'flr = true\ndriver = "vfio-pci"\n'
        'disk = { name = "nvme0n1"').replace(
        'name = "vfio-pci"\nloaded = false', 'name = "vfio-pci"\nloaded = true')
    return text, group_of(SimHost.from_text(text), "0000:06:00.0")


def test_hand_written_vfio_user_in_a_partial_state(tmp_path: Path) -> None:
    """A [state] without devices boots the host, then applies the rest."""
    text, number = nvme_on_vfio()
    path = tmp_path / "ws.toml"
    path.write_text(text + HAND_WRITTEN.format(group=number))
    host = SimHost.from_file(path)
    assert host.kernel.driver_of("0000:06:00.0") == "vfio-pci"
    assert host.kernel.driver_of("0000:04:00.0") == "igb"          # booted
    assert fd_links(host, 4242)["4"] == f"/dev/vfio/{number}"
    assert main(["--host", f"sim:{path}", "list"]) == 0


@pytest.mark.parametrize(("entry", "words"), [
    ("pid = 0\ncomm = 'q'\ngroup = G", "pid must be an integer"),
    ("pid = 5\ncomm = 'q'\ngroup = G\nfd = 3", "unknown key(s) fd"),
    ("pid = 5\ngroup = G", "comm is required"),
    ("pid = 5\ncomm = 'q'\ngroup = G\ndevices = ['0000:04:00.0']", "is not bound to "
     "vfio-pci"),
    ("pid = 5\ncomm = 'q'\ngroup = 0\ndevices = ['0000:00:00.0']",
     "No such file or directory"),
    ("pid = 5\ncomm = 'q'\ngroup = 'eight'", "group must be an IOMMU group number"),
    ("pid = 5\ncomm = 'q'\ngroup = G\n[[state.vfio_user]]\npid = 6\ncomm = 'r'\n"
     "group = G", "Device or resource busy"),
])
def test_bad_vfio_user_entries_are_config_errors(tmp_path: Path, entry: str, words: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    text, number = nvme_on_vfio()
    path = tmp_path / "ws.toml"
    path.write_text(text + "\n[state]\n[[state.vfio_user]]\n"
                    + entry.replace("G", str(number)) + "\n")
    saved = path.read_bytes()
    assert main(["--host", f"sim:{path}", "list"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err and "vfio_user" in err
    assert path.read_bytes() == saved
