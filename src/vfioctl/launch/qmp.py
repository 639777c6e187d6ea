"""Launch: the QMP conversation with a paused QEMU (``device_add`` …, then ``cont``).

``qemu.qmp`` and ``asyncio`` are imported on first use only, so that importing vfioctl
(and ``vfioctl --help``) stays light.

Secrecy: the only message that carries a VF token is a ``device_add`` written to the
unix socket. ``qemu.qmp`` logs every message at DEBUG level ("--> {…}"); the client
used here logs them with the tokens replaced by ``<redacted>``, and errors QEMU sends
back are redacted the same way before they become a :class:`QmpCommandFailed`, which is
raised without chaining the library's exception (that one holds the sent message).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vfioctl.errors import VfioctlError
from vfioctl.launch.plan import redact_text


class QemuError(VfioctlError):
    """QEMU did not get to a running guest: it exited, did not answer, or refused a
    command. ``pid`` is the QEMU process (already killed when this is raised)."""

    exit_code = 1

    def __init__(self, message: str, *, pid: int | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.pid = pid


class QemuExited(QemuError):
    """QEMU exited before the guest was running; ``status`` is its exit status."""

    def __init__(self, message: str, *, pid: int | None = None, status: int | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message, pid=pid, hint=hint)
        self.status = status


class QmpTimeout(QemuError):
    """QEMU's QMP socket did not accept a connection, or a command got no answer, in time."""


class QmpCommandFailed(QemuError):
    """QEMU answered a QMP command with an error (message already redacted)."""

    def __init__(self, message: str, *, command: str, error_class: str | None,
                 dev_id: str | None = None, pid: int | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message, pid=pid, hint=hint)
        self.command = command
        self.error_class = error_class
        self.dev_id = dev_id


@dataclass(frozen=True)
class QmpCommand:
    """One command to execute; ``label`` names it in messages (e.g. the device id)."""

    execute: str
    arguments: Mapping[str, object] | None = field(default=None, repr=False)
    label: str | None = None


SendHook = Callable[[str, Mapping[str, object] | None], None]


def run_commands(socket_path: Path, commands: Sequence[QmpCommand], *,
                 exited: Callable[[], int | None], timeout: float,
                 tokens: Sequence[str] = (), pid: int | None = None,
                 on_send: SendHook | None = None) -> None:
    """Connect to QEMU's QMP socket (waiting for it to appear), run ``commands`` in order.

    Args:
        socket_path: the unix socket QEMU listens on.
        commands: executed one by one; the first error stops.
        exited: returns QEMU's exit status once it has exited, else None.
        timeout: seconds for the socket to accept, and again for each command.
        tokens: secrets to redact from logs and error messages.
        pid: QEMU's pid, for the errors.
        on_send: called with each command just before it is sent (a test seam).

    Raises:
        QemuExited: QEMU exited before or during the conversation.
        QmpTimeout: no connection, or no answer, within ``timeout``.
        QmpCommandFailed: QEMU refused a command.
    """
    import asyncio

    asyncio.run(_session(socket_path, commands, exited=exited, timeout=timeout,
                         tokens=tuple(tokens), pid=pid, on_send=on_send))


def _client(name: str, tokens: tuple[str, ...]) -> Any:
    from qemu.qmp import QMPClient

    class RedactingClient(QMPClient):
        def _cb_outbound(self, msg: Any) -> Any:
            self.logger.debug("--> %s", redact_text(str(msg), tokens))
            return msg

        def _cb_inbound(self, msg: Any) -> Any:
            self.logger.debug("<-- %s", redact_text(str(msg), tokens))
            return msg

    return RedactingClient(name)


async def _session(socket_path: Path, commands: Sequence[QmpCommand], *,
                   exited: Callable[[], int | None], timeout: float, tokens: tuple[str, ...],
                   pid: int | None, on_send: SendHook | None) -> None:
    import asyncio

    from qemu.qmp import ConnectError, ExecInterruptedError, ExecuteError

    client = _client("vfioctl-start", tokens)

    def gone(status: int, during: str) -> QemuExited:
        return QemuExited(f"QEMU (pid {pid}) exited with status {status} {during}",
                          pid=pid, status=status)

    deadline = time.monotonic() + timeout
    try:
        # Step 1: wait for QEMU to listen; it may also die first (bad arguments).
        while True:
            status = exited()
            if status is not None:
                raise gone(status, "before its QMP socket accepted a connection")
            if socket_path.exists():
                try:
                    await asyncio.wait_for(client.connect(str(socket_path)),
                                           max(0.1, deadline - time.monotonic()))
                    break
                except (ConnectError, TimeoutError):
                    pass
            if time.monotonic() > deadline:
                raise QmpTimeout(f"QEMU (pid {pid}) did not accept a QMP connection on "
                                 f"{socket_path} within {timeout:g} s", pid=pid)
            await asyncio.sleep(0.05)
        # Step 2: the commands, one at a time; the first refusal stops.
        for cmd in commands:
            label = f" for {cmd.label}" if cmd.label else ""
            if on_send is not None:
                on_send(cmd.execute, cmd.arguments)
            try:
                await asyncio.wait_for(client.execute(cmd.execute, cmd.arguments), timeout)
            except ExecuteError as err:
                desc = redact_text(str(err), tokens)
                raise QmpCommandFailed(
                    f"QEMU refused {cmd.execute}{label}: {desc}", command=cmd.execute,
                    error_class=err.error_class, dev_id=cmd.label, pid=pid) from None
            except TimeoutError:
                raise QmpTimeout(f"QEMU (pid {pid}) did not answer {cmd.execute}{label} "
                                 f"within {timeout:g} s", pid=pid) from None
            except (ExecInterruptedError, ConnectionError, EOFError) as err:
                status = exited()
                if status is not None:
                    raise gone(status, f"during {cmd.execute}{label}") from None
                raise QemuError(f"QMP connection to QEMU (pid {pid}) lost during "
                                f"{cmd.execute}{label}: {type(err).__name__}",
                                pid=pid) from None
    finally:
        # the connection is going away either way
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.disconnect(), 5)
