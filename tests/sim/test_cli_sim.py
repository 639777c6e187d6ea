"""``vfioctl sim`` commands and the simulator behind ``--host sim:…``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from simtest import make_host

from vfioctl.cli.main import main
from vfioctl.sim.host import SimHost
from vfioctl.sim.loader import bundled_text


def test_sim_list_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == {"q35-vmtest", "sriov-server", "workstation"}


def test_sim_copy_then_use_as_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                   ) -> None:
    dest = tmp_path / "ws.toml"
    assert main(["sim", "copy", "workstation", str(dest)]) == 0
    assert dest.read_text() == bundled_text("workstation")
    assert main(["sim", "copy", "workstation", str(dest)]) == 2      # exists: refuse
    host = SimHost.from_file(dest)
    assert host.kernel.driver_of("0000:06:00.0") == "nvme"


def test_sim_copy_unknown_name_exits_not_found(tmp_path: Path) -> None:
    assert main(["sim", "copy", "nope", str(tmp_path / "x.toml")]) == 4


def test_generate_makes_a_host_of_that_size(tmp_path: Path) -> None:
    dest = tmp_path / "big.toml"
    assert main(["sim", "generate", "--functions", "300", str(dest)]) == 0
    host = SimHost.from_file(dest)
    assert len(host.kernel.devices) == 300
    groups = {host.kernel.group_of(n) for n in host.kernel.devices}
    assert None not in groups and len(groups) > 10


def test_snapshot_command_runs_on_a_bundled_host(tmp_path: Path) -> None:
    dest = tmp_path / "snap"
    assert main(["--host", "sim:q35-vmtest", "snapshot", str(dest)]) == 0
    assert (dest / "sys/bus/pci/devices/0000:01:00.0/config").stat().st_size == 4096
    assert (dest / "sys/bus/pci/devices/0000:00:11.0/config").stat().st_size == 256


def test_data_host_files_load() -> None:
    host = make_host("shared-group")
    k = host.kernel
    assert k.group_of("0000:03:00.0") == k.group_of("0000:03:00.1") == \
        k.group_of("0000:00:01.0")
    assert k.group_of("0000:04:00.0") != k.group_of("0000:00:1d.0")


def test_bad_host_file_is_a_config_error(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[device]]\naddr = "0000:00:01.0"\nid = "8086:10d3"\n')
    assert main(["--host", f"sim:{bad}", "snapshot", str(tmp_path / "s")]) == 3
    assert "class is required" in capsys.readouterr().err
