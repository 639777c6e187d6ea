"""The VF token never in the domain XML: ``<vf-token/>`` names the token vfioctl holds
for the VF's PF, resolved from the store at the last moment and handed to QEMU over QMP
only; the host checks that run before any change; confidential guests.

The walk-through runs on a copy of ``sriov-server``: the X710 PF detached onto vfio-pci,
two VFs, a token set by vfioctl; the domain asks for a VF with ``<vf-token/>``.
"""

from __future__ import annotations

import dataclasses
import io
import os
import stat
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from launchtest import QEMU, needs_qemu

from vfioctl.address import PciAddress
from vfioctl.cli.main import main
from vfioctl.conf import load_domain
from vfioctl.launch import release, standin_device, start
from vfioctl.manager import HostdevManager
from vfioctl.qemu.caps import caps_for_version
from vfioctl.secret import REDACTED
from vfioctl.sim.host import SimHost
from vfioctl.state import TokenStore

PF, VF, VF2, OTHER_PF = "0000:03:00.0", "0000:03:02.0", "0000:03:02.1", "0000:04:00.0"


def domain(tmp_path: Path, addr: str = VF, token: str = "<vf-token/>", *,
           extra: str = "", name: str = "vm1") -> Path:
    dom, rest = addr.split(":", 1)
    bus, slotfn = rest.split(":")
    slot, fn = slotfn.split(".")
    path = tmp_path / f"{name}-{abs(hash((addr, token, extra)))}.xml"
    path.write_text(f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>{extra}
  <devices>
    <emulator>{QEMU}</emulator>
    <hostdev mode='subsystem' type='pci' managed='yes'>
      <source>
        <address domain='0x{dom}' bus='0x{bus}' slot='0x{slot}' function='0x{fn}'>{token}</address>
      </source>
      <alias name='ua-vf0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/>
    </hostdev>
  </devices>
</domain>
""")
    return path


def run(host: Path, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["--host", f"sim:{host}", *args])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def userspace_pf(host_file: Path) -> Iterator[str]:
    """The PF on vfio-pci with two VFs and a stored token; yields the token's text."""
    for cmd in (["detach", PF], ["sriov", PF, "--numvfs", "2", "--yes"], ["token", "set", PF]):
        code, _, err = run(host_file, *cmd)
        assert code == 0, (cmd, err)
    token = HostdevManager(SimHost.from_file(host_file)).get_token(PF).reveal()
    yield token


def spellings(token: str) -> list[bytes]:
    bare = token.replace("-", "")
    return [s.encode() for s in (token, token.upper(), bare, bare.upper())]


def leaks(data: bytes, token: str) -> bool:
    return any(s in data for s in spellings(token))


def test_dry_run_resolves_the_stored_token_without_showing_it(
        host_file: Path, userspace_pf: str, tmp_path: Path) -> None:
    xml = domain(tmp_path)
    code, out, err = run(host_file, "validate", str(xml))
    assert (code, err) == (0, "")                      # no secret in the file: no warning
    code, out, err = run(host_file, "start", str(xml), "--dry-run", "--qemu-version", "8.1")
    assert code == 0, err
    assert f'"host":"{VF}","vf-token":"{REDACTED}"' in out
    assert not leaks((out + err).encode(), userspace_pf)
    # --reveal with the host resolves it (asked for); without a host it cannot
    code, out, _ = run(host_file, "xml2argv", str(xml), "--qemu-version", "8.1", "--reveal")
    assert code == 0 and userspace_pf in out
    out_buf, err_buf = io.StringIO(), io.StringIO()
    with redirect_stdout(out_buf), redirect_stderr(err_buf):
        code = main(["xml2argv", str(xml), "--qemu-version", "8.1", "--reveal"])
    assert code == 3 and "known only on that host" in err_buf.getvalue()
    # xml2xml keeps the reference: a stored token is never written into XML
    code, out, _ = run(host_file, "xml2xml", str(xml), "--reveal")
    assert code == 0 and "<vf-token/>" in out and not leaks(out.encode(), userspace_pf)


@pytest.mark.qemu
@needs_qemu
def test_start_hands_the_stored_token_to_qemu_over_qmp_only(
        host_file: Path, userspace_pf: str, tmp_path: Path) -> None:
    host = SimHost.from_file(host_file)
    sent: list[object] = []
    launch = start(host, load_domain(domain(tmp_path)), caps_for_version("8.1"),
                   binary=QEMU, standin=standin_device("pci-testdev"),
                   on_send=lambda cmd, args: sent.append((cmd, args)))
    try:
        assert [c for c, _ in sent] == ["device_add", "cont"]       # type: ignore[misc]
        real = launch.plan.hotplugs[0].props
        assert real["host"] == VF and real["vf-token"] == userspace_pf
        for what in ("cmdline", "environ"):
            with open(f"/proc/{launch.pid}/{what}", "rb") as f:
                assert not leaks(f.read(), userspace_pf), what
        store = host_file.with_name("h.toml.state") / "vf-tokens" / PF
        for path in tmp_path.rglob("*"):
            if not path.is_file() or path.is_socket():
                continue
            if leaks(path.read_bytes(), userspace_pf):
                # the 0600 store, and the simulated kernel's memory (the host file)
                assert path in (store, host_file), f"the token is in {path}"
                assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    finally:
        release(host, "vm1", stop=True)


@pytest.mark.parametrize("case, message", [
    ("missing", f"VF {VF} has no <vf-token>, but its PF {PF} is driven from userspace"),
    ("wrong-uuid", f"the vf-token uuid of VF {VF} is not the token vfioctl holds for its "
                   f"PF {PF}"),
    ("ref-on-pf", f"<vf-token/> on PCI device {OTHER_PF}, which is not a VF"),
    ("ref-not-stored", f"<vf-token/> on VF {VF}: no VF token stored for PF {PF}"),
    ("ref-stale", f"<vf-token/> on VF {VF}: the stored VF token of PF {PF} is stale"),
])
def test_each_inconsistency_is_one_line_before_anything_changes(
        host_file: Path, userspace_pf: str, tmp_path: Path, case: str, message: str) -> None:
    if case == "missing":
        xml = domain(tmp_path, token="")
    elif case == "wrong-uuid":
        xml = domain(tmp_path, token="<vf-token uuid='00000000-1111-2222-3333-444444444444'/>")
    elif case == "ref-on-pf":
        xml = domain(tmp_path, OTHER_PF)
    elif case == "ref-not-stored":
        assert run(host_file, "token", "forget", PF)[0] == 0
        xml = domain(tmp_path)
    else:
        # A copy made for an earlier binding of the PF (its record then was another
        # one): what a rebind behind the copy's back leaves.
        store = TokenStore(host_file.with_name("h.toml.state"))
        old = store.load(PciAddress.parse(PF))
        assert old is not None
        store.commit_staged(store.stage(dataclasses.replace(
            old, held_since="2020-01-01T00:00:00+00:00")), PciAddress.parse(PF))
        xml = domain(tmp_path)
    before = host_file.read_bytes()
    for cmd in (["validate", str(xml)], ["start", str(xml), "--dry-run",
                                         "--qemu-version", "8.1"]):
        code, out, err = run(host_file, *cmd)
        assert code == 3 and out == "", (cmd, err)
        assert len(err.splitlines()) == 1 and message in err, err
        assert not leaks(err.encode(), userspace_pf)
    assert host_file.read_bytes() == before


def test_a_uuid_in_the_file_works_with_a_warning(host_file: Path, userspace_pf: str,
                                                 tmp_path: Path) -> None:
    xml = domain(tmp_path, token=f"<vf-token uuid='{userspace_pf}'/>")
    code, out, err = run(host_file, "validate", str(xml))
    assert code == 0 and "valid" in out
    assert err.startswith("vfioctl: warning: ") and "written in" in err
    assert "<vf-token/>" in err and not leaks(err.encode(), userspace_pf)


def test_a_confidential_guest_gets_no_vf_of_a_userspace_pf_without_opt_in(
        host_file: Path, userspace_pf: str, tmp_path: Path) -> None:
    xml = domain(tmp_path, extra="\n  <launchSecurity type='sev-snp'/>")
    for cmd in (["validate", str(xml)],
                ["start", str(xml), "--dry-run", "--qemu-version", "8.1"]):
        code, _, err = run(host_file, *cmd)
        assert code == 3, err
        assert ("is a confidential guest (<launchSecurity type='sev-snp'>) and PCI device "
                f"{VF} is a VF of PF {PF}, which is driven from userspace") in err
        assert "--allow-untrusted-pf" in err and len(err.splitlines()) == 1
    code, _, err = run(host_file, "start", str(xml), "--dry-run", "--qemu-version", "8.1",
                       "--allow-untrusted-pf")
    # the trust rule lets it through; start then refuses the guest itself, because it
    # does not create a confidential guest (<launchSecurity> is not translated)
    assert code == 3, err
    assert "<launchSecurity> is not translated by vfioctl start" in err
    assert "confidential guest" not in err and len(err.splitlines()) == 1
    code, _, err = run(host_file, "start", str(xml), "--dry-run", "--qemu-version", "8.1",
                       "--allow-untrusted-pf", "--ignore-untranslated")
    assert code == 0, err
    assert err.startswith("vfioctl: warning:") and "allowed by --allow-untrusted-pf" in err
    # an ordinary VF of a kernel-driven PF is not affected
    plain = domain(tmp_path, "0000:04:00.0", token="",
                   extra="\n  <launchSecurity type='tdx'/>")
    assert run(host_file, "validate", str(plain))[0] == 0


def test_rotation_under_an_open_vf_is_refused(host_file: Path, userspace_pf: str) -> None:
    host = SimHost.from_file(host_file)
    group = host.kernel.group_of(VF2)
    assert group is not None
    host.add_vfio_user(4242, "dpdk-testpmd", group, devices=[VF2])
    code, _, err = run(host_file, "token", "set", PF)
    assert code == 5
    assert err.startswith(f"vfioctl: error: VF {VF2} of PF {PF} is open by pid 4242 "
                          "(dpdk-testpmd): a new VF token would lock it out"), err
    assert HostdevManager(SimHost.from_file(host_file)).get_token(PF).reveal() == userspace_pf


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to plant a directory for nobody")
def test_a_planted_runtime_directory_is_refused_and_nothing_is_kept(
        host_file: Path, tmp_path: Path) -> None:
    """QEMU's socket and log live under the state directory: a directory another user
    owns, planted where vfioctl would create it, is refused (exit 77), never used, and
    the devices taken for the guest are given back."""
    from vfioctl.errors import PermissionDenied

    elsewhere = tmp_path / "attacker"
    elsewhere.mkdir()
    os.chown(elsewhere, 65534, 65534)
    state = host_file.with_name("h.toml.state")
    state.mkdir(mode=0o700)
    (state / "qemu").symlink_to(elsewhere)
    host = SimHost.from_file(host_file)
    xml = domain(tmp_path, OTHER_PF, token="")
    with pytest.raises(PermissionDenied):
        start(host, load_domain(xml), caps_for_version("8.1"), binary=QEMU,
              standin=standin_device("pci-testdev"))
    assert list(elsewhere.iterdir()) == []
    assert HostdevManager(host).status() == []
