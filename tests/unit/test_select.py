"""Selection (vfioctl.select): each form of selector, checked against the bundled
simulated hosts' own description files (read here with tomllib, not through vfioctl),
and against a small hand-built sysfs tree for what the bundled hosts do not model
(virtio-net, device-mapper)."""

from __future__ import annotations

import fnmatch
import io
import tomllib
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from vfioctl.address import PciAddress
from vfioctl.cli.main import main
from vfioctl.errors import DeviceNotFound, NotFound, UsageError
from vfioctl.host.linux import LinuxHost
from vfioctl.hosts import open_host
from vfioctl.select import CLASS_NAMES, SelectorNotFound, resolve, resolve_one
from vfioctl.sim.loader import bundled_text

WS = open_host("sim:workstation")
SRV = open_host("sim:sriov-server")


def described(name: str) -> list[dict[str, object]]:
    devices: list[dict[str, object]] = tomllib.loads(bundled_text(name))["device"]
    return devices


WS_DEVICES = described("workstation")
WS_ADDRS = [str(d["addr"]) for d in WS_DEVICES]
WS_IDS = {str(d["addr"]): str(d["id"]) for d in WS_DEVICES}


def strs(addrs: list[PciAddress]) -> list[str]:
    return [str(a) for a in addrs]


# -- addresses ----------------------------------------------------------------------


def spellings(addr: str) -> st.SearchStrategy[str]:
    a = PciAddress.parse(addr)
    forms = [addr, addr.upper(), f"pci_{a.domain:04x}_{a.bus:02x}_{a.slot:02x}_{a.function}",
             f"  {addr}\t"]
    if a.domain == 0:
        forms += [addr[5:], addr[5:].upper()]
    return st.sampled_from(forms)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), addr=st.sampled_from(WS_ADDRS))
def test_every_spelling_of_an_address_selects_that_device(data: st.DataObject,
                                                          addr: str) -> None:
    text = data.draw(spellings(addr))
    assert strs(resolve(WS, [text])) == [addr]
    assert str(resolve_one(WS, text)) == addr


@settings(max_examples=60, deadline=None)
@given(domain=st.integers(0, 0xFFFF), bus=st.integers(0, 0xFF), slot=st.integers(0, 0x1F),
       function=st.integers(0, 7))
def test_an_address_the_host_lacks_is_not_found(domain: int, bus: int, slot: int,
                                                function: int) -> None:
    text = f"{domain:04x}:{bus:02x}:{slot:02x}.{function}"
    if text in WS_ADDRS:
        assert strs(resolve(WS, [text])) == [text]
        return
    with pytest.raises(DeviceNotFound) as err:
        resolve(WS, [text])
    assert err.value.exit_code == 4 and text in str(err.value)


@pytest.mark.parametrize("text,why", [
    ("0000:zz:00.0", "'0000:zz:00.0' is not a PCI address"),
    ("0000:00:20.0", "PCI slot 0x20 is out of range"),
    ("00:1f.8", "'00:1f.8' is not a PCI address"),
])
def test_a_near_miss_address_keeps_the_address_parser_message(text: str, why: str) -> None:
    with pytest.raises(UsageError) as err:
        resolve(WS, [text])
    assert why in str(err.value) and err.value.exit_code == 2


# -- globs --------------------------------------------------------------------------


@st.composite
def address_globs(draw: st.DrawFn) -> str:
    """A glob made from a real address: some characters turned into '?', a tail into '*',
    the domain dropped (domain 0000) or kept."""
    addr = draw(st.sampled_from(WS_ADDRS))
    chars = list(addr)
    for i in draw(st.sets(st.integers(0, len(chars) - 1), max_size=4)):
        if chars[i] not in ":.":
            chars[i] = "?"
    glob = "".join(chars)
    cut = draw(st.integers(5, len(glob)))
    if draw(st.booleans()):
        glob = glob[:cut] + "*"
    if draw(st.booleans()) and glob.startswith("0000:") and glob[5:].count(":") == 1:
        glob = glob[5:]
    if "*" not in glob and "?" not in glob:
        glob += "*"
    # one colon and no dot is the vendor:device form (10de:*), not an address glob
    assume(glob.count(":") == 2 or "." in glob)
    return glob


@settings(max_examples=80, deadline=None)
@given(glob=address_globs())
def test_an_address_glob_selects_what_fnmatch_says(glob: str) -> None:
    # the full address, or (fewer than two colons) the address without domain 0000
    want = [a for a in WS_ADDRS if fnmatch.fnmatchcase(a, glob) or (
        glob.count(":") < 2 and a.startswith("0000:") and fnmatch.fnmatchcase(a[5:], glob))]
    assert want, glob  # built from a real address
    assert strs(resolve(WS, [glob])) == sorted(want)


def test_the_globs_a_user_types() -> None:
    assert strs(resolve(WS, ["0000:01:00.*"])) == ["0000:01:00.0", "0000:01:00.1"]
    assert strs(resolve(WS, ["01:00.*"])) == ["0000:01:00.0", "0000:01:00.1"]
    # a leading '*' spans domain and bus: function 0 of slot 0 on every bus
    assert strs(resolve(WS, ["*:00.0"])) == [
        a for a in WS_ADDRS if a.endswith(":00.0")]
    assert strs(resolve(WS, ["00:1c.[02]"])) == ["0000:00:1c.0", "0000:00:1c.2"]
    with pytest.raises(SelectorNotFound) as err:
        resolve(WS, ["0000:7?:00.*"])
    assert err.value.exit_code == 4 and "'0000:7?:00.*'" in str(err.value)


# -- vendor:device ids ----------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(ident=st.one_of(st.sampled_from(sorted(set(WS_IDS.values()))),
                       st.from_regex(r"\A[0-9a-f]{4}:[0-9a-f]{4}\Z")),
       upper=st.booleans())
def test_an_id_selects_every_function_with_it(ident: str, upper: bool) -> None:
    want = sorted(a for a, i in WS_IDS.items() if i == ident)
    text = ident.upper() if upper else ident
    if not want:
        with pytest.raises(SelectorNotFound) as err:
            resolve(WS, [text])
        assert err.value.exit_code == 4 and f"'{text}'" in str(err.value)
        return
    assert strs(resolve(WS, [text])) == want


@settings(max_examples=60, deadline=None)
@given(ident=st.sampled_from(sorted(set(WS_IDS.values()))), vendor_only=st.booleans())
def test_an_id_glob_matches_like_fnmatch(ident: str, vendor_only: bool) -> None:
    vendor, device = ident.split(":")
    glob = f"{vendor}:*" if vendor_only else f"*:{device}"
    want = sorted(a for a, i in WS_IDS.items() if fnmatch.fnmatchcase(i, glob))
    assert strs(resolve(WS, [glob])) == want


def test_10de_star_is_the_gpu_and_its_audio() -> None:
    assert strs(resolve(WS, ["10de:*"])) == ["0000:01:00.0", "0000:01:00.1"]
    assert strs(resolve(WS, ["10de:2504"])) == ["0000:01:00.0"]


# -- class names ----------------------------------------------------------------------


@pytest.mark.parametrize("name,want", [
    ("gpu", ["0000:00:02.0", "0000:01:00.0"]),
    ("VGA", ["0000:00:02.0", "0000:01:00.0"]),
    ("display", ["0000:00:02.0", "0000:01:00.0"]),
    ("audio", ["0000:00:1f.3", "0000:01:00.1"]),
    ("network", ["0000:04:00.0"]),
    ("nic", ["0000:04:00.0"]),
    ("nvme", ["0000:06:00.0"]),
    ("storage", ["0000:05:00.0", "0000:06:00.0"]),
    ("sata", ["0000:05:00.0"]),
    ("usb", ["0000:00:14.0", "0000:03:00.0"]),
    ("smbus", ["0000:00:1f.4"]),
])
def test_a_class_name_selects_its_class(name: str, want: list[str]) -> None:
    assert strs(resolve(WS, [name])) == want


def test_a_class_the_host_lacks_is_not_found() -> None:
    assert "accelerator" in CLASS_NAMES
    with pytest.raises(NotFound) as err:
        resolve(WS, ["accelerator"])
    assert "'accelerator' (class 12xxxx)" in str(err.value)


def test_the_class_table_is_hex_prefixes() -> None:
    for name, prefixes in CLASS_NAMES.items():
        assert name == name.lower()
        for p in prefixes:
            assert len(p) in (2, 4, 6) and int(p, 16) >= 0, (name, p)


# -- interfaces and block devices -------------------------------------------------------


@pytest.mark.parametrize("host,selector,want", [
    (WS, "enp4s0", "0000:04:00.0"),
    (WS, "sda", "0000:05:00.0"),
    (WS, "/dev/sda", "0000:05:00.0"),
    (WS, "sda2", "0000:05:00.0"),          # a partition: its disk's controller
    (WS, "/dev/nvme0n1p1", "0000:06:00.0"),
    (WS, "nvme0n1", "0000:06:00.0"),
    (SRV, "eno1", "0000:05:00.0"),
    (SRV, "sda", "0000:00:17.0"),
    (SRV, "nvme0n1", "0000:81:00.0"),
])
def test_interfaces_and_disks_select_their_function(host: LinuxHost, selector: str,
                                                    want: str) -> None:
    assert str(resolve_one(host, selector)) == want


def test_a_missing_dev_node_is_not_found() -> None:
    with pytest.raises(SelectorNotFound) as err:
        resolve(WS, ["/dev/sdz"])
    assert err.value.exit_code == 4 and "'/dev/sdz'" in str(err.value)


def _linux_tree(root: Path) -> LinuxHost:
    """A snapshot-like tree: a virtio-net function (its interface below virtio0/) and a
    virtio-blk disk with a device-mapper volume on it."""
    pci = root / "sys/devices/pci0000:00"
    for addr, ident, cls in [("0000:00:03.0", ("0x1af4", "0x1000"), "0x020000"),
                             ("0000:00:04.0", ("0x1af4", "0x1001"), "0x010000")]:
        dev = pci / addr
        dev.mkdir(parents=True)
        (dev / "vendor").write_text(ident[0] + "\n")
        (dev / "device").write_text(ident[1] + "\n")
        (dev / "class").write_text(cls + "\n")
        links = root / "sys/bus/pci/devices"
        links.mkdir(parents=True, exist_ok=True)
        (links / addr).symlink_to(f"../../../devices/pci0000:00/{addr}")
    (pci / "0000:00:03.0/virtio0/net/ens3").mkdir(parents=True)
    (pci / "0000:00:04.0/virtio1/block/vda/vda1").mkdir(parents=True)
    virtual = root / "sys/devices/virtual/block/dm-0/slaves"
    virtual.mkdir(parents=True)
    block = root / "sys/block"
    block.mkdir(parents=True)
    (block / "vda").symlink_to("../devices/pci0000:00/0000:00:04.0/virtio1/block/vda")
    (block / "dm-0").symlink_to("../devices/virtual/block/dm-0")
    (virtual / "vda1").symlink_to("../../../../pci0000:00/0000:00:04.0/virtio1/block/vda/vda1")
    (root / "sys/devices/virtual/block/loop0").mkdir(parents=True)
    (block / "loop0").symlink_to("../devices/virtual/block/loop0")
    (root / "dev/mapper").mkdir(parents=True)
    (root / "dev/mapper/root").symlink_to("../dm-0")
    return LinuxHost(root)


def test_virtio_net_and_device_mapper_on_a_linux_tree(tmp_path: Path) -> None:
    host = _linux_tree(tmp_path)
    assert strs(resolve(host, ["ens3"])) == ["0000:00:03.0"]
    assert strs(resolve(host, ["vda1"])) == ["0000:00:04.0"]
    assert strs(resolve(host, ["/dev/mapper/root"])) == ["0000:00:04.0"]
    assert strs(resolve(host, ["dm-0"])) == ["0000:00:04.0"]
    assert strs(resolve(host, ["1af4:*"])) == ["0000:00:03.0", "0000:00:04.0"]
    assert strs(resolve(host, ["network"])) == ["0000:00:03.0"]
    for loop in ("loop0", "/dev/loop0"):
        with pytest.raises(SelectorNotFound) as err:
            resolve(host, [loop])
        assert str(err.value) == (f"no PCI device matches the block device '{loop}' (it "
                                  "sits on no PCI device) on this host")


# -- several selectors, unknown forms, resolve_one -------------------------------------


def test_selectors_keep_their_order_and_each_device_comes_once() -> None:
    got = strs(resolve(WS, ["01:00.1", "10de:*", "gpu", "enp4s0", "0000:04:00.0"]))
    assert got == ["0000:01:00.1", "0000:01:00.0", "0000:00:02.0", "0000:04:00.0"]


@pytest.mark.parametrize("text", ["eth7", "enp*", "10de:25", "gpus", "", "a b", ".", ".."])
def test_a_word_of_no_known_form_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError) as err:
        resolve(WS, [text])
    assert str(err.value) == (f"'{text}' is not a PCI address, a vendor:device id, a "
                              "class name, an interface or a block device")
    assert err.value.hint is not None and "vfioctl list" in err.value.hint


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=40))
def test_any_text_resolves_to_present_devices_or_fails_with_2_or_4(text: str) -> None:
    try:
        got = resolve(WS, [text])
    except (UsageError, NotFound) as err:
        assert err.exit_code in (2, 4)
        assert "\n" not in (err.hint or "")
        return
    assert got and set(strs(got)) <= set(WS_ADDRS)


def test_resolve_one_names_the_matches_shortened() -> None:
    with pytest.raises(UsageError) as err:
        resolve_one(WS, "gpu")
    assert str(err.value) == "'gpu' names 2 devices: 0000:00:02.0, 0000:01:00.0"
    with pytest.raises(UsageError) as err:
        resolve_one(WS, "*")
    assert str(err.value) == (f"'*' names {len(WS_ADDRS)} devices: "
                              f"{', '.join(WS_ADDRS[:4])} (+{len(WS_ADDRS) - 4} more)")


# -- through the CLI ------------------------------------------------------------------


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def srv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("VFIOCTL_HOST", raising=False)
    path = tmp_path / "srv.toml"
    path.write_text(bundled_text("sriov-server"))
    return f"sim:{path}"


def test_detach_and_reattach_by_selector(srv: str) -> None:
    code, out, err = run("--host", srv, "detach", "nvme")
    assert (code, err) == (0, "")
    assert out == "0000:81:00.0: nvme -> vfio-pci\n"
    code, out, err = run("--host", srv, "reattach", "8086:0a54")
    assert (code, err) == (0, "")
    assert out == "0000:81:00.0: vfio-pci -> nvme\n"


def test_sriov_and_token_take_one_device_by_any_name(srv: str) -> None:
    code, out, _ = run("--host", srv, "sriov", "eno1")
    assert code == 0 and out.startswith("PF 0000:05:00.0: driver igb, 0 of 7 VFs enabled")
    assert run("--host", srv, "sriov", "03:00.0", "--numvfs", "2")[0] == 0
    # the VFs' id selects them (and only them)
    code, out, err = run("--host", srv, "detach", "--dry-run", "8086:154c")
    assert (code, err) == (0, "")
    assert out == ("0000:03:02.0: iavf -> vfio-pci\n"
                   "0000:03:02.1: iavf -> vfio-pci\n")
    code, out, err = run("--host", srv, "token", "show", "03:00.0")
    assert (code, err) == (0, "")
    assert out == "PF 0000:03:00.0: no VF token stored (driver: i40e)\n"
    code, out, err = run("--host", srv, "token", "forget", "pci_0000_03_00_0")
    assert (code, out, err) == (0, "PF 0000:03:00.0: no VF token stored\n", "")


@pytest.mark.parametrize("args,code,line", [
    (["detach", "eth7"], 2, "vfioctl: error: 'eth7' is not a PCI address, a vendor:device "
     "id, a class name, an interface or a block device; name devices as 0000:01:00.0, "
     "01:00.*, 10de:2504, gpu, enp4s0 or sda (see 'vfioctl list')"),
    (["reattach", "0000:zz:00.0"], 2, "vfioctl: error: '0000:zz:00.0' is not a PCI "
     "address; write it as DDDD:BB:SS.F, e.g. 0000:01:00.0 (see 'vfioctl list')"),
    (["sriov", "i40e-ports"], 2, None),
    (["sriov", "8086:1572"], 2, "vfioctl: error: '8086:1572' names 4 devices: "
     "0000:03:00.0, 0000:03:00.1, 0000:04:00.0, 0000:04:00.1; name one of them (by "
     "address, e.g. '0000:03:00.0')"),
    (["token", "check", "9999:*"], 4, "vfioctl: error: no PCI device matches the id "
     "'9999:*' on this host; 'vfioctl list' shows each device's vendor:device id"),
])
def test_bad_selectors_are_one_line(srv: str, args: list[str], code: int,
                                    line: str | None) -> None:
    got, out, err = run("--host", srv, *args)
    assert (got, out) == (code, "")
    assert err.count("\n") == 1 and err.startswith("vfioctl: error: ")
    if line is not None:
        assert err == line + "\n"
