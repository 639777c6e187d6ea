"""Simulator: host description files <-> kernels, and the state section written back.

A host file is the hardware description followed, once vfioctl changed something, by a
``[state]`` table below :data:`STATE_MARKER`. Only that tail is rewritten, so comments
and layout of the hand-written hardware part survive every save. Without ``[state]`` the
kernel boots: every device is probed as at power-on.

The state holds what the kernel would remember: loaded modules, ``enable_sriov``, per
device the driver, ``driver_override``, NumVFs, autoprobe and reset methods, each VF's
group number, dynamic ids, whether an interface is still up, and the VF tokens — kernel
memory, secret: a file holding tokens is written with mode 0600, and the token is never
part of any message.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
import uuid
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import tomli_w

from vfioctl.errors import ConfigError, NotFound
from vfioctl.sim.kernel import SimKernel
from vfioctl.sim.model import HostSpec, IdMatch, parse_host

STATE_MARKER = "# ---- vfioctl state: written by vfioctl on every change; edit the " \
    "hardware above, not this ----"
BUNDLED_PACKAGE = "vfioctl.sim"


def bundled_names() -> list[str]:
    """Names of the hosts shipped in the package (``sim:NAME``)."""
    base = resources.files(BUNDLED_PACKAGE) / "hosts"
    return sorted(p.name[:-5] for p in base.iterdir() if p.name.endswith(".toml"))


def bundled_text(name: str) -> str:
    """The description of a bundled host.

    Raises:
        NotFound: no bundled host of that name.
    """
    if name not in bundled_names():
        raise NotFound(f"simulated host '{name}' not found",
                       hint="'vfioctl sim list' shows the bundled hosts; give a path for "
                       "a host file (sim:./myhost.toml)")
    return (resources.files(BUNDLED_PACKAGE) / "hosts" / f"{name}.toml").read_text()


def parse_text(text: str, name: str) -> HostSpec:
    """Parse a host description.

    Raises:
        ConfigError: not TOML, or not a valid host (the message names the entry).
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"host file {name} is not valid TOML: {err}") from err
    return parse_host(doc, name)


def split_state(text: str) -> str:
    """The hardware part of a host file (everything above the state marker)."""
    idx = text.find(STATE_MARKER)
    return text if idx < 0 else text[:idx].rstrip("\n") + "\n"


def kernel_from_spec(spec: HostSpec) -> SimKernel:
    """A kernel for ``spec``: booted, or restored from the spec's ``[state]``."""
    kernel = SimKernel(spec)
    if spec.state is None:
        kernel.boot()
    else:
        apply_state(kernel, spec.state)
    return kernel


def apply_state(k: SimKernel, state: Mapping[str, Any]) -> None:
    """Put a freshly built kernel into a saved state (no probing: the state says it all).

    Raises:
        ConfigError: the state names devices or drivers the hardware does not have.
    """
    def bad(msg: str) -> ConfigError:
        return ConfigError(f"[state]: {msg}", hint="remove the [state] section to boot the "
                           "host afresh")

    mods = state.get("drivers")
    if mods is not None:
        unknown = [m for m in mods if m not in k.drivers]
        if unknown:
            raise bad(f"unknown driver(s) {', '.join(unknown)}")
        k.registered = list(mods)
    k.enable_sriov = bool(state.get("enable_sriov", k.enable_sriov))
    for drv, ids in state.get("dynids", {}).items():
        k.dynids[drv] = [IdMatch(int(i.split()[0], 16), int(i.split()[1], 16)) for i in ids]
    devstate: Mapping[str, Mapping[str, Any]] = state.get("devices", {})
    for name, ds in devstate.items():
        dev = k.devices.get(name)
        if dev is None:
            continue   # a VF: created below
        _apply_device(k, dev, ds, bad)
    for dev in list(k.devices.values()):
        num = int(devstate.get(dev.name, {}).get("sriov_numvfs", 0))
        if num and dev.fn.sriov is not None:
            vf_names = [str(k.vf_address(dev, i)) for i in range(num)]
            groups = [devstate.get(n, {}).get("iommu_group") for n in vf_names]
            saved = [int(g) for g in groups if g is not None]
            k.enable_vfs(dev, num, saved if len(saved) == num else None, probe=False)
            for vf in dev.vfs:
                vf.driver_override = None
                _apply_device(k, vf, devstate.get(vf.name, {}), bad)
    for pf, token in state.get("secrets", {}).get("vf_tokens", {}).items():
        if pf in k.devices:
            k.vf_tokens[pf] = uuid.UUID(token)
    k.dirty = False


def _apply_device(k: SimKernel, dev: Any, ds: Mapping[str, Any], bad: Any) -> None:
    drv = ds.get("driver", "")
    if drv and drv not in k.drivers:
        raise bad(f"{dev.name}: unknown driver {drv}")
    dev.driver = drv or None
    dev.driver_override = ds.get("driver_override") or None
    dev.drivers_autoprobe = bool(ds.get("sriov_drivers_autoprobe", True))
    if "reset_method" in ds:
        dev.reset_methods = tuple(str(ds["reset_method"]).split())
    dev.net_up = bool(ds.get("net_up", dev.net_up))


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
        if dev.is_vf:
            group = k.group_of(dev.name)
            if group is not None:
                ds["iommu_group"] = group
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
    return state


def render_file(hardware_text: str, k: SimKernel) -> str:
    """Hardware text + marker + the current state."""
    return (hardware_text.rstrip("\n") + "\n\n" + STATE_MARKER + "\n"
            + tomli_w.dumps({"state": dump_state(k)}))


Stamp = tuple[int, int, int]


def read_host_file(path: Path, *, unless_digest: str | None = None
                   ) -> tuple[str, HostSpec, Stamp, str] | None:
    """``(hardware_text, spec, stamp, digest)`` of a host file; None when its content
    hashes to ``unless_digest`` (nothing changed: no need to parse).

    The stamp (inode, mtime, size) is taken from the very file that was read: saves
    replace the file by rename, so an open file never changes under the reader, and a
    stamp taken separately could belong to a newer file than the text.

    Raises:
        NotFound: the file does not exist.
        ConfigError: it is not a valid host description.
    """
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            raw = f.read()
    except FileNotFoundError:
        raise NotFound(f"simulated host file {path} not found",
                       hint="'vfioctl sim copy workstation FILE' writes one to start from"
                       ) from None
    digest = hashlib.sha256(raw).hexdigest()
    if digest == unless_digest:
        return None
    text = raw.decode()
    spec = parse_text(text, str(path))
    hardware = split_state(text)
    if spec.state is not None and STATE_MARKER not in text:
        # a hand-written [state] without the marker: keep the data, lose the layout
        doc = tomllib.loads(text)
        doc.pop("state")
        hardware = tomli_w.dumps(doc)
    return hardware, spec, (st.st_ino, st.st_mtime_ns, st.st_size), digest
