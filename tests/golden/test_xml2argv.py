"""Golden: libvirt domain XML -> QEMU -device arguments (tests/data/xml2argv), per release.

Each ``<case>.xml`` has ``<case>.args`` (one argv element per line) or ``<case>.err``
(``ClassName: message``): vfioctl with its default rules (libvirt 11.3). Where reading
the case by libvirt 9.0's rules (``--libvirt 9.0``) gives something else, that result is
``<case>.args-9.0`` / ``<case>.err-9.0``; where it does not, no such file may exist.
Capabilities come from recorded files, like libvirt's ``x86_64-latest``: QEMU 8.1 by
default, the real 7.2 probe for ``*-qemu-7.2`` cases (``test_real_qemu`` probes the
real binaries too).

The oracle is real libvirt, recorded by tools/record-libvirt-argv.py (which libvirt and
which QEMU: ``recordings.json``): ``<case>.libvirt`` (9.0) and ``<case>.libvirt-11.3``
are ``virsh domxml-to-native`` of each case, and vfioctl's vfio-pci ``-device`` values
must equal libvirt's, release by release; ``define-X.Y.txt`` is each release's verdict
on the definition itself (``define --validate``), the oracle for cases without a
domxml-to-native recording of that release and for what "libvirt's schema refuses
it" claims below.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shlex
import shutil
from pathlib import Path

import pytest

from vfioctl.conf import DEFAULT_LIBVIRT, LIBVIRT_DIALECTS, parse_string, validate_domain
from vfioctl.errors import VfioctlError
from vfioctl.qemu.argv import build_hostdev_args
from vfioctl.qemu.caps import load_caps_file, probe
from vfioctl.secret import REDACTED

DATA = Path(__file__).parent.parent / "data"
XML2ARGV = DATA / "xml2argv"
CASES = sorted(p.stem for p in XML2ARGV.glob("*.xml"))
RECORDINGS = json.loads((XML2ARGV / "recordings.json").read_text())
RELEASES = list(LIBVIRT_DIALECTS)
DEFAULT = DEFAULT_LIBVIRT.version
OTHER_RELEASES = [r for r in RELEASES if r != DEFAULT]
# Relative to DATA, so that messages naming the file are the same on every machine.
CAPS_LATEST = "qemu/qemu-8.1.0-x86_64.json"
CAPS_72 = "qemu/qemu-7.2.22-x86_64.json"

# A reason checked against the recorded define verdict of that release.
SCHEMA_REFUSES = "libvirt's own schema refuses it (define --validate refuses it; " \
    "domxml-to-native does not validate)"
_BOTH = {
    "hostdev-alias-not-user": "libvirt silently drops an alias without 'ua-'",
    "hostdev-bus-no-controller": "libvirt adds a pci-bridge by itself",
    "hostdev-driver-unknown-attr": SCHEMA_REFUSES,
    "hostdev-mdev": "mdev hostdevs are out of vfioctl's scope",
    "hostdev-teaming": "<teaming> is not modelled by vfioctl",
    "hostdev-unknown-element": SCHEMA_REFUSES,
    "hostdev-vf-token-malformed": "libvirt ignores <vf-token> altogether",
    "hostdev-vf-token-misplaced": "libvirt ignores <vf-token> altogether",
    "hostdev-vfio-q35-noaddr": "libvirt adds pcie-root-ports; vfioctl wants an address",
    "hostdev-vfio-vf-token-qemu-7.2": "libvirt drops the token instead of refusing",
}
# Where vfioctl refuses what libvirt's domxml-to-native turns into arguments, and why
# (kept explicit on purpose), per release.
STRICTER_THAN_LIBVIRT: dict[str, dict[str, str]] = {
    "9.0": dict(_BOTH),
    "11.3": {
        **_BOTH,
        "hostdev-devices-twice": SCHEMA_REFUSES,
        "hostdev-throttlegroups-twice": SCHEMA_REFUSES,
        "hostdev-entity-hostdev": SCHEMA_REFUSES,
        "hostdev-vf-token-newline": SCHEMA_REFUSES,
        "hostdev-driver-model-invalid": SCHEMA_REFUSES,
        "hostdev-driver-model": "vfioctl binds vfio-pci, not a VFIO variant driver",
        "hostdev-display": "display= is not modelled by vfioctl",
        "hostdev-ramfb": "display=/ramfb= are not modelled by vfioctl",
    },
}
# Where libvirt's domxml-to-native fails but vfioctl produces arguments.
LIBVIRT_CANNOT: dict[str, dict[str, str]] = {
    "9.0": {"hostdev-vfio-no-driver": "domxml-to-native does not resolve the default "
            "backend (libvirt picks VFIO only when it starts a guest)"},
    "11.3": {c: "domxml-to-native resolves the default backend and refuses on a host "
             "without VFIO (as the recording host was)"
             for c in ("hostdev-vfio-no-driver", "hostdev-vfio-driver-no-name")},
}
# vf-token and group='allow' are vfioctl extensions: upstream's schema refuses them.
NOT_UPSTREAM = {"hostdev-vfio-vf-token", "hostdev-vfio-group-allow"}


def run_case(case: str, *, libvirt: str | None = None, reveal: bool = False) -> str:
    src = XML2ARGV / f"{case}.xml"
    with contextlib.chdir(DATA):
        caps = load_caps_file(CAPS_72 if case.endswith("qemu-7.2") else CAPS_LATEST)
    try:
        doc = parse_string(src.read_bytes(), filename=src.name, libvirt=libvirt)
        validate_domain(doc.domain)
        return "\n".join(build_hostdev_args(doc.domain, caps, reveal=reveal)) + "\n"
    except VfioctlError as err:
        return f"{type(err).__name__}: {err}\n"


def is_error(text: str) -> bool:
    return not text.startswith("-device")


def golden_path(case: str, release: str, error: bool) -> Path:
    suffix = ".err" if error else ".args"
    return XML2ARGV / f"{case}{suffix}{'' if release == DEFAULT else '-' + release}"


@pytest.mark.parametrize("case", CASES)
def test_xml2argv(case: str, golden) -> None:  # type: ignore[no-untyped-def]
    actual = run_case(case)
    other = golden_path(case, DEFAULT, not is_error(actual))
    assert not other.exists(), f"{case}: stale {other.name} next to the new result"
    golden.check(golden_path(case, DEFAULT, is_error(actual)), actual)


@pytest.mark.parametrize("release", OTHER_RELEASES)
@pytest.mark.parametrize("case", CASES)
def test_xml2argv_by_other_release(case: str, release: str, golden) -> None:  # type: ignore[no-untyped-def]
    actual = run_case(case, libvirt=release)
    own = [golden_path(case, release, e) for e in (True, False)]
    if actual == run_case(case):
        if os.environ.get("VFIOCTL_TEST_REGENERATE") == "1":
            for path in own:
                path.unlink(missing_ok=True)
        assert not any(p.exists() for p in own), f"{case}: {release} gives the default result"
        return
    assert not golden_path(case, release, not is_error(actual)).exists()
    golden.check(golden_path(case, release, is_error(actual)), actual)


def recording(case: str, release: str) -> Path:
    pattern = RECORDINGS[release]["argv"]["files"]
    return XML2ARGV / pattern.replace("<case>", case)


def define_verdicts(release: str) -> dict[str, str]:
    text = (XML2ARGV / RECORDINGS[release]["define"]["file"]).read_text()
    return dict(line.split(": ", 1) for line in text.splitlines())


def libvirt_vfio_devices(text: str) -> list[str] | None:
    """The vfio-pci -device values of a recorded libvirt command line (``vfio-pci`` and
    ``vfio-pci-nohotplug``); None when libvirt answered with an error."""
    if text.startswith("error:"):
        return None
    argv = shlex.split(text)
    return [v for k, v in itertools.pairwise(argv)
            if k == "-device" and json.loads(v).get("driver", "").startswith("vfio-pci")]


RECORDED = [(c, r) for r in RELEASES for c in CASES if recording(c, r).exists()]


@pytest.mark.parametrize(("case", "release"), RECORDED,
                         ids=[f"{c}-libvirt-{r}" for c, r in RECORDED])
def test_matches_libvirt(case: str, release: str) -> None:
    recorded = recording(case, release).read_text()
    theirs = libvirt_vfio_devices(recorded)
    ours_text = run_case(case, libvirt=release, reveal=True)
    stricter = STRICTER_THAN_LIBVIRT[release]
    if is_error(ours_text):
        if theirs is not None:
            assert case in stricter, (
                f"{case}: libvirt {release} accepts it and vfioctl refuses: {ours_text}")
            if stricter[case] == SCHEMA_REFUSES:
                assert define_verdicts(release)[case] != "accepted"
        return
    assert case not in stricter, f"{case}: listed as refused, but vfioctl accepts it"
    if theirs is None:
        assert case in LIBVIRT_CANNOT[release], f"{case}: libvirt refused it: {recorded}"
        if release == "11.3":
            assert RECORDINGS[release]["argv"]["host_vfio"] is False
        return
    ours = ours_text.splitlines()[1::2]
    for mine, libvirt in zip(ours, theirs, strict=True):
        props = json.loads(mine)
        if "vf-token" in props:
            # libvirt silently drops <vf-token>: the rest must still be identical.
            assert "vf-token" not in json.loads(libvirt)
            del props["vf-token"]
            mine = json.dumps(props, separators=(",", ":"))
        assert mine == libvirt


# Cases without a domxml-to-native recording of a release (added after it was gone):
# that release's verdict on the definition itself, from virsh's in-process test driver
# with the schema (define --validate), recorded in define-X.Y.txt.
UNRECORDED = [(c, r) for r in RELEASES for c in CASES if not recording(c, r).exists()]


@pytest.mark.parametrize(("case", "release"), UNRECORDED,
                         ids=[f"{c}-libvirt-{r}" for c, r in UNRECORDED])
def test_unrecorded_cases_agree_with_libvirt_define(case: str, release: str) -> None:
    assert case not in NOT_UPSTREAM
    libvirt_accepts = define_verdicts(release)[case] == "accepted"
    result = run_case(case, libvirt=release)
    assert libvirt_accepts != is_error(result), define_verdicts(release)[case]


def test_every_release_has_every_define_verdict() -> None:
    for release in RELEASES:
        assert sorted(define_verdicts(release)) == CASES, release


def test_extensions_are_refused_by_upstream_schema() -> None:
    """What the docs say of <vf-token> and group='allow', from the recordings: every
    recorded release's schema refuses them, and its domxml-to-native drops them."""
    for release in RELEASES:
        verdicts = define_verdicts(release)
        for case in NOT_UPSTREAM:
            assert verdicts[case] != "accepted", (case, release)
            devices = libvirt_vfio_devices(recording(case, release).read_text())
            assert devices, (case, release)
            assert all("vf-token" not in json.loads(d) for d in devices)


def test_token_redacted_unless_revealed() -> None:
    hidden = run_case("hostdev-vfio-vf-token")
    shown = run_case("hostdev-vfio-vf-token", reveal=True)
    assert f'"vf-token":"{REDACTED}"' in hidden
    assert "00112233-4455-6677-8899-aabbccddeeff" not in hidden
    assert '"vf-token":"00112233-4455-6677-8899-aabbccddeeff"' in shown


def test_malformed_token_is_not_echoed() -> None:
    assert "secret" not in run_case("hostdev-vf-token-malformed")


# The kept Debian 12 QEMU 7.2: tools/qemu72.sh's wrapper, else its extracted tree.
QEMU_72_HOME = Path(os.environ.get("VFIOCTL_CACHE")
                    or Path.home() / ".cache" / "vfioctl-vmtest") / "qemu-7.2"
QEMU_SYSTEM = shutil.which("qemu-system-x86_64", path="/usr/bin")


def _qemu_72(monkeypatch: pytest.MonkeyPatch) -> str | None:
    wrapper = QEMU_72_HOME / "bin" / "qemu-system-x86_64"
    if os.access(wrapper, os.X_OK):
        return str(wrapper)
    root = QEMU_72_HOME / "root"
    binary = root / "usr/bin/qemu-system-x86_64"
    if not os.access(binary, os.X_OK):
        return None
    monkeypatch.setenv("QEMU_MODULE_DIR", str(root / "usr/lib/x86_64-linux-gnu/qemu"))
    return str(binary)


@pytest.mark.qemu
@pytest.mark.skipif(QEMU_SYSTEM is None, reason="/usr/bin/qemu-system-x86_64 not installed")
def test_real_qemu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The goldens with the real binaries' probes instead of the recorded capability
    files: the system QEMU (>= 8.1: 10.0.2 here) for every case but ``*-qemu-7.2``, and
    the kept QEMU 7.2 for those, whose vf-token refusal names the version found."""
    assert QEMU_SYSTEM is not None
    monkeypatch.setenv("VFIOCTL_CACHE_DIR", str(tmp_path))
    system = probe(QEMU_SYSTEM, use_cache=False)
    assert system.version >= (8, 1) and system.has("vf-token")
    old = _qemu_72(monkeypatch)
    checked = 0
    for case in CASES:
        src = XML2ARGV / f"{case}.xml"
        if case.endswith("qemu-7.2"):
            if old is None:
                continue
            caps = probe(old, use_cache=False)
            assert caps.version[:2] == (7, 2) and not caps.has("vf-token")
        else:
            caps = system
        try:
            doc = parse_string(src.read_bytes(), filename=src.name)
            validate_domain(doc.domain)
            actual = "\n".join(build_hostdev_args(doc.domain, caps)) + "\n"
        except VfioctlError as err:
            actual = f"{type(err).__name__}: {err}\n"
        expected = golden_path(case, DEFAULT, is_error(actual)).read_text()
        if case.endswith("qemu-7.2"):
            # The message names where the capabilities came from: here, the probe.
            assert actual.startswith(expected.split(" (capability file")[0])
        else:
            assert actual == expected, case
        checked += 1
    assert checked >= len(CASES) - (0 if old else 1)
