"""Mechanics: the VF token as a value that never prints itself.

A VF token is a shared secret between a userspace PF driver and its VF users
(docs/rationale.md "The VF token trust model"; the kernel never gives it back,
docs/kernel.md "VF token"). :class:`VfToken` wraps the UUID so that
``str()``, ``repr()``, f-strings, ``%s`` in a log call and tracebacks show
:data:`REDACTED`; the canonical text comes only from :meth:`VfToken.reveal`, and the raw
bytes only from :attr:`VfToken.raw`. Search the code base for ``reveal()`` to find every
place the secret can leave the process.
"""

from __future__ import annotations

import re
import uuid
from typing import Final

from vfioctl.errors import UsageError

REDACTED: Final = "<vf-token redacted>"

# The kernel's parser (vfio_pci_core_match → uuid_parse) takes exactly the 36-character
# canonical form, in any letter case; so do we, so that what vfioctl accepts is what any
# consumer can pass on (QEMU's vf-token, DPDK's --vfio-vf-token).
_CANONICAL = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                        r"[0-9a-fA-F]{12}")


class VfToken:
    """A VF token: a UUID that redacts itself everywhere but :meth:`reveal`."""

    __slots__ = ("_uuid",)

    def __init__(self, value: uuid.UUID) -> None:
        self._uuid = value

    @classmethod
    def generate(cls) -> VfToken:
        """A fresh random (version 4) token."""
        return cls(uuid.uuid4())

    @classmethod
    def parse(cls, text: str) -> VfToken:
        """A token from its canonical text ``xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx``.

        Surrounding whitespace (a trailing newline in a file) is ignored.

        Raises:
            UsageError: if ``text`` is not a canonical UUID. The message never quotes
                the input: a near-miss may be the secret with a typo.
        """
        candidate = text.strip()
        if not _CANONICAL.fullmatch(candidate):
            raise UsageError(
                f"the VF token is not a UUID in canonical form ({len(candidate)} "
                "characters given; the value is not shown)",
                hint="a VF token looks like xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx "
                "(36 characters, hex digits and dashes)")
        return cls(uuid.UUID(candidate))

    def reveal(self) -> str:
        """The canonical lower-case text: the secret itself. Only for ``--reveal``, the
        0600 token file and the ``vf_token=`` option handed to the kernel."""
        return str(self._uuid)

    @property
    def raw(self) -> bytes:
        """The 16 bytes ``VFIO_DEVICE_FEATURE`` SET takes (``uuid_t`` order)."""
        return self._uuid.bytes

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VfToken) and other._uuid == self._uuid

    def __hash__(self) -> int:
        return hash(self._uuid)

    def __str__(self) -> str:
        return REDACTED

    def __repr__(self) -> str:
        return f"VfToken({REDACTED})"

    def __format__(self, spec: str) -> str:
        return REDACTED

    def __reduce__(self) -> tuple[object, ...]:
        # No pickling: a pickle is a file or a message, and neither is 0600 by default.
        raise TypeError("a VfToken cannot be pickled")
