"""QEMU capabilities: the probe (real QEMU 7.2 and a fake binary), its cache, the table."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from vfioctl.errors import ConfigError, UnsupportedConfig, UsageError
from vfioctl.qemu import caps as qcaps

DATA = Path(__file__).parent.parent / "data" / "qemu"
REAL_QEMU = shutil.which("qemu-system-x86_64")


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("VFIOCTL_CACHE_DIR", str(cache))
    return cache


FAKE = """#!/bin/sh
echo run >> "{log}"
case "$*" in
  --version) echo "QEMU emulator version {version} (fake)";;
  *vfio-pci,help*) printf 'vfio-pci options:\\n  host=<str>  - x\\n  rombar=<uint32>\\n{extra}';;
esac
"""


def fake_qemu(tmp_path: Path, version: str = "8.2.0", extra: str = "") -> tuple[Path, Path]:
    log = tmp_path / "calls"
    binary = tmp_path / "qemu-fake"
    binary.write_text(FAKE.format(log=log, version=version, extra=extra))
    binary.chmod(0o755)
    return binary, log


@pytest.mark.skipif(REAL_QEMU is None, reason="qemu-system-x86_64 not installed")
def test_probe_real_qemu() -> None:
    assert REAL_QEMU is not None
    caps = qcaps.probe(REAL_QEMU)
    assert caps.has("host") and caps.has("bootindex") and caps.has("rombar")
    # Debian 12's QEMU 7.2 has no vf-token (it came in 8.1).
    assert caps.has("vf-token") == (caps.version >= qcaps.VF_TOKEN_MIN)


def test_probe_parses_help_and_caches(tmp_path: Path) -> None:
    binary, log = fake_qemu(tmp_path, extra="  vf-token=<QemuUUID>\\n")
    caps = qcaps.probe(binary)
    assert caps.version == (8, 2, 0)
    assert caps.vfio_pci_props == {"host", "rombar", "vf-token"}
    assert log.read_text().count("run") == 2
    again = qcaps.probe(binary)
    assert again.vfio_pci_props == caps.vfio_pci_props and "cached" in again.source
    assert log.read_text().count("run") == 2          # no new run: from the cache


def test_cache_invalidated_when_binary_changes(tmp_path: Path) -> None:
    binary, log = fake_qemu(tmp_path)
    qcaps.probe(binary)
    st = binary.stat()
    os.utime(binary, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    qcaps.probe(binary)
    assert log.read_text().count("run") == 4


def test_probe_missing_binary(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        qcaps.probe(tmp_path / "nope")


def test_table() -> None:
    assert not qcaps.caps_for_version("7.2").has("vf-token")
    assert qcaps.caps_for_version("8.1").has("vf-token")
    assert qcaps.caps_for_version("8.0.5").has("host")
    with pytest.raises(UnsupportedConfig, match=r"older than 4\.2"):
        qcaps.caps_for_version("4.1")
    with pytest.raises(UsageError):
        qcaps.caps_for_version("eight")


def test_table_agrees_with_recorded_files() -> None:
    for name in ("qemu-7.2.22-x86_64.json", "qemu-8.1.0-x86_64.json"):
        recorded = qcaps.load_caps_file(DATA / name)
        table = qcaps.caps_for_version(recorded.version_str)
        assert table.vfio_pci_props <= recorded.vfio_pci_props, name
        emitted = {p.name for p in qcaps.PROPERTY_HISTORY}
        assert recorded.vfio_pci_props & emitted == table.vfio_pci_props, name


def test_bad_caps_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "other"}')
    with pytest.raises(ConfigError, match="not a vfioctl QEMU capability file"):
        qcaps.load_caps_file(bad)


def test_resolve_caps_conflicts() -> None:
    with pytest.raises(UsageError, match="cannot be used together"):
        qcaps.resolve_caps(version="8.1", binary="/usr/bin/qemu-system-x86_64")
    with pytest.raises(UsageError, match="no <emulator>"):
        qcaps.resolve_caps()
