"""``vfioctl`` (argv as for the CLI) that SIGKILLs itself before its Nth sysfs write.

The simulated kernel's writes are where a prepare changes the host; killing the process
there, with SIGKILL (no cleanup, no ``finally``), is a ``kill -9`` of the DRA plugin in
the middle of a prepare. ``DRA_TEST_KILL_AT_WRITE=N`` picks the write.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from vfioctl.cli.main import main
from vfioctl.sim.host import SimHost

_AT = int(os.environ["DRA_TEST_KILL_AT_WRITE"])
_original = SimHost.write
_count = 0


def _write(self: SimHost, path: Any, data: str) -> None:
    global _count
    _count += 1
    if _count == _AT:
        os.kill(os.getpid(), signal.SIGKILL)
    _original(self, path, data)


SimHost.write = _write  # type: ignore[method-assign]
sys.exit(main(sys.argv[1:]))
