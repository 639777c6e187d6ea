"""Constants and helpers for the ``start``/``release`` tests (imported by the tests and
conftest.py)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
DATA = HERE / "data"
QEMU = "/usr/bin/qemu-system-x86_64"
CAPS_81 = HERE.parent / "data" / "qemu" / "qemu-8.1.0-x86_64.json"
CAPS_72 = HERE.parent / "data" / "qemu" / "qemu-7.2.22-x86_64.json"
TOKEN = "bd3c9d7a-2fbb-4c1e-9c2e-6b6a2f3c1d10"

needs_qemu = pytest.mark.skipif(
    not os.access(QEMU, os.X_OK),
    reason=f"needs Debian's QEMU at {QEMU} (apt install qemu-system-x86)")


def vfioctl_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "vfioctl.cli.main", *args]


def qmp_query(socket: Path, cmd: str) -> Any:
    """One QMP command to a running QEMU (the tests' own client connection)."""
    from qemu.qmp import QMPClient

    async def run() -> Any:
        client = QMPClient("test")
        await client.connect(str(socket))
        try:
            return await client.execute(cmd)
        finally:
            await client.disconnect()

    return asyncio.run(run())
