"""Fixtures for the persistence tests: a writable copy of the simulated test VM
(q35-vmtest), whose /etc is its own (FILE.etc)."""

from __future__ import annotations

from pathlib import Path

import pytest
from persisttest import SimFile, cli


@pytest.fixture
def q35(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimFile:
    monkeypatch.delenv("VFIOCTL_HOST", raising=False)
    monkeypatch.delenv("VFIOCTL_ETC_DIR", raising=False)
    monkeypatch.setattr("vfioctl.persist.record.now", lambda: "2026-01-01T00:00:00+00:00")
    path = tmp_path / "vm.toml"
    assert cli("sim", "copy", "q35-vmtest", str(path)).rc == 0
    return SimFile(path)
