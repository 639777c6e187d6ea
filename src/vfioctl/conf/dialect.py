"""Config: which libvirt release vfioctl reads a domain like (``--libvirt 9.0|11.3``).

vfioctl checks a ``<hostdev>`` against libvirt's parsing rules and its schema, as
``virsh define --validate`` does, and writes the QEMU arguments libvirt writes. Both
were measured against real libvirt releases (tests/data/xml2argv: every case recorded
with each), and the releases differ in what a PCI hostdev may say — never in the
vfio-pci arguments of a document both accept:

- libvirt 9.0's schema requires ``<driver name=…>``; from 10.0 ``name`` is optional
  (``<driver/>`` is VFIO, like no ``<driver>`` at all).
- From 10.0, ``<driver model='…'>`` names a VFIO variant driver to bind instead of
  vfio-pci (9.0's schema refuses the attribute).
- libvirt 11.3's schema lets a PCI hostdev say ``display`` and ``ramfb`` (9.0's only
  an mdev); 11.3 then writes ``"display":"on"`` and, for ``ramfb``, the driver
  ``vfio-pci-nohotplug``.
- Outside hostdevs: 9.0's schema allows one ``<watchdog>`` in ``<devices>``, 11.3's
  any number.

The newest measured release is the default: that is what users run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class LibvirtDialect:
    """What one libvirt release accepts in a PCI ``<hostdev>`` where releases differ."""

    version: str
    driver_name_required: bool
    driver_model: bool
    hostdev_display: bool
    watchdog_once: bool

    def __str__(self) -> str:
        return f"libvirt {self.version}"


LIBVIRT_9_0: Final = LibvirtDialect("9.0", driver_name_required=True, driver_model=False,
                                    hostdev_display=False, watchdog_once=True)
LIBVIRT_11_3: Final = LibvirtDialect("11.3", driver_name_required=False, driver_model=True,
                                     hostdev_display=True, watchdog_once=False)
LIBVIRT_DIALECTS: Final = {d.version: d for d in (LIBVIRT_9_0, LIBVIRT_11_3)}
DEFAULT_LIBVIRT: Final = LIBVIRT_11_3


def libvirt_dialect(version: str | LibvirtDialect | None) -> LibvirtDialect:
    """The dialect of a release named ``X.Y`` (None: the default).

    Raises:
        ValueError: a release vfioctl was not measured against.
    """
    if version is None:
        return DEFAULT_LIBVIRT
    if isinstance(version, LibvirtDialect):
        return version
    try:
        return LIBVIRT_DIALECTS[version]
    except KeyError:
        known = ", ".join(LIBVIRT_DIALECTS)
        raise ValueError(f"unknown libvirt release '{version}' (known: {known})") from None


__all__ = [
    "DEFAULT_LIBVIRT",
    "LIBVIRT_9_0",
    "LIBVIRT_11_3",
    "LIBVIRT_DIALECTS",
    "LibvirtDialect",
    "libvirt_dialect",
]
