"""Boot reports go to the kernel log of the running host only, with a priority."""

from __future__ import annotations

from pathlib import Path

import pytest

from vfioctl.persist import kmsg


class Named:
    def __init__(self, name: str) -> None:
        self.name = name


def test_running_host_writes_prioritised_lines(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "kmsg"
    log.write_text("")
    monkeypatch.setattr(kmsg, "KMSG", str(log))
    monkeypatch.delenv("VFIOCTL_ETC_DIR", raising=False)
    assert kmsg.kernel_log(Named("linux"), "persist: a\nb", problem=True)  # type: ignore[arg-type]
    assert kmsg.kernel_log(Named("linux"), "persist: ok", problem=False)  # type: ignore[arg-type]
    assert log.read_text() == "<4>vfioctl: persist: a b\n<6>vfioctl: persist: ok\n"


@pytest.mark.parametrize("name", ["sim:/tmp/h.toml", "linux:/snap"])
def test_other_hosts_have_no_kernel_log(name: str, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kmsg, "KMSG", str(tmp_path / "kmsg"))
    assert not kmsg.kernel_log(Named(name), "x", problem=True)  # type: ignore[arg-type]
    assert not (tmp_path / "kmsg").exists()


def test_a_test_etc_is_not_this_kernels_boot(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kmsg, "KMSG", str(tmp_path / "kmsg"))
    monkeypatch.setenv("VFIOCTL_ETC_DIR", str(tmp_path))
    assert not kmsg.kernel_log(Named("linux"), "x", problem=True)  # type: ignore[arg-type]


def test_no_kernel_log_is_no_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kmsg, "KMSG", str(tmp_path / "missing" / "kmsg"))
    monkeypatch.delenv("VFIOCTL_ETC_DIR", raising=False)
    assert not kmsg.kernel_log(Named("linux"), "x", problem=True)  # type: ignore[arg-type]
