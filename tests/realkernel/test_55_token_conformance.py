"""Conformance of the VF token contract, path by path: the group path
(``VFIO_GROUP_GET_DEVICE_FD`` with ``"ADDR vf_token=UUID"``) on every kernel, the cdev
path (``VFIO_DEVICE_BIND_IOMMUFD`` with ``VFIO_DEVICE_BIND_FLAG_TOKEN``) where the kernel
has ``/dev/vfio/devices``.

The scenarios are this repository's own reading of the kernel's contract — the cases
the kernel's selftest ``tools/testing/selftests/vfio/vfio_pci_sriov_uapi_test.c`` names
(a matching, a wrong and a missing token on a VF open; the PF closed early; the token
overridden) widened to what ``drivers/vfio/pci/vfio_pci_core.c`` says around them. Every
expected answer is a literal here, with the kernel function it comes from; the product's
VFIO API (``vfioctl.vfio.device.open_device``) is what is driven, never what decides.

What a path changes is one rule, also from source (:func:`expect`): the token rules
(``vfio_pci_core_match_token_uuid()``, ``vfio_pci_validate_vf_token()`` before 6.17) are
the same on both paths from 6.17 on; a 6.6-6.16 cdev rejects the token flag (EINVAL, the
product goes to the group path) and checks no token at all on a bind without it; a 6.17
cdev fails a bind carrying the token pointer with E2BIG (the product goes to the group
path) and checks the token on one without it.

:func:`run_scenario` is a pure function of a Host: the fast suite runs every scenario on
the simulator (tests/token/test_conformance.py), and here each one runs on the guest's
kernel and on its simulated twin; the kernel is asserted, the twin's differences go to
the differential report (test_90).

Starts from: the boot drivers (vfio-pci may be loaded). Leaves: the PF back on its boot
driver, no VFs, enable_sriov N, its reset_method as found, nothing open.
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

import pytest

from vfioctl.errors import VfioctlError
from vfioctl.host import uapi
from vfioctl.host.base import Host
from vfioctl.secret import VfToken
from vfioctl.vfio.device import DeviceHandle, open_device

A = VfToken(uuid.UUID("52ac9bff-0000-4000-8000-00000000000a"))
B = VfToken(uuid.UUID("88594674-0000-4000-8000-00000000000b"))
ZERO = VfToken(uuid.UUID(int=0))
PF, VF, VF2 = "0000:01:00.0", "0000:01:00.1", "0000:01:00.2"

GROUP, CDEV = "group", "cdev"
PATHS = (GROUP, CDEV)


# -- what each kernel generation does with a bind (source: drivers/vfio/device_cdev.c) ----
def generation(release: str) -> str:
    """``"token"`` (6.18 on: token rules on the cdev), ``"e2big"`` (6.17: the bind's
    struct copy is E2BIG with a token pointer), ``"flags-zero"`` (6.6-6.16: flags must
    be 0, no token check), ``"none"`` (no cdev)."""
    parts = release.split(".")
    try:
        version = (int(parts[0]), int(parts[1]))
    except (IndexError, ValueError):
        return "none"
    if version < (6, 6):
        return "none"
    if version < (6, 17):
        return "flags-zero"
    if version < (6, 18):
        return "e2big"
    return "token"


def expect(rule: str, path: str, gen: str, *, token: bool) -> str:
    """The answer the product must report for one open, from the token rule ``rule``
    ("OK" or an errno name, the group path's answer) and how ``path`` carries a token on
    this kernel generation: "OK:<path>" or the errno name.

    - group path: the rule, ``vfio_pci_core_match()``;
    - cdev, 6.18 on: the rule, through ``vfio_df_check_token()``;
    - cdev, 6.17: a token is E2BIG (``copy_struct_from_user()`` with ksize
      ``offsetofend(out_devid)``), the product falls back: the rule, on the group path;
      without a token: the rule, on the cdev;
    - cdev, 6.6-6.16: a token is EINVAL (``bind.flags`` must be 0), the product falls
      back: the rule, on the group path; without one nothing checks a token: OK, cdev.
    """
    if path == GROUP or gen == "none":
        return f"OK:{GROUP}" if rule == "OK" else rule
    if gen == "token" or (gen == "e2big" and not token):
        return f"OK:{CDEV}" if rule == "OK" else rule
    if token:
        return f"OK:{GROUP}" if rule == "OK" else rule
    return f"OK:{CDEV}"                             # flags-zero, no token: unchecked


# -- the scenarios --------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    scenario: str
    name: str
    expected: str
    got: str

    @property
    def ok(self) -> bool:
        return self.expected == self.got

    def __str__(self) -> str:
        return f"{self.scenario}: {self.name}: expected {self.expected}, got {self.got}"


def _answer(fn: Callable[[], DeviceHandle | None]) -> tuple[str, DeviceHandle | None]:
    try:
        handle = fn()
    except VfioctlError as err:
        cause = err.__cause__
        code = getattr(err, "errno", None) or (cause.errno if isinstance(cause, OSError)
                                                else None)
        return errno.errorcode.get(code or 0, f"error {type(err).__name__}"), None
    except OSError as err:
        return errno.errorcode.get(err.errno or 0, str(err.errno)), None
    return (f"OK:{handle.path}" if handle is not None else "OK"), handle


class Run:
    """One scenario on one host and path: opens through the product, records answers."""

    def __init__(self, host: Host, path: str, gen: str, scenario: str) -> None:
        self.host, self.path, self.gen, self.scenario = host, path, gen, scenario
        self.steps: list[Step] = []
        self.stack = contextlib.ExitStack()
        self.held: dict[int, contextlib.ExitStack] = {}

    def open(self, name: str, addr: str, token: VfToken | None, rule: str, *,
             hold: bool = False) -> DeviceHandle | None:
        """Open ``addr`` (with ``token``); ``rule`` is the token rule's answer. Closed at
        once unless ``hold``."""
        want = expect(rule, self.path, self.gen, token=token is not None)
        cm = open_device(self.host, addr, token=token, cdev=self.path == CDEV)
        own = contextlib.ExitStack()
        got, handle = _answer(lambda: own.enter_context(cm) if hold else _open_close(cm))
        self.steps.append(Step(self.scenario, name, want, got))
        if not hold or handle is None:
            return None
        self.held[id(handle)] = own
        self.stack.callback(own.close)
        return handle

    def close(self, handle: DeviceHandle | None) -> None:
        """Close a held device and everything its open opened (group, container)."""
        if handle is not None:
            self.held.pop(id(handle)).close()

    def check(self, name: str, expected: str, fn: Callable[[], object]) -> None:
        got, _ = _answer(lambda: (fn(), None)[1])
        self.steps.append(Step(self.scenario, name, expected, got))


def _open_close(cm: contextlib.AbstractContextManager[DeviceHandle]) -> DeviceHandle:
    with cm as handle:
        return handle


def _info(host: Host, handle: DeviceHandle | None) -> None:
    """``DEVICE_GET_INFO`` on a held device: it is still usable."""
    if handle is None:
        raise AssertionError("the device was not opened")
    buf = uapi.pack_device_info()
    host.ioctl(handle.fd, uapi.VFIO_DEVICE_GET_INFO, buf)
    if not uapi.unpack_device_info(buf).flags & uapi.VFIO_DEVICE_FLAGS_PCI:
        raise AssertionError("not a PCI device")


def _set(handle: DeviceHandle | None, token: VfToken) -> None:
    if handle is None:
        raise AssertionError("the PF was not opened")
    handle.set_vf_token(token)


def fresh_bind(r: Run) -> None:
    """Nobody has opened the PF since it was bound: its token is the random one
    ``vfio_pci_vf_init()`` made (``uuid_gen()``), so no chosen UUID opens a VF."""
    r.open("VF, no token", VF, None, "EACCES")      # match_token_uuid: !uuid
    r.open("VF, token A", VF, A, "EACCES")          # !uuid_equal
    r.open("VF, all-zero token", VF, ZERO, "EACCES")


def match_while_pf_open(r: Run) -> None:
    """The PF opened with A while no VF is open sets A (``uuid_copy()`` in the PF branch:
    ``vf_token->users`` is 0); VFs opened while the PF is held are checked against it
    (the VF branch: ``uuid_equal(uuid, &pf_vdev->vf_token->uuid)``)."""
    pf = r.open("PF, token A, no VF open (sets A)", PF, A, "OK", hold=True)
    r.open("VF, token A", VF, A, "OK")
    r.open("VF, token B", VF, B, "EACCES")
    r.open("VF, no token", VF, None, "EACCES")
    r.open("VF2, token A", VF2, A, "OK")
    r.close(pf)


def pf_closed_early(r: Run) -> None:
    """The PF's close path (``vfio_pci_core_close_device()``) only lowers a *VF's* count
    on its PF; the token lives in the PF's ``vfio_pci_core_device`` until
    ``vfio_pci_vf_uninit()`` (unbind): VFs opened after every PF fd closed still need A."""
    pf = r.open("PF, token A (sets A)", PF, A, "OK", hold=True)
    r.close(pf)
    r.open("PF closed; VF, token A", VF, A, "OK")
    r.open("PF closed; VF, token B", VF, B, "EACCES")
    r.open("PF closed; VF, no token", VF, None, "EACCES")


def vf_outlives_pf(r: Run) -> None:
    """A VF opened while the PF is open stays usable after the PF closes (nothing in the
    PF's close path touches its VFs), and keeps counting as a VF user
    (``vf_token->users``, raised in ``vfio_pci_core_finish_enable()``): a PF reopen then
    needs the token."""
    pf = r.open("PF, token A (sets A)", PF, A, "OK", hold=True)
    vf = r.open("VF, token A (held)", VF, A, "OK", hold=True)
    r.close(pf)
    r.check("PF closed; the held VF answers DEVICE_GET_INFO", "OK", lambda: _info(r.host, vf))
    r.open("PF closed; VF2, token A", VF2, A, "OK")
    r.open("PF reopen while a VF is open, no token", PF, None, "EACCES")  # users && !uuid
    r.open("PF reopen while a VF is open, token B", PF, B, "EACCES")     # users, !equal
    r.open("PF reopen while a VF is open, token A", PF, A, "OK")
    r.open("the token is still A: VF2, token A", VF2, A, "OK")           # no uuid_copy
    r.close(vf)


def override_no_vf_open(r: Run) -> None:
    """``VFIO_DEVICE_FEATURE`` SET of PCI_VF_TOKEN (``vfio_pci_core_feature_token()``)
    copies the new UUID under the lock, unconditionally: B replaces A."""
    pf = r.open("PF, token A (sets A)", PF, A, "OK", hold=True)
    r.check("PF FEATURE SET B", "OK", lambda: _set(pf, B))
    r.open("VF, token B", VF, B, "OK")
    r.open("VF, token A (overridden)", VF, A, "EACCES")
    r.open("VF, no token", VF, None, "EACCES")
    r.close(pf)
    r.open("PF closed; VF, token B", VF, B, "OK")


def override_vf_open(r: Run) -> None:
    """SET also works while VFs are open (``vfio_pci_core_feature_token()`` does not look
    at ``users``): the open VF keeps working, new VF opens need B, and so does a PF
    reopen (``users`` is not 0)."""
    pf = r.open("PF, token A (sets A)", PF, A, "OK", hold=True)
    vf = r.open("VF, token A (held)", VF, A, "OK", hold=True)
    r.check("PF FEATURE SET B while a VF is open", "OK", lambda: _set(pf, B))
    r.check("the held VF answers DEVICE_GET_INFO", "OK", lambda: _info(r.host, vf))
    r.open("VF2, token A (overridden)", VF2, A, "EACCES")
    r.open("VF2, token B", VF2, B, "OK")
    r.close(pf)
    r.open("PF reopen while a VF is open, token A", PF, A, "EACCES")
    r.open("PF reopen while a VF is open, token B", PF, B, "OK")
    r.close(vf)


def override_by_open(r: Run) -> None:
    """A PF open with a token while no VF is open sets it (``uuid_copy()``), while one is
    open it must match (EACCES) and changes nothing."""
    pf = r.open("PF, token A (sets A)", PF, A, "OK", hold=True)
    r.close(pf)
    r.open("PF, token B, no VF open (sets B)", PF, B, "OK")
    r.open("VF, token A (replaced)", VF, A, "EACCES")
    vf = r.open("VF, token B (held)", VF, B, "OK", hold=True)
    r.open("PF, token A while a VF is open", PF, A, "EACCES")
    r.open("the token is still B: VF2, token B", VF2, B, "OK")
    r.close(vf)
    r.open("PF, no token, no VF open", PF, None, "OK")  # no uuid: nothing to check


SCENARIOS: dict[str, Callable[[Run], None]] = {
    "fresh bind": fresh_bind,
    "match while the PF is open": match_while_pf_open,
    "PF closed early": pf_closed_early,
    "VF outlives the PF": vf_outlives_pf,
    "override, no VF open": override_no_vf_open,
    "override while a VF is open": override_vf_open,
    "override by a PF open": override_by_open,
}


def run_scenario(host: Host, name: str, path: str, release: str) -> list[Step]:
    """Run one scenario; the PF must be on vfio-pci with VF and VF2 captured by
    vfio-pci and nothing open. ``fresh bind`` is meaningful only as the first scenario
    after the PF's bind. Everything opened is closed at the end."""
    r = Run(host, path, generation(release), name)
    with r.stack:
        SCENARIOS[name](r)
    return r.steps


def release_of(host: Host) -> str:
    return host.read_text(PurePosixPath("proc/sys/kernel/osrelease")).strip()


def has_cdev(host: Host) -> bool:
    return host.exists(PurePosixPath("dev/vfio/devices")) and \
        host.exists(PurePosixPath("dev/iommu"))


# -- the real kernel -------------------------------------------------------------------------
IN_VM = os.environ.get("VFIOCTL_IN_TEST_VM") == "1"


@pytest.fixture(scope="module")
def userspace_pf(kernel: object) -> Iterator[object]:
    """The NVMe PF on vfio-pci with two VFs captured, by raw sysfs writes mirrored on
    the twin (guest_kernel.py); everything put back afterwards."""
    from .guest_kernel import PCI_DEVICES, GuestKernel

    assert isinstance(kernel, GuestKernel)
    boot_driver = kernel.driver(PF)
    reset = kernel.attr(PF, "reset_method")
    kernel.modprobe("vfio-pci")
    # docs/kernel.md "The test guest": QEMU 7.2's NVMe loses its VFs on FLR; no reset
    # before anything opens the PF.
    kernel.write(PCI_DEVICES / PF / "reset_method", "\n")
    try:
        assert kernel.bind(PF, "vfio-pci") == "vfio-pci"
        kernel.set_vfio_pci_param("enable_sriov", "Y")
        kernel.write(PCI_DEVICES / PF / "sriov_numvfs", "2")
        kernel.wait_for("VFs on vfio-pci", lambda: all(
            kernel.exists(v) and kernel.driver(v) == "vfio-pci" for v in (VF, VF2)))
        yield kernel
    finally:
        if kernel.exists(VF):
            kernel.write(PCI_DEVICES / PF / "sriov_numvfs", "0")
        kernel.unbind(PF)
        kernel.clear_override(PF)
        kernel.probe(PF)
        if boot_driver is not None:
            kernel.wait_for(f"{PF} back on {boot_driver}",
                            lambda: kernel.driver(PF) == boot_driver)
        kernel.set_vfio_pci_param("enable_sriov", "N")
        kernel.write(PCI_DEVICES / PF / "reset_method", reset or "\n")


def _both(kernel: object, differential: object, name: str, path: str) -> list[Step]:
    """The scenario on the kernel (returned, to assert) and on the twin (its differences
    from the expectations become differential findings)."""
    from vfioctl.host.linux import LinuxHost

    from .differential import Differential
    from .guest_kernel import GuestKernel

    assert isinstance(kernel, GuestKernel) and isinstance(differential, Differential)
    live = LinuxHost("/")
    steps = run_scenario(live, name, path, os.uname().release)
    twin = kernel.twin
    if twin is not None:
        sim = twin.fs
        assert isinstance(sim, Host)
        if path == CDEV and not has_cdev(sim):
            differential.findings.append(
                f"token conformance, {name}: the kernel ({os.uname().release}) has the "
                f"vfio cdev, the twin ({release_of(sim)}) has none")
        else:
            twin_steps = run_scenario(sim, name, path, release_of(sim))
            differential.findings += [f"token conformance ({path}), {s}" for s in twin_steps
                                      if not s.ok]
    return steps


def _assert(steps: list[Step]) -> None:
    bad = [str(s) for s in steps if not s.ok]
    assert not bad, "\n".join(bad)
    assert steps


@pytest.mark.skipif(not IN_VM, reason="real kernel: runs in the test VM")
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_token_contract(userspace_pf: object, differential: object, name: str,
                        path: str) -> None:
    if path == CDEV and not os.path.exists("/dev/vfio/devices"):
        pytest.skip(f"kernel {os.uname().release} has no /dev/vfio/devices (no "
                    "CONFIG_IOMMUFD + CONFIG_VFIO_DEVICE_CDEV): the cdev path is not "
                    "available; the group path runs")
    if name == "fresh bind":
        # meaningful only before anything opened the PF: rebind it for a new random token
        from .guest_kernel import GuestKernel
        assert isinstance(userspace_pf, GuestKernel)
        _rebind(userspace_pf)
    _assert(_both(userspace_pf, differential, name, path))


@pytest.mark.skipif(not IN_VM, reason="real kernel: runs in the test VM")
def test_the_twin_gives_the_same_answers(userspace_pf: object, differential: object
                                         ) -> None:
    """Every scenario above also ran on the simulated twin: its answers equal the
    expectations (a twin without the kernel's cdev is reported by test_90 instead)."""
    from .differential import Differential

    assert isinstance(differential, Differential)
    if not differential.enabled:
        pytest.skip("no simulated twin (vfioctl.sim not importable)")
    wrong = [f for f in differential.findings
             if f.startswith("token conformance (")]
    assert not wrong, "\n".join(wrong)


def _rebind(kernel: object) -> None:
    """PF off and back onto vfio-pci (``vfio_pci_vf_uninit()``/``_init()``: a new
    random token), VFs re-created."""
    from .guest_kernel import PCI_DEVICES, GuestKernel

    assert isinstance(kernel, GuestKernel)
    kernel.write(PCI_DEVICES / PF / "sriov_numvfs", "0")
    kernel.unbind(PF)
    kernel.probe(PF)
    assert kernel.driver(PF) == "vfio-pci"
    kernel.write(PCI_DEVICES / PF / "sriov_numvfs", "2")
    kernel.wait_for("VFs on vfio-pci", lambda: all(
        kernel.exists(v) and kernel.driver(v) == "vfio-pci" for v in (VF, VF2)))
