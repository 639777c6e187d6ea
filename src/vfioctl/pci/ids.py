"""Human names for PCI ids from the system's ``pci.ids`` (Debian ``pci.ids``/``hwdata``).

Names are for people only: JSON output carries ids, never names, so that scripts do not
depend on the database version. Without a database, ids alone are shown.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache

SEARCH_PATHS = (
    "/usr/share/misc/pci.ids",
    "/usr/share/hwdata/pci.ids",
    "/usr/share/pci.ids",
)


class PciIds:
    """Vendor, device and class names, loaded lazily and looked up by id."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._vendor_pos: dict[int, int] | None = None
        self._cache: dict[tuple[int, int], str | None] = {}

    def _index(self) -> dict[int, int]:
        # Index only vendor lines (column 0, 4 hex digits): a full parse of the
        # 1.3 MB file costs more than every lookup a command makes.
        if self._vendor_pos is None:
            self._vendor_pos = {
                int(m.group(1), 16): m.start()
                for m in re.finditer(r"^([0-9a-f]{4})  ", self._text, re.MULTILINE)
            }
        return self._vendor_pos

    def vendor(self, vendor: int) -> str | None:
        pos = self._index().get(vendor)
        if pos is None:
            return None
        end = self._text.find("\n", pos)
        return self._text[pos + 6 : end].strip()

    def device(self, vendor: int, device: int) -> str | None:
        key = (vendor, device)
        if key in self._cache:
            return self._cache[key]
        name = None
        pos = self._index().get(vendor)
        if pos is not None:
            want = f"\t{device:04x}  "
            i = self._text.find("\n", pos) + 1
            while i < len(self._text) and self._text[i] in "\t#\n":
                end = self._text.find("\n", i)
                end = len(self._text) if end < 0 else end
                if self._text.startswith(want, i):
                    name = self._text[i + len(want) : end].strip()
                    break
                i = end + 1
        self._cache[key] = name
        return name

    def describe(self, vendor: int, device: int) -> str:
        """``Vendor Device`` as lspci prints it, or ``vvvv:dddd`` when unknown."""
        v = self.vendor(vendor)
        d = self.device(vendor, device)
        if v and d:
            return f"{v} {d}"
        return f"{vendor:04x}:{device:04x}" if not v else f"{v} Device {device:04x}"


@lru_cache(maxsize=1)
def load_pci_ids() -> PciIds | None:
    """The system's database, or None when no pci.ids is installed."""
    override = os.environ.get("VFIOCTL_PCI_IDS")
    for path in ((override,) if override else SEARCH_PATHS):
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return PciIds(f.read())
        except OSError:
            continue
    return None


# PCI class names (PCI Code and ID Assignment Specification), base class only plus the
# subclasses vfioctl users meet most; used when pci.ids is absent and for summaries.
CLASS_NAMES: dict[int, str] = {
    0x00: "Unclassified", 0x01: "Mass storage", 0x02: "Network", 0x03: "Display",
    0x04: "Multimedia", 0x05: "Memory", 0x06: "Bridge", 0x07: "Communication",
    0x08: "System peripheral", 0x09: "Input", 0x0A: "Docking", 0x0B: "Processor",
    0x0C: "Serial bus", 0x0D: "Wireless", 0x0E: "Intelligent", 0x0F: "Satellite",
    0x10: "Encryption", 0x11: "Signal processing", 0x12: "Accelerator",
    0x13: "Non-essential instrumentation", 0xFF: "Unassigned",
}
SUBCLASS_NAMES: dict[int, str] = {
    0x0100: "SCSI", 0x0101: "IDE", 0x0106: "SATA", 0x0108: "NVMe", 0x0200: "Ethernet",
    0x0300: "VGA", 0x0302: "3D", 0x0380: "Display", 0x0403: "Audio", 0x0600: "Host bridge",
    0x0601: "ISA bridge", 0x0604: "PCI bridge", 0x0680: "Bridge", 0x0C03: "USB",
    0x0C05: "SMBus", 0x00FF: "Unclassified",
}


def class_name(class_code: int) -> str:
    """Short name for a 24-bit class code, e.g. 0x010802 -> 'NVMe'."""
    return SUBCLASS_NAMES.get(class_code >> 8) or CLASS_NAMES.get(class_code >> 16, "Unknown")
