"""Helpers for the libvirt front-end tests: domain XML as libvirt hands it to hooks,
hook calls made the way libvirt makes them, and the simulated host's own record of
each device's driver (the oracle: the host file, not vfioctl's read model)."""

from __future__ import annotations

import io
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

import pytest

from vfioctl.cli.main import main

NS = "urn:vfioctl:libvirt:1"
UUID = "2b7c0a56-37d7-4c5e-9a0c-0d2f4e5a6b7c"


def hostdev(addr: str, *, managed: str = "no") -> str:
    dom, bus, rest = addr.split(":")
    slot, fn = rest.split(".")
    return (f"<hostdev mode='subsystem' type='pci' managed='{managed}'><source>"
            f"<address domain='0x{dom}' bus='0x{bus}' slot='0x{slot}' function='0x{fn}'/>"
            "</source></hostdev>")


def domain_xml(name: str = "win10", *, hostdevs: Sequence[str] = (),
               meta: Sequence[str] = (), managed: str = "no", uuid: str = UUID,
               emulator: str = "/usr/bin/qemu-system-x86_64", extra_devices: str = "",
               dac: str | None = None, extra: str = "") -> str:
    """A domain as libvirt's hooks see it; ``meta`` are ``<vfioctl:hostdev>`` lines."""
    metadata = ""
    if meta:
        metadata = (f"<metadata><vfioctl:devices xmlns:vfioctl='{NS}'>" + "".join(meta)
                    + "</vfioctl:devices></metadata>")
    seclabel = (f"<seclabel type='dynamic' model='dac' relabel='yes'><label>{dac}</label>"
                f"<imagelabel>{dac}</imagelabel></seclabel>" if dac else "")
    return (f"<domain type='kvm'>\n  <name>{name}</name>\n  <uuid>{uuid}</uuid>\n"
            f"  {metadata}\n  <memory unit='KiB'>65536</memory>\n  <vcpu>1</vcpu>\n"
            "  <os><type arch='x86_64' machine='pc-q35-10.0'>hvm</type></os>\n"
            f"  {extra}\n  <devices>\n    <emulator>{emulator}</emulator>\n    "
            + "\n    ".join(hostdev(a, managed=managed) for a in hostdevs)
            + f"\n    {extra_devices}\n  </devices>\n  {seclabel}\n</domain>\n")


def run(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
        args: Sequence[str], stdin: str | bytes = b"") -> tuple[int, str, str]:
    """``vfioctl ARGS`` in this process with ``stdin``: (exit status, stdout, stderr)."""
    data = stdin.encode() if isinstance(stdin, str) else stdin
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    capfd.readouterr()
    rc = main(list(args))
    out, err = capfd.readouterr()
    return rc, out, err


def hook(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], name: str,
         op: str, subop: str, xml: str | bytes, extra: str = "-") -> tuple[int, str, str]:
    """One hook call as libvirt makes it: four arguments, the XML on stdin."""
    return run(monkeypatch, capfd, ["libvirt", "hook", name, op, subop, extra], xml)


def drivers(host_file: Path) -> dict[str, str | None]:
    """Every device's driver as the simulated host file records it once vfioctl has
    written it back (a pristine bundled file names drivers elsewhere: None here)."""
    doc = tomllib.loads(host_file.read_text())
    state = doc.get("state", {}).get("devices", {})
    addrs = {d["addr"] for d in doc["device"]} | set(state)
    return {a: state.get(a, {}).get("driver") or None for a in sorted(addrs)}
