"""The xml2argv / xml2xml / validate / qemu-caps commands, end to end through main()."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vfioctl.cli.main import main
from vfioctl.secret import REDACTED

DATA = Path(__file__).parent.parent / "data"
TOKEN_CASE = DATA / "xml2argv" / "hostdev-vfio-vf-token.xml"
TOKEN = "00112233-4455-6677-8899-aabbccddeeff"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_xml2argv_redacts_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(["xml2argv", str(TOKEN_CASE), "--qemu-version", "8.1"], capsys)
    assert rc == 0 and TOKEN not in out
    assert out.splitlines()[0] == "-device"
    assert json.loads(out.splitlines()[1])["vf-token"] == REDACTED
    rc, out, _ = run(["xml2argv", str(TOKEN_CASE), "--qemu-version", "8.1", "--reveal"], capsys)
    assert json.loads(out.splitlines()[1])["vf-token"] == TOKEN


def test_xml2argv_with_recorded_caps_and_old_qemu(capsys: pytest.CaptureFixture[str]) -> None:
    caps72 = DATA / "qemu" / "qemu-7.2.22-x86_64.json"
    rc, _, err = run(["xml2argv", str(TOKEN_CASE), "--qemu-caps", str(caps72)], capsys)
    assert rc == 3
    assert "needs QEMU >= 8.1, found QEMU 7.2.22" in err and TOKEN not in err


def test_xml2argv_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(["xml2argv", str(TOKEN_CASE), "--qemu-version", "8.1", "--json"], capsys)
    doc = json.loads(out)
    assert rc == 0 and doc["devices"][0]["has_vf_token"] is True and TOKEN not in out


def test_xml2xml_and_validate(capsys: pytest.CaptureFixture[str]) -> None:
    src = DATA / "xml2xml" / "hostdev-vfio-canonical.xml"
    rc, out, _ = run(["xml2xml", str(src)], capsys)
    assert rc == 0 and out == src.read_text()
    rc, out, _ = run(["validate", str(src)], capsys)
    assert rc == 0 and "valid (1 PCI hostdevs)" in out
    bad = DATA / "xml2argv" / "hostdev-pci-duplicate.xml"
    rc, _, err = run(["validate", str(bad)], capsys)
    assert rc == 3 and "Hostdev already exists in the domain configuration" in err


def test_qemu_caps_fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("VFIOCTL_CACHE_DIR", str(tmp_path / "cache"))
    binary = tmp_path / "qemu"
    binary.write_text("#!/bin/sh\ncase \"$*\" in --version) echo 'QEMU emulator version "
                      "7.2.0';; *help*) printf 'vfio-pci options:\\n  host=<str>\\n';; esac\n")
    binary.chmod(0o755)
    rc, out, _ = run(["qemu-caps", str(binary), "--json"], capsys)
    doc = json.loads(out)
    assert rc == 0 and doc["version"] == "7.2.0" and doc["devices"]["vfio-pci"] == ["host"]


def test_help_does_not_import_lxml() -> None:
    code = ("import sys; from vfioctl.cli.main import main; main(['--help']); "
            "sys.exit(1 if 'lxml' in sys.modules else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr
