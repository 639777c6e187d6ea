"""sim:FILE write-back, read-only bundled hosts, concurrency, crash state, token secrecy."""

from __future__ import annotations

import errno
import multiprocessing
import os
import stat
from pathlib import Path, PurePosixPath

import pytest
from simtest import DEV, file_host, oserrno

from vfioctl.errors import NotFound, ReadOnlyHost
from vfioctl.hosts import open_host
from vfioctl.sim.faults import SimCrash
from vfioctl.sim.host import SimHost, open_sim_host
from vfioctl.sim.loader import STATE_MARKER, bundled_text

NIC = "0000:04:00.0"
NVME = "0000:06:00.0"


@pytest.fixture
def host_file(tmp_path: Path) -> Path:
    path = tmp_path / "ws.toml"
    path.write_text(bundled_text("workstation"))
    return path


def test_bundled_host_is_read_only_with_a_copy_hint() -> None:
    host = open_host("sim:workstation")
    assert host.readonly and host.state_dir is None
    with pytest.raises(ReadOnlyHost) as exc:
        host.write(DEV / NIC / "driver_override", "vfio-pci")
    assert "vfioctl sim copy workstation FILE" in (exc.value.hint or "")
    with pytest.raises(ReadOnlyHost):
        host.load_module("vfio-pci")


def test_unknown_name_is_not_found() -> None:
    with pytest.raises(NotFound):
        open_sim_host("no-such-host")


def test_changes_are_written_back_and_seen_by_a_new_process(host_file: Path) -> None:
    host = open_sim_host(str(host_file))
    assert host.state_dir == host_file.parent / "ws.toml.state"
    host.write(DEV / NVME / "driver_override", "vfio-pci")
    host.write(DEV / NVME / "driver/unbind", NVME)
    text = host_file.read_text()
    assert text.startswith(bundled_text("workstation").rstrip("\n"))   # hardware untouched
    assert STATE_MARKER in text
    again = SimHost.from_file(host_file)
    assert again.kernel.driver_of(NVME) is None
    assert again.read_text(DEV / NVME / "driver_override") == "vfio-pci\n"
    # the first host sees what the second does (one kernel for all processes)
    again.load_module("vfio-pci")
    again.write(DEV.parent / "drivers_probe", NVME)
    assert host.kernel.driver_of(NVME) == "vfio-pci"
    assert host.exists(PurePosixPath("dev/vfio/8"))


def _bind_in_child(path: str, name: str) -> None:
    host = SimHost.from_file(Path(path))
    host.write(DEV / name / "driver_override", "pci-stub")


def test_concurrent_processes_do_not_lose_writes(host_file: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    names = ["0000:03:00.0", NIC, "0000:05:00.0", NVME]
    procs = [ctx.Process(target=_bind_in_child, args=(str(host_file), n)) for n in names]
    for p in procs:
        p.start()
    for p in procs:
        p.join(20)
        assert p.exitcode == 0
    host = SimHost.from_file(host_file)
    for n in names:
        assert host.read_text(DEV / n / "driver_override") == "pci-stub\n"


def test_crash_leaves_the_half_done_state_for_the_next_process(host_file: Path) -> None:
    host = SimHost.from_file(host_file)
    host.faults.crash_at(2)
    host.write(DEV / NVME / "driver_override", "vfio-pci")
    with pytest.raises(SimCrash) as exc:
        host.write(DEV / NVME / "driver/unbind", NVME)
    assert exc.value.at_write == 2 and not exc.value.applied
    after = SimHost.from_file(host_file)
    assert after.read_text(DEV / NVME / "driver_override") == "vfio-pci\n"
    assert after.kernel.driver_of(NVME) == "nvme"


def test_crash_after_the_kernel_applied_the_write(host_file: Path) -> None:
    host = SimHost.from_file(host_file)
    host.faults.crash_at(1, applied=True)
    with pytest.raises(SimCrash):
        host.write(DEV / NVME / "driver/unbind", NVME)
    assert SimHost.from_file(host_file).kernel.driver_of(NVME) is None


def test_vf_token_state_makes_the_file_private(tmp_path: Path) -> None:
    path, host = file_host(tmp_path)
    os.chmod(path, 0o644)
    pf = "0000:01:00.0"
    host.write(DEV / pf / "driver_override", "vfio-pci")
    host.write(DEV / pf / "driver/unbind", pf)
    host.write(DEV.parent / "drivers_probe", pf)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    token = host.kernel.vf_tokens[pf]
    assert SimHost.from_file(path).kernel.vf_tokens[pf] == token      # kernel memory persists


def test_vfs_and_their_groups_survive_a_reload(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(bundled_text("sriov-server"))
    host = SimHost.from_file(path)
    pf = "0000:04:00.0"
    host.write(DEV / pf / "sriov_numvfs", "4")
    before = {n: host.readlink(DEV / n / "iommu_group")
              for n in host.listdir(DEV)}
    again = SimHost.from_file(path)
    after = {n: again.readlink(DEV / n / "iommu_group") for n in again.listdir(DEV)}
    assert before == after and len(after) == 17 + 4
    assert again.read_text(DEV / "0000:04:02.3/physfn/sriov_numvfs") == "4\n"


def test_failed_write_changes_nothing_on_disk(host_file: Path) -> None:
    host = SimHost.from_file(host_file)
    before = host_file.read_text()
    assert oserrno(lambda: host.write(DEV / NIC / "sriov_numvfs", "1")) == errno.ENOENT
    assert host_file.read_text() == before


def test_sim_host_implements_the_host_seam(host_file: Path) -> None:
    from vfioctl.host.base import Host
    assert isinstance(SimHost.from_file(host_file), Host)
    assert isinstance(open_host("sim:q35-vmtest"), Host)
