"""Golden: libvirt domain XML -> QEMU -device arguments (tests/data/xml2argv).

Each ``<case>.xml`` has ``<case>.args`` (one argv element per line) or ``<case>.err``
(``ClassName: message``). Capabilities come from recorded files, like libvirt's
``x86_64-latest``: QEMU 8.1 by default, the real 7.2 probe for ``*-qemu-7.2`` cases.
``<case>.libvirt`` is libvirt 9.0's own ``virsh domxml-to-native`` output for the same
file (tests/golden/record_libvirt.sh); vfioctl's arguments must equal libvirt's.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from vfioctl.conf import parse_string, validate_domain
from vfioctl.errors import VfioctlError
from vfioctl.qemu.argv import build_hostdev_args
from vfioctl.qemu.caps import load_caps_file
from vfioctl.secret import REDACTED

DATA = Path(__file__).parent.parent / "data"
CASES = sorted(p.stem for p in (DATA / "xml2argv").glob("*.xml"))
# Relative to DATA, so that messages naming the file are the same on every machine.
CAPS_LATEST = "qemu/qemu-8.1.0-x86_64.json"
CAPS_72 = "qemu/qemu-7.2.22-x86_64.json"

# Where vfioctl refuses what libvirt 9.0 accepts, and why (kept explicit on purpose).
STRICTER_THAN_LIBVIRT = {
    "hostdev-alias-not-user": "libvirt silently drops an alias without 'ua-'",
    "hostdev-bus-no-controller": "libvirt adds a pci-bridge by itself",
    "hostdev-driver-unknown-attr": "libvirt ignores unknown attributes",
    "hostdev-mdev": "mdev hostdevs are out of vfioctl's scope",
    "hostdev-teaming": "<teaming> is not modelled by vfioctl",
    "hostdev-unknown-element": "libvirt ignores unknown elements",
    "hostdev-vf-token-malformed": "libvirt 9.0 ignores <vf-token> altogether",
    "hostdev-vf-token-misplaced": "libvirt 9.0 ignores <vf-token> altogether",
    "hostdev-vfio-q35-noaddr": "libvirt adds pcie-root-ports; vfioctl wants an address",
    "hostdev-vfio-vf-token-qemu-7.2": "libvirt drops the token instead of refusing",
}
# Where libvirt's domxml-to-native fails but vfioctl produces arguments.
LIBVIRT_CANNOT = {
    "hostdev-vfio-no-driver": "domxml-to-native does not resolve the default backend "
    "(libvirt picks VFIO only when it starts a guest)",
}


def run_case(case: str, *, reveal: bool = False) -> str:
    src = DATA / "xml2argv" / f"{case}.xml"
    with contextlib.chdir(DATA):
        caps = load_caps_file(CAPS_72 if case.endswith("qemu-7.2") else CAPS_LATEST)
    try:
        doc = parse_string(src.read_bytes(), filename=src.name)
        validate_domain(doc.domain)
        return "\n".join(build_hostdev_args(doc.domain, caps, reveal=reveal)) + "\n"
    except VfioctlError as err:
        return f"{type(err).__name__}: {err}\n"


def is_error(text: str) -> bool:
    return not text.startswith("-device")


@pytest.mark.parametrize("case", CASES)
def test_xml2argv(case: str, golden) -> None:  # type: ignore[no-untyped-def]
    actual = run_case(case)
    src = DATA / "xml2argv" / f"{case}.xml"
    other = src.with_suffix(".args" if is_error(actual) else ".err")
    assert not other.exists(), f"{case}: stale {other.name} next to the new result"
    golden.check(src.with_suffix(".err" if is_error(actual) else ".args"), actual)


def libvirt_vfio_devices(text: str) -> list[str] | None:
    """The vfio-pci -device values of a recorded libvirt command line; None on error."""
    if text.startswith("error:"):
        return None
    argv = shlex.split(text)
    return [v for k, v in itertools.pairwise(argv)
            if k == "-device" and json.loads(v).get("driver") == "vfio-pci"]


@pytest.mark.parametrize("case", [c for c in CASES
                                  if (DATA / "xml2argv" / f"{c}.libvirt").exists()])
def test_matches_libvirt_9_0(case: str) -> None:
    recorded = (DATA / "xml2argv" / f"{case}.libvirt").read_text()
    theirs = libvirt_vfio_devices(recorded)
    ours_text = run_case(case, reveal=True)
    if is_error(ours_text):
        if theirs is not None:
            assert case in STRICTER_THAN_LIBVIRT, (
                f"{case}: libvirt accepts it and vfioctl refuses: {ours_text}")
        return
    if theirs is None:
        assert case in LIBVIRT_CANNOT, f"{case}: libvirt refused it: {recorded}"
        return
    ours = ours_text.splitlines()[1::2]
    for mine, libvirt in zip(ours, theirs, strict=True):
        props = json.loads(mine)
        if "vf-token" in props:
            # libvirt 9.0 silently drops <vf-token>: the rest must still be identical.
            assert "vf-token" not in json.loads(libvirt)
            del props["vf-token"]
            mine = json.dumps(props, separators=(",", ":"))
        assert mine == libvirt


# Cases without a domxml-to-native recording: libvirt 9.0's verdict on the definition
# itself, from virsh's in-process test driver with the schema (define --validate).
VIRSH = shutil.which("virsh")
UNRECORDED = [c for c in CASES if not (DATA / "xml2argv" / f"{c}.libvirt").exists()]
# vf-token is a vfioctl extension: upstream's schema refuses every document with one.
NOT_UPSTREAM = {"hostdev-vf-token-newline"}


@pytest.mark.skipif(VIRSH is None, reason="virsh not installed (Debian: libvirt-clients)")
@pytest.mark.parametrize("case", [c for c in UNRECORDED if c not in NOT_UPSTREAM])
def test_unrecorded_cases_agree_with_libvirt_9_0_define(case: str) -> None:
    assert VIRSH is not None
    src = DATA / "xml2argv" / f"{case}.xml"
    proc = subprocess.run([VIRSH, "-q", "-c", "test:///default", f"define --validate {src}"],
                          capture_output=True, text=True, timeout=60, check=False)
    libvirt_accepts = "error:" not in proc.stderr
    assert libvirt_accepts != is_error(run_case(case)), proc.stderr


def test_token_redacted_unless_revealed() -> None:
    hidden = run_case("hostdev-vfio-vf-token")
    shown = run_case("hostdev-vfio-vf-token", reveal=True)
    assert f'"vf-token":"{REDACTED}"' in hidden
    assert "00112233-4455-6677-8899-aabbccddeeff" not in hidden
    assert '"vf-token":"00112233-4455-6677-8899-aabbccddeeff"' in shown


def test_malformed_token_is_not_echoed() -> None:
    assert "secret" not in run_case("hostdev-vf-token-malformed")
