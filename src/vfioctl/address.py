"""PCI addresses: parse and format ``dddd:bb:ss.f``, with ordering and hashing.

Users type addresses in several shapes (``01:00.0``, ``0000:01:00.0``, ``pci_0000_01_00_0``
as virsh nodedev names); the kernel and every JSON document vfioctl writes use the full
lowercase ``0000:01:00.0``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vfioctl.errors import UsageError

_FULL = re.compile(
    r"^(?:(?P<domain>[0-9a-fA-F]{1,8}):)?(?P<bus>[0-9a-fA-F]{1,2}):"
    r"(?P<slot>[0-9a-fA-F]{1,2})\.(?P<function>[0-7])$"
)
_NODEDEV = re.compile(
    r"^pci_(?P<domain>[0-9a-fA-F]{4,8})_(?P<bus>[0-9a-fA-F]{2})_"
    r"(?P<slot>[0-9a-fA-F]{2})_(?P<function>[0-7])$"
)


@dataclass(frozen=True, order=True, slots=True)
class PciAddress:
    """A PCI function address. Compare by value; ordered by (domain, bus, slot, function)."""

    domain: int
    bus: int
    slot: int
    function: int

    def __post_init__(self) -> None:
        if not 0 <= self.domain <= 0xFFFFFFFF:
            raise UsageError(f"PCI domain {self.domain:#x} is out of range (0-0xffffffff)")
        if not 0 <= self.bus <= 0xFF:
            raise UsageError(f"PCI bus {self.bus:#x} is out of range (0-0xff)")
        if not 0 <= self.slot <= 0x1F:
            raise UsageError(f"PCI slot {self.slot:#x} is out of range (0-0x1f)")
        if not 0 <= self.function <= 7:
            raise UsageError(f"PCI function {self.function} is out of range (0-7)")

    @classmethod
    def parse(cls, text: str) -> PciAddress:
        """Parse ``[dddd:]bb:ss.f`` or a nodedev name ``pci_dddd_bb_ss_f``.

        Raises:
            UsageError: if the text is not a PCI address.
        """
        s = text.strip()
        m = _FULL.match(s) or _NODEDEV.match(s)
        if m is None:
            raise UsageError(
                f"'{text}' is not a PCI address",
                hint="write it as DDDD:BB:SS.F, e.g. 0000:01:00.0 (see 'vfioctl list')",
            )
        domain = int(m.group("domain") or "0", 16)
        try:
            return cls(domain, int(m.group("bus"), 16), int(m.group("slot"), 16),
                       int(m.group("function")))
        except UsageError as err:
            raise UsageError(f"'{text}' is not a PCI address: {err}",
                             hint="slots go up to 0x1f, functions up to 7") from err

    @property
    def slot_name(self) -> str:
        """``dddd:bb:ss``: the slot, shared by all functions of a multifunction device."""
        return f"{self.domain:04x}:{self.bus:02x}:{self.slot:02x}"

    @property
    def devfn(self) -> int:
        return (self.slot << 3) | self.function

    def with_function(self, function: int) -> PciAddress:
        return PciAddress(self.domain, self.bus, self.slot, function)

    def __str__(self) -> str:
        return f"{self.domain:04x}:{self.bus:02x}:{self.slot:02x}.{self.function:x}"


def parse_address(text: str) -> PciAddress:
    """Shorthand for :meth:`PciAddress.parse`."""
    return PciAddress.parse(text)
