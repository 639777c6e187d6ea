"""The VF token on the real kernel, through vfioctl's own API and CLI (docs/kernel.md "VF
token"; docs/sriov-token.md).

1. The README walk-through, each step a ``vfioctl`` subprocess as a user would type it:
   ``detach PF``, ``sriov PF --numvfs 2 --yes``, ``token set PF``, ``token check VF``
   (opens), ``token check VF --no-token`` (refused with the explained error).
2. Every row of docs/kernel.md "VF token table" through
   :class:`vfioctl.vfio.device.VfioSession` /
   ``open_device`` / ``DeviceHandle`` on the group path (the 6.1 guest has no
   ``/dev/vfio/devices``: the cdev attempt must fall back silently, checked too).
3. The token lifecycle: persists after the fds close; a PF opened with a token while no
   VF is open sets it, and vfioctl's stored copy is then reported stale by the kernel.

:func:`token_rows` is the row scenario as a pure function of a Host; the fast suite runs
it on the simulator (tests/token/test_token_rows.py), so both tiers assert one table.

Starts from: the boot drivers (vfio-pci may be loaded). Leaves: the PF back on nvme, no
VFs, enable_sriov N, nothing held by vfioctl, no token stored. The PF's reset_method is
left empty, as test_30 leaves it (docs/kernel.md "The test guest": QEMU 7.2's NVMe loses
its VFs on FLR).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from vfioctl.address import PciAddress
from vfioctl.errors import VfioctlError
from vfioctl.host import uapi
from vfioctl.host.base import Host
from vfioctl.secret import VfToken
from vfioctl.vfio.device import (
    PATH_CDEV,
    PATH_GROUP,
    GroupBusy,
    TokenNotAccepted,
    VfioGroup,
    VfioSession,
    VfTokenRejected,
    open_device,
)

TOK = VfToken(uuid.UUID("11111111-2222-3333-4444-555555555555"))
WRONG = VfToken(uuid.UUID("99999999-8888-7777-6666-555555555555"))
TOK2 = VfToken(uuid.UUID("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"))
ZERO = VfToken(uuid.UUID(int=0))

PF, VF, VF2, PLAIN = "0000:01:00.0", "0000:01:00.1", "0000:01:00.2", "0000:02:00.0"


# -- the row scenario (pure: any Host) ------------------------------------------------------
@dataclass(frozen=True)
class Row:
    name: str
    expected: str        # "OK" or an errno name
    got: str
    error: str | None    # the product's error class, when one was raised

    @property
    def ok(self) -> bool:
        return self.expected == self.got


def _outcome(fn: Callable[[], object]) -> tuple[str, str | None]:
    try:
        fn()
    except VfioctlError as err:
        cause = err.__cause__
        code = getattr(err, "errno", None) or (cause.errno if isinstance(cause, OSError)
                                                else None)
        return (errno.errorcode.get(code, str(code)) if code else "-", type(err).__name__)
    except OSError as err:
        return errno.errorcode.get(err.errno or 0, str(err.errno)), None
    return "OK", None


def token_rows(host: Host, pf: str, vf: str, plain: str | None) -> list[Row]:
    """The rows of docs/kernel.md "VF token table", in that table's order (this function
    is the measurement). The PF must be on vfio-pci with VFs enabled, ``plain`` (no
    SR-IOV) on vfio-pci; nothing may have opened the PF yet for the first two rows to mean
    "before anyone opened the PF". The session is closed at the end; the token is left at WRONG."""
    rows: list[Row] = []

    def row(name: str, expected: str, fn: Callable[[], object]) -> None:
        got, error = _outcome(fn)
        rows.append(Row(name, expected, got, error))

    s = VfioSession(host)
    try:
        pf_addr, vf_addr = PciAddress.parse(pf), PciAddress.parse(vf)
        vf_group = s.group(_group(host, vf), for_device=vf_addr)
        pf_group = s.group(_group(host, pf), for_device=pf_addr)

        def vf_probe(token: VfToken | None = None, extra: tuple[str, ...] = ()) -> None:
            s.open_device(vf, token=token, extra_options=extra).close()

        def raw_probe(group: VfioGroup, text: str) -> None:
            host.close(group.get_device_fd(text))

        row("second open of the PF's group: EBUSY", "EBUSY",
            lambda: VfioGroup(host, pf_group.number, for_device=pf_addr))
        # [A] before the PF is opened by userspace
        row("VF open, no token (whether or not the PF was opened)", "EACCES", vf_probe)
        row("VF open, zero-UUID token", "EACCES", lambda: vf_probe(ZERO))
        # [B] PF open; FEATURE
        pf1 = s.open_device(pf)
        rows.append(Row("PF open, plain", "OK", "OK", None))
        row("PF GET_INFO is PCI", "OK", lambda: _assert(
            pf1.info.flags & uapi.VFIO_DEVICE_FLAGS_PCI))
        row("PF FEATURE PROBE PCI_VF_TOKEN", "OK", lambda: _assert(pf1.probe_vf_token()))
        row("PF FEATURE GET PCI_VF_TOKEN (never readable)", "EINVAL", lambda: host.ioctl(
            pf1.fd, uapi.VFIO_DEVICE_FEATURE, uapi.pack_feature(
                uapi.VFIO_DEVICE_FEATURE_GET | uapi.VFIO_DEVICE_FEATURE_PCI_VF_TOKEN,
                bytes(16))))
        row("PF FEATURE SET TOK", "OK", lambda: pf1.set_vf_token(TOK))
        # [C] VF opens against the token
        row("VF open, no token", "EACCES", vf_probe)
        row("VF open, wrong token", "EACCES", lambda: vf_probe(WRONG))
        row("VF open, vf_token=xyz (malformed)", "EINVAL",
            lambda: vf_probe(extra=("vf_token=xyz",)))
        row("VF open, unknown option foo=bar", "EINVAL", lambda: vf_probe(extra=("foo=bar",)))
        row("VF open, right token + foo=bar", "EINVAL",
            lambda: vf_probe(TOK, ("foo=bar",)))
        row("VF open, token twice", "EINVAL",
            lambda: vf_probe(TOK, (f"vf_token={TOK.reveal()}",)))
        row("VF open, tab separator (no name match)", "ENODEV",
            lambda: raw_probe(vf_group, f"{vf}\tvf_token={TOK.reveal()}"))
        row("VF open, upper-case token", "OK",
            lambda: raw_probe(vf_group, f"{vf} vf_token={TOK.reveal().upper()}"))
        vf1 = s.open_device(vf, token=TOK)
        rows.append(Row("VF open, right token", "OK", "OK", None))
        row("VF GET_INFO is PCI", "OK", lambda: _assert(
            vf1.info.flags & uapi.VFIO_DEVICE_FLAGS_PCI))
        row("VF FEATURE SET (not a PF)", "ENOTTY", lambda: vf1.set_vf_token(TOK))
        row("VF FEATURE PROBE answers no", "OK", lambda: _assert(not vf1.probe_vf_token()))
        # [D] PF re-open while a VF is open
        row("PF open while a VF is open, no token", "EACCES",
            lambda: s.open_device(pf).close())
        row("PF open while a VF is open, wrong token", "EACCES",
            lambda: s.open_device(pf, token=WRONG).close())
        row("PF open while a VF is open, foo=bar", "EINVAL",
            lambda: s.open_device(pf, extra_options=("foo=bar",)).close())
        pf2 = s.open_device(pf, token=TOK)
        rows.append(Row("PF open while a VF is open, right token", "OK", "OK", None))
        row("PF FEATURE SET TOK2 while a VF is open", "OK", lambda: pf1.set_vf_token(TOK2))
        row("VF second open, old token", "EACCES", lambda: vf_probe(TOK))
        vf2 = s.open_device(vf, token=TOK2)
        rows.append(Row("VF second open, new token", "OK", "OK", None))
        for h in (vf1, vf2, pf2):
            h.close()
        # [E] no VF open: a PF open with a token sets it
        row("PF open, no token, no VF open", "OK", lambda: s.open_device(pf).close())
        pf3 = s.open_device(pf, token=WRONG)
        rows.append(Row("PF open with a token, no VF open", "OK", "OK", None))
        row("VF open, the token the PF open set", "OK", lambda: vf_probe(WRONG))
        row("VF open, the token before that", "EACCES", lambda: vf_probe(TOK2))
        pf3.close()
        pf1.close()
        # [F] all PF fds closed: the token persists
        row("VF open, last token after PF closed", "OK", lambda: vf_probe(WRONG))
        row("VF open, no token after PF closed", "EACCES", vf_probe)
        # [G] a device without SR-IOV
        if plain is not None:
            row("non-SR-IOV open with a vf_token", "EINVAL",
                lambda: s.open_device(plain, token=TOK).close())
            pl = s.open_device(plain)
            rows.append(Row("non-SR-IOV open, no token", "OK", "OK", None))
            row("non-SR-IOV FEATURE SET", "ENOTTY", lambda: pl.set_vf_token(TOK))
            row("non-SR-IOV FEATURE PROBE answers no", "OK",
                lambda: _assert(not pl.probe_vf_token()))
            pl.close()
        row("GET_DEVICE_FD of an unknown name", "ENODEV",
            lambda: raw_probe(pf_group, "0000:ff:1f.7"))
    finally:
        s.close()
    return rows


def _assert(value: object) -> None:
    if not value:
        raise AssertionError("unexpected answer")


def _group(host: Host, name: str) -> int:
    return int(host.readlink(f"sys/bus/pci/devices/{name}/iommu_group").rsplit("/", 1)[1])


def assert_rows(rows: list[Row]) -> None:
    bad = [f"{r.name}: expected {r.expected}, got {r.got} ({r.error})" for r in rows
           if not r.ok]
    assert not bad, "\n".join(bad)


# -- the real kernel -------------------------------------------------------------------------
IN_VM = os.environ.get("VFIOCTL_IN_TEST_VM") == "1"


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``vfioctl --host linux ARGS`` as a subprocess, as the user types it."""
    return subprocess.run([sys.executable, "-m", "vfioctl.cli.main", "--host", "linux",
                           *args], capture_output=True, text=True, input=stdin,
                          check=False, timeout=120)


@pytest.fixture(scope="module")
def walkthrough(kernel: object, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[dict[str, subprocess.CompletedProcess[str]]]:
    """The README walk-through on the guest's NVMe PF, each step a vfioctl process."""
    from .guest_kernel import PCI_DEVICES, GuestKernel

    assert isinstance(kernel, GuestKernel)
    state = tmp_path_factory.mktemp("state")
    os.environ["VFIOCTL_STATE_DIR"] = str(state)
    done: dict[str, subprocess.CompletedProcess[str]] = {}
    done["detach"] = run_cli("detach", PF)
    assert done["detach"].returncode == 0, done["detach"].stderr
    # docs/kernel.md "The test guest": disable resets before anything opens the PF
    # (QEMU 7.2's NVMe).
    kernel.write(PCI_DEVICES / PF / "reset_method", "\n")
    try:
        done["sriov"] = run_cli("sriov", PF, "--numvfs", "2", "--yes")
        kernel.wait_for("VFs on vfio-pci", lambda: all(
            kernel.exists(v) and kernel.driver(v) == "vfio-pci" for v in (VF, VF2)))
        done["token set"] = run_cli("token", "set", PF)
        done["token check"] = run_cli("token", "check", VF)
        done["token check --no-token"] = run_cli("token", "check", VF, "--no-token")
        done["token show"] = run_cli("token", "show", PF)
        yield done
    finally:
        run_cli("token", "forget", PF)
        run_cli("sriov", PF, "--numvfs", "0", "--yes")
        run_cli("reattach", PF)
        if kernel.vfio_pci_param("enable_sriov") != "N":
            kernel.set_vfio_pci_param("enable_sriov", "N")
        os.environ.pop("VFIOCTL_STATE_DIR", None)


@pytest.mark.skipif(not IN_VM, reason="real kernel: runs in the test VM")
def test_vf_token_walkthrough(walkthrough: dict[str, subprocess.CompletedProcess[str]]
                              ) -> None:
    from .checks import token_open_path

    w = walkthrough
    assert w["sriov"].returncode == 0, w["sriov"].stderr
    for vf in (VF, VF2):
        assert vf in w["sriov"].stdout
    assert w["token set"].returncode == 0, w["token set"].stderr
    assert w["token check"].returncode == 0, w["token check"].stderr
    assert f"VF {VF}: opened through VFIO ({token_open_path()} path) with the stored VF " \
        "token" in w["token check"].stdout
    refused = w["token check --no-token"]
    assert refused.returncode == 6, refused.stderr
    assert f"VF token required for {VF}; its PF {PF} is driven from userspace" in \
        refused.stderr
    assert "EACCES" in refused.stderr and f"vfioctl token set {PF}" in refused.stderr
    assert "current" in w["token show"].stdout


@pytest.mark.skipif(not IN_VM, reason="real kernel: runs in the test VM")
def test_vf_token_rows_on_the_group_path(walkthrough: object) -> None:
    from vfioctl.host.linux import LinuxHost

    host = LinuxHost("/")
    rows = token_rows(host, PF, VF, None)
    assert_rows(rows)


@pytest.mark.skipif(not IN_VM, reason="real kernel: runs in the test VM")
def test_vf_token_open_path_on_this_kernel(walkthrough: object) -> None:
    """6.1 has no vfio cdev: the open falls back to the group path silently. A kernel
    with the cdev and ``VFIO_DEVICE_BIND_FLAG_TOKEN`` (the tier's 7.3) opens the VF
    through ``/dev/vfio/devices/vfioN`` with the token; the group path still carries it
    when asked for."""
    from vfioctl.host.linux import LinuxHost
    from vfioctl.manager import HostdevManager

    from .checks import token_open_path

    host = LinuxHost("/")
    HostdevManager(host).set_token(PF, TOK)
    expected = token_open_path()
    assert Path("/dev/vfio/devices").exists() == (expected == PATH_CDEV)
    with open_device(host, VF, token=TOK) as handle:
        assert handle.path == expected
    with open_device(host, VF, token=TOK, cdev=False) as handle:
        assert handle.path == PATH_GROUP


@pytest.mark.skipif(not IN_VM, reason="real kernel: runs in the test VM")
def test_vf_token_lifecycle_and_stale_copy(walkthrough: object) -> None:
    """set → check; fds closed, token persists; a PF open with another token while no
    VF is open replaces it behind vfioctl's back: the stored copy is reported stale."""
    from vfioctl.host.linux import LinuxHost
    from vfioctl.manager import HostdevManager

    host = LinuxHost("/")
    HostdevManager(host).set_token(PF, TOK2)
    assert HostdevManager(host).check_vf(VF).with_token
    assert HostdevManager(host).check_vf(VF2).with_token  # persists across opens/closes
    with open_device(host, PF, token=WRONG):       # sets WRONG: no VF is open
        pass
    with pytest.raises(VfTokenRejected, match=r"stored VF token of PF .* is stale"), \
            HostdevManager(host).open_vf(VF):
        pass
    # while a VF is open, set_token reopens the PF with the stored (current) token
    HostdevManager(host).set_token(PF, TOK)
    with HostdevManager(host).open_vf(VF) as vf_handle:
        assert vf_handle.info.num_regions >= 9
        # PF busy with a VF user: opened with the stored TOK; --force to rotate under it
        HostdevManager(host).set_token(PF, TOK2, force=True)
        with HostdevManager(host).open_vf(VF2) as other:
            assert other.info.flags & uapi.VFIO_DEVICE_FLAGS_PCI


@pytest.mark.skipif(not IN_VM, reason="real kernel: runs in the test VM")
def test_vf_token_errors_are_mapped(walkthrough: object) -> None:
    from vfioctl.host.linux import LinuxHost
    from vfioctl.manager import HostdevManager

    host = LinuxHost("/")
    with pytest.raises(TokenNotAccepted, match=f"{VF} is not an SR-IOV PF bound to"):
        HostdevManager(host).set_token(VF)
    with VfioSession(host) as s:
        s.group(_group(host, VF))
        with pytest.raises(GroupBusy), open_device(host, VF, token=TOK):
            pass
