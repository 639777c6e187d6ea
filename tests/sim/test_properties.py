"""Property tests over random topologies: group partition, ACS-less paths never split,
link symmetry, config-space decode, bind/unbind and SR-IOV round trips.

The expected grouping facts are derived here from the *hardware description* with the
PCIe rules stated plainly (a PCIe-to-PCI bridge hides everything behind it; a root or
downstream port without ACS, or any port above it without, cannot isolate; functions of
a multifunction device without ACS are not isolated from each other), and checked on what
the simulator presents in sysfs, read through the Host seam, not on its group table.
"""

from __future__ import annotations

import posixpath
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from simtest import DEV, DRV

from vfioctl.pci.config import parse_config
from vfioctl.sim.host import SimHost
from vfioctl.sim.loader import kernel_from_spec
from vfioctl.sim.model import parse_host

GROUPS = DEV.parent.parent.parent / "kernel/iommu_groups"
SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
DRIVERS = [
    {"name": "pcieport", "module": "", "classes": ["060400/ffff00"]},
    {"name": "e1000e", "ids": ["8086:10d3"], "sriov": True},
    {"name": "igbvf", "ids": ["8086:10ca"]},
    {"name": "vfio-pci", "loaded": True, "sriov": True},
]


def _ep(addr: str, parent: str | None, acs: bool = False, **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"addr": addr, "id": "8086:10d3", "class": "020000", **extra}
    if parent:
        d["parent"] = parent
    if acs:
        d["acs"] = True
    return d


@st.composite
def topologies(draw: st.DrawFn) -> dict[str, Any]:
    devices: list[dict[str, Any]] = [{"addr": "0000:00:00.0", "kind": "host-bridge",
                                      "id": "8086:29c0"}]
    next_bus = [1]

    def bus() -> int:
        next_bus[0] += 1
        return next_bus[0] - 1

    def functions(b: int, slot: int, parent: str | None, pcie: bool = True,
                  **extra: Any) -> None:
        n = draw(st.integers(1, 3))
        acs = pcie and draw(st.booleans())
        for f in range(n):
            devices.append(_ep(f"0000:{b:02x}:{slot:02x}.{f}", parent, acs and n > 1,
                               **extra))

    slot = 1
    for _ in range(draw(st.integers(0, 2))):
        functions(0, slot, None)
        slot += 1
    for _ in range(draw(st.integers(1, 4))):
        rp = f"0000:00:{slot:02x}.0"
        slot += 1
        devices.append({"addr": rp, "kind": "root-port", "id": "1b36:000c",
                        "acs": draw(st.booleans())})
        below = draw(st.sampled_from(["endpoint", "switch", "bridge", "sriov"]))
        b = bus()
        if below == "endpoint":
            functions(b, 0, rp)
        elif below == "sriov":
            devices.append(_ep(f"0000:{b:02x}:00.0", rp, flr=True, sriov={
                "total_vfs": 4, "offset": 1, "stride": 1, "vf_id": "8086:10ca"}))
        elif below == "switch":
            up = f"0000:{b:02x}:00.0"
            devices.append({"addr": up, "parent": rp, "kind": "upstream-port",
                            "id": "104c:8232"})
            b2 = bus()
            for i in range(draw(st.integers(1, 3))):
                dn = f"0000:{b2:02x}:{i:02x}.0"
                devices.append({"addr": dn, "parent": up, "kind": "downstream-port",
                                "id": "104c:8233", "acs": draw(st.booleans())})
                functions(bus(), 0, dn)
        else:
            br = f"0000:{b:02x}:00.0"
            devices.append({"addr": br, "parent": rp, "kind": "pcie-pci-bridge",
                            "id": "1b36:000e"})
            b2 = bus()
            for s in range(1, draw(st.integers(2, 4))):
                functions(b2, s, br, pcie=False)
    return {"host": {"iommu": "intel"}, "driver": DRIVERS, "device": devices}


def host_of(doc: dict[str, Any]) -> SimHost:
    return SimHost(kernel_from_spec(parse_host(doc, "prop")), name="sim:prop",
                   hardware_text="")


def sysfs_groups(host: SimHost) -> dict[str, str]:
    """device -> group, read from iommu_groups/N/devices (checked against the links)."""
    out: dict[str, str] = {}
    for g in host.listdir(GROUPS):
        for name in host.listdir(GROUPS / g / "devices"):
            assert name not in out, f"{name} is in two groups"
            out[name] = g
            assert posixpath.basename(host.readlink(DEV / name / "iommu_group")) == g
            assert host.exists(GROUPS / g / "devices" / name / "config")
    return out


def isolated(dev: dict[str, Any], by_addr: dict[str, dict[str, Any]]) -> bool:
    """Whether every bridge from ``dev`` up to the root bus isolates (pci_acs_path)."""
    cur: dict[str, Any] | None = dev
    while cur is not None:
        kind = cur.get("kind", "endpoint")
        if kind == "pcie-pci-bridge":
            return False
        if kind in ("root-port", "downstream-port") and not cur.get("acs"):
            return False
        cur = by_addr.get(cur.get("parent", ""))
    return True


@SETTINGS
@given(topologies())
def test_every_device_in_exactly_one_group(doc: dict[str, Any]) -> None:
    host = host_of(doc)
    groups = sysfs_groups(host)
    assert sorted(groups) == sorted(host.listdir(DEV))


@SETTINGS
@given(topologies())
def test_groups_never_split_an_acs_less_path(doc: dict[str, Any]) -> None:
    host = host_of(doc)
    groups = sysfs_groups(host)
    by_addr = {d["addr"]: d for d in doc["device"]}
    for d in doc["device"]:
        parent = by_addr.get(d.get("parent", ""))
        if parent is not None and not isolated(parent, by_addr):
            assert groups[d["addr"]] == groups[parent["addr"]], d["addr"]
        slot = d["addr"][:-2]
        siblings = [s for s in doc["device"] if s["addr"][:-2] == slot]
        if len(siblings) > 1 and not d.get("acs"):
            for s in siblings:
                if not s.get("acs"):
                    assert groups[s["addr"]] == groups[d["addr"]]
        if d.get("kind", "endpoint") == "endpoint" and parent is not None and \
                isolated(parent, by_addr):
            # isolation is real: nothing outside the device's own slot joins it
            members = {n for n, g in groups.items() if g == groups[d["addr"]]}
            assert members <= {s["addr"] for s in siblings}


@SETTINGS
@given(topologies())
def test_links_are_symmetric_and_config_decodes(doc: dict[str, Any]) -> None:
    host = host_of(doc)
    for name in host.listdir(DEV):
        path = DEV / name
        if host.is_link(path / "driver"):
            drv = posixpath.basename(host.readlink(path / "driver"))
            assert host.exists(DRV / drv / name / "vendor")
        cfg = parse_config(host.read_bytes(path / "config"))
        spec = next(d for d in doc["device"] if d["addr"] == name)
        kind = spec.get("kind", "endpoint")
        expected_type = {"root-port": "root_port", "downstream-port": "downstream_port",
                         "upstream-port": "upstream_port",
                         "pcie-pci-bridge": "pcie_to_pci_bridge"}.get(kind)
        if expected_type:
            assert cfg.pcie_port_type == expected_type
        assert (cfg.acs is not None) == bool(spec.get("acs"))
        if cfg.acs is not None:
            assert {"SV", "RR", "CR", "UF"} <= cfg.acs.control
        assert (cfg.sriov is not None) == ("sriov" in spec)
    for drv in host.listdir(DRV):
        for entry in host.listdir(DRV / drv):
            if ":" in entry:
                assert posixpath.basename(host.readlink(DEV / entry / "driver")) == drv


@SETTINGS
@given(topologies(), st.data())
def test_unbind_then_probe_restores_the_device(doc: dict[str, Any], data: st.DataObject
                                               ) -> None:
    host = host_of(doc)
    bound = sorted(n for n in host.listdir(DEV) if host.is_link(DEV / n / "driver"))
    name = data.draw(st.sampled_from(bound))
    before = (host.readlink(DEV / name / "driver"), sorted(host.listdir(DEV / name)),
              host.read_bytes(DEV / name / "config"))
    host.write(DEV / name / "driver/unbind", name)
    assert not host.exists(DEV / name / "driver")
    host.write(DEV.parent / "drivers_probe", name)
    after = (host.readlink(DEV / name / "driver"), sorted(host.listdir(DEV / name)),
             host.read_bytes(DEV / name / "config"))
    assert after == before


@SETTINGS
@given(topologies(), st.integers(1, 4))
def test_sriov_links_and_groups(doc: dict[str, Any], num: int) -> None:
    host = host_of(doc)
    pfs = [n for n in host.listdir(DEV) if host.exists(DEV / n / "sriov_totalvfs")]
    for pf in pfs:
        before = sorted(host.listdir(DEV))
        host.write(DEV / pf / "sriov_numvfs", str(num))
        vfs = [posixpath.basename(host.readlink(DEV / pf / f"virtfn{i}")) for i in range(num)]
        for vf in vfs:
            assert posixpath.basename(host.readlink(DEV / vf / "physfn")) == pf
            assert host.read_text(DEV / vf / "device") == "0x10ca\n"
        groups = sysfs_groups(host)
        by_addr = {d["addr"]: d for d in doc["device"]}
        parent = by_addr[by_addr[pf]["parent"]]
        if isolated(parent, by_addr):
            assert len({groups[v] for v in vfs} | {groups[pf]}) == num + 1
        host.write(DEV / pf / "sriov_numvfs", "0")
        assert sorted(host.listdir(DEV)) == before
        assert sorted(sysfs_groups(host)) == before
