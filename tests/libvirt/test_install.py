"""install/uninstall: idempotent, other hooks kept byte for byte, nothing foreign
replaced or removed; the installed script runs the hook in libvirt's bare environment."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from libvirttest import UUID, domain_xml, drivers, run


@pytest.fixture
def hooks(tmp_path: Path) -> Path:
    """A hooks directory with an existing qemu hook and another qemu.d script."""
    d = tmp_path / "hooks"
    (d / "qemu.d").mkdir(parents=True)
    (d / "qemu").write_text("#!/bin/sh\necho legacy hook\n")
    (d / "qemu").chmod(0o755)
    (d / "qemu.d" / "00-other").write_text("#!/bin/sh\nexit 0\n")
    (d / "qemu.d" / "00-other").chmod(0o700)
    return d


def _snapshot(d: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(d)): (p.read_bytes(), p.stat().st_mode)
            for p in sorted(d.rglob("*")) if p.is_file()}


def test_install_twice_then_uninstall_twice(
        hooks: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:
    others = _snapshot(hooks)
    wrapper = tmp_path / "libexec" / "vfioctl-qemu"
    args = ["libvirt", "install", "--hooks-dir", str(hooks), "--wrapper", str(wrapper)]
    rc, out, err = run(monkeypatch, capfd, args)
    assert (rc, err) == (0, "")
    assert out == (f"{hooks}/qemu.d/vfioctl: written\n{wrapper}: written\n")
    installed = _snapshot(hooks)
    assert {k: v for k, v in installed.items() if k in others} == others
    assert (installed["qemu.d/vfioctl"][1] & 0o777) == 0o755
    rc, out, _ = run(monkeypatch, capfd, args)
    assert (rc, out) == (0, f"{hooks}/qemu.d/vfioctl: unchanged\n{wrapper}: unchanged\n")
    assert _snapshot(hooks) == installed
    un = ["libvirt", "uninstall", "--hooks-dir", str(hooks), "--wrapper", str(wrapper)]
    rc, out, _ = run(monkeypatch, capfd, un)
    assert (rc, out) == (0, f"{hooks}/qemu.d/vfioctl: removed\n{wrapper}: removed\n")
    assert _snapshot(hooks) == others and not wrapper.exists()
    rc, out, _ = run(monkeypatch, capfd, un)
    assert (rc, out) == (0, f"{hooks}/qemu.d/vfioctl: absent\n{wrapper}: absent\n")
    assert _snapshot(hooks) == others


def test_a_foreign_file_is_neither_replaced_nor_removed(
        hooks: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:
    (hooks / "qemu.d" / "vfioctl").write_text("#!/bin/sh\n# someone else's\n")
    before = _snapshot(hooks)
    wrapper = tmp_path / "w"
    for cmd in ("install", "uninstall"):
        rc, out, err = run(monkeypatch, capfd, ["libvirt", cmd, "--hooks-dir", str(hooks),
                                                "--wrapper", str(wrapper)])
        assert rc == 5 and out == "" and err.count("\n") == 1
        assert "is not vfioctl's" in err
        assert _snapshot(hooks) == before and not wrapper.exists()


def test_the_installed_script_runs_the_hook_in_libvirts_environment(
        hooks: Path, ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str], run_dir: Path) -> None:
    """libvirt passes PATH, HOME and LC_ALL only: the simulated host and the run
    directory must come from the script itself."""
    rc, _, _ = run(monkeypatch, capfd, ["--host", f"sim:{ws}", "libvirt", "install",
                                        "--hooks-dir", str(hooks),
                                        "--wrapper", str(tmp_path / "w")])
    assert rc == 0
    script = hooks / "qemu.d" / "vfioctl"
    env = {"PATH": "/usr/bin:/bin", "HOME": "/root", "LC_ALL": "C"}
    xml = domain_xml(hostdevs=["0000:01:00.0"],
                     meta=["<vfioctl:hostdev address='0000:01:00.0' group='allow'/>"])
    done = subprocess.run([str(script), "win10", "prepare", "begin", "-"], input=xml,
                          capture_output=True, text=True, env=env, timeout=600)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert drivers(ws)["0000:01:00.0"] == "vfio-pci"
    done = subprocess.run([str(script), "b", "prepare", "begin", "-"],
                          input=domain_xml("b", hostdevs=["0000:00:02.0"],
                                           uuid=UUID.replace("2b", "3b")),
                          capture_output=True, text=True, env=env, timeout=600)
    # the refusal is the hook's one line: the console runs on the boot GPU (exit 5)
    assert done.returncode == 5 and done.stderr.count("\n") == 1, done.stderr
    assert "0000:00:02.0" in done.stderr
    done = subprocess.run([str(script), "win10", "release", "end", "-"], input=xml,
                          capture_output=True, text=True, env=env, timeout=600)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert drivers(ws)["0000:01:00.0"] == "nouveau"
    assert os.environ.get("VFIOCTL_HOST") == f"sim:{ws}"  # (the test's own, unchanged)
