"""Guest side of the real-kernel tier: prepare the guest like a booted host, run pytest.

Runs inside the QEMU guest as PID 1's child (see vmtest/init.sh), with the host's ``/``
read-only over 9p, ``/tmp`` ``/run`` ``/root`` as RAM overlays and the results
directory (``--out``) read-write. Stdlib only: it is started by the checkout's
``.venv/bin/python`` before anything is known to work.

Why it does what it does:

- In the first boot there is no udev in the guest, so drivers are coldplugged by
  modalias, with one ``modprobe -a`` for all devices: a shell loop forks per device,
  which costs seconds under TCG.
- The second boot (``--boot 2``, after a reboot that kept /etc; vmtest/init.sh) is a
  booted host's: the real ``systemd-udevd`` replays every device's ``add`` event, so the
  rules in /etc/udev/rules.d (vfioctl's persistence rule among them) run before the
  drivers' modules load. Only the modules marked ``boot2`` run there; only the others in
  the first boot.
- The guest filesystem is read-only: no ``.pyc`` writes, no pytest cache, temporary
  files under ``/tmp`` (an overlay).
- ``VFIOCTL_IN_TEST_VM=1`` is what tests/realkernel checks before touching ``/sys``; on
  any other machine those tests skip.
- The verdict is written as ``N passed, N failed`` to ``OUT/summary.txt`` (from pytest's
  junit report, not from its human output), and the dmesg to ``OUT/dmesg.txt``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PCI_DEVICES = Path("/sys/bus/pci/devices")
SETTLE_TIMEOUT_S = 20.0


def log(message: str) -> None:
    """One line on the serial console, stamped with the guest's uptime."""
    uptime = Path("/proc/uptime").read_text().split()[0]
    print(f"VMTEST-RUNNER [{uptime}s] {message}", flush=True)


def bound_drivers() -> dict[str, str | None]:
    """Address -> bound driver name (None when driverless), straight from sysfs."""
    drivers: dict[str, str | None] = {}
    for dev in sorted(PCI_DEVICES.iterdir()):
        link = dev / "driver"
        drivers[dev.name] = os.path.basename(os.readlink(link)) if link.is_symlink() else None
    return drivers


def coldplug() -> None:
    """Load the driver of every PCI function, as udev would at boot, then let probes settle.

    Some drivers probe asynchronously (nvme), so the bindings are polled until they stop
    changing for a moment.
    """
    aliases = sorted({(dev / "modalias").read_text().strip() for dev in PCI_DEVICES.iterdir()})
    proc = subprocess.run(["modprobe", "-a", "-b", "-q", *aliases], check=False)
    log(f"coldplug: modprobe -a for {len(aliases)} modaliases exited {proc.returncode}")
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    last = bound_drivers()
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = bound_drivers()
        if now != last:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since >= 1.0:
            break
    for name, driver in last.items():
        log(f"  {name} {driver or '-'}")


UDEVD_PATHS = ("/lib/systemd/systemd-udevd", "/usr/lib/systemd/systemd-udevd")


def udev_coldplug() -> None:
    """Boot as a udev system does: start systemd-udevd, replay ``add``, wait for it."""
    udevd = next((p for p in UDEVD_PATHS if os.path.exists(p)), None)
    if udevd is None:
        log("udev: no systemd-udevd on this machine (Debian: udev); falling back to modprobe")
        coldplug()
        return
    # the guest's userland runs chrooted into the host's /: systemd's tools ignore
    # requests in a chroot unless told it is meant
    env = {**os.environ, "SYSTEMD_IGNORE_CHROOT": "1"}
    subprocess.run([udevd, "--daemon"], check=True, env=env)
    for kind in ("subsystems", "devices"):
        subprocess.run(["udevadm", "trigger", f"--type={kind}", "--action=add"], check=False,
                       env=env)
    proc = subprocess.run(["udevadm", "settle", "--timeout=600"], check=False, env=env)
    log(f"udev: {udevd} started, add events replayed, settle exited {proc.returncode}")
    for name, driver in bound_drivers().items():
        log(f"  {name} {driver or '-'}")


def save_facts(out: Path) -> None:
    """Keep what an engineer wants when a scenario fails: lspci's view of the machine."""
    facts = out / "facts"
    facts.mkdir(exist_ok=True)
    with open(facts / "lspci-nnvvv.txt", "w") as f:
        subprocess.run(["lspci", "-nnvvv"], stdout=f, stderr=subprocess.STDOUT, check=False)


def run_pytest(out: Path, boot: int) -> int:
    """Run tests/realkernel with the checkout's Python; returns pytest's exit status."""
    extra = [a for a in (out / "pytest-args").read_text().splitlines() if a] \
        if (out / "pytest-args").exists() else []
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "HOME": "/root",
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "VFIOCTL_IN_TEST_VM": "1",
        "VFIOCTL_VMTEST_OUT": str(out),
        "VFIOCTL_STATE_DIR": "/run/vfioctl",
        "VMTEST_BOOT": str(boot),
    }
    # a selection of modules (vmtest/run.sh -- tests/realkernel/test_00_machine.py …)
    # replaces the whole directory
    named = any(a.startswith("tests/") or ".py" in a for a in extra)
    argv = [
        sys.executable, "-m", "pytest", *([] if named else [str(REPO / "tests" / "realkernel")]),
        "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-v", "-rfEs", "--color=no",
        f"--junitxml={out / 'junit.xml'}", "-m", "boot2" if boot == 2 else "not boot2",
        *extra,
    ]
    log("running: " + " ".join(argv[1:]))
    return subprocess.run(argv, cwd=REPO, env=env, check=False).returncode


def summarize(out: Path) -> str:
    """``N passed, N failed`` from the junit report (errors count as failures)."""
    root = ET.parse(out / "junit.xml").getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    assert suite is not None
    total = int(suite.get("tests", 0))
    failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    skipped = int(suite.get("skipped", 0))
    log(f"{skipped} skipped")
    return f"{total - failed - skipped} passed, {failed} failed"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="results dir (9p, writable)")
    parser.add_argument("--boot", type=int, default=1, help="1, or 2 after a reboot")
    args = parser.parse_args()
    out, boot = args.out, args.boot
    cmdline = Path("/proc/cmdline").read_text().strip()
    log(f"boot {boot}, kernel {os.uname().release}, cmdline: {cmdline}")
    rc = 1
    try:
        udev_coldplug() if boot == 2 else coldplug()
        save_facts(out)
        rc = run_pytest(out, boot)
        summary = summarize(out) if (out / "junit.xml").exists() else None
        if summary is None:
            log(f"pytest exited {rc} without a junit report")
        else:
            (out / "summary.txt").write_text(summary + "\n")
            log(f"pytest exited {rc}: {summary}")
    finally:
        with open(out / "dmesg.txt", "w") as f:
            subprocess.run(["dmesg"], stdout=f, stderr=subprocess.STDOUT, check=False)
    return rc


if __name__ == "__main__":
    sys.exit(main())
