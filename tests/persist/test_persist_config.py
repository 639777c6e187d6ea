"""The persisted configuration's parser: round trip (hypothesis), and every kind of bad
input is one ConfigError naming the file, the entry and the key."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vfioctl.address import PciAddress
from vfioctl.errors import ConfigError
from vfioctl.persist.config import Config, Entry, Member, parse, render

hexid = st.from_regex(r"[0-9a-f]{4}:[0-9a-f]{4}", fullmatch=True)
addresses = st.builds(PciAddress, st.integers(0, 0xFFFF), st.integers(0, 0xFF),
                      st.integers(0, 0x1F), st.integers(0, 7))
members = st.builds(Member, addresses, hexid, hexid)


@st.composite
def entries(draw: st.DrawFn) -> Entry:
    me = draw(members)
    others = draw(st.lists(members, max_size=4, unique_by=lambda m: m.address))
    group = tuple(sorted({m.address: m for m in [*others, me]}.values()))
    driver = draw(st.sampled_from(["vfio-pci", "pci-stub"]))
    sriov = driver == "vfio-pci"
    return Entry(me.address, me.id, me.subsystem, driver,
                 draw(st.none() | st.integers(0, 2**31 - 1)), group,
                 draw(st.none() | st.integers(1, 65535)) if sriov else None,
                 draw(st.booleans()) if sriov else False,
                 draw(st.text(max_size=30)))


configs = st.lists(entries(), max_size=5, unique_by=lambda e: e.address).map(
    lambda es: Config(tuple(sorted(es, key=lambda e: e.address))))


@settings(max_examples=80, deadline=None)
@given(configs)
def test_round_trip(config: Config) -> None:
    assert parse(render(config), "persist.toml") == config


@settings(max_examples=120, deadline=None)
@given(configs, st.data())
def test_damaged_files_parse_or_fail_with_one_config_error(config: Config,
                                                           data: st.DataObject) -> None:
    text = render(config)
    if not text:
        return
    i = data.draw(st.integers(0, len(text) - 1))
    j = data.draw(st.integers(i, min(len(text), i + 8)))
    damaged = text[:i] + data.draw(st.text(max_size=6)) + text[j:]
    try:
        parse(damaged, "persist.toml")
    except ConfigError as err:
        assert "\n" not in str(err).strip("\n") or "TOML" in str(err)
        assert str(err).startswith("persisted configuration persist.toml")


GOOD = '''version = 1
[[device]]
address = "0000:02:00.0"
id = "8086:10d3"
subsystem = "8086:0000"
driver = "vfio-pci"
members = [{ address = "0000:02:00.0", id = "8086:10d3", subsystem = "8086:0000" }]
'''
WHERE = "persisted configuration f: device #1 (0000:02:00.0)"


@pytest.mark.parametrize(("old", "new", "message"), [
    ("version = 1", "version = 2",
     "persisted configuration f: version must be 1, got int 2"),
    ("version = 1", "", "persisted configuration f: version must be 1, got nothing"),
    ('driver = "vfio-pci"', 'driver = "nouveau"',
     f"{WHERE}: driver must be one of vfio-pci, pci-stub, got 'nouveau'"),
    ('id = "8086:10d3"\n', 'id = "8086:10D3"\n',
     f"{WHERE}: id must be 'vvvv:dddd' (4 lower-case hex digits each), got '8086:10D3'"),
    ('address = "0000:02:00.0"\nid', 'address = "02:00.0"\nid',
     "persisted configuration f: device #1: address '02:00.0' must be written in full, "
     "lower case (0000:02:00.0)"),
    ('address = "0000:02:00.0"\nid', 'address = "nope"\nid',
     "persisted configuration f: device #1: address 'nope' is not a PCI address "
     "(DDDD:BB:SS.F)"),
    ('driver = "vfio-pci"', 'driver = "vfio-pci"\ncolour = "red"',
     f"{WHERE}: unknown key 'colour'"),
    ('driver = "vfio-pci"', 'driver = "vfio-pci"\nnumvfs = 0',
     f"{WHERE}: numvfs must be an integer 1..65535, got int 0"),
    ('driver = "vfio-pci"', 'driver = "vfio-pci"\nnumvfs = true',
     f"{WHERE}: numvfs must be an integer 1..65535, got bool True"),
    ('driver = "vfio-pci"', 'driver = "pci-stub"\ntoken = true',
     f"{WHERE}: numvfs and token need driver vfio-pci (a PF driven from userspace)"),
    ('driver = "vfio-pci"', 'driver = "vfio-pci"\niommu_group = -1',
     f"{WHERE}: iommu_group must be a group number (0 or more), got int -1"),
    ('members = [{ address = "0000:02:00.0", id = "8086:10d3", subsystem = "8086:0000" }]',
     "members = []",
     f"{WHERE}: members must list the IOMMU group's functions (addresses and ids), the "
     "device itself included"),
    ('{ address = "0000:02:00.0", id = "8086:10d3"', '{ address = "0000:02:00.1", id = '
     '"8086:10d3"',
     f"{WHERE}: members must include the device itself with the same id and subsystem"),
])
def test_bad_input_is_one_clear_error(old: str, new: str, message: str) -> None:
    assert old in GOOD
    with pytest.raises(ConfigError) as info:
        parse(GOOD.replace(old, new, 1), "f")
    assert str(info.value) == message
    assert info.value.hint


def test_twice_the_same_address() -> None:
    body = GOOD.split("\n", 1)[1]
    with pytest.raises(ConfigError, match=r"device #2: address 0000:02:00.0 is persisted "
                                          r"twice"):
        parse(GOOD + body, "f")


def test_device_not_an_array() -> None:
    with pytest.raises(ConfigError, match=r"^persisted configuration f: 'device' must be "
                                          r"an array of tables \(\[\[device\]\]\)$"):
        parse("version = 1\ndevice = 3\n", "f")


def test_not_toml() -> None:
    with pytest.raises(ConfigError, match=r"^persisted configuration f is not valid TOML"):
        parse("version = = 1", "f")


def test_good_parses() -> None:
    [entry] = parse(GOOD, "f").entries
    assert (entry.address, entry.id, entry.driver, entry.numvfs, entry.token) == (
        PciAddress.parse("0000:02:00.0"), "8086:10d3", "vfio-pci", None, False)
