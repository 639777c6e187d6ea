"""The persisted configuration's format: ``persist.toml``, parsed strictly, written back.

One ``[[device]]`` table per device vfioctl should bind at boot, keyed by its address
*and* its identity (vendor:device, subsystem vendor:device), because an address alone
names a slot, not a card: a different card in the slot, or a firmware update that
changes the subsystem ids, must not silently go to a guest. Each entry also keeps the
IOMMU group's members as they were when it was persisted (addresses and ids): a group is
its members, not its number, and numbers may change across kernels (docs/persistence.md).

The file is user input, edited by hand as often as by vfioctl: whatever is wrong with it
is one :class:`~vfioctl.errors.ConfigError` (exit 3) naming the file, the entry and the
key, and nothing is applied from a file that does not parse.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import tomli_w

from vfioctl.address import PciAddress
from vfioctl.errors import ConfigError, UsageError

FORMAT_VERSION: Final = 1
DRIVERS: Final = ("vfio-pci", "pci-stub")
MAX_NUMVFS: Final = 65535
HEADER: Final = ("# vfioctl's persisted bindings: written by 'vfioctl detach --persist' and "
                 "'vfioctl persist'.\n# Applied at boot (docs/persistence.md). Hand edits "
                 "are checked strictly; a token is never kept here.\n")
_ID: Final = re.compile(r"[0-9a-f]{4}:[0-9a-f]{4}")
_HINT: Final = "fix the entry, or remove it with 'vfioctl persist remove ADDRESS'"


@dataclass(frozen=True, order=True)
class Member:
    """A function of the IOMMU group as it was when the entry was persisted."""

    address: PciAddress
    id: str                 # "8086:10d3"
    subsystem: str          # "8086:0000"; "0000:0000" when the function has none

    def to_toml(self) -> dict[str, Any]:
        return {"address": str(self.address), "id": self.id, "subsystem": self.subsystem}


@dataclass(frozen=True)
class Entry:
    """One persisted device: what it is, where it goes, and its group as persisted."""

    address: PciAddress
    id: str
    subsystem: str
    driver: str = "vfio-pci"
    iommu_group: int | None = None
    members: tuple[Member, ...] = ()
    numvfs: int | None = None          # opt-in: VFs to create at boot (vfio-pci PF)
    token: bool = False                # opt-in: a persisted VF token (own 0600 file)
    persisted_at: str = ""

    def to_toml(self) -> dict[str, Any]:
        out: dict[str, Any] = {"address": str(self.address), "id": self.id,
                               "subsystem": self.subsystem, "driver": self.driver}
        if self.iommu_group is not None:
            out["iommu_group"] = self.iommu_group
        out["members"] = [m.to_toml() for m in self.members]
        if self.numvfs is not None:
            out["numvfs"] = self.numvfs
        if self.token:
            out["token"] = True
        if self.persisted_at:
            out["persisted_at"] = self.persisted_at
        return out


@dataclass(frozen=True)
class Config:
    """The whole file: entries in address order, each address once."""

    entries: tuple[Entry, ...] = field(default_factory=tuple)

    def get(self, addr: PciAddress) -> Entry | None:
        return next((e for e in self.entries if e.address == addr), None)

    def with_entry(self, entry: Entry) -> Config:
        """This configuration with ``entry`` added or replacing the one at its address."""
        rest = [e for e in self.entries if e.address != entry.address]
        return Config(tuple(sorted([*rest, entry], key=lambda e: e.address)))

    def without(self, addrs: set[PciAddress]) -> Config:
        return Config(tuple(e for e in self.entries if e.address not in addrs))


def render(config: Config) -> str:
    """The file's text: the header comment, ``version``, one ``[[device]]`` per entry."""
    doc: dict[str, Any] = {"version": FORMAT_VERSION}
    if config.entries:
        doc["device"] = [e.to_toml() for e in config.entries]
    return HEADER + "\n" + tomli_w.dumps(doc)


def parse(text: str, name: str) -> Config:
    """Parse ``persist.toml`` (``name`` says which file, for messages).

    Raises:
        ConfigError: not TOML, or any entry or key that is not what the format says.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"persisted configuration {name} is not valid TOML: {err}",
                          hint=_HINT) from None
    except RecursionError:
        raise ConfigError(f"persisted configuration {name} is not valid TOML: nested "
                          "too deeply", hint=_HINT) from None
    _keys(doc, {"version", "device"}, f"persisted configuration {name}")
    version = doc.get("version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise ConfigError(f"persisted configuration {name}: version must be "
                          f"{FORMAT_VERSION}, got {_shown(version)}",
                          hint="this vfioctl reads format version 1 (docs/persistence.md)")
    tables = doc.get("device", [])
    if not isinstance(tables, list):
        raise ConfigError(f"persisted configuration {name}: 'device' must be an array of "
                          "tables ([[device]])", hint=_HINT)
    entries: list[Entry] = []
    for i, table in enumerate(tables, 1):
        where = f"persisted configuration {name}: device #{i}"
        if not isinstance(table, dict):
            raise ConfigError(f"{where} is not a table", hint=_HINT)
        entry = _entry(table, where)
        if any(e.address == entry.address for e in entries):
            raise ConfigError(f"{where}: address {entry.address} is persisted twice",
                              hint="keep one entry per device")
        entries.append(entry)
    return Config(tuple(sorted(entries, key=lambda e: e.address)))


def _entry(t: Mapping[str, Any], where: str) -> Entry:
    addr = _address(t, "address", where)
    where = f"{where} ({addr})"
    _keys(t, {"address", "id", "subsystem", "driver", "iommu_group", "members", "numvfs",
              "token", "persisted_at"}, where)
    driver = t.get("driver", "vfio-pci")
    if driver not in DRIVERS:
        raise ConfigError(f"{where}: driver must be one of {', '.join(DRIVERS)}, got "
                          f"{_shown(driver)}", hint=_HINT)
    group = t.get("iommu_group")
    if group is not None and (not isinstance(group, int) or isinstance(group, bool)
                              or not 0 <= group < 1 << 31):
        raise ConfigError(f"{where}: iommu_group must be a group number (0 or more), got "
                          f"{_shown(group)}", hint=_HINT)
    raw_members = t.get("members")
    if not isinstance(raw_members, list) or not raw_members:
        raise ConfigError(f"{where}: members must list the IOMMU group's functions "
                          "(addresses and ids), the device itself included", hint=_HINT)
    members: list[Member] = []
    for j, m in enumerate(raw_members, 1):
        mw = f"{where}: member #{j}"
        if not isinstance(m, dict):
            raise ConfigError(f"{mw} is not a table", hint=_HINT)
        _keys(m, {"address", "id", "subsystem"}, mw)
        member = Member(_address(m, "address", mw), _id(m, "id", mw),
                        _id(m, "subsystem", mw))
        if any(x.address == member.address for x in members):
            raise ConfigError(f"{mw}: {member.address} is listed twice", hint=_HINT)
        members.append(member)
    ident, subsystem = _id(t, "id", where), _id(t, "subsystem", where)
    me = next((m for m in members if m.address == addr), None)
    if me is None or (me.id, me.subsystem) != (ident, subsystem):
        raise ConfigError(f"{where}: members must include the device itself with the same "
                          "id and subsystem", hint=_HINT)
    numvfs = t.get("numvfs")
    if numvfs is not None and (not isinstance(numvfs, int) or isinstance(numvfs, bool)
                               or not 1 <= numvfs <= MAX_NUMVFS):
        raise ConfigError(f"{where}: numvfs must be an integer 1..{MAX_NUMVFS}, got "
                          f"{_shown(numvfs)}", hint=_HINT)
    token = t.get("token", False)
    if not isinstance(token, bool):
        raise ConfigError(f"{where}: token must be true or false, got {_shown(token)}",
                          hint=_HINT)
    if (numvfs is not None or token) and driver != "vfio-pci":
        raise ConfigError(f"{where}: numvfs and token need driver vfio-pci (a PF driven "
                          "from userspace)", hint=_HINT)
    at = t.get("persisted_at", "")
    if not isinstance(at, str):
        raise ConfigError(f"{where}: persisted_at must be a string, got {_shown(at)}",
                          hint=_HINT)
    return Entry(addr, ident, subsystem, driver, group, tuple(sorted(members)), numvfs,
                 token, at)


def _keys(t: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(t) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}'",
                          hint=f"the keys are: {', '.join(sorted(allowed))}")


def _address(t: Mapping[str, Any], key: str, where: str) -> PciAddress:
    value = t.get(key)
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {key} must be a PCI address string "
                          f"(0000:01:00.0), got {_shown(value)}", hint=_HINT)
    try:
        addr = PciAddress.parse(value)
    except UsageError:
        raise ConfigError(f"{where}: {key} '{value}' is not a PCI address "
                          "(DDDD:BB:SS.F)", hint=_HINT) from None
    if str(addr) != value:
        raise ConfigError(f"{where}: {key} '{value}' must be written in full, lower case "
                          f"({addr})", hint=_HINT)
    return addr


def _id(t: Mapping[str, Any], key: str, where: str) -> str:
    value = t.get(key)
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise ConfigError(f"{where}: {key} must be 'vvvv:dddd' (4 lower-case hex digits "
                          f"each), got {_shown(value)}", hint=_HINT)
    return value


def _shown(value: object) -> str:
    """A value for a one-line error: quoted, control characters escaped (a TOML
    multi-line string may hold a newline), cut at 80 characters."""
    if value is None:
        return "nothing"
    if isinstance(value, str):
        return repr(value)[:80]
    return f"{type(value).__name__} {value!r}"[:80]


__all__ = ["DRIVERS", "FORMAT_VERSION", "Config", "Entry", "Member", "parse", "render"]
