#!/usr/bin/env python3
"""Record real libvirt's verdicts on every xml2argv case: the oracle of the goldens.

tests/golden/test_xml2argv.py compares vfioctl with what libvirt itself made of each
tests/data/xml2argv/<case>.xml, from files this script writes (the tests then need no
libvirt at all):

- ``<case>.libvirt-X.Y`` (``<case>.libvirt`` for 9.0, the first recording): the verbatim
  output of ``virsh domxml-to-native qemu-argv`` with libvirt X.Y's daemon, or its error
  message. The environment libvirt puts in front of the binary (LC_ALL, PATH, HOME …) is
  cut off: it describes the recording machine only.
- ``define-X.Y.txt``: one line per case, ``virsh -c test:///default define --validate``
  (libvirt's parser and its schema, in-process, no daemon): ``accepted`` or the error.
- ``recordings.json``: which libvirt and which QEMU made each set, when, on what host.

Cases named ``*-qemu-7.2`` are recorded with a QEMU 7.2 as their emulator (``--qemu-7.2``:
a binary, or the root of an extracted Debian 12 ``qemu-system-x86`` whose files are
staged where libvirt's unprivileged probe can read them); the output names the case's
own ``<emulator>`` again, so that every recording reads alike.

Usage, as root where libvirtd runs (no systemd: ``virtlogd -d; libvirtd -d``; it
touches no PCI device for domxml-to-native)::

    tools/record-libvirt-argv.py --restart-libvirtd # the installed libvirt, both sets
    tools/record-libvirt-argv.py --define-only --libvirt-root DIR
        # define verdicts of another libvirt whose libvirt0 + libvirt-clients .debs are
        # extracted under DIR (dpkg-deb -x); its schemas are bind-mounted over
        # /usr/share/libvirt/schemas in a private mount namespace (unshare -m), so the
        # host is not changed. This is how libvirt 9.0's verdicts were recorded once
        # 9.0's daemon was gone.

Standard library only; it never edits a case or a golden, only the files above.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = Path(__file__).resolve().parent.parent / "tests" / "data" / "xml2argv"
MANIFEST = CASES / "recordings.json"
# Where tools/qemu72.sh unpacks Debian 12's QEMU 7.2.
QEMU_72_ROOT = Path(os.environ.get("VFIOCTL_CACHE")
                    or Path.home() / ".cache" / "vfioctl-vmtest") / "qemu-7.2" / "root"
SCHEMAS = Path("/usr/share/libvirt/schemas")
# The last absolute path to a QEMU binary and everything before it (libvirt's env).
_ENV_PREFIX = re.compile(r"^.* (/[^ ]*qemu-system-[^ ]*) ")


def argv_suffix(label: str) -> str:
    return ".libvirt" if label == "9.0" else f".libvirt-{label}"


def run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120,
                          check=False)


def libvirt_version(virsh: list[str], env: dict[str, str] | None) -> str:
    out = run([*virsh, "-c", "test:///default", "version"], env).stdout
    m = re.search(r"Using library: libvirt (\d+\.\d+\.\d+)", out)
    if m is None:
        sys.exit(f"record-libvirt-argv: cannot read libvirt's version from: {out!r}")
    return m.group(1)


def qemu_version(binary: str) -> str:
    out = run([binary, "--version"]).stdout
    return out.splitlines()[0] if out else f"{binary}: no --version output"


def stage_qemu_72(spec: Path, workdir: Path) -> str:
    """A QEMU 7.2 binary libvirt may run: the given one, or a wrapper around a copy of
    an extracted tree (libvirt probes QEMU as its unprivileged user, which cannot
    enter /root)."""
    if spec.is_file():
        return str(spec)
    root = workdir / "qemu-7.2"
    shutil.copytree(spec, root, symlinks=True)
    for path in [workdir, *root.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    wrapper = workdir / "qemu-system-x86_64"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"QEMU_MODULE_DIR={root}/usr/lib/x86_64-linux-gnu/qemu exec "
        f"{root}/usr/bin/qemu-system-x86_64 -L {root}/usr/share/qemu \"$@\"\n")
    wrapper.chmod(0o755)
    workdir.chmod(0o755)
    return str(wrapper)


def restart_libvirtd(uri: str) -> None:
    """libvirt 11.3's daemon died under one case (a segfault, seen on
    hostdev-interface-hostdev): start it again and wait until it answers."""
    subprocess.run(["libvirtd", "-d"], check=False)
    for _ in range(50):
        if run(["virsh", "-q", "-c", uri, "version"]).returncode == 0:
            return
        time.sleep(0.2)
    sys.exit("record-libvirt-argv: libvirtd did not come back")


def record_argv(case: Path, uri: str, emulator: str | None, out: Path) -> bool:
    """Write the case's recording; False when libvirtd died answering it."""
    xml = case.read_text()
    original = re.search(r"<emulator>([^<]*)</emulator>", xml)
    source = case
    if emulator is not None:
        if original is None:
            sys.exit(f"record-libvirt-argv: {case.name} has no <emulator> to replace")
        source = out.with_suffix(".tmp.xml")
        source.write_text(xml.replace(original.group(0), f"<emulator>{emulator}</emulator>"))
    try:
        proc = run(["virsh", "-q", "-c", uri, "domxml-to-native", "qemu-argv", str(source)])
    finally:
        if source != case:
            source.unlink()
    if proc.returncode == 0:
        text = _ENV_PREFIX.sub(r"\1 ", proc.stdout, count=1)
        if emulator is not None and original is not None:
            text = text.replace(emulator, original.group(1))
    else:
        text = "".join(line + "\n" for line in proc.stderr.splitlines() if line)
    out.write_text(text)
    return "due to end of file" not in proc.stderr


def define_verdict(case: Path, virsh: list[str], env: dict[str, str] | None) -> str:
    proc = run([*virsh, "-q", "-c", "test:///default", f"define --validate {case}"], env)
    lines = [line for line in proc.stderr.splitlines()
             if line and not line.startswith("error: Failed to define domain from")]
    if not any(line.startswith("error:") for line in lines):
        return "accepted"
    return " | ".join(line.removeprefix("error: ") for line in lines)


def record_defines(label: str, virsh: list[str], env: dict[str, str] | None) -> str:
    name = f"define-{label}.txt"
    verdicts = [f"{case.stem}: {define_verdict(case, virsh, env)}\n"
                for case in sorted(CASES.glob("*.xml"))]
    (CASES / name).write_text("".join(verdicts))
    return name


def other_libvirt(root: Path, argv: list[str]) -> None:
    """Re-run this script for --libvirt-root inside a private mount namespace with that
    libvirt's schemas in place of the installed ones (its libvirt.so reads them from
    the fixed path it was built with)."""
    if os.environ.get("_RECORD_LIBVIRT_NS") == "1":
        subprocess.run(["mount", "--bind", str(root / "usr/share/libvirt/schemas"),
                        str(SCHEMAS)], check=True)
        return
    env = dict(os.environ, _RECORD_LIBVIRT_NS="1")
    sys.exit(subprocess.run(["unshare", "-m", "--propagation", "private",
                             sys.executable, __file__, *argv], env=env,
                            check=False).returncode)


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--uri", default=os.environ.get("LIBVIRT_URI", "qemu:///system"),
                    help="libvirt daemon for domxml-to-native (default qemu:///system)")
    ap.add_argument("--qemu-7.2", dest="qemu72", type=Path, default=QEMU_72_ROOT,
                    help="QEMU 7.2 for the *-qemu-7.2 cases: a binary libvirt's own "
                    "unprivileged user can run, or an extracted root, which is staged for it "
                    f"(default {QEMU_72_ROOT})")
    ap.add_argument("--restart-libvirtd", action="store_true",
                    help="start libvirtd again (libvirtd -d) when a case kills it, and go on")
    ap.add_argument("--define-only", action="store_true",
                    help="record only the test-driver define verdicts")
    ap.add_argument("--libvirt-root", type=Path,
                    help="an extracted libvirt0 + libvirt-clients to use instead of the "
                    "installed libvirt (implies --define-only)")
    args = ap.parse_args(argv)

    virsh, env = ["virsh"], None
    if args.libvirt_root is not None:
        other_libvirt(args.libvirt_root, argv)
        virsh = [str(args.libvirt_root / "usr/bin/virsh")]
        env = dict(os.environ,
                   LD_LIBRARY_PATH=str(args.libvirt_root / "usr/lib/x86_64-linux-gnu"))
        args.define_only = True
    version = libvirt_version(virsh, env)
    label = ".".join(version.split(".")[:2])
    manifest = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}
    entry = manifest.setdefault(label, {})
    entry["libvirt"] = version
    today = datetime.datetime.now(datetime.UTC).date().isoformat()

    if not args.define_only:
        default_qemu = "/usr/bin/qemu-system-x86_64"
        with tempfile.TemporaryDirectory(prefix="record-libvirt-") as tmp:
            qemu72 = None
            if any(c.stem.endswith("-qemu-7.2") for c in CASES.glob("*.xml")):
                if not args.qemu72.exists():
                    sys.exit(f"record-libvirt-argv: no QEMU 7.2 at {args.qemu72} "
                             "(give --qemu-7.2)")
                qemu72 = stage_qemu_72(args.qemu72, Path(tmp))
            crashed = []
            for case in sorted(CASES.glob("*.xml")):
                emulator = qemu72 if case.stem.endswith("-qemu-7.2") else None
                if record_argv(case, args.uri, emulator,
                               case.with_suffix(argv_suffix(label))):
                    continue
                print(f"record-libvirt-argv: libvirtd died on {case.name} (recorded "
                      "as such)", file=sys.stderr)
                crashed.append(case.stem)
                if not args.restart_libvirtd:
                    sys.exit("record-libvirt-argv: start libvirtd again, or give "
                             "--restart-libvirtd")
                restart_libvirtd(args.uri)
            entry["argv"] = {
                "files": f"<case>{argv_suffix(label)}",
                "command": f"virsh -c {args.uri} domxml-to-native qemu-argv <case>.xml",
                "qemu": {"*": qemu_version(default_qemu),
                         "*-qemu-7.2": qemu_version(qemu72) if qemu72 else None},
                "host_vfio": Path("/dev/vfio/vfio").exists(),
                "libvirtd_crashed_on": crashed,
                "recorded": today,
            }
    entry["define"] = {"file": record_defines(label, virsh, env),
                       "command": "virsh -c test:///default define --validate <case>.xml",
                       "recorded": today}
    MANIFEST.write_text(json.dumps(dict(sorted(manifest.items())), indent=2) + "\n")
    print(f"recorded libvirt {version} in {CASES}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
