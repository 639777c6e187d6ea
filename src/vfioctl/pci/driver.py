"""Mechanics: moving a PCI function between drivers through sysfs, verified.

The kernel's own recipe (``Documentation/ABI/testing/sysfs-bus-pci``; docs/kernel.md
"Binding and driver override"):

1. write the driver's name to ``devices/ADDR/driver_override`` (``\\n`` clears it),
2. write the address to ``drivers/CURRENT/unbind``,
3. write the address to ``sys/bus/pci/drivers_probe`` (the override leaves the kernel
   exactly one choice) or to ``drivers/NAME/bind`` (to name the driver outright).

The override is consulted only when the kernel matches a driver to the device, so it is
written *before* the unbind/probe pair and is otherwise inert. :func:`move_to` runs the
recipe towards any wanted (driver, override) pair with the fewest writes, skipping the
ones whose effect is already there, and reads the ``driver`` link back afterwards: a
write that "succeeded" proves nothing, the link does. Because it starts from what the
device looks like now, running it again after an interruption finishes the job — which
is what the manager's journal recovery relies on.

Every write goes through the Host seam; an ``OSError`` from it is wrapped once, here,
with the device and the step, into :class:`vfioctl.errors.HostError`.
"""

from __future__ import annotations

import errno
from pathlib import PurePosixPath
from typing import Final

from vfioctl.errors import DriverNotFound, HostError, ReadOnlyHost, wrap_oserror
from vfioctl.host.base import PCI_BUS, PCI_DRIVERS, Host
from vfioctl.pci.device import VFIO_DRIVER, PciDevice
from vfioctl.pci.settle import wait_until

#: Drivers vfioctl parks a device on: both take it away from the host and keep a VFIO
#: group viable (vfio-pci gives userspace the device; pci-stub is the "extra barrier" of
#: docs/rationale.md "Members left alone: pcieport and pci-stub", for group members nobody
#: means to use).
HOLDING_DRIVERS: Final = frozenset({VFIO_DRIVER, "pci-stub"})

#: Drivers a group member keeps when its whole group is detached (docs/rationale.md,
#: "Members left alone: pcieport and pci-stub"): pcieport drives the port itself and never
#: DMAs for the device, pci-stub already keeps the host off it.
LEFT_ALONE_DRIVERS: Final = frozenset({"pcieport", "pci-stub"})

#: ``to_driver`` meaning "whatever the kernel picks": used to give back a device vfioctl
#: did not detach, whose original driver it therefore does not know.
ANY_DRIVER: Final = "*"

_DRIVERS_PROBE = PCI_BUS / "drivers_probe"
# The kernel refuses ``driver_override`` values longer than this (PAGE_SIZE - 1 would be
# the hard limit; names are short). Not a kernel constant: a sanity bound.
_MAX_DRIVER_NAME = 64


def driver_path(name: str) -> PurePosixPath:
    """``sys/bus/pci/drivers/NAME``: the one place driver paths are built."""
    return PCI_DRIVERS / name


def driver_available(host: Host, name: str) -> bool:
    """True when the kernel has a PCI driver called ``name`` registered."""
    return host.exists(driver_path(name))


def ensure_driver(host: Host, name: str) -> bool:
    """Make sure the PCI driver ``name`` is registered, loading its module if needed.

    A real host often has vfio-pci as a module nobody loaded yet; ``modprobe vfio-pci``
    (the Host's ``load_module``) fixes that. The module name is the driver name: both
    vfio-pci and pci-stub are named after their modules, and modprobe treats ``-`` and
    ``_`` alike.

    Returns:
        True if a module had to be loaded.

    Raises:
        DriverNotFound: if the driver is still missing after trying to load it.
        ReadOnlyHost: if loading is needed on a read-only host.
    """
    if driver_available(host, name):
        return False
    reason = ""
    try:
        host.load_module(name)
    except ReadOnlyHost:
        raise
    except OSError as err:
        reason = f" ({err.strerror or err})" if (err.strerror or str(err)) else ""
    if driver_available(host, name):
        return True
    raise DriverNotFound(
        name,
        hint=f"'modprobe {name}' did not register it{reason}; install or build the "
        f"module, or check 'vfioctl doctor'",
    )


def is_bridge(dev: PciDevice) -> bool:
    """True for PCI-to-PCI bridges and PCIe ports (header type 1, class 0604).

    Both tests are used because either source can be unreadable (a snapshot without a
    ``config`` file; a class file some emulations get wrong).
    """
    if dev.class_code >> 8 == 0x0604:
        return True
    return dev.config.is_bridge


# -- single writes --------------------------------------------------------------------


def set_override(dev: PciDevice, name: str | None) -> None:
    """Write ``driver_override`` (``None`` clears it, the kernel's ``\\n``).

    Raises:
        HostError: if the kernel refuses the write.
    """
    if name is not None and (not name or len(name) > _MAX_DRIVER_NAME or "/" in name):
        raise HostError(f"refusing to write driver_override '{name}' on {dev.name}")
    try:
        dev.host.write(dev.path / "driver_override", name if name is not None else "\n")
    except OSError as err:
        what = f"set driver_override of {dev.name} to {name}" if name else (
            f"clear driver_override of {dev.name}")
        raise wrap_oserror(err, f"cannot {what}", path=dev.path / "driver_override") from err


def unbind(dev: PciDevice, driver: str) -> None:
    """Write the address to ``drivers/DRIVER/unbind``.

    Raises:
        HostError: if the kernel refuses (ENODEV: the device is not bound to it).
    """
    path = driver_path(driver) / "unbind"
    try:
        dev.host.write(path, dev.name)
    except OSError as err:
        raise wrap_oserror(err, f"cannot unbind {dev.name} from {driver}", path=path) from err


def bind(dev: PciDevice, driver: str) -> None:
    """Write the address to ``drivers/DRIVER/bind``: attach that driver and no other.

    Raises:
        HostError: if the kernel refuses (ENODEV: the driver does not match the device,
            EBUSY: it is bound to something else).
    """
    path = driver_path(driver) / "bind"
    try:
        dev.host.write(path, dev.name)
    except OSError as err:
        raise wrap_oserror(err, f"cannot bind {dev.name} to {driver}", path=path) from err


def probe(dev: PciDevice) -> None:
    """Write the address to ``sys/bus/pci/drivers_probe``: let the kernel match a driver.

    Raises:
        HostError: if the kernel refuses the write.
    """
    try:
        dev.host.write(_DRIVERS_PROBE, dev.name)
    except OSError as err:
        raise wrap_oserror(err, f"cannot probe drivers for {dev.name}",
                           path=_DRIVERS_PROBE) from err


# -- the recipe -----------------------------------------------------------------------


def move_to(dev: PciDevice, driver: str | None, override: str | None) -> None:
    """Bring ``dev`` to ``driver`` (None: driverless; :data:`ANY_DRIVER`: the kernel's
    choice) with ``driver_override`` finally equal to ``override``, then verify.

    Writes only what differs from the device's present state, so a detach onto vfio-pci
    costs at most three writes (override, unbind, drivers_probe), and a call repeated
    after an interruption completes the move instead of starting over.

    Returning a device to a host driver names that driver (``drivers/NAME/bind``)
    instead of probing: the kernel might prefer another one (a vendor driver over the
    in-tree one, a variant driver), and reattach promises the *original*. Should the
    driver's id table not match the device (it was bound through an override or
    ``new_id`` to begin with) the bind is retried under a temporary override.

    Raises:
        HostError: if the kernel refuses a step, or the driver link is not the wanted
            one afterwards.
    """
    if driver == ANY_DRIVER:
        _move_to_any(dev)
        return
    current = dev.driver
    ovr = dev.driver_override
    if current == driver and ovr == override:
        return
    # Step 1: the override the kernel sees while matching. For a holding driver it is
    # the driver itself (drivers_probe can then only pick it); for a host driver it is
    # cleared, or an explicit bind would be refused as a mismatch.
    staged = override if (driver is None or override in (None, driver)) else None
    if ovr != staged and current != driver:
        set_override(dev, staged)
        ovr = staged
    # Step 2: let go of the current driver (unbinding never reprobes).
    if current is not None and current != driver:
        unbind(dev, current)
        current = None
    # Step 3: attach the wanted driver.
    if driver is not None and current != driver:
        if ovr == driver:
            probe(dev)
        else:
            try:
                bind(dev, driver)
            except HostError as err:
                if err.errno not in (errno.ENODEV, errno.EINVAL):
                    raise
                # The id table does not match: let an override make the match.
                set_override(dev, driver)
                ovr = driver
                bind(dev, driver)
    # Step 4: the final override, when it is not the one staged for matching.
    if ovr != override:
        set_override(dev, override)
    # Step 5: verify from the driver link, never from the writes' success.
    got = _settled_driver(dev, driver)
    if got != driver:
        raise HostError(
            f"{dev.name} is on {got or 'no driver'} after binding, expected "
            f"{driver or 'no driver'}",
            path=str(dev.path / "driver"),
            hint="see the kernel log (dmesg) for the driver's probe error",
        )


def _move_to_any(dev: PciDevice) -> None:
    """Clear the override and reprobe: the kernel's choice, for devices vfioctl did not
    detach (their original driver is unknown)."""
    if dev.driver_override is not None:
        set_override(dev, None)
    current = dev.driver
    if current in HOLDING_DRIVERS:
        unbind(dev, current)
        current = None
    if current is None:
        probe(dev)


def _settled_driver(dev: PciDevice, want: str | None) -> str | None:
    got = dev.driver
    if got == want or want is None or got is not None:
        return got
    wait_until(lambda: dev.driver is not None)
    return dev.driver
