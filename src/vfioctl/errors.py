"""The one exception tree of vfioctl, with stable exit codes.

Every error vfioctl raises on purpose derives from :class:`VfioctlError`. The CLI maps
``exit_code`` to the process exit status and prints ``str(err)`` plus ``hint``; library
callers branch on the class and the structured fields, never on message text.

::

    VfioctlError (1)
     ├── UsageError (2)                     bad input: malformed address, UUID, option
     ├── ConfigError (3)
     │    ├── XmlError                      malformed/invalid XML (file:line in message)
     │    └── UnsupportedConfig             valid, but vfioctl or QEMU cannot do it
     ├── NotFound (4)
     │    ├── DeviceNotFound
     │    ├── GroupNotFound
     │    └── DriverNotFound
     ├── OperationInvalid (5)
     │    ├── ReadOnlyHost                  a mutating command on linux:DIR / sim:NAME
     │    ├── DeviceInUse                   owned by a guest / used by the host
     │    ├── GroupNotViable
     │    ├── NotDetached
     │    ├── VfsEnabled
     │    └── Busy                          another vfioctl holds the lock
     ├── HostError (6)                      the kernel refused a write or an ioctl
     │    ├── PermissionDenied (77)
     │    └── VfioIoctlError
     └── InternalError (70)                 a vfioctl invariant broke: a bug

A few subclasses live beside the code that raises them and derive from the classes above
(so exit codes hold): ``vfio.token.TokenNotFound`` (4), ``TokenStale`` (5),
``vfio.device.VfTokenRejected`` (6), ``TokenNotAccepted`` (5),
``pci.sriov.EnableSriovRequired`` (5), ``launch.qmp.QemuError`` and its subclasses (1).

This module imports nothing from vfioctl, so every layer may import it.
"""

from __future__ import annotations

import errno as _errno
from typing import ClassVar


class VfioctlError(Exception):
    """Base of every vfioctl error; never raised directly.

    ``str(err)`` is one sentence naming the object, without a trailing period; ``hint``
    is the next step for the user, or None.
    """

    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(VfioctlError):
    """Bad input on the command line or to an API: same exit code as click's usage errors."""

    exit_code = 2


class ConfigError(VfioctlError):
    """A configuration (XML, host description) is malformed, invalid or unsupported."""

    exit_code = 3


class XmlError(ConfigError):
    """XML that does not parse or breaks the schema; the message carries file:line."""

    def __init__(
        self, message: str, *, line: int | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.line = line


class UnsupportedConfig(ConfigError):
    """A valid configuration that vfioctl (or the QEMU at hand) cannot carry out."""


class NotFound(VfioctlError):
    """The object does not exist on this host."""

    exit_code = 4


class DeviceNotFound(NotFound):
    def __init__(self, addr: object, *, hint: str | None = None) -> None:
        super().__init__(
            f"PCI device {addr} not found on this host",
            hint=hint or "run 'vfioctl list' to see the devices this host has",
        )
        self.addr = addr


class GroupNotFound(NotFound):
    def __init__(self, group: int, *, hint: str | None = None) -> None:
        super().__init__(f"IOMMU group {group} not found on this host", hint=hint)
        self.group = group


class DriverNotFound(NotFound):
    def __init__(self, driver: str, *, hint: str | None = None) -> None:
        super().__init__(f"driver {driver} is not available on this host", hint=hint)
        self.driver = driver


class OperationInvalid(VfioctlError):
    """The request conflicts with the current state of the host or of vfioctl."""

    exit_code = 5


class ReadOnlyHost(OperationInvalid):
    """A mutating operation on a host that cannot change (a snapshot, a bundled sim host)."""


class DeviceInUse(OperationInvalid):
    def __init__(
        self, message: str, *, addr: object, owner: str | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.addr = addr
        self.owner = owner


class GroupNotViable(OperationInvalid):
    def __init__(
        self,
        message: str,
        *,
        group: int | None,
        offenders: tuple[tuple[str, str | None], ...] = (),
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.group = group
        self.offenders = offenders


class NotDetached(OperationInvalid):
    """The device is not bound to vfio-pci (or not held by vfioctl) when it must be."""


class VfsEnabled(OperationInvalid):
    """An SR-IOV PF has VFs enabled and the operation needs them disabled."""


class Busy(OperationInvalid):
    """Another vfioctl process holds the state lock and did not let go in time."""


class HostError(VfioctlError):
    """The kernel refused a write or an ioctl; carries the path and the errno."""

    exit_code = 6

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        errno: int | None = None,
        hint: str | None = None,
    ) -> None:
        if errno is not None:
            name = _errno.errorcode.get(errno, str(errno))
            message = f"{message}: {name} ({_strerror(errno)})"
        super().__init__(message, hint=hint)
        self.path = path
        self.errno = errno


class PermissionDenied(HostError):
    exit_code = 77


class VfioIoctlError(HostError):
    """A VFIO ioctl failed; ``errno`` is the kernel's answer."""


class InternalError(VfioctlError):
    """A vfioctl invariant broke: this is a bug."""

    exit_code = 70


def _strerror(code: int) -> str:
    import os

    return os.strerror(code)


def wrap_oserror(err: OSError, message: str, *, path: object = None) -> HostError:
    """Turn a host primitive's OSError into the product's error, keeping the errno.

    EACCES/EPERM from a plain file write means the caller lacks privileges (exit 77);
    callers that know a better meaning for an errno (EACCES on a VF open means a VF token
    is missing) must map it themselves before calling this.
    """
    code = err.errno
    cls: type[HostError] = HostError
    hint = None
    if code in (_errno.EACCES, _errno.EPERM):
        cls = PermissionDenied
        hint = "run vfioctl as root"
    return cls(message, path=None if path is None else str(path), errno=code, hint=hint)
