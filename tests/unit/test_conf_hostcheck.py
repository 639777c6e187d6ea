"""Host-aware check of <vf-token> (vfioctl.hostcheck) on linux:DIR trees built here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vfioctl.cli.main import main
from vfioctl.conf import parse_string
from vfioctl.errors import ConfigError, DeviceNotFound
from vfioctl.host.linux import LinuxHost
from vfioctl.hostcheck import check_domain

PF, VF, PLAIN = "0000:06:00.0", "0000:06:10.0", "0000:07:00.0"
TOKEN = "00112233-4455-6677-8899-aabbccddeeff"


def make_tree(root: Path, pf_driver: str) -> Path:
    devices = root / "sys/bus/pci/devices"
    drivers = root / "sys/bus/pci/drivers"
    for name in (PF, VF, PLAIN):
        (devices / name).mkdir(parents=True)
    for drv in ("vfio-pci", "ixgbe"):
        (drivers / drv).mkdir(parents=True, exist_ok=True)
    (devices / PF / "sriov_totalvfs").write_text("8\n")
    os.symlink(f"../../../bus/pci/drivers/{pf_driver}", devices / PF / "driver")
    os.symlink(f"../{PF}", devices / VF / "physfn")
    os.symlink("../../../bus/pci/drivers/vfio-pci", devices / VF / "driver")
    (root / "sys/kernel/iommu_groups").mkdir(parents=True)
    return root


def domain_xml(addr: str, *, managed_pf: bool = False) -> str:
    dom, rest = addr.split(":", 1)
    bus, slotfn = rest.split(":")
    slot, fn = slotfn.split(".")
    pf = ""
    if managed_pf:
        pf = ("<hostdev mode='subsystem' type='pci' managed='yes'><source>"
              "<address domain='0x0000' bus='0x06' slot='0x00' function='0x0'/></source>"
              "</hostdev>")
    return f"""<domain type='kvm'><name>t</name><devices>{pf}
<hostdev mode='subsystem' type='pci' managed='no'><source>
<address domain='0x{dom}' bus='0x{bus}' slot='0x{slot}' function='0x{fn}'>
<vf-token uuid='{TOKEN}'/></address></source></hostdev></devices></domain>"""


def check(root: Path, addr: str, **kw: bool) -> None:
    doc = parse_string(domain_xml(addr, **kw), filename="t.xml")
    check_domain(LinuxHost(root, readonly=True), doc.domain)


def test_vf_of_vfio_pf_and_sriov_pf_are_fine(tmp_path: Path) -> None:
    root = make_tree(tmp_path, "vfio-pci")
    check(root, VF)
    check(root, PF)


def test_vf_of_kernel_driver_pf_is_refused(tmp_path: Path) -> None:
    root = make_tree(tmp_path, "ixgbe")
    with pytest.raises(ConfigError, match=r"t.xml:2: vf-token on VF 0000:06:10.0, whose PF "
                       r"0000:06:00.0 is bound to ixgbe instead of vfio-pci") as info:
        check(root, VF)
    assert TOKEN not in str(info.value)


def test_vf_of_managed_pf_in_the_same_domain_is_fine(tmp_path: Path) -> None:
    check(make_tree(tmp_path, "ixgbe"), VF, managed_pf=True)


def test_token_on_plain_device_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="neither an SR-IOV PF nor a VF"):
        check(make_tree(tmp_path, "vfio-pci"), PLAIN)


def test_token_on_missing_device(tmp_path: Path) -> None:
    with pytest.raises(DeviceNotFound):
        check(make_tree(tmp_path, "vfio-pci"), "0000:09:00.0")


def test_validate_cli_with_host(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_tree(tmp_path / "host", "ixgbe")
    xml = tmp_path / "d.xml"
    xml.write_text(domain_xml(VF))
    assert main(["validate", str(xml)]) == 0          # no --host: no host check
    assert main(["--host", f"linux:{root}", "validate", str(xml)]) == 3
    err = capsys.readouterr().err
    assert "bound to ixgbe" in err and TOKEN not in err
