"""Telling the boot what persistence did: the kernel log, where a boot is read.

At boot ``vfioctl persist apply --boot`` runs from udev with its output thrown away, so
what it refused would be lost; ``/dev/kmsg`` puts each line into the kernel log
(``dmesg``, the journal) with a priority, beside the kernel's own lines about the same
devices. Only the running host has a kernel log; elsewhere (a simulated host, a
snapshot) the lines go to stderr alone. Failing to write the log never fails the boot.
"""

from __future__ import annotations

import contextlib
import os
from typing import Final

from vfioctl.host.base import Host

KMSG: Final = "/dev/kmsg"
WARNING: Final = 4
INFO: Final = 6


def kernel_log(host: Host, line: str, *, problem: bool) -> bool:
    """Write ``vfioctl: LINE`` to the kernel log of the running host; True if written."""
    if host.name != "linux" or os.environ.get("VFIOCTL_ETC_DIR"):
        return False      # not this kernel's boot (or a test's /etc)
    prio = WARNING if problem else INFO
    text = f"<{prio}>vfioctl: {line}"[:900].replace("\n", " ") + "\n"
    with contextlib.suppress(OSError):
        fd = os.open(KMSG, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOCTTY)
        try:
            os.write(fd, text.encode("utf-8", "replace"))
        finally:
            os.close(fd)
        return True
    return False


__all__ = ["kernel_log"]
