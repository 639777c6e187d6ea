"""Differential: vfioctl's reading of numbers in domain XML against libvirt's own parser.

The installed libvirt's ``virsh -c test:///default`` runs the real domain parser
in-process (the test driver needs no daemon), and vfioctl reads each case by that
release's rules (``--libvirt``; for a release vfioctl does not know, the newest one
below it). Written against libvirt 9.0; passed unchanged with 11.3 (Debian
bookworm-backports). ``define`` accepts or refuses a document, ``dumpxml`` shows what
it made of it. Each case changes one number in a small domain; vfioctl must accept
exactly what libvirt accepts and read the same value, except where this file says why
not. Outside hostdevs the reference is libvirt's parser (``define``); inside a
``<hostdev>`` vfioctl also applies libvirt's schema, so the reference there is
``define --validate`` (schema, then parser). Skipped without virsh (Debian:
libvirt-clients).
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from vfioctl.conf import LIBVIRT_DIALECTS, parse_string, validate_domain
from vfioctl.errors import XmlError

VIRSH = shutil.which("virsh")
pytestmark = pytest.mark.skipif(VIRSH is None,
                                reason="virsh not installed (Debian: libvirt-clients)")

TEMPLATE = """<domain type='kvm'>
  <name>oracle</name>
  <memory unit='{unit}'>{memory}</memory>
  <vcpu{current}>{vcpu}</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <controller type='pci' index='0' model='pci-root'/>
    <controller type='pci' index='{index}' model='pci-bridge'>
      <target chassisNr='{chassis}'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x0a' function='0x0'/>
    </controller>
    <hostdev mode='subsystem' type='pci' managed='yes'>
      <driver name='vfio'/>
      <source><address domain='0x0000' bus='{bus}' slot='0x00' function='0x0'/></source>
      <boot order='{order}'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='{slot}' function='0x0'/>
    </hostdev>
  </devices>
</domain>
"""


@functools.cache
def _installed_release() -> str:
    """The vfioctl dialect for the installed virsh: its X.Y if vfioctl knows it, else
    the newest known release not above it."""
    assert VIRSH is not None
    out = subprocess.run([VIRSH, "--version"], capture_output=True, text=True, timeout=600,
                         check=False).stdout.strip()
    have = tuple(int(n) for n in out.split(".")[:2])
    known = sorted((tuple(int(n) for n in v.split(".")), v) for v in LIBVIRT_DIALECTS)
    fitting = [v for k, v in known if k <= have]
    return fitting[-1] if fitting else known[0][1]


DEFAULTS = {"unit": "MiB", "memory": "64", "current": "", "vcpu": "2", "index": "1",
            "chassis": "1", "bus": "0x06", "order": "1", "slot": "0x05"}

CASES: list[tuple[str, str]] = [
    *[("memory", v) for v in ["64", " 64", "+64", "0064", "0x10", "64 ", "-1", "6²", "１２",
                              "99999999999999999999999", "9" * 5000, ""]],
    *[("unit", v) for v in ["KiB", "kib", "k", "KB", "Kb", "b", "bytes", "byte", "GiB",
                            "PiB", "EiB", "x", " k", "KiBs"]],
    *[("vcpu", v) for v in ["1", " 2", "+2", "02", "2 ", "0x2", "4294967297", "", "4²",
                            "9" * 5000]],
    *[("current", v) for v in [" current='1'", " current='x'", " current='3'",
                               " current='1 '"]],
    *[("index", v) for v in ["01", "010", " 1", "+1", "1 ", "0x1", "-1", "2147483648", "",
                             "１", "9" * 5000]],
    *[("chassis", v) for v in ["1", "0x10", "010", " 3", "-1", "x", "4294967296"]],
    *[("bus", v) for v in ["0x06", " 0x06", "+6", "0X6", "010", "0x06 ", "-0", "-1",
                           "4294967296", "4294967295", "00x6", "09", "６", "0x", "256",
                           "9" * 5000]],
    *[("slot", v) for v in ["0x05", "5", "05", "0x1f", "0x20", "40", "5 ", "+5"]],
    *[("order", v) for v in ["1", " 1", "+1", "01", "1 ", "0x1", "0", "4294967296"]],
]

# Where vfioctl refuses what libvirt accepts, and why.
STRICTER: dict[tuple[str, str], str] = {}
# Where libvirt refuses what vfioctl's parser accepts, and why that is right.
LAXER: dict[tuple[str, str], str] = {
    ("memory", ""): "libvirt needs a memory size to define a domain; vfioctl validate "
    "does not (it checks hostdevs), 'vfioctl start' refuses a domain without <memory>",
}


# Values inside the <hostdev>: compared with libvirt's parser *and* schema.
HOSTDEV_FIELDS = frozenset({"bus", "slot", "order"})


def _libvirt(xml: str, tmp: Path, *, validate: bool) -> tuple[bool, str]:
    assert VIRSH is not None
    path = tmp / "oracle.xml"
    path.write_text(xml)
    define = f"define --validate {path}" if validate else f"define {path}"
    proc = subprocess.run([VIRSH, "-q", "-c", "test:///default",
                           f"{define}; dumpxml oracle"],
                          capture_output=True, text=True, timeout=600, check=False)
    if "error:" in proc.stderr:
        return False, proc.stderr
    return True, proc.stdout


def _vfioctl(xml: str) -> tuple[bool, object]:
    try:
        doc = parse_string(xml, filename="oracle.xml", libvirt=_installed_release())
        validate_domain(doc.domain)
    except XmlError as err:
        return False, str(err)
    return True, doc.domain


def _libvirt_values(dump: str) -> dict[str, int]:
    def num(pattern: str) -> int:
        m = re.search(pattern, dump)
        assert m is not None, f"{pattern} not in\n{dump}"
        return int(m.group(1), 0)

    return {
        "memory_kib": num(r"<memory unit='KiB'>(\d+)</memory>"),
        "vcpus": num(r"<vcpu[^>]*>(\d+)</vcpu>"),
        "index": num(r"<controller type='pci' index='(\d+)' model='pci-bridge'"),
        "bus": num(r"<source>\s*<address domain='0x0000' bus='(0x[0-9a-f]+)'"),
        "slot": num(r"</source>\s*(?:<boot[^>]*>\s*)?<address type='pci' domain='0x0000' "
                    r"bus='0x00' slot='(0x[0-9a-f]+)'"),
        "order": num(r"<boot order='(\d+)'/>"),
    }


def _our_values(domain: object) -> dict[str, int]:
    hd = domain.hostdevs[0]  # type: ignore[attr-defined]
    bridge = domain.controllers[1]  # type: ignore[attr-defined]
    return {"memory_kib": domain.memory.kib,  # type: ignore[attr-defined]
            "vcpus": domain.vcpus,  # type: ignore[attr-defined]
            "index": bridge.index, "bus": hd.source.bus, "slot": hd.guest_address.slot,
            "order": hd.boot_order}


@pytest.mark.parametrize(("field", "text"), CASES,
                         ids=[f"{f}={t[:12]!r}" for f, t in CASES])
def test_reads_numbers_like_libvirt(field: str, text: str, tmp_path: Path) -> None:
    xml = TEMPLATE.format(**{**DEFAULTS, field: text})
    theirs_ok, theirs = _libvirt(xml, tmp_path, validate=field in HOSTDEV_FIELDS)
    ours_ok, ours = _vfioctl(xml)
    if (field, text) in STRICTER:
        assert theirs_ok and not ours_ok
        return
    if (field, text) in LAXER:
        assert ours_ok and not theirs_ok
        return
    assert ours_ok == theirs_ok, (f"{field}={text[:40]!r}: libvirt "
                                  f"{'accepts' if theirs_ok else 'refuses'} "
                                  f"({theirs[:300]}), vfioctl {ours}")
    if ours_ok:
        assert _our_values(ours) == _libvirt_values(theirs)
