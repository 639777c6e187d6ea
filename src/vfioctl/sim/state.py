"""Simulator: the kernel's state as a host file saves it (``[state]``), checked on the way in.

What the kernel would remember across vfioctl runs: registered drivers, ``enable_sriov``,
dynamic ids, per device the driver, ``driver_override``, NumVFs, autoprobe, reset
methods, whether its interface is up and still configured, each VF's group number; the
VF tokens (kernel memory, secret: a file holding them is written 0600, and no message
ever contains one); and the other processes that hold VFIO files (``vfio_user``).

The section is written by vfioctl, but it is still a file a user can edit, so every
value is checked against the hardware it describes and a state the kernel could not be
in (an unknown device or driver, more VFs than TotalVFs, a group number used twice, a
VFIO user of a device that is not on vfio-pci) is a :class:`ConfigError` naming the key,
with the hint to delete the section ("reboot"). A ``[state]`` without ``devices`` boots
the host first and then applies what it has (a hand-written list of VFIO users, say).
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Mapping
from typing import Any

from vfioctl.errors import ConfigError
from vfioctl.sim import values as v
from vfioctl.sim.device import SimDevice
from vfioctl.sim.kernel import VFIO_PCI, SimKernel
from vfioctl.sim.model import IdMatch
from vfioctl.sim.users import parse_users

_HINT = "fix the value, or remove the [state] section to boot the host afresh"
_DYNID = re.compile(r"^([0-9a-fA-F]{4}) ([0-9a-fA-F]{4})$")
_RESET_METHODS = ("flr", "pm", "bus")
STATE_KEYS = ("drivers", "enable_sriov", "dynids", "devices", "secrets", "vfio_user")
DEVICE_KEYS = ("driver", "driver_override", "sriov_numvfs", "sriov_drivers_autoprobe",
               "reset_method", "net_up", "net_configured", "iommu_group", "vfio_dev")


def _bad(where: str, msg: str) -> ConfigError:
    return v.err(where, msg, hint=_HINT)


def _checked(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a values reader, re-raising its error with the state hint."""
    try:
        return fn(*args, **kwargs)
    except ConfigError as err:
        raise ConfigError(err.message, hint=_HINT) from None


def apply_state(k: SimKernel, state: Mapping[str, Any]) -> None:
    """Put a freshly built kernel into a saved state (no probing: the state says it all).

    Raises:
        ConfigError: a key of the wrong type or range, or a state the hardware cannot be
            in; the message names the key (and the device).
    """
    _checked(v.known, state, STATE_KEYS, "[state]")
    if "devices" not in state:
        k.boot()
    if "drivers" in state:
        names = _checked(v.str_list, state, "drivers", "[state]", "driver names")
        unknown = [m for m in names if m not in k.drivers]
        if unknown:
            raise _bad("[state]", f"drivers: unknown driver(s) {', '.join(unknown)}")
        if len(set(names)) != len(names):
            raise _bad("[state]", "drivers: a driver is listed twice")
        k.registered = names
    k.enable_sriov = _checked(v.get_bool, state, "enable_sriov", "[state]",
                              k.enable_sriov)
    _apply_dynids(k, state.get("dynids", {}))
    if "devices" in state:
        _apply_devices(k, _checked(v.table, state["devices"], "[state]",
                                   "devices"))
    _apply_tokens(k, state.get("secrets", {}))
    for user in _checked(parse_users, state.get("vfio_user", [])):
        try:
            k.add_vfio_user(user.pid, user.comm, user.group, user.devices, restoring=True)
        except (OSError, ValueError) as err:
            raise _bad(f"[[state.vfio_user]] pid {user.pid}",
                       f"{err.strerror if isinstance(err, OSError) else err}"
                       + (f" ({err.filename})" if isinstance(err, OSError) and
                          err.filename else "")) from None
    _check_consistent(k)
    k.dirty = False


def _apply_dynids(k: SimKernel, raw: object) -> None:
    table = _checked(v.table, raw, "[state]", "dynids (driver -> ids)")
    for drv, ids in table.items():
        where = f"[state] dynids.{drv}"
        if drv not in k.drivers:
            raise _bad(where, "unknown driver")
        if not isinstance(ids, list):
            raise _bad(where, f"must be an array of 'VVVV DDDD' strings, got "
                       f"{v.describe(ids)}")
        out = []
        for i, text in enumerate(ids):
            m = _DYNID.match(text) if isinstance(text, str) else None
            if m is None:
                raise _bad(where, f"[{i}] must look like '8086 10fb', got {v.describe(text)}")
            out.append(IdMatch(int(m.group(1), 16), int(m.group(2), 16)))
        k.dynids[drv] = out


def _apply_devices(k: SimKernel, devstate: Mapping[str, Any]) -> None:
    entries: dict[str, Mapping[str, Any]] = {}
    for name, ds in devstate.items():
        where = f"[state] devices.{name}"
        entries[name] = _checked(v.table, ds, where, "a device's state")
        _checked(v.known, entries[name], DEVICE_KEYS, where)
    for name, ds in entries.items():
        dev = k.devices.get(name)
        if dev is not None:
            _apply_device(k, dev, ds)
    for dev in list(k.devices.values()):
        ds = entries.get(dev.name, {})
        where = f"[state] devices.{dev.name}"
        if "sriov_numvfs" not in ds:
            continue
        sriov = dev.fn.sriov
        if sriov is None or dev.is_vf:
            raise _bad(where, "sriov_numvfs is for SR-IOV PFs only")
        num = _checked(v.get_int, ds, "sriov_numvfs", where, 0, sriov.total_vfs)
        if not num:
            continue
        vf_names = []
        for i in range(num):
            try:
                vf_names.append(str(k.vf_address(dev, i)))
            except OSError:
                raise _bad(where, f"sriov_numvfs = {num}: VF {i}'s routing ID would be "
                           "beyond bus ff") from None
        groups = []
        for n in vf_names:
            g = entries.get(n, {}).get("iommu_group")
            if g is not None:
                groups.append(_checked(v.as_int, g, f"[state] devices.{n}",
                                       "iommu_group", 0, (1 << 31) - 1))
        try:
            k.enable_vfs(dev, num, groups if len(groups) == num else None, probe=False)
        except (OSError, ValueError) as err:
            reason = "a VF address is already a device of this host" if isinstance(
                err, OSError) else str(err)
            raise _bad(where, f"sriov_numvfs = {num}: {reason}") from None
        for vf in dev.vfs:
            vf.driver_override = None
            _apply_device(k, vf, entries.get(vf.name, {}))
    unknown = sorted(set(entries) - set(k.devices))
    if unknown:
        raise _bad(f"[state] devices.{unknown[0]}", "no such device on this host (a VF "
                   "needs its PF's sriov_numvfs)")
    _vfio_indexes(k, entries)
    for name, ds in entries.items():
        if "iommu_group" in ds and not k.devices[name].is_vf:
            raise _bad(f"[state] devices.{name}", "iommu_group is saved for VFs only (the "
                       "others' groups follow from the hardware)")


def _apply_device(k: SimKernel, dev: SimDevice, ds: Mapping[str, Any]) -> None:
    where = f"[state] devices.{dev.name}"
    drv = _checked(v.get_str, ds, "driver", where, "", max_len=64)
    if drv and drv not in k.drivers:
        raise _bad(where, f"driver: unknown driver {drv!r}")
    dev.driver = drv or None
    dev.driver_override = _checked(v.get_str, ds, "driver_override", where, "",
                                   max_len=4094) or None
    dev.drivers_autoprobe = _checked(v.get_bool, ds, "sriov_drivers_autoprobe",
                                     where, True)
    if "reset_method" in ds:
        text = _checked(v.get_str, ds, "reset_method", where, max_len=64)
        methods = tuple(text.split())
        bad = [m for m in methods if m not in dev.default_reset_methods]
        if bad or len(set(methods)) != len(methods):
            raise _bad(where, f"reset_method = {text!r}: this device supports only "
                       f"{' '.join(dev.default_reset_methods) or 'none'}, each once")
        dev.reset_methods = methods
    dev.net_up = _checked(v.get_bool, ds, "net_up", where, dev.net_up)
    dev.net_configured = _checked(v.get_bool, ds, "net_configured", where,
                                  dev.net_configured)


def _apply_tokens(k: SimKernel, raw: object) -> None:
    secrets = _checked(v.table, raw, "[state]", "secrets")
    _checked(v.known, secrets, ("vf_tokens",), "[state] secrets")
    tokens = _checked(v.table, secrets.get("vf_tokens", {}),
                      "[state] secrets", "vf_tokens (PF address -> UUID)")
    for pf, token in tokens.items():
        where = f"[state] secrets.vf_tokens.{pf}"
        dev = k.devices.get(pf)
        if dev is None or dev.driver != VFIO_PCI or dev.fn.sriov is None or dev.is_vf:
            raise _bad(where, "a VF token belongs to an SR-IOV PF bound to vfio-pci")
        parsed = None
        if isinstance(token, str) and len(token) <= 64:
            with contextlib.suppress(ValueError):
                parsed = uuid.UUID(token)
        if parsed is None:
            raise _bad(where, "is not a UUID (the value is not shown: it is secret)")
        k.vf_tokens[pf] = parsed
    for dev in k.devices.values():
        if dev.driver == VFIO_PCI and dev.fn.sriov is not None and not dev.is_vf and \
                dev.name not in k.vf_tokens:
            k.vf_tokens[dev.name] = uuid.uuid4()   # vfio_pci_vf_init() made one at bind


def _check_consistent(k: SimKernel) -> None:
    """What the driver core would never have allowed."""
    for dev in k.devices.values():
        where = f"[state] devices.{dev.name}"
        if dev.driver is None:
            continue
        if dev.driver not in k.registered:
            raise _bad(where, f"driver {dev.driver} is not among the loaded [state] drivers")
        if dev.driver == VFIO_PCI and (dev.is_bridge or k.group_of(dev.name) is None):
            raise _bad(where, "vfio-pci binds only to endpoints in an IOMMU group")
        drv = k.drivers[dev.driver]
        if not drv.dma_managed and k.vfio.group_owned(k.group_of(dev.name)):
            raise _bad(where, f"driver {dev.driver} claims DMA in a group a VFIO user owns")


def _vfio_indexes(k: SimKernel, entries: Mapping[str, Mapping[str, Any]]) -> None:
    """Each vfio-pci device's ``vfio-dev/vfioN`` index: as saved, else (a state written
    before indexes were saved) the lowest free one in device order."""
    for dev in k.devices.values():
        ds = entries.get(dev.name, {})
        where = f"[state] devices.{dev.name}"
        if "vfio_dev" in ds and dev.driver != "vfio-pci":
            raise _bad(where, "vfio_dev is saved only for devices on vfio-pci")
        dev.vfio_index = _checked(v.get_int, ds, "vfio_dev", where, 0, (1 << 20) - 1) \
            if "vfio_dev" in ds else None
    seen: dict[int, str] = {}
    for dev in k.devices.values():
        if dev.vfio_index is None:
            continue
        if dev.vfio_index in seen:
            raise _bad(f"[state] devices.{dev.name}", f"vfio_dev = {dev.vfio_index} is "
                       f"also {seen[dev.vfio_index]}'s (each index is one device's)")
        seen[dev.vfio_index] = dev.name
    for dev in k.devices.values():
        if dev.driver == "vfio-pci" and dev.vfio_index is None:
            dev.vfio_index = k.free_vfio_index()


def dump_state(k: SimKernel) -> dict[str, Any]:
    """The ``[state]`` table for ``k`` (contains the VF tokens: keep it 0600)."""
    devices: dict[str, dict[str, Any]] = {}
    for dev in k.devices.values():
        ds: dict[str, Any] = {"driver": dev.driver or ""}
        if dev.driver_override is not None:
            ds["driver_override"] = dev.driver_override
        if dev.fn.sriov is not None and not dev.is_vf:
            ds["sriov_numvfs"] = dev.numvfs
            ds["sriov_drivers_autoprobe"] = dev.drivers_autoprobe
        if dev.reset_methods != dev.default_reset_methods:
            ds["reset_method"] = " ".join(dev.reset_methods)
        if dev.fn.net:
            ds["net_up"] = dev.net_up
            ds["net_configured"] = dev.net_configured
        if dev.is_vf:
            group = k.group_of(dev.name)
            if group is not None:
                ds["iommu_group"] = group
        if dev.vfio_index is not None:
            ds["vfio_dev"] = dev.vfio_index
        devices[dev.name] = ds
    state: dict[str, Any] = {
        "drivers": list(k.registered),
        "enable_sriov": k.enable_sriov,
        "devices": devices,
    }
    if any(k.dynids.values()):
        state["dynids"] = {d: [f"{m.vendor:04x} {m.device:04x}" for m in ids]
                           for d, ids in k.dynids.items() if ids}
    if k.vf_tokens:
        state["secrets"] = {"vf_tokens": {pf: str(t) for pf, t in k.vf_tokens.items()}}
    if k.vfio_users:
        state["vfio_user"] = [u.to_state() for u in k.vfio_users.values()]
    return state


__all__ = ["apply_state", "dump_state"]
