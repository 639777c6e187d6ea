"""The adversarial review's reproducers on a copy of ``sriov-server`` (``detach PF;
sriov PF --numvfs 2 --yes; token set PF``), each now a clear refusal or the right
result."""

from __future__ import annotations

import errno
import io
import json
import os
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from vfioctl.address import PciAddress
from vfioctl.cli.main import main
from vfioctl.pci.device import PciDevice
from vfioctl.sim.host import SimHost
from vfioctl.sim.loader import bundled_text
from vfioctl.state import TokenStore

PF, VF, VF2 = "0000:03:00.0", "0000:03:02.0", "0000:03:02.1"
TOK = "11111111-2222-3333-4444-555555555555"


def run(host: Path, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["--host", f"sim:{host}", *args])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def srv(tmp_path: Path) -> Path:
    host = tmp_path / "srv.toml"
    host.write_text(bundled_text("sriov-server"))
    for cmd in (["detach", PF], ["sriov", PF, "--numvfs", "2", "--yes"], ["token", "set", PF]):
        code, _, err = run(host, *cmd)
        assert code == 0, (cmd, err)
    return host


def test_a_vf_held_for_an_owner_keeps_its_pf(srv: Path) -> None:
    assert run(srv, "detach", VF, "--owner", "vm1")[0] == 0
    for cmd in (["reattach", PF], ["reattach", "--group", PF], ["sriov", PF, "--numvfs", "0"]):
        code, out, err = run(srv, *cmd)
        assert code == 5 and out == "", (cmd, err)
        assert f"its VF {VF} is held by 'vm1'" in err and len(err.splitlines()) == 1, err
    status = json.loads(run(srv, "status", "--json")[1])
    assert [(d["address"], d["owner"], d["present"]) for d in status["devices"]] == [
        (PF, None, True), (VF, "vm1", True)]
    # given back, the PF goes too
    assert run(srv, "reattach", VF, "--owner", "vm1")[0] == 0
    assert run(srv, "sriov", PF, "--numvfs", "0")[0] == 0
    code, out, err = run(srv, "reattach", PF)
    assert (code, out.strip()) == (0, f"{PF}: vfio-pci -> i40e"), err


def test_a_pf_with_vfs_is_not_reattached_from_under_them(srv: Path) -> None:
    code, _, err = run(srv, "reattach", PF)
    assert code == 5
    assert err.strip() == (
        f"vfioctl: error: cannot reattach PF {PF}: it has 2 VFs, and unbinding vfio-pci "
        f"from it removes them; remove them first ('vfioctl sriov {PF} --numvfs 0'), then "
        "reattach")


def test_a_vf_open_by_another_program_keeps_its_pf(srv: Path) -> None:
    host = SimHost.from_file(srv)
    group = PciDevice(host, PciAddress.parse(VF2)).iommu_group
    assert group is not None
    host.add_vfio_user(4242, "qemu-system-x86", group, devices=[VF2])
    for cmd, what in ((["reattach", PF], "reattach"),
                      (["sriov", PF, "--numvfs", "0"], "remove the VFs of")):
        code, _, err = run(srv, *cmd)
        assert code == 5, err
        assert err.startswith(f"vfioctl: error: cannot {what} PF {PF}: its VF {VF2} is in "
                              f"use: IOMMU group {group} is open by pid 4242 "
                              "(qemu-system-x86)"), err
    SimHost.from_file(srv).remove_vfio_user(4242)
    assert run(srv, "sriov", PF, "--numvfs", "0")[0] == 0


def test_a_failed_rename_of_the_token_file_is_completed_by_the_next_command(
        srv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel took the new token; storing it failed: the old copy must not stay
    'current' — the journal stays open and the next command stores the new token."""
    real_rename = os.rename

    def failing(src: object, dst: object, *a: object, **kw: object) -> None:
        if ".staged-" in str(src):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_rename(src, dst, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "rename", failing)
    monkeypatch.setattr(os, "replace", failing)
    tok_file = srv.with_name("tok")
    tok_file.write_text(TOK + "\n")
    code, _, err = run(srv, "token", "set", PF, "--uuid-file", str(tok_file))
    assert code == 6 and "has the new VF token but vfioctl could not store it" in err, err
    monkeypatch.undo()
    code, _, err = run(srv, "token", "show", PF, "--reveal")   # the next command
    assert code == 0 and "completed an interrupted token-set" in err, err
    host = SimHost.from_file(srv)
    assert str(host.kernel.vf_tokens[PF]) == TOK
    stored = TokenStore(srv.with_name("srv.toml.state")).load(PciAddress.parse(PF))
    assert stored is not None and stored.token.reveal() == TOK
    assert run(srv, "token", "check", VF)[0] == 0


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe not utf-8\n", "is not UTF-8 text"),
    ((TOK + "\n" + TOK + "\n").encode(), "not a UUID in canonical form"),
    (b"", "not a UUID in canonical form"),
])
def test_token_input_is_read_the_same_from_a_file_and_stdin(
        srv: Path, content: bytes, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = srv.with_name("in")
    path.write_bytes(content)
    code_file, _, err_file = run(srv, "token", "set", PF, "--uuid-file", str(path))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(content)))
    code_stdin, _, err_stdin = run(srv, "token", "set", PF, "--uuid-file", "-")
    assert code_file == code_stdin == 2
    assert message in err_file and message in err_stdin
    assert TOK not in err_file + err_stdin
