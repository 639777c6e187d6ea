"""Capability layouts (``model``, ``caps``), ``config_size``, the header multifunction bit
and reset methods derived the kernel's way from the hardware a host file describes."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest
from simtest import DEV

from vfioctl.errors import ConfigError
from vfioctl.inventory import show_record
from vfioctl.pci.config import parse_config
from vfioctl.sim.caps import MODELS, check_layout
from vfioctl.sim.host import SimHost

HEAD = """
[host]
iommu = "intel"
[[driver]]
name = "pcieport"
module = ""
classes = ["060400/ffff00"]
[[driver]]
name = "nvme"
classes = ["010802"]
sriov = true
[[device]]
addr = "0000:00:00.0"
kind = "host-bridge"
id = "8086:29c0"
"""


def host(devices: str) -> SimHost:
    return SimHost.from_text(HEAD + devices)


def chain(h: SimHost, addr: str) -> list[tuple[str, int]]:
    cfg = parse_config(h.read_bytes(DEV / addr / "config"))
    return [(c.name, c.offset) for c in cfg.capabilities]


def reset(h: SimHost, addr: str) -> str | None:
    path = DEV / addr / "reset_method"
    return h.read_text(path).strip() if h.exists(path) else None


PORT_AND_NVME = """
[[device]]
addr = "0000:00:01.0"
kind = "root-port"
id = "8086:1901"
[[device]]
addr = "0000:01:00.0"
parent = "0000:00:01.0"
id = "1b36:0010"
class = "010802"
"""


# -- layouts -------------------------------------------------------------------------------------
def test_explicit_caps_give_the_chain_in_the_order_written() -> None:
    h = host(PORT_AND_NVME + """
caps = [{id = "msix", at = 0x40, vectors = 8}, {id = "express", at = 0x80},
        {id = "pm", at = 0x60}, {id = "aer", at = 0x100}, {id = "dsn", at = 0x140}]
flr = true
""")
    assert chain(h, "0000:01:00.0") == [
        ("MSI-X", 0x40), ("PCI Express", 0x80), ("Power Management", 0x60),
        ("Advanced Error Reporting", 0x100), ("Device Serial Number", 0x140)]
    cfg = h.read_bytes(DEV / "0000:01:00.0/config")
    assert int.from_bytes(cfg[0x42:0x44], "little") & 0x7FF == 7        # 8 vectors
    assert int.from_bytes(cfg[0x64:0x66], "little") & 0x8               # No_Soft_Reset
    assert reset(h, "0000:01:00.0") == "flr bus"                       # PM cap, no "pm"


def test_facts_missing_from_a_layout_are_appended() -> None:
    h = host(PORT_AND_NVME + """
caps = [{id = "express", at = 0x40}, {id = "aer", at = 0x100}]
ari = true
sriov = { total_vfs = 2, offset = 1, stride = 1, vf_id = "1b36:0010" }
""")
    assert chain(h, "0000:01:00.0") == [
        ("PCI Express", 0x40), ("Advanced Error Reporting", 0x100),
        ("Alternative Routing-ID Interpretation", 0x140),
        ("Single Root I/O Virtualization", 0x160)]


def test_a_model_capability_the_device_lacks_is_dropped_and_the_chain_kept_at_0x100(
        ) -> None:
    h = host(PORT_AND_NVME + 'model = "qemu-nvme"\nari = false\nflr = false\n'
             'sriov = { total_vfs = 2, offset = 1, stride = 1, vf_id = "1b36:0010" }\n')
    assert chain(h, "0000:01:00.0")[-1] == ("Single Root I/O Virtualization", 0x100)
    assert reset(h, "0000:01:00.0") == "bus"


def test_default_layout_is_packed_from_the_facts() -> None:
    h = host(PORT_AND_NVME.replace('kind = "root-port"', 'kind = "root-port"\n'
                                   'subsystem = "8086:7270"\nacs = true'))
    assert chain(h, "0000:00:01.0") == [("PCI Express", 0x40), ("Subsystem Vendor ID", 0x7C),
                                        ("Access Control Services", 0x100)]


@pytest.mark.parametrize("caps, message", [
    ('[{id = "msi", at = 0x40}, {id = "msix", at = 0x44}]', "overlaps msi"),
    ('[{id = "msix", at = 0x42}]', "dword aligned"),
    ('[{id = "express", at = 0xe0}]', "fit in"),
    ('[{id = "acs", at = 0x40}]', "fit in"),
    ('[{id = "warp", at = 0x40}]', "id 'warp' unknown"),
    ('[{id = "pm", at = 0x40, vectors = 2}]', "does not take vectors"),
    ('[{id = "pm"}]', "needs at"),
    ('[{id = "pm", at = 0x40}, {id = "pm", at = 0x48}]', "pm given twice"),
    ('[{id = "aer", at = 0x140}]', "must be at 0x100"),
    ('[{id = "acs", at = 0x100}]', "lists acs but the device has no acs"),
])
def test_bad_caps_name_the_device(caps: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        host(PORT_AND_NVME + f"caps = {caps}\n")
    assert "0000:01:00.0" in str(err.value)


def test_unknown_model_and_wrong_kind_are_refused() -> None:
    with pytest.raises(ConfigError, match="model 'qemu-warp' unknown"):
        host(PORT_AND_NVME + 'model = "qemu-warp"\n')
    with pytest.raises(ConfigError, match="qemu-pcie-root-port is a root-port"):
        host(PORT_AND_NVME + 'model = "qemu-pcie-root-port"\nkind = "endpoint"\n')


def test_model_gives_kind_flr_and_the_layout_of_its_pcie_or_pci_variant() -> None:
    h = host("""
[[device]]
addr = "0000:00:01.0"
model = "qemu-pcie-root-port"
id = "1b36:000c"
acs = true
[[device]]
addr = "0000:01:00.0"
parent = "0000:00:01.0"
model = "qemu-virtio"
id = "1af4:1044"
class = "00ff00"
[[device]]
addr = "0000:00:02.0"
model = "qemu-virtio"
id = "1af4:1005"
class = "00ff00"
pcie = false
""")
    assert chain(h, "0000:00:01.0")[0] == ("PCI Express", 0x54)
    assert chain(h, "0000:00:01.0")[-1] == ("Access Control Services", 0x148)
    assert chain(h, "0000:01:00.0")[-2:] == [("Power Management", 0x7C),
                                             ("PCI Express", 0x40)]
    assert reset(h, "0000:01:00.0") == "flr pm bus"
    assert chain(h, "0000:00:02.0")[0] == ("MSI-X", 0x98)
    assert len(chain(h, "0000:00:02.0")) == 6
    assert reset(h, "0000:00:02.0") is None          # root bus, no PM cap on this variant


def test_every_model_layout_is_valid() -> None:
    for model in MODELS.values():
        for layout in (model.layout, model.conventional, model.vf_layout):
            if layout is not None:
                check_layout(layout, root_port=model.kind == "root-port")


# -- VFs -------------------------------------------------------------------------------------------
def test_vfs_take_the_models_vf_layout() -> None:
    h = SimHost.bundled("q35-vmtest", writable=True)
    h.write(DEV / "0000:01:00.0/sriov_numvfs", "1")
    assert chain(h, "0000:01:00.1") == [
        ("MSI-X", 0x40), ("PCI Express", 0x80), ("Power Management", 0x60),
        ("Alternative Routing-ID Interpretation", 0x100)]
    doc = show_record(h, "0000:01:00.1")
    assert (doc["flr"], doc["ari_next_function"], doc["reset_method"]) == (True, 0, ["flr"])


def test_vfs_of_a_default_layout_pf_have_ari_like_the_pf() -> None:
    h = SimHost.bundled("sriov-server", writable=True)
    h.write(DEV / "0000:03:00.1/sriov_numvfs", "1")
    name = h.readlink(DEV / "0000:03:00.1/virtfn0").rsplit("/", 1)[1]
    assert chain(h, name) == [("PCI Express", 0x40),
                              ("Alternative Routing-ID Interpretation", 0x100)]
    assert reset(h, name) == "flr"


# -- config size, header bit -----------------------------------------------------------------------
def test_config_size() -> None:
    h = host(PORT_AND_NVME)
    assert len(h.read_bytes(DEV / "0000:00:00.0/config")) == 4096    # host bridge default
    q35 = SimHost.bundled("q35-vmtest")
    assert len(q35.read_bytes(DEV / "0000:00:00.0/config")) == 256   # model q35-mch
    with pytest.raises(ConfigError, match="need config_size = 4096"):
        host(PORT_AND_NVME.replace('kind = "root-port"', 'kind = "root-port"\nacs = true\n'
                                   'config_size = 256'))
    with pytest.raises(ConfigError, match="256 or 4096"):
        host(PORT_AND_NVME + "config_size = 512\n")


def test_header_multifunction_bit_is_per_function_but_the_kernel_flag_is_not() -> None:
    """QEMU sets the bit only where multifunction=on is given; pci_scan_slot() marks every
    function > 0 multifunction anyway, so groups do not change."""
    q35 = SimHost.bundled("q35-vmtest")
    assert show_record(q35, "0000:00:11.0")["multifunction"] is True
    assert show_record(q35, "0000:00:11.1")["multifunction"] is False
    assert q35.kernel.devices["0000:00:11.1"].multifunction
    assert q35.kernel.group_of("0000:00:11.0") == q35.kernel.group_of("0000:00:11.1")


# -- reset methods ---------------------------------------------------------------------------------
def test_bus_reset_goes_to_the_first_function_added_to_a_bus() -> None:
    """pci_parent_bus_reset() probes in pci_device_add(), before the device joins its bus
    list and before a bridge has a subordinate bus."""
    h = host("""
[[device]]
addr = "0000:00:01.0"
kind = "root-port"
id = "8086:1901"
[[device]]
addr = "0000:01:00.0"
parent = "0000:00:01.0"
kind = "upstream-port"
id = "104c:8232"
flr = true
[[device]]
addr = "0000:02:00.0"
parent = "0000:01:00.0"
kind = "downstream-port"
id = "104c:8233"
[[device]]
addr = "0000:02:01.0"
parent = "0000:01:00.0"
kind = "downstream-port"
id = "104c:8233"
flr = true
[[device]]
addr = "0000:03:00.0"
parent = "0000:02:00.0"
id = "10de:2504"
class = "030000"
pm_reset = true
[[device]]
addr = "0000:03:00.1"
parent = "0000:02:00.0"
id = "10de:228e"
class = "040300"
flr = true
""")
    assert [reset(h, a) for a in ("0000:00:00.0", "0000:00:01.0", "0000:01:00.0",
                                  "0000:02:00.0", "0000:02:01.0", "0000:03:00.0",
                                  "0000:03:00.1")] == [
        None, None, "flr bus", "bus", "flr", "pm bus", "flr"]


def test_reset_method_files_of_the_q35_guest() -> None:
    q35 = SimHost.bundled("q35-vmtest")
    got = {d: reset(q35, d) for d in q35.listdir(PurePosixPath(DEV))}
    assert {d: r for d, r in got.items() if r} == {
        "0000:00:10.0": "pm", "0000:01:00.0": "flr bus", "0000:02:00.0": "pm bus",
        "0000:03:00.0": "pm bus", "0000:04:01.0": "bus", "0000:05:00.0": "flr bus",
        "0000:06:00.0": "flr bus", "0000:06:01.0": "flr", "0000:07:00.0": "flr pm bus",
        "0000:08:00.0": "pm bus", "0000:09:00.0": "flr pm bus"}
