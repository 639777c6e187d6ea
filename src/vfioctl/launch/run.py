"""Launch: start a guest's QEMU with its PCI hostdevs, keeping VF tokens off its command
line, and give the devices back afterwards.

:func:`start`, in numbered steps, each undone in reverse order when a later one fails:

1. check everything that needs no change: the domain, the QEMU's capabilities, the VF
   tokens against the host (``hostcheck``), unmanaged devices already on vfio-pci, no
   devices still held for this domain, no QEMU of this domain still running;
2. take the devices: one :meth:`HostdevManager.prepare` for the domain's name (managed
   ones detached to vfio-pci, ``group='allow'`` ones with their whole IOMMU group) —
   the plan ``--dry-run`` prints is the manager's own (:func:`plan_devices`);
3. run QEMU paused (``-S``) in its own session, with a QMP socket in a 0700 runtime
   directory, stdout/stderr to a 0600 log there;
4. over QMP: ``device_add`` each token-bearing device (the token exists only inside
   that message on the unix socket), then ``cont``;
5. write the launch record (pid, socket; no token) that :func:`release` reads.

Any failure in 2-5 kills QEMU and calls :meth:`HostdevManager.release`, so the host is
as it was. QEMU keeps running after :func:`start` returns; when it has exited (or with
``stop=True``), :func:`release` gives the devices back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vfioctl.address import PciAddress
from vfioctl.conf.parse import DomainDocument
from vfioctl.errors import NotDetached, OperationInvalid, VfioctlError
from vfioctl.host.base import Host
from vfioctl.hostcheck import check_domain, resolve_vf_tokens
from vfioctl.launch.plan import (
    RECORD_NAME,
    QemuDevice,
    StartPlan,
    format_qmp,
    plan_start,
    redact_text,
    runtime_dir,
)
from vfioctl.launch.qmp import QemuError, QmpCommand, SendHook, run_commands
from vfioctl.launch.untranslated import Untranslated
from vfioctl.manager import Action, HostdevManager, Plan, Report
from vfioctl.pci.device import VFIO_DRIVER, get_device
from vfioctl.qemu.argv import format_props_json
from vfioctl.qemu.caps import QemuCaps
from vfioctl.qemu.props import Props

log = logging.getLogger(__name__)

Standin = Callable[[QemuDevice], Props]
"""Maps a vfio-pci device to the properties of the device QEMU really creates."""


def standin_device(driver: str) -> Standin:
    """A :data:`Standin` that replaces every vfio-pci device by ``driver`` (e.g.
    ``pci-testdev`` or ``e1000``) with the same id, bus and address — for tests and demos
    on machines without the hardware. Everything else (the manager, the QMP hot-add
    path, ``cont``) runs as for real; the token is simply not sent."""

    def build(dev: QemuDevice) -> Props:
        props: Props = {"driver": driver, "id": dev.props["id"], "bus": dev.props["bus"]}
        if "multifunction" in dev.props:
            props["multifunction"] = dev.props["multifunction"]
        props["addr"] = dev.props["addr"]
        return props

    return build


@dataclass(frozen=True)
class Launch:
    """A started guest: QEMU's pid and QMP socket, and what the manager did."""

    name: str
    pid: int
    qmp_socket: Path
    log_file: Path
    runtime_dir: Path
    actions: tuple[Action, ...]
    plan: StartPlan = field(repr=False)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Release:
    """What :func:`release` did: the QEMU it stopped (if any) and the manager's report."""

    name: str
    stopped_pid: int | None
    report: Report


# -- step 1: checks ---------------------------------------------------------------------------
def check_start(host: Host, doc: DomainDocument, caps: QemuCaps, *, binary: str,
                extra_args: Sequence[str] = (), allow_untrusted_pf: bool = False,
                untranslated: Untranslated = "refuse") -> StartPlan:
    """Plan the launch and run every check that needs no change (``--dry-run`` stops here).

    ``<vf-token/>`` references are resolved here, from vfioctl's token store: the plan
    holds the tokens (redacted in its repr and in everything shown) for QMP only.

    Raises:
        ConfigError / UnsupportedConfig / UsageError: from :func:`plan_start`.
        DeviceNotFound / ConfigError: a hostdev missing, a VF-token inconsistency (see
            :func:`vfioctl.hostcheck.check_domain`), an untrusted PF for a confidential
            guest without ``allow_untrusted_pf``.
        NotDetached: a ``managed='no'`` device is not on vfio-pci.
    """
    checked = check_domain(host, doc.domain, allow_untrusted_pf=allow_untrusted_pf)
    resolved = dataclasses.replace(doc, domain=resolve_vf_tokens(host, doc.domain))
    plan = plan_start(resolved, caps, binary=binary, state_dir=host.state_dir,
                      extra_args=extra_args, untranslated=untranslated)
    plan = dataclasses.replace(plan, warnings=checked.warnings)
    for hd in doc.domain.hostdevs:
        dev = get_device(host, hd.source)
        if not hd.managed and dev.driver != VFIO_DRIVER and not dev.is_vfio_variant:
            raise NotDetached(
                f"Unmanaged PCI device {hd.source} must be manually detached from the host "
                f"(it is on {dev.driver or 'no driver'})",
                hint=f"run 'vfioctl detach {hd.source}', or set managed='yes' on the hostdev")
    return plan


def _prepare_request(plan: StartPlan) -> tuple[list[PciAddress], set[PciAddress]]:
    """The domain's hostdevs as one manager request: every device, and the ones whose
    whole IOMMU group comes with them (``group='allow'``)."""
    addrs = [a for call in plan.prepare for a in call.addrs]
    group = {a for call in plan.prepare if call.group for a in call.addrs}
    return addrs, group


def plan_devices(host: Host, plan: StartPlan) -> Plan:
    """The manager's own plan for taking the domain's devices (what :func:`start` then
    executes); changes nothing."""
    addrs, group = _prepare_request(plan)
    return HostdevManager(host).plan_prepare(plan.name, addrs, group=group)


def describe_start(host: Host, plan: StartPlan) -> list[str]:
    """The plan for people (``--dry-run``): the manager's plan, QEMU argv, QMP commands —
    tokens redacted. Reads the host; changes nothing.

    Raises:
        The manager's refusal, exactly as :func:`start` would raise it.
    """
    devices = plan_devices(host, plan)
    devices.check()
    lines = [f"domain {plan.name}: devices held for owner '{plan.name}' on host {host.name}"]
    lines.append("manager (prepare, in this order):")
    lines += [f"  {line}" for line in devices.describe()]
    lines.append(f"QEMU command line ({plan.caps_source}):")
    lines += [f"  {arg}" for arg in plan.argv]
    lines.append(f"QMP on {plan.qmp_socket}:")
    lines += [f"  {format_qmp(cmd)}" for cmd in plan.qmp_commands()]
    lines.append(f"QEMU log: {plan.log_file}")
    return lines


# -- start ------------------------------------------------------------------------------------
def start(host: Host, doc: DomainDocument, caps: QemuCaps, *, binary: str,
          extra_args: Sequence[str] = (), timeout: float = 30.0,
          standin: Standin | None = None, on_send: SendHook | None = None,
          allow_untrusted_pf: bool = False, untranslated: Untranslated = "refuse"
          ) -> Launch:
    """Start the domain's QEMU with its hostdevs; see the module docstring for the steps.

    Args:
        host: where the devices are.
        doc: the parsed and validated domain.
        caps: the QEMU's capabilities (``vf-token`` needs 8.1).
        binary: the QEMU to run.
        extra_args: appended to the command line.
        timeout: seconds for QMP to come up, and for each QMP command.
        standin: a test seam: what QEMU really creates for each vfio-pci device
            (see :func:`standin_device`); None for the real devices.
        on_send: a test seam: called with each QMP command before it is sent.

    Returns:
        The running guest: pid, QMP socket, the manager's actions.

    Raises:
        Everything :func:`check_start` raises, before any change.
        DeviceInUse: devices are still held for this domain, or its QEMU still runs.
        Everything :meth:`HostdevManager.prepare` raises (nothing changed then).
        QemuExited / QmpTimeout / QmpCommandFailed / QemuError: QEMU failed; it was
            killed and the devices were released.
    """
    plan = check_start(host, doc, caps, binary=binary, extra_args=extra_args,
                       allow_untrusted_pf=allow_untrusted_pf, untranslated=untranslated)
    name = plan.name
    mgr = HostdevManager(host)
    _check_not_running(plan)
    held = [s.record.addr for s in mgr.status() if s.record.owner == name]
    if held:
        raise OperationInvalid(
            f"domain {name} still holds {', '.join(str(a) for a in held)} from an earlier "
            "start", hint=f"run 'vfioctl release {name}' first")

    # Step 2: take the devices (each prepare is all-or-nothing; earlier ones are undone
    # by release below).
    actions: list[Action] = []
    addrs, group = _prepare_request(plan)
    try:
        if addrs:
            actions += mgr.prepare(name, addrs, group=group).actions
    except BaseException as err:
        _undo_prepare(mgr, name, err)
        raise
    log.debug("start %s: %d devices held", name, len(actions))

    proc: subprocess.Popen[bytes] | None = None
    try:
        # Step 3: QEMU, paused, in its own session.
        _make_private_dir(plan.runtime_dir)
        _remove(plan.runtime_dir / RECORD_NAME)
        _remove(plan.qmp_socket)
        argv = _argv_with_standin(plan, standin)
        proc = _spawn(argv, plan.log_file)
        log.debug("start %s: QEMU pid %d", name, proc.pid)
        # Step 4: token-bearing devices over QMP, then cont.
        commands = [QmpCommand("device_add", standin(d) if standin else d.props,
                               label=d.dev_id) for d in plan.hotplugs]
        commands.append(QmpCommand("cont"))
        run_commands(plan.qmp_socket, commands, exited=proc.poll, timeout=timeout,
                     tokens=plan.tokens, pid=proc.pid, on_send=on_send)
        # Step 5: the record release reads.
        _write_record(plan, proc.pid, host)
    except BaseException as err:
        if proc is not None:
            _kill(proc)
        _remove(plan.qmp_socket)
        _remove(plan.runtime_dir / RECORD_NAME)
        if isinstance(err, QemuError) and err.hint is None:
            said = _last_log_line(plan.log_file, plan.tokens)
            err.hint = (f"QEMU said: {said}" if said else
                        f"see {plan.log_file}") + "; the devices were given back"
        _undo_prepare(mgr, name, err)
        raise
    return Launch(name=name, pid=proc.pid, qmp_socket=plan.qmp_socket,
                  log_file=plan.log_file, runtime_dir=plan.runtime_dir,
                  actions=tuple(actions), plan=plan, process=proc)


def _undo_prepare(mgr: HostdevManager, name: str, err: BaseException) -> None:
    try:
        mgr.release(name)
    except VfioctlError as rel_err:
        if isinstance(err, VfioctlError):
            extra = (f"giving the devices back failed too ({rel_err}); run "
                     f"'vfioctl release {name}'")
            err.hint = f"{err.hint}; {extra}" if err.hint else extra


def _argv_with_standin(plan: StartPlan, standin: Standin | None) -> list[str]:
    if standin is None:
        return list(plan.argv)
    swap = {format_props_json(d.props): format_props_json(standin(d))
            for d in plan.devices if not d.hotplug}
    return [swap.get(arg, arg) for arg in plan.argv]


def _spawn(argv: list[str], log_file: Path) -> subprocess.Popen[bytes]:
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW,
                 0o600)
    try:
        os.fchmod(fd, 0o600)
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd,
                                close_fds=True, start_new_session=True, umask=0o077)
    except OSError as err:
        raise QemuError(f"cannot run QEMU {argv[0]}: {err.strerror}",
                        hint="pass --qemu BIN or set the domain's <emulator>") from err
    finally:
        os.close(fd)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def _last_log_line(path: Path, tokens: Sequence[str]) -> str | None:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return redact_text(lines[-1], tokens) if lines else None


# -- the runtime directory and the launch record ---------------------------------------------
def _make_private_dir(path: Path) -> None:
    """Create ``path`` 0700 (and its parents), held to the state directory's rules: it
    is inside it (or a short fallback beside it), and QEMU's QMP socket and log go there,
    so a planted link or a directory another user owns is refused, not followed
    (:func:`vfioctl.state.secure.open_state_dir` walks from ``/`` without following one).

    Raises:
        StateUnsafe / PermissionDenied (exit 77): the path fails those checks.
    """
    from vfioctl.state.secure import open_state_dir

    opened = open_state_dir(path, create=True)
    if opened is not None:
        opened.close()


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _proc_starttime(pid: int) -> tuple[str, int] | None:
    """``(state, starttime)`` from /proc/PID/stat, or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = data[data.rfind(")") + 2:].split()
    return fields[0], int(fields[19])


def _write_record(plan: StartPlan, pid: int, host: Host) -> None:
    st = _proc_starttime(pid)
    doc: dict[str, Any] = {
        "domain": plan.name, "host": host.name, "pid": pid,
        "starttime": st[1] if st else None, "qmp_socket": str(plan.qmp_socket),
        "log": str(plan.log_file), "binary": plan.binary,
        "devices": [str(d.source) for d in plan.devices],
        "warnings": list(plan.warnings),   # e.g. an untrusted PF allowed: the opt-in
    }
    path = plan.runtime_dir / RECORD_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW,
                 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=1)


def read_record(host: Host, name: str) -> dict[str, Any] | None:
    """The launch record of ``name`` on ``host``, or None when there is none."""
    path = runtime_dir(host.state_dir, name) / RECORD_NAME
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _threads_left(pid: int) -> bool:
    """Whether a thread other than the leader ``pid`` is still in its thread group."""
    try:
        return any(tid != str(pid) for tid in os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return False


def _alive(record: dict[str, Any]) -> int | None:
    """The pid of the record's QEMU if that very process still runs, else None.

    A zombie leader is not enough: when QEMU exits, its main thread becomes a zombie
    while its other threads are still exiting, and they hold the shared file table —
    the VFIO container, group and device fds — until the last one is gone (measured on
    the vmtest guest: ``release --stop`` then met an open group, EBUSY).
    """
    pid = record.get("pid")
    if not isinstance(pid, int):
        return None
    st = _proc_starttime(pid)
    if st is None or (st[0] in ("Z", "X") and not _threads_left(pid)):
        return None
    if record.get("starttime") is not None and st[1] != record["starttime"]:
        return None  # the pid was reused
    return pid


def _check_not_running(plan: StartPlan) -> None:
    path = plan.runtime_dir / RECORD_NAME
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    pid = _alive(record) if isinstance(record, dict) else None
    if pid is not None:
        raise OperationInvalid(f"QEMU (pid {pid}) of domain {plan.name} is still running",
                               hint=f"stop it, then run 'vfioctl release {plan.name}'")


# -- release ----------------------------------------------------------------------------------
def release(host: Host, name: str, *, stop: bool = False, timeout: float = 10.0) -> Release:
    """Give back what ``start`` took for ``name``: the managed devices return to their
    original drivers, unmanaged ones stay on vfio-pci (held for nobody).

    Args:
        host: where the devices are.
        name: the domain's name (the owner).
        stop: if the domain's QEMU still runs, end it first (SIGTERM, then SIGKILL after
            ``timeout`` seconds) instead of refusing.
        timeout: seconds to wait for QEMU to exit after SIGTERM.

    Raises:
        OperationInvalid: the domain's QEMU still runs and ``stop`` is not set.
        Everything :meth:`HostdevManager.release` raises.
    """
    record = read_record(host, name)
    stopped: int | None = None
    if record is not None:
        pid = _alive(record)
        if pid is not None:
            if not stop:
                raise OperationInvalid(
                    f"QEMU (pid {pid}) of domain {name} is still running: its devices "
                    "cannot be given back", hint=f"shut the guest down (QMP 'quit' on "
                    f"{record.get('qmp_socket')}), or pass --stop")
            _terminate(pid, record, timeout)
            stopped = pid
    report = HostdevManager(host).release(name)
    rdir = runtime_dir(host.state_dir, name)
    _remove(rdir / RECORD_NAME)
    _remove(rdir / "qmp.sock")
    return Release(name, stopped, report)


def _terminate(pid: int, record: dict[str, Any], timeout: float) -> None:
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child
            if _alive(record) is None:
                return
            time.sleep(0.05)
    raise OperationInvalid(f"QEMU (pid {pid}) did not exit after SIGKILL",
                           hint="check the process, then run release again")
