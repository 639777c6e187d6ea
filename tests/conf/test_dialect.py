"""``--libvirt 9.0|11.3``: where the two measured libvirt releases read a hostdev apart.

Each difference was measured with the real releases (``virsh -c test:///default define
--validate`` of both, ``domxml-to-native`` of 11.3; tests/data/xml2argv/define-*.txt
and *.libvirt-11.3); these tests hold vfioctl to it through the library and the CLI,
for both releases, and check that nothing else moves: the arguments of a document both
releases accept are the same, and so is every other golden case (test_xml2argv).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vfioctl.cli.main import main
from vfioctl.conf import (
    DEFAULT_LIBVIRT,
    LIBVIRT_DIALECTS,
    libvirt_dialect,
    load_domain,
    parse_string,
)
from vfioctl.conf.format import format_document
from vfioctl.errors import UnsupportedConfig, XmlError

CASES = Path(__file__).parent.parent / "data" / "xml2argv"
BASE = (CASES / "hostdev-vfio.xml").read_text()
PLAIN_DRIVER = "<driver name='vfio'/>"


def variant(old: str, new: str) -> str:
    assert old in BASE
    return BASE.replace(old, new)


def verdict(xml: str, release: str) -> str:
    """'ok', or the error class: what vfioctl makes of the document by that release."""
    try:
        parse_string(xml, filename="v.xml", libvirt=release)
    except (XmlError, UnsupportedConfig) as err:
        return type(err).__name__
    return "ok"


# (document, what 9.0 makes of it, what 11.3 makes of it), each measured: 9.0's schema
# refuses all of these; 11.3's accepts them all but the malformed values and the second
# <pstore> (an element 9.0 does not know).
DIFFERENCES = {
    "driver-no-name": (variant(PLAIN_DRIVER, "<driver/>"), "XmlError", "ok"),
    "driver-model-vfio-pci": (variant(PLAIN_DRIVER, "<driver name='vfio' model='vfio-pci'/>"),
                              "XmlError", "ok"),
    "driver-model-only": (variant(PLAIN_DRIVER, "<driver model='vfio-pci'/>"), "XmlError", "ok"),
    "driver-model-variant": (variant(PLAIN_DRIVER,
                                     "<driver name='vfio' model='mlx5_vfio_pci'/>"),
                             "XmlError", "UnsupportedConfig"),
    "driver-model-malformed": (variant(PLAIN_DRIVER, "<driver name='vfio' model='a b'/>"),
                               "XmlError", "XmlError"),
    "display": (variant("managed='yes'>", "managed='yes' display='on'>"),
                "XmlError", "UnsupportedConfig"),
    "display-off": (variant("managed='yes'>", "managed='yes' display='off'>"),
                    "XmlError", "UnsupportedConfig"),
    "display-bad-value": (variant("managed='yes'>", "managed='yes' display='yes'>"),
                          "XmlError", "XmlError"),
    "two-watchdogs": (variant("  </devices>", "    <watchdog model='i6300esb'/>\n"
                              "    <watchdog model='ib700'/>\n  </devices>"), "XmlError", "ok"),
    "two-pstores": (variant("  </devices>", "    <pstore backend='acpi-erst'/>\n" * 2
                            + "  </devices>"), "XmlError", "XmlError"),
}


@pytest.mark.parametrize("name", DIFFERENCES)
def test_each_release_reads_it_as_measured(name: str) -> None:
    xml, v90, v113 = DIFFERENCES[name]
    assert verdict(xml, "9.0") == v90
    assert verdict(xml, "11.3") == v113


def test_default_is_the_newest_release() -> None:
    newest = max(LIBVIRT_DIALECTS, key=lambda v: tuple(int(n) for n in v.split(".")))
    assert DEFAULT_LIBVIRT.version == newest == "11.3"
    assert libvirt_dialect(None) is DEFAULT_LIBVIRT
    xml = DIFFERENCES["driver-no-name"][0]
    assert verdict(xml, DEFAULT_LIBVIRT.version) == "ok"
    parse_string(xml, filename="v.xml")  # no release named: the default's rules


def test_unknown_release_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown libvirt release '10\.0'"):
        libvirt_dialect("10.0")


def test_model_vfio_pci_is_kept_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "m.xml"
    path.write_text(DIFFERENCES["driver-model-vfio-pci"][0])
    doc = load_domain(path, libvirt="11.3")
    assert doc.domain.hostdevs[0].driver_model == "vfio-pci"
    out = format_document(doc)
    # libvirt 11.3's dumpxml writes the same element (recorded while measuring).
    assert "<driver name='vfio' model='vfio-pci'/>" in out
    path.write_text(out)
    assert format_document(load_domain(path, libvirt="11.3")) == out


def test_driver_without_name_is_no_driver() -> None:
    with_empty = parse_string(DIFFERENCES["driver-no-name"][0], filename="v.xml")
    without = parse_string(BASE.replace(f"      {PLAIN_DRIVER}\n", ""), filename="v.xml")
    assert with_empty.domain.hostdevs == without.domain.hostdevs


def test_variant_driver_message_names_it_and_the_way_out() -> None:
    with pytest.raises(UnsupportedConfig) as err:
        parse_string(DIFFERENCES["driver-model-variant"][0], filename="v.xml")
    assert "'mlx5_vfio_pci'" in str(err.value) and "vfio-pci" in (err.value.hint or "")


@pytest.mark.parametrize("dialect", sorted(LIBVIRT_DIALECTS))
def test_iommufd_is_refused_with_the_reason(dialect: str) -> None:
    """A VF token cannot travel over QEMU's iommufd backend (measured: docs/kernel.md
    "The cdev path and iommufd"), and vfioctl uses the group path for every device."""
    doc = BASE.replace(PLAIN_DRIVER, "<driver name='vfio' iommufd='on'/>")
    with pytest.raises(XmlError) as err:
        parse_string(doc, filename="v.xml", libvirt=dialect)
    assert "unknown attribute 'iommufd' on <driver>" in str(err.value)
    assert "group path" in (err.value.hint or "") and "without the token" in (
        err.value.hint or "")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("command", ["validate", "xml2xml", "xml2argv"])
def test_cli_option_chooses_the_release(command: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "d.xml"
    path.write_text(DIFFERENCES["driver-no-name"][0])
    extra = ["--qemu-version", "10.0"] if command == "xml2argv" else []
    rc, _, err = run([command, str(path), *extra, "--libvirt", "9.0"], capsys)
    assert rc == 3 and err.startswith("vfioctl: error: ") and err.count("\n") == 1
    assert "needs name='vfio'" in err and "9.0" in err
    rc, out, err = run([command, str(path), *extra], capsys)
    assert rc == 0 and err == ""
    rc2, out2, _ = run([command, str(path), *extra, "--libvirt", "11.3"], capsys)
    assert (rc2, out2) == (rc, out)


def test_cli_arguments_are_the_same_for_both_releases(
        capsys: pytest.CaptureFixture[str]) -> None:
    case = str(CASES / "hostdev-vfio-multifunction.xml")
    outs = {r: run(["xml2argv", case, "--qemu-version", "8.1", "--libvirt", r], capsys)
            for r in LIBVIRT_DIALECTS}
    assert outs["9.0"] == outs["11.3"] and outs["9.0"][0] == 0


def test_cli_json_names_the_release(capsys: pytest.CaptureFixture[str]) -> None:
    case = str(CASES / "hostdev-vfio.xml")
    for release in LIBVIRT_DIALECTS:
        rc, out, _ = run(["xml2argv", case, "--qemu-version", "8.1", "--json",
                          "--libvirt", release], capsys)
        assert rc == 0 and json.loads(out)["libvirt"] == release


def test_cli_unknown_release_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(["xml2argv", str(CASES / "hostdev-vfio.xml"), "--libvirt", "10.0"],
                     capsys)
    assert rc == 2 and "'10.0'" in err and err.count("\n") == 1


def test_cli_help_documents_the_option(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("validate", "xml2xml", "xml2argv"):
        rc, out, _ = run([command, "--help"], capsys)
        assert rc == 0
        assert "--libvirt [9.0|11.3]" in out and "default: 11.3" in out
