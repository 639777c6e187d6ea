"""The typed read model (vfioctl.model) against independent oracles.

- ``to_json()`` of every record has the documented shape (README "JSON output": keys,
  order, types, hex widths), checked against a schema written from the README, on the
  bundled simulated hosts, the captured snapshot fixtures and a VF-heavy tree stamped
  from the real kernel's sysfs (benchmarks/vf_tree.py);
- the values equal what raw sysfs says (the real-kernel tier's raw reader,
  tests/realkernel/guest_kernel.py, plain file reads) and what ``lspci`` says;
- the ``modalias`` shortcut for ids gives what the ``vendor``/``device``/``class``
  files give, and the fallback reads those files when ``modalias`` is absent or odd;
- the fast JSON writer produces ``json.dumps(doc, indent=2)`` byte for byte;
- the CLI renders the model (groups show the drivers raw sysfs shows).
"""

from __future__ import annotations

import io
import json
import math
import re
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realkernel.checks import assert_groups_match_sysfs, raw_record
from realkernel.guest_kernel import GuestKernel
from vfioctl.address import PciAddress
from vfioctl.cli.main import main as cli_main
from vfioctl.host.linux import LinuxHost
from vfioctl.model import (
    DeviceDetail,
    DeviceInfo,
    GroupInfo,
    get_device_info,
    list_devices,
    list_groups,
)
from vfioctl.model.device import list_json_text
from vfioctl.model.jsontext import dumps
from vfioctl.pci.device import PciDevice
from vfioctl.sim.host import SimHost
from vfioctl.sim.loader import bundled_names
from vfioctl.snapshot import take_snapshot

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOTS = ROOT / "tests/data/snapshots"
DEV = PurePosixPath("sys/bus/pci/devices")
LSPCI = shutil.which("lspci")
# PFs whose VFs the bundled hosts can enable, and how many (as test_lspci_agreement does)
SIM_VFS = {"q35-vmtest": ("0000:01:00.0", 2), "sriov-server": ("0000:03:00.1", 3)}

sys.path.insert(0, str(ROOT / "benchmarks"))
from vf_tree import build_vf_tree  # noqa: E402

# -- the documented shapes (README "JSON output"), written out independently -------------
ADDR = re.compile(r"^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
HEX4 = re.compile(r"^[0-9a-f]{4}$")
HEX6 = re.compile(r"^[0-9a-f]{6}$")
HEX2 = re.compile(r"^[0-9a-f]{2}$")
LIST_KEYS = ["address", "vendor", "device", "class", "driver", "iommu_group", "physfn",
             "virtfns", "sriov_totalvfs", "sriov_numvfs"]
SHOW_KEYS = [
    *LIST_KEYS, "subsystem_vendor", "subsystem_device", "revision", "driver_override", "numa_node",
    "reset_method", "boot_vga", "header_type", "multifunction", "bridge", "secondary_bus",
    "subordinate_bus", "pcie_port_type", "flr", "config_size", "capabilities", "acs",
    "sriov", "ari_next_function", "path", "group_peers", "vfio_safe"]
GROUP_KEYS = ["group", "devices", "viable", "blockers"]


def is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def opt(pred: Any) -> Any:
    return lambda v: v is None or pred(v)


def matches(rx: re.Pattern[str]) -> Any:
    return lambda v: isinstance(v, str) and rx.match(v) is not None


def is_str(v: object) -> bool:
    return isinstance(v, str)


def is_bool(v: object) -> bool:
    return isinstance(v, bool)


def list_of(pred: Any) -> Any:
    return lambda v: isinstance(v, list) and all(pred(x) for x in v)


LIST_TYPES: dict[str, Any] = {
    "address": matches(ADDR), "vendor": matches(HEX4), "device": matches(HEX4),
    "class": matches(HEX6), "driver": opt(is_str), "iommu_group": opt(is_int),
    "physfn": opt(matches(ADDR)), "virtfns": list_of(matches(ADDR)),
    "sriov_totalvfs": opt(is_int), "sriov_numvfs": opt(is_int),
}
CAP_TYPES: dict[str, Any] = {
    "id": lambda v: isinstance(v, str) and re.match(r"^([0-9a-f]{2}|[0-9a-f]{4})$", v),
    "name": is_str, "offset": matches(re.compile(r"^[0-9a-f]{3}$")), "extended": is_bool,
}
ACS_FLAGS = {"SV", "TB", "RR", "CR", "UF", "EC", "DT"}
SRIOV_KEYS = ["total_vfs", "initial_vfs", "num_vfs", "vf_offset", "vf_stride",
              "vf_device", "vf_enable"]
SHOW_TYPES: dict[str, Any] = {
    **LIST_TYPES,
    "subsystem_vendor": opt(matches(HEX4)), "subsystem_device": opt(matches(HEX4)),
    "revision": opt(matches(HEX2)), "driver_override": opt(is_str),
    "numa_node": opt(is_int), "reset_method": opt(list_of(is_str)),
    "boot_vga": opt(is_bool), "header_type": opt(is_int), "multifunction": is_bool,
    "bridge": is_bool, "secondary_bus": opt(is_int), "subordinate_bus": opt(is_int),
    "pcie_port_type": opt(is_str), "flr": opt(is_bool), "config_size": is_int,
    "capabilities": lambda v: isinstance(v, list) and all(
        isinstance(c, dict) and list(c) == list(CAP_TYPES)
        and all(CAP_TYPES[k](c[k]) for k in c) for c in v),
    "acs": opt(lambda v: isinstance(v, dict) and list(v) == ["capability", "control",
                                                             "isolates"]
               and v["capability"] == sorted(v["capability"])
               and set(v["capability"]) <= ACS_FLAGS and set(v["control"]) <= ACS_FLAGS
               and v["control"] == sorted(v["control"]) and is_bool(v["isolates"])),
    "sriov": opt(lambda v: isinstance(v, dict) and list(v) == SRIOV_KEYS
                 and all(is_int(v[k]) for k in SRIOV_KEYS[:5])
                 and matches(HEX4)(v["vf_device"]) and is_bool(v["vf_enable"])),
    "ari_next_function": opt(is_int), "path": list_of(matches(ADDR)),
    "group_peers": list_of(matches(ADDR)), "vfio_safe": is_bool,
}
GROUP_TYPES: dict[str, Any] = {
    "group": is_int, "devices": list_of(matches(ADDR)), "viable": is_bool,
    "blockers": lambda v: isinstance(v, list) and all(
        isinstance(b, dict) and list(b) == ["address", "driver"]
        and matches(ADDR)(b["address"]) and is_str(b["driver"]) for b in v),
}


def assert_shape(doc: dict[str, Any], keys: list[str], types: dict[str, Any]) -> None:
    assert list(doc) == keys
    bad = [k for k in keys if not types[k](doc[k])]
    assert not bad, (doc.get("address") or doc.get("group"), {k: doc[k] for k in bad})
    # what goes out is JSON as is: no tuples, no PciAddress, nothing json would convert
    assert json.loads(json.dumps(doc)) == doc


# -- hosts: bundled simulated ones (VFs enabled), captured and stamped trees ------------
def _sim(name: str) -> SimHost:
    host = SimHost.bundled(name, writable=True)
    if name in SIM_VFS:
        pf, n = SIM_VFS[name]
        host.write(DEV / pf / "sriov_numvfs", str(n))
    return host


@pytest.fixture(scope="module")
def stamped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 PFs x 20 VFs stamped from the q35-sriov capture: VFs across three slots."""
    out = tmp_path_factory.mktemp("vf") / "tree"
    build_vf_tree(out, pfs=3, vfs=20)
    return out


@pytest.fixture(scope="module")
def no_modalias(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The q35-sriov capture with every ``modalias`` removed or garbled."""
    out = tmp_path_factory.mktemp("nomodalias") / "tree"
    shutil.copytree(SNAPSHOTS / "q35-sriov", out, symlinks=True)
    for i, f in enumerate(sorted(out.glob("sys/devices/**/modalias"))):
        if i % 2:
            f.unlink()
        else:
            f.write_text("pci:v00001B36d00000010sv" + "\n")  # cut short
    return out


TREES = ["q35-initial", "q35-sriov", "firecracker-noiommu", "stamped", "no_modalias"]


@pytest.fixture(params=TREES)
def tree(request: pytest.FixtureRequest) -> Path:
    name = request.param
    if name in ("stamped", "no_modalias"):
        return Path(request.getfixturevalue(name))
    return SNAPSHOTS / name


@pytest.fixture(params=bundled_names())
def sim(request: pytest.FixtureRequest) -> SimHost:
    return _sim(request.param)


class TreeFs:
    """Plain file reads over a tree: the oracle's view, no vfioctl code."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def read_text(self, path: PurePosixPath) -> str:
        return (self.root / path).read_text()

    def readlink(self, path: PurePosixPath) -> str:
        return str((self.root / path).readlink())

    def listdir(self, path: PurePosixPath) -> list[str]:
        return [p.name for p in (self.root / path).iterdir()]

    def exists(self, path: PurePosixPath) -> bool:
        return (self.root / path).exists()

    def is_link(self, path: PurePosixPath) -> bool:
        return (self.root / path).is_symlink()


def check_host(host: Any, oracle: GuestKernel) -> None:
    """Shapes and values of list, show and groups on one host."""
    devices = list_devices(host)
    assert [str(d.address) for d in devices] == oracle.addresses()
    for d in devices:
        assert isinstance(d, DeviceInfo) and isinstance(d.address, PciAddress)
        assert is_int(d.vendor) and is_int(d.class_code)
        doc = d.to_json()
        assert_shape(doc, LIST_KEYS, LIST_TYPES)
        raw = raw_record(oracle.function(doc["address"]))
        assert doc == {k: raw[k] for k in LIST_KEYS}
        detail = get_device_info(host, d.address)
        assert isinstance(detail, DeviceDetail)
        full = detail.to_json()
        assert_shape(full, SHOW_KEYS, SHOW_TYPES)
        assert {k: full[k] for k in LIST_KEYS} == doc
        assert {k: full[k] for k in raw} == raw
    groups = list_groups(host)
    assert all(isinstance(g, GroupInfo) for g in groups)
    docs = [g.to_json() for g in groups]
    for doc in docs:
        assert_shape(doc, GROUP_KEYS, GROUP_TYPES)
    if oracle.fs.exists(PurePosixPath("sys/kernel/iommu_groups")):
        assert_groups_match_sysfs(docs, oracle)
    else:
        assert docs == []  # no IOMMU


def test_trees_read_like_raw_sysfs(tree: Path) -> None:
    check_host(LinuxHost(tree), GuestKernel(TreeFs(tree)))


def test_simulated_hosts_read_like_their_raw_files(sim: SimHost) -> None:
    check_host(sim, GuestKernel(sim))


def test_stamped_tree_is_what_it_says(stamped: Path) -> None:
    """The benchmark's tree: PFs with 20 VFs each on vfio-pci, one group per function."""
    devices = {str(d.address): d for d in list_devices(LinuxHost(stamped))}
    pfs = [d for d in devices.values() if d.is_pf]
    assert len(pfs) == 3 and all(d.sriov_numvfs == d.sriov_totalvfs == 20 for d in pfs)
    vfs = [d for d in devices.values() if d.is_vf]
    assert len(vfs) == 60 and {d.driver for d in vfs} == {"vfio-pci"}
    assert str(devices["0000:01:02.4"].physfn) == "0000:01:00.0"  # VF 20: devfn 20
    groups = [d.iommu_group for d in devices.values()]
    assert len(set(groups)) == len(groups)


# -- lspci as the oracle ----------------------------------------------------------------
_HEAD = re.compile(r"^(\S+) .*\[([0-9a-f]{4})\]: .*\[([0-9a-f]{4}):([0-9a-f]{4})\]"
                   r"(?: \(rev ([0-9a-f]{2})\))?(?: \(prog-if ([0-9a-f]{2}))?")


def lspci_functions(root: Path) -> dict[str, dict[str, Any]]:
    assert LSPCI is not None
    out = subprocess.run(
        [LSPCI, "-A", "linux-sysfs", "-O", f"sysfs.path={root}/sys/bus/pci",
         "-D", "-nn", "-k", "-vv"], capture_output=True, text=True, check=True).stdout
    funcs: dict[str, dict[str, Any]] = {}
    cur: dict[str, Any] = {}
    for line in out.splitlines():
        m = _HEAD.match(line)
        if m:
            cur = {"class": m.group(2), "vendor": m.group(3), "device": m.group(4),
                   "prog_if": m.group(6), "driver": None, "group": None, "subsystem": None}
            funcs[m.group(1)] = cur
            continue
        s = line.strip()
        if s.startswith("Kernel driver in use:"):
            cur["driver"] = s.split(":", 1)[1].strip()
        elif s.startswith("IOMMU group:"):
            cur["group"] = int(s.split(":", 1)[1])
        elif s.startswith("Subsystem:"):
            sm = re.search(r"\[([0-9a-f]{4}):([0-9a-f]{4})\]$", s)
            cur["subsystem"] = sm.groups() if sm else None
    return funcs


@pytest.mark.lspci
@pytest.mark.skipif(LSPCI is None, reason="lspci (Debian pciutils) not installed")
def test_lspci_agrees_on_every_tree(tree: Path) -> None:
    host = LinuxHost(tree)
    theirs = lspci_functions(tree)
    ours = list_devices(host)
    assert sorted(str(d.address) for d in ours) == sorted(theirs)
    for d in ours:
        lf = theirs[str(d.address)]
        doc = d.to_json()
        assert (doc["vendor"], doc["device"], doc["class"][:4]) == (
            lf["vendor"], lf["device"], lf["class"]), d.address
        if lf["prog_if"] is not None:
            assert doc["class"][4:] == lf["prog_if"], d.address
        assert (doc["driver"], doc["iommu_group"]) == (lf["driver"], lf["group"])
        if lf["subsystem"] is not None:
            full = get_device_info(host, d.address).to_json()
            assert (full["subsystem_vendor"], full["subsystem_device"]) == lf["subsystem"]


# -- the modalias shortcut --------------------------------------------------------------
class FakeHost:
    """Just the reads PciDevice.identity() makes, from a dict of file contents."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def read_bytes(self, path: str) -> bytes:
        try:
            return self.files[str(path)]
        except KeyError:
            raise FileNotFoundError(2, "No such file", str(path)) from None

    def read_text(self, path: str) -> str:
        return self.read_bytes(path).decode("utf-8", "replace")


u16 = st.integers(0, 0xFFFF)


def _files(v: int, d: int, sv: int, sd: int, cls: int) -> dict[str, bytes]:
    base = "sys/bus/pci/devices/0000:01:00.0/"
    return {base + "vendor": f"0x{v:04x}\n".encode(), base + "device": f"0x{d:04x}\n".encode(),
            base + "subsystem_vendor": f"0x{sv:04x}\n".encode(),
            base + "subsystem_device": f"0x{sd:04x}\n".encode(),
            base + "class": f"0x{cls:06x}\n".encode()}


def _identity(files: dict[str, bytes]) -> tuple[int, ...]:
    dev = PciDevice(FakeHost(files), PciAddress(0, 1, 0, 0))  # type: ignore[arg-type]
    i = dev.identity()
    return (i.vendor, i.device, i.subsystem_vendor or 0, i.subsystem_device or 0,
            i.class_code)


@given(u16, u16, u16, u16, st.integers(0, 0xFFFFFF))
def test_modalias_gives_the_files_values(v: int, d: int, sv: int, sd: int, cls: int) -> None:
    files = _files(v, d, sv, sd, cls)
    # as drivers/pci/pci-sysfs.c modalias_show() formats it
    files["sys/bus/pci/devices/0000:01:00.0/modalias"] = (
        f"pci:v{v:08X}d{d:08X}sv{sv:08X}sd{sd:08X}bc{cls >> 16:02X}sc{(cls >> 8) & 0xFF:02X}"
        f"i{cls & 0xFF:02X}\n").encode()
    assert _identity(files) == (v, d, sv, sd, cls)


@given(u16, u16, u16, u16, st.integers(0, 0xFFFFFF), st.binary(max_size=80))
def test_odd_modalias_falls_back_to_the_files(v: int, d: int, sv: int, sd: int, cls: int,
                                              junk: bytes) -> None:
    files = _files(v, d, sv, sd, cls)
    files["sys/bus/pci/devices/0000:01:00.0/modalias"] = junk
    if re.fullmatch(rb"pci:v[0-9A-F]{8}d[0-9A-F]{8}sv[0-9A-F]{8}sd[0-9A-F]{8}"
                    rb"bc[0-9A-F]{2}sc[0-9A-F]{2}i[0-9A-F]{2}\s*", junk):
        return  # a well-formed modalias: the test above covers it
    assert _identity(files) == (v, d, sv, sd, cls)


# -- the JSON writer --------------------------------------------------------------------
scalars = (st.none() | st.booleans() | st.integers() | st.text()
           | st.floats(allow_nan=True, allow_infinity=True))
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=40)


@settings(max_examples=300)
@given(documents)
def test_dumps_is_json_dumps_indent_2(doc: Any) -> None:
    assert dumps(doc) == json.dumps(doc, indent=2)


@given(st.dictionaries(st.integers() | st.booleans() | st.none()
                       | st.floats(allow_nan=False), scalars, max_size=5))
def test_dumps_converts_keys_as_json_does(doc: dict[Any, Any]) -> None:
    assert dumps(doc) == json.dumps(doc, indent=2)


def test_dumps_refuses_what_json_refuses() -> None:
    for bad in (object(), {"a": {1, 2}}, {(1, 2): 3}):
        with pytest.raises(TypeError):
            json.dumps(bad, indent=2)
        with pytest.raises(TypeError):
            dumps(bad)
    assert dumps([math.inf, -math.inf]) == json.dumps([math.inf, -math.inf], indent=2)


addresses = st.builds(PciAddress, st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFF),
                      st.integers(0, 0x1F), st.integers(0, 7))
opt_int = st.none() | st.integers(0, 2**31)
device_infos = st.builds(
    DeviceInfo, address=addresses, vendor=u16, device=u16,
    class_code=st.integers(0, 0xFFFFFF), driver=st.none() | st.text(),
    iommu_group=opt_int, physfn=st.none() | addresses,
    virtfns=st.lists(addresses, max_size=4).map(tuple),
    sriov_totalvfs=opt_int, sriov_numvfs=opt_int)


@given(st.lists(device_infos, max_size=6))
def test_list_text_is_json_dumps_of_the_records(devices: list[DeviceInfo]) -> None:
    assert list_json_text(devices) == json.dumps([d.to_json() for d in devices], indent=2)


# -- the CLI renders the model ----------------------------------------------------------
def run_cli(*args: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli_main(list(args))
    return code, out.getvalue()


@pytest.mark.parametrize("name", ["q35-sriov", "q35-initial"])
def test_cli_list_json_is_the_documented_document(name: str) -> None:
    root = SNAPSHOTS / name
    code, out = run_cli("--host", f"linux:{root}", "list", "--json")
    assert code == 0
    doc = json.loads(out)
    assert out == json.dumps(doc, indent=2) + "\n"  # the layout json.dumps gives
    oracle = GuestKernel(TreeFs(root))
    assert doc == [{k: raw_record(oracle.function(a))[k] for k in LIST_KEYS}
                   for a in oracle.addresses()]


def test_cli_groups_text_shows_the_drivers_raw_sysfs_shows(tmp_path: Path) -> None:
    host = _sim("sriov-server")
    take_snapshot(host, tmp_path / "snap")
    code, out = run_cli("--host", f"linux:{tmp_path / 'snap'}", "groups")
    assert code == 0
    oracle = GuestKernel(TreeFs(tmp_path / "snap"))
    # one row per member: GROUP VIABLE ASSIGN DEVICE DRIVER NAME ("-": no driver)
    by_group: dict[int, dict[str, str]] = {}
    verdicts: dict[int, str] = {}
    for row in out.splitlines()[1:]:
        if not row[:1].isdigit():
            continue  # the sentences under the table
        number, verdict, _assign, addr, driver = row.split()[:5]
        by_group.setdefault(int(number), {})[addr] = driver
        verdicts[int(number)] = verdict
    assert len(by_group) == len(oracle.groups())
    safe = {None, "vfio-pci", "pci-stub", "pcieport"}
    for number, shown in by_group.items():
        expected = {a: oracle.driver(a) or "-" for a in sorted(oracle.groups()[number])}
        assert shown == expected, number
        assert verdicts[number] == (
            "yes" if all(oracle.driver(a) in safe for a in shown) else "no")
