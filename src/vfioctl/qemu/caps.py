"""Translation: what a QEMU binary's vfio-pci device accepts, probed, cached or recorded.

Capabilities come from three places, never from a guess:

- :func:`probe`: run the binary (``--version``; ``-machine none -nodefaults -display none
  -device vfio-pci,help``) and read the property list; cached per binary path, size and
  mtime under ``$XDG_CACHE_HOME/vfioctl/qemu-caps`` (``VFIOCTL_CACHE_DIR`` overrides).
- :func:`load_caps_file`: a JSON file written by ``vfioctl qemu-caps BIN --json``.
- :func:`caps_for_version`: a built-in table of when each property vfioctl may emit
  appeared in upstream QEMU (for generating arguments without the target binary).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vfioctl.errors import ConfigError, UnsupportedConfig, UsageError

FORMAT = "vfioctl-qemu-caps/1"

Version = tuple[int, int, int]

VF_TOKEN_MIN: Version = (8, 1, 0)
"""vfio-pci ``vf-token``: QEMU commit "vfio/pci: add support for VF token" (Minwoo Im,
pulled 2023-05-09 for 8.1; hw/vfio/pci.c DEFINE_PROP_UUID_NODEFAULT("vf-token", …))."""

JSON_DEVICE_MIN: Version = (7, 0, 0)
"""libvirt 9.0 writes ``-device`` as JSON only when QMP ``device_add`` has the feature
``json-cli-hotplug`` (libvirt qemu_capabilities.c, QEMU_CAPS_DEVICE_JSON), which QEMU
added in 7.0 (qapi/qdev.json, "qdev: Add 'json-cli-hotplug' feature", 2022-01)."""

LIBVIRT_QEMU_MIN: Version = (4, 2, 0)
"""The oldest QEMU libvirt 9.0 supports (libvirt NEWS for 8.1.0 raised it to 4.2)."""


@dataclass(frozen=True)
class PropertyIntro:
    """When a vfio-pci property vfioctl may emit first appeared in upstream QEMU."""

    name: str
    since: Version
    source: str


# Only the properties vfioctl emits. Everything present in 4.2 (libvirt 9.0's minimum
# QEMU) is listed with since=4.2 and was checked against Debian's QEMU 7.2 probe and the
# 8.1 property list (tests/data/qemu/qemu-8.1.0-x86_64.json).
PROPERTY_HISTORY: tuple[PropertyIntro, ...] = (
    PropertyIntro("host", (4, 2, 0),
                  "hw/vfio/pci.c DEFINE_PROP_PCI_HOST_DEVADDR since vfio-pci's start (1.3)"),
    PropertyIntro("bootindex", (4, 2, 0),
                  "hw/vfio/pci.c vfio_instance_init device_add_bootindex_property (2.2)"),
    PropertyIntro("addr", (4, 2, 0), "hw/pci/pci.c pci_props: generic PCIDevice property"),
    PropertyIntro("multifunction", (4, 2, 0),
                  "hw/pci/pci.c pci_props: generic PCIDevice property"),
    PropertyIntro("rombar", (4, 2, 0), "hw/pci/pci.c pci_props: generic PCIDevice property"),
    PropertyIntro("romfile", (4, 2, 0), "hw/pci/pci.c pci_props: generic PCIDevice property"),
    PropertyIntro("vf-token", VF_TOKEN_MIN,
                  "hw/vfio/pci.c DEFINE_PROP_UUID_NODEFAULT, 'vfio/pci: add support for VF "
                  "token' (8.1)"),
)


@dataclass(frozen=True)
class QemuCaps:
    """A QEMU's version and its ``vfio-pci`` properties; ``source`` says where they came from."""

    version: Version
    vfio_pci_props: frozenset[str]
    source: str
    binary: str | None = None

    @property
    def version_str(self) -> str:
        return ".".join(str(n) for n in self.version)

    def has(self, prop: str) -> bool:
        return prop in self.vfio_pci_props

    def to_json(self, *, note: str | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = {"format": FORMAT}
        if note:
            doc["note"] = note
        doc["binary"] = self.binary
        doc["version"] = self.version_str
        doc["devices"] = {"vfio-pci": sorted(self.vfio_pci_props)}
        return doc


def parse_version(text: str) -> Version:
    """``X.Y`` or ``X.Y.Z`` -> a tuple.

    Raises:
        UsageError: if the text is not a version.
    """
    m = re.fullmatch(r"\s*(\d+)\.(\d+)(?:\.(\d+))?\s*", text)
    if m is None:
        raise UsageError(f"'{text}' is not a QEMU version", hint="write it as X.Y, e.g. 8.1")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def caps_for_version(text: str) -> QemuCaps:
    """The vfio-pci properties vfioctl may emit that upstream QEMU ``text`` has.

    Raises:
        UsageError: if ``text`` is not a version.
        UnsupportedConfig: for a QEMU older than libvirt 9.0's minimum (4.2).
    """
    version = parse_version(text)
    if version < LIBVIRT_QEMU_MIN:
        raise UnsupportedConfig(
            f"QEMU {text} is older than 4.2, the oldest QEMU libvirt 9.0 and vfioctl support")
    props = frozenset(p.name for p in PROPERTY_HISTORY if p.since <= version)
    return QemuCaps(version, props, source=f"built-in table for QEMU {text}")


def load_caps_file(path: str | Path) -> QemuCaps:
    """Read a capability file written by ``vfioctl qemu-caps BIN --json``.

    Raises:
        ConfigError: if the file cannot be read or is not a capability file.
    """
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read QEMU capability file {path}: {err}") from err
    try:
        if doc.get("format") != FORMAT:
            raise ValueError(f"format is not {FORMAT}")
        props = doc["devices"]["vfio-pci"]
        if not isinstance(props, list) or not all(isinstance(p, str) for p in props):
            raise ValueError("devices.vfio-pci is not a list of names")
        version = parse_version(str(doc["version"]))
    except (KeyError, TypeError, ValueError, UsageError) as err:
        raise ConfigError(f"{path} is not a vfioctl QEMU capability file: {err}") from err
    return QemuCaps(version, frozenset(props), source=f"capability file {path}",
                    binary=doc.get("binary"))


def cache_dir() -> Path:
    """Where probe results are cached: ``$VFIOCTL_CACHE_DIR``, else ``$XDG_CACHE_HOME``."""
    if env := os.environ.get("VFIOCTL_CACHE_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vfioctl" / "qemu-caps"


def probe(binary: str | Path, *, use_cache: bool = True, timeout: float = 30.0) -> QemuCaps:
    """Ask a QEMU binary for its version and vfio-pci properties (cached).

    Raises:
        ConfigError: if the binary is missing, fails, or prints no version.
    """
    path = Path(binary)
    try:
        st = path.stat()
    except OSError as err:
        raise ConfigError(f"QEMU binary {binary} not found: {err.strerror}",
                          hint="pass --qemu BIN, --qemu-caps FILE or --qemu-version X.Y") from err
    resolved = str(path.resolve())
    stamp: dict[str, object] = {"binary": resolved, "size": st.st_size,
                                "mtime_ns": st.st_mtime_ns}
    entry = cache_dir() / (hashlib.sha256(resolved.encode()).hexdigest()[:24] + ".json")
    if use_cache:
        try:
            cached = json.loads(entry.read_text())
            if cached.get("stamp") == stamp:
                caps = cached["caps"]
                return QemuCaps(parse_version(caps["version"]),
                                frozenset(caps["devices"]["vfio-pci"]),
                                source=f"probe of {binary} (cached)", binary=str(binary))
        except (OSError, ValueError, KeyError, TypeError, UsageError):
            pass
    version = _probe_version(str(binary), timeout)
    props = _probe_vfio_props(str(binary), timeout)
    caps = QemuCaps(version, props, source=f"probe of {binary}", binary=str(binary))
    if use_cache:
        _write_cache(entry, {"stamp": stamp, "caps": caps.to_json()})
    return caps


def _run(argv: list[str], timeout: float) -> str:
    env = dict(os.environ, LC_ALL="C")
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, env=env, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ConfigError(f"cannot run {argv[0]}: {err}") from err
    return proc.stdout + proc.stderr


def _probe_version(binary: str, timeout: float) -> Version:
    out = _run([binary, "--version"], timeout)
    m = re.search(r"version (\d+)\.(\d+)\.(\d+)", out)
    if m is None:
        raise ConfigError(f"{binary} --version printed no QEMU version",
                          hint="is it a qemu-system-* binary?")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def _probe_vfio_props(binary: str, timeout: float) -> frozenset[str]:
    # -machine none: no board to build; -display none: no window; ",help" prints and exits.
    out = _run([binary, "-machine", "none", "-nodefaults", "-display", "none",
                "-device", "vfio-pci,help"], timeout)
    if "vfio-pci options" not in out:
        return frozenset()  # built without vfio: callers report it when they need it
    return frozenset(re.findall(r"^\s+([A-Za-z0-9_.-]+)=<", out, re.M))


def _write_cache(entry: Path, doc: dict[str, Any]) -> None:
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=".caps-")
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1)
        os.replace(tmp, entry)
    except OSError:
        pass  # a cache that cannot be written only costs a probe next time


def resolve_caps(
    *,
    caps_file: str | None = None,
    version: str | None = None,
    binary: str | None = None,
    emulator: str | None = None,
) -> QemuCaps:
    """Pick the capability source the user asked for, in this order: a capability file,
    a QEMU version (built-in table), a binary to probe, the domain's ``<emulator>``.

    Raises:
        UsageError: if more than one of caps_file/version/binary is given, or none of
            them and no emulator.
        ConfigError / UnsupportedConfig: from the chosen source.
    """
    given = [name for name, value in (("--qemu-caps", caps_file), ("--qemu-version", version),
                                      ("--qemu", binary)) if value]
    if len(given) > 1:
        raise UsageError(f"{' and '.join(given)} cannot be used together",
                         hint="name one source of QEMU capabilities")
    if caps_file:
        return load_caps_file(caps_file)
    if version:
        return caps_for_version(version)
    target = binary or emulator
    if not target:
        raise UsageError("the domain has no <emulator> and no QEMU was named",
                         hint="pass --qemu BIN, --qemu-caps FILE or --qemu-version X.Y")
    return probe(target)
