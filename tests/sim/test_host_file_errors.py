"""Bad host files never crash vfioctl: one line on stderr, exit 3 (malformed host
description) or 77 (a file the user may not read), no traceback, the file unchanged —
for named hostile inputs and for a fuzzer that mutates the bundled hosts."""

from __future__ import annotations

import contextlib
import copy
import io
import math
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vfioctl.cli.main import main
from vfioctl.sim.host import SimHost
from vfioctl.sim.loader import bundled_names, bundled_text
from vfioctl.sim.state import dump_state

COMMANDS = (["list"], ["groups"], ["detach", "0000:06:00.0"])
WS, SRV = bundled_text("workstation"), bundled_text("sriov-server")


def run(argv: list[str]) -> tuple[int, str, str]:
    """The CLI in-process; (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def one_error_line(err: str) -> bool:
    return err.count("\n") == 1 and err.startswith("vfioctl: error: ") and \
        "Traceback" not in err


BAD: dict[str, tuple[bytes, str]] = {
    "non-utf8": (WS.encode() + b"\n# caf\xe9\n", "is not UTF-8 text: byte 0xe9 at line"),
    "numa-nan": (SRV.replace("numa_node = 1\n", "numa_node = nan\n", 1).encode(),
                 "numa_node must be an integer -1..1023, got a float nan"),
    "numa-1e400": (SRV.replace("numa_node = 1\n", "numa_node = 1e400\n", 1).encode(),
                   "numa_node must be an integer -1..1023, got a float inf"),
    "datetime-for-string": (WS.replace('kernel = "6.1.0-18-amd64"',
                                       "kernel = 1979-05-27T07:32:00Z").encode(),
                            "kernel must be a string, got a date/time 1979-05-27"),
    "state-devices-3": ((WS + "\n[state]\ndevices = 3\n").encode(),
                        "[state]: devices must be a table, got an integer 3"),
    "dynids-zz": ((WS + '\n[state]\ndynids = { igb = ["zz"] }\n').encode(),
                  "[state] dynids.igb: [0] must look like '8086 10fb'"),
    "numvfs-100000": ((SRV + '\n[state.devices."0000:03:00.0"]\ndriver = "i40e"\n'
                       "sriov_numvfs = 100000\n").encode(),
                      "sriov_numvfs = 100000 is out of range (allowed: 0..64)"),
    "numvfs-above-total": ((SRV + '\n[state.devices."0000:05:00.0"]\ndriver = "igb"\n'
                            "sriov_numvfs = 8\n").encode(),
                           "sriov_numvfs = 8 is out of range (allowed: 0..7)"),
    "not-toml": (b"[host\n", "is not valid TOML"),
    "mac-garbage": (WS.replace('mac = "24:4b:fe:5a:10:22"', 'mac = "24:4b"').encode(),
                    "mac = '24:4b' must look like"),
    "route-ipv6-mixed": (WS.replace('gateway = "192.168.1.1"', 'gateway = "fe80::1"')
                         .encode(), "are of different families"),
    "bool-for-int": (SRV.replace("numa_node = 1\n", "numa_node = true\n", 1).encode(),
                     "numa_node must be an integer -1..1023, got a boolean True"),
    "state-vf-group-twice": ((SRV + '\n[state.devices."0000:03:00.0"]\ndriver = "i40e"\n'
                              'sriov_numvfs = 2\n[state.devices."0000:03:02.0"]\n'
                              'iommu_group = 3\n[state.devices."0000:03:02.1"]\n'
                              "iommu_group = 3\n").encode(), "sriov_numvfs = 2"),
    "state-unknown-device": ((WS + '\n[state.devices."0000:09:00.0"]\ndriver = ""\n')
                             .encode(), "0000:09:00.0: no such device"),
    "deep-nesting": (b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n", "not valid TOML"),
    "kernel-path": (WS.replace('kernel = "6.1.0-18-amd64"', 'kernel = "../../etc"')
                    .encode(), "must be a kernel release"),
    "driver-slash": (WS.replace('name = "igb"', 'name = "ig/b"').encode(),
                     "is not a valid driver name"),
}


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_host_file_is_exit_3_one_line(tmp_path: Path, case: str,
                                          command: list[str]) -> None:
    data, words = BAD[case]
    path = tmp_path / "host.toml"
    path.write_bytes(data)
    code, out, err = run(["--host", f"sim:{path}", *command])
    assert (code, out) == (3, ""), err
    assert one_error_line(err) and words in err, err
    assert path.read_bytes() == data
    assert not (tmp_path / "host.toml.state").exists()


def test_a_directory_or_a_fifo_is_not_a_host_file(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    for path, words in ((tmp_path, "is a directory"), (fifo, "not a regular file")):
        code, _, err = run(["--host", f"sim:{path}", "list"])
        assert code == 3 and one_error_line(err) and words in err


NOBODY = 65534


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root (to make a root-only file) and setpriv (to read it "
                    "as nobody)")
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_unreadable_host_file_is_exit_77(command: list[str]) -> None:
    # a world-traversable directory, so only the file's own mode is in the way
    with tempfile.TemporaryDirectory(dir="/tmp") as d:
        os.chmod(d, 0o755)
        path = Path(d) / "root-only.toml"
        path.write_text(WS)
        os.chmod(path, 0o600)
        proc = subprocess.run(
            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
             sys.executable, "-c",
             "import sys; from vfioctl.cli.main import main; sys.exit(main(sys.argv[1:]))",
             "--host", f"sim:{path}", *command],
            capture_output=True, text=True, timeout=600, check=False,
            env={**os.environ, "HOME": "/tmp"})
        assert proc.returncode == 77, proc.stderr
        assert one_error_line(proc.stderr) and str(path) in proc.stderr
        assert path.read_text() == WS


# -- fuzzing -----------------------------------------------------------------------------

HOSTILE: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from([True, False, 0, -1, 1, 255, 256, 4096, 65535, 65536, 2**31, 2**63,
                     -(2**63), 10**30, math.nan, math.inf, -math.inf, 0.5, 1e400, "",
                     "x", "0000:00:00.0", "zz", "8086:10d3", "../..", "a/b", "\n", "\x00",
                     " ", "é" * 50, "vfio-pci", "nvme", "fe80::1/64", "10.0.0.1/33",
                     [], {}, ["zz"], [1], {"a": 1}, [{}], "1979-05-27"]),
    st.integers(), st.floats(), st.text(max_size=20),
    st.lists(st.integers(-5, 70000), max_size=3), st.datetimes(),
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key/index path into a parsed TOML document."""
    out = []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) \
        if isinstance(doc, list) else []
    for key, value in items:
        out.append((*prefix, key))
        out.extend(_paths(value, (*prefix, key)))
    return out


def _mutate(doc: Any, path: tuple[Any, ...], how: str, value: Any) -> None:
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if how == "delete" and isinstance(parent, dict):
        del parent[last]
    elif how == "add" and isinstance(parent, dict):
        parent["unknown_key"] = value
    else:
        parent[last] = value


STATE_SAMPLES = (
    {"drivers": ["pcieport", "nvme"], "devices": {"0000:06:00.0": {"driver": "nvme",
                                                                    "net_up": True}}},
    {"vfio_user": [{"pid": 4242, "comm": "qemu", "group": 8, "devices": ["0000:06:00.0"]}]},
    {"secrets": {"vf_tokens": {"0000:06:00.0": "not-a-uuid"}}},
    {"enable_sriov": True, "dynids": {"nvme": ["8086 1234"]}},
)


def _saved_server_state() -> dict[str, Any]:
    """What vfioctl saves for sriov-server after a detach, 2 VFs, a token and a VFIO user
    of one VF: every kind of state key, to be mutated."""
    host = SimHost.bundled("sriov-server", writable=True)
    host.load_module("vfio-pci")
    pf, dev = "0000:03:00.0", "sys/bus/pci/devices/0000:03:00.0"
    host.write(f"{dev}/driver_override", "vfio-pci")
    host.write(f"{dev}/driver/unbind", pf)
    host.write("sys/bus/pci/drivers_probe", pf)
    host.write("sys/module/vfio_pci/parameters/enable_sriov", "Y")
    host.write(f"{dev}/sriov_numvfs", "2")
    host.write("sys/bus/pci/drivers/igb/unbind", "0000:05:00.0")
    vf = "0000:03:02.0"
    group = int(host.readlink(f"sys/bus/pci/devices/{vf}/iommu_group").rsplit("/")[-1])
    host.add_vfio_user(4242, "qemu-system-x86", group, [vf])
    return dump_state(host.kernel)


SAVED_SERVER_STATE = _saved_server_state()


@st.composite
def mutated_host(draw: Callable[..., Any]) -> bytes:
    name = draw(st.sampled_from(bundled_names()))
    text = bundled_text(name)
    if draw(st.integers(0, 9)) == 0:                          # raw bytes in the text
        pos = draw(st.integers(0, len(text)))
        junk = draw(st.binary(min_size=1, max_size=8))
        raw: bytes = text.encode()[:pos] + junk + text.encode()[pos:]
        return raw
    doc = tomllib.loads(text)
    if name == "sriov-server" and draw(st.booleans()):
        doc["state"] = copy.deepcopy(SAVED_SERVER_STATE)
    elif draw(st.integers(0, 3)) == 0:
        doc["state"] = copy.deepcopy(draw(st.sampled_from(STATE_SAMPLES)))
    paths = _paths(doc)
    for _ in range(draw(st.integers(1, 3))):
        # half the time under [state], when there is one: it is checked separately
        state_paths = [p for p in paths if p[0] == "state"]
        path = draw(st.sampled_from(state_paths if state_paths and draw(st.booleans())
                                    else paths))
        how = draw(st.sampled_from(["set", "set", "delete", "add"]))
        value = copy.deepcopy(draw(HOSTILE))
        with contextlib.suppress(KeyError, IndexError, TypeError):   # moved by an earlier one
            _mutate(doc, path, how, value)
        paths = _paths(doc) or paths
    try:
        return tomli_w.dumps(doc).encode()
    except (TypeError, ValueError):
        return text.encode() + b"\n\x00"                      # not representable: junk


def test_the_saved_state_the_fuzzer_mutates_loads(tmp_path: Path) -> None:
    path = tmp_path / "host.toml"
    path.write_text(SRV + "\n" + tomli_w.dumps({"state": SAVED_SERVER_STATE}))
    code, out, err = run(["--host", f"sim:{path}", "list"])
    assert (code, err) == (0, "") and "0000:03:02.1" in out


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated_host(), st.sampled_from([["list"], ["groups", "--json"], ["show",
                                                                        "0000:00:00.0"]]))
def test_fuzzed_host_files_never_crash(data: bytes, command: list[str]) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "host.toml"
        path.write_bytes(data)
        code, _, err = run(["--host", f"sim:{path}", *command])
        assert code in (0, 3, 4, 5, 77), err
        assert "Traceback" not in err and "internal error" not in err, err
        if code != 0:
            assert one_error_line(err), err
        assert path.read_bytes() == data
