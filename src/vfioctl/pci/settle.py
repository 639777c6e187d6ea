"""Mechanics: waiting for the kernel to finish what a sysfs write started.

A ``bind`` or ``drivers_probe`` write probes synchronously, and creating VFs adds and
probes each VF before ``sriov_numvfs`` returns; but on a real host udev rules, firmware
loads and deferred probes can still be running when the write returns, so a reader may
see the ``driver`` link or a VF's driver a moment later. Every such wait in vfioctl uses
the one bound below: long enough for a deferred probe of a slow NIC or GPU (they take
hundreds of milliseconds on real hardware), short enough that a device that will never
bind is reported at once. The simulator is never late, so a wait there costs nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

#: The longest vfioctl waits for a driver link or VFs to appear after a write (tests on
#: the simulator set it to 0: it is never late).
SETTLE_SECONDS: float = 2.0
_POLL_SECONDS: Final = 0.05


def wait_until(ready: Callable[[], bool], *, timeout: float | None = None) -> bool:
    """Poll ``ready`` until it is true or ``timeout`` (default :data:`SETTLE_SECONDS`)
    passed; its last answer."""
    deadline = time.monotonic() + (SETTLE_SECONDS if timeout is None else timeout)
    while True:
        if ready():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_SECONDS)
