"""The persist commands on the simulated test VM: goldens for what they print, and bad
input refused with one line, the documented exit code, and nothing changed."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from persisttest import SimFile, cli

from vfioctl.persist import EtcPaths, boot

GOLDEN = Path(__file__).parent / "golden"
GPU_LIKE, PF, VF = "0000:02:00.0", "0000:01:00.0", "0000:01:00.1"


def tree(root: Path) -> dict[str, str]:
    """Every file below root (and the host file's state), hashed: 'nothing changed'."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def normalized(text: str, host: SimFile) -> str:
    return text.replace(str(host.path), "HOST.toml")


@pytest.fixture
def persisted(q35: SimFile) -> SimFile:
    q35.ok("detach", "--group", "--persist", GPU_LIKE)
    q35.ok("detach", "--persist", PF)
    q35.ok("token", "set", PF)
    q35.ok("sriov", PF, "--numvfs", "2", "--yes")
    q35.ok("persist", "sriov", PF, "--numvfs", "2", "--token")
    return q35


def test_list_goldens(persisted: SimFile, golden: Any) -> None:
    g = golden
    g.check(GOLDEN / "persist-list.txt", persisted.ok("persist", "list").out)
    g.check(GOLDEN / "persist-list.json",
            normalized(persisted.ok("persist", "list", "--json").out, persisted))
    persisted.ok("persist", "install-boot")
    g.check(GOLDEN / "persist-list-boot.txt", persisted.ok("persist", "list").out)
    persisted.edit('id = "8086:10d3"', 'id = "8086:10d4"', after=f'addr = "{GPU_LIKE}"')
    cli("sim", "reboot", str(persisted.path))
    g.check(GOLDEN / "persist-list-changed.txt", persisted.ok("persist", "list").out)
    g.check(GOLDEN / "udev.rules", (persisted.etc / "udev/rules.d/70-vfioctl.rules")
            .read_text())
    g.check(GOLDEN / "initramfs.rules", (persisted.etc / "vfioctl/initramfs.rules")
            .read_text())
    g.check(GOLDEN / "persist.toml", (persisted.etc / "vfioctl/persist.toml").read_text())


def test_detach_persist_prints_what_it_persisted(q35: SimFile) -> None:
    r = q35.ok("detach", "--group", "--persist", "0000:04:01.0")
    assert r.out == ("0000:03:00.0: left alone: (no driver)\n"
                     "0000:04:01.0: e1000 -> vfio-pci\n"
                     "0000:04:02.0: virtio-pci -> vfio-pci\n"
                     "0000:04:01.0: persisted (vfio-pci, IOMMU group 13, 3 members)\n"
                     "0000:04:02.0: persisted (vfio-pci, IOMMU group 13, 3 members)\n")
    dry = q35.ok("detach", "--persist", "--dry-run", GPU_LIKE)
    assert dry.out.endswith(f"{GPU_LIKE}: would be persisted (vfio-pci)\n")


def test_the_persisted_token_is_private_and_never_printed(persisted: SimFile) -> None:
    tok = persisted.etc / "vfioctl" / "vf-tokens" / PF
    assert stat.S_IMODE(tok.stat().st_mode) == 0o600
    assert stat.S_IMODE(tok.parent.stat().st_mode) == 0o700
    import json
    secret = json.loads(tok.read_text())["vf_token"]
    for args in (("persist", "list"), ("persist", "list", "--json"), ("status",),
                 ("doctor",)):
        r = persisted(*args)
        assert secret not in r.out + r.err


def test_install_and_uninstall_are_idempotent(q35: SimFile) -> None:
    first = q35.ok("persist", "install-boot").out
    assert first.count(": written") == 5
    again = q35.ok("persist", "install-boot").out
    assert again.count(": unchanged") == 5 and "written" not in again
    assert q35.ok("persist", "uninstall-boot").out.count(": removed") == 5
    assert q35.ok("persist", "uninstall-boot").out.count(": absent") == 5


def test_helper_and_hook_are_valid_shell(q35: SimFile) -> None:
    q35.ok("persist", "install-boot")
    for f in (q35.etc / "vfioctl" / "udev-helper", q35.etc / "initramfs-tools/hooks/vfioctl"):
        assert os.access(f, os.X_OK)
        subprocess.run(["sh", "-n", str(f)], check=True)


def test_helper_is_harmless_without_vfioctl(q35: SimFile, tmp_path: Path) -> None:
    """Without the Python it was written for, the helper does nothing and exits 0."""
    q35.ok("detach", "--persist", GPU_LIKE)
    helper = tmp_path / "helper"
    helper.write_text(boot.helper_text(EtcPaths(q35.etc), str(tmp_path / "gone")))
    r = subprocess.run(["sh", str(helper), GPU_LIKE], capture_output=True, text=True)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


def test_changes_refresh_an_installed_rule(q35: SimFile) -> None:
    q35.ok("persist", "install-boot")
    q35.ok("detach", "--persist", GPU_LIKE)
    table = (q35.etc / "vfioctl" / "boot-overrides").read_text()
    assert f"{GPU_LIKE} 8086 10d3 8086 0000 vfio-pci" in table
    assert GPU_LIKE in (q35.etc / "vfioctl" / "initramfs.rules").read_text()
    q35.ok("persist", "remove", GPU_LIKE)
    assert GPU_LIKE not in (q35.etc / "vfioctl" / "boot-overrides").read_text()


def test_apply_is_idempotent(persisted: SimFile) -> None:
    out = persisted.ok("persist", "apply").out
    assert out == f"{PF}: already as persisted\n{GPU_LIKE}: already as persisted\n"


def test_remove_forgets_entry_and_token(persisted: SimFile) -> None:
    r = persisted.ok("persist", "remove", PF)
    assert r.out == f"{PF}: no longer persisted\n"
    assert not (persisted.etc / "vfioctl" / "vf-tokens" / PF).exists()
    assert persisted.ok("persist", "list", "--json").out.count('"address": "0000:01') == 0


BAD = [
    (("persist", "remove", "0000:09:00.0"), 4,
     "vfioctl: error: 0000:09:00.0 is not persisted; 'vfioctl persist list' shows what is\n"),
    (("persist", "sriov", GPU_LIKE, "--numvfs", "2"), 4,
     f"vfioctl: error: {GPU_LIKE} is not persisted; persist it first: 'vfioctl detach "
     f"{GPU_LIKE} --persist'\n"),
    (("persist", "sriov", PF), 2,
     "vfioctl: error: nothing to persist; give --numvfs N and/or --token\n"),
    (("persist", "apply", "--device", "0000:09:00.0"), 4,
     "vfioctl: error: 0000:09:00.0 is not persisted; 'vfioctl persist list' shows what is\n"),
]


@pytest.mark.parametrize(("args", "rc", "err"), BAD)
def test_bad_input_changes_nothing(q35: SimFile, args: tuple[str, ...], rc: int,
                                   err: str) -> None:
    q35.ok("detach", "--persist", PF)
    before = tree(q35.path.parent)
    r = q35(*args)
    assert (r.rc, r.out, r.err) == (rc, "", err)
    assert tree(q35.path.parent) == before


def test_persisting_a_vf_is_refused_before_detaching(q35: SimFile) -> None:
    q35.ok("sriov", PF, "--numvfs", "1")
    before = tree(q35.path.parent)
    r = q35("detach", "--persist", VF)
    assert (r.rc, r.out) == (5, "")
    assert r.err == (f"vfioctl: error: cannot persist {VF}: it is a VF of {PF}, and VFs "
                     f"do not exist at boot; persist the PF instead ('vfioctl detach {PF} "
                     f"--persist', then 'vfioctl persist sriov {PF} --numvfs N')\n")
    assert tree(q35.path.parent) == before


def test_a_broken_configuration_refuses_detach_persist(q35: SimFile) -> None:
    q35.ok("detach", "--persist", PF)
    cfg = q35.etc / "vfioctl" / "persist.toml"
    cfg.write_text(cfg.read_text().replace('driver = "vfio-pci"', 'driver = "nvme"'))
    before = tree(q35.path.parent)
    r = q35("detach", "--persist", GPU_LIKE)
    assert (r.rc, r.out) == (3, "")
    assert r.err.startswith(f"vfioctl: error: persisted configuration {cfg}: device #1 "
                            f"({PF}): driver must be one of vfio-pci, pci-stub, got 'nvme'")
    assert r.err.count("\n") == 1
    assert tree(q35.path.parent) == before
    listed = q35("persist", "list")
    assert listed.rc == 3 and listed.err.count("\n") == 1
    status = q35.ok("status")
    assert "persisted: cannot read the configuration" in status.out


def test_bundled_and_snapshot_hosts_have_no_configuration() -> None:
    r = cli("--host", "sim:workstation", "persist", "list")
    assert r.rc == 5 and r.err.startswith("vfioctl: error: host sim:workstation has no "
                                          "configuration to list")
    assert cli("--host", "sim:workstation", "status").rc == 0


def test_sim_reboot_of_a_missing_file(tmp_path: Path) -> None:
    r = cli("sim", "reboot", str(tmp_path / "none.toml"))
    assert r.rc == 4 and r.err.count("\n") == 1
