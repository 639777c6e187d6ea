"""A real libvirtd (11.3) on this machine calls the installed hook.

The daemon runs in a private mount namespace on copies of libvirt's directories
(``realdaemon.sh``), so neither this machine's libvirt nor its running daemons are
touched; the hook works on a simulated host named in its installed script (libvirt
clears the environment of hooks). No real PCI device is involved: the hostdev
0000:01:00.0 exists only on the simulated workstation, and libvirt itself fails on it
after the hook's ``prepare`` — which is one of the things shown: libvirt then calls
``release``, and the hook gives the group back.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from vfioctl.sim.loader import bundled_text

HERE = Path(__file__).parent
pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("libvirtd") is None
                       or shutil.which("unshare") is None or shutil.which("virsh") is None,
                       reason="needs root, libvirtd, virsh and unshare"),
]


def _drivers(path: Path) -> dict[str, str]:
    state = tomllib.loads(path.read_text()).get("state", {}).get("devices", {})
    return {a: d.get("driver", "") for a, d in state.items()}


@pytest.fixture(scope="module")
def out() -> Iterator[Path]:
    # not under pytest's 0700 base: the wrapper runs as libvirt's QEMU user
    out = Path(tempfile.mkdtemp(prefix="vfioctl-libvirtd-", dir="/tmp"))
    try:
        out.chmod(0o755)
        (out / "ws.toml").write_text(bundled_text("workstation"))
        done = subprocess.run(["unshare", "-m", "--propagation", "private", "bash",
                               str(HERE / "realdaemon.sh"), str(out), sys.executable,
                               str(out / "ws.toml")], capture_output=True, text=True,
                              timeout=240)
        assert done.returncode == 0, done.stderr
        yield out
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_libvirt_calls_the_hook_with_the_xml_and_its_refusal_aborts_the_start(
        out: Path) -> None:
    assert (out / "no-opt-in.start.rc").read_text().strip() != "0"
    err = (out / "no-opt-in.start.err").read_text()
    assert "error: Hook script execution failed" in err
    assert ("unexpected exit status 5: vfioctl: error: cannot detach 0000:01:00.0 alone: "
            "IOMMU group 1 also holds 0000:01:00.1 (snd_hda_intel)") in err
    # the refusal changed nothing, at any of the calls libvirt made
    for call in ("prepare-begin", "stopped-end", "release-end"):
        drivers = _drivers(out / f"sim-gpu-noopt-{call}.toml")
        assert "vfio-pci" not in drivers.values()
    # libvirt gave the hook the domain as defined (the probe saw the same stdin)
    assert "<name>gpu-noopt</name>" in (out / "xml-gpu-noopt-prepare-begin.xml").read_text()


def test_prepare_takes_the_group_and_libvirts_release_gives_it_back(out: Path) -> None:
    at_prepare = _drivers(out / "sim-gpu-optin-prepare-begin.toml")
    assert at_prepare["0000:01:00.0"] == at_prepare["0000:01:00.1"] == "vfio-pci"
    # libvirt then refused the device itself (no VFIO on this machine) and called release
    assert "passthrough of host PCI devices" in (out / "opt-in.start.err").read_text()
    after = _drivers(out / "sim-gpu-optin-release-end.toml")
    assert (after["0000:01:00.0"], after["0000:01:00.1"]) == ("nouveau", "snd_hda_intel")


def test_a_domain_runs_with_the_wrapper_as_its_emulator(out: Path) -> None:
    """libvirt probes and runs the wrapper as QEMU's user; the pid libvirt watches is
    QEMU's own (the wrapper exec'd it)."""
    assert (out / "wrapped.start.rc").read_text().strip() == "0", \
        (out / "wrapped.start.err").read_text()
    assert (out / "wrapped.exe").read_text().strip() == os.path.realpath(
        shutil.which("qemu-system-x86_64") or "")
    cmdline = (out / "wrapped.cmdline").read_text().splitlines()
    assert "-uuid" in cmdline and "-readconfig" not in cmdline   # no token VF: unchanged
    log = (out / "logs" / "qemu" / "tiny.log").read_text()
    assert str(out / "vfioctl-qemu") in log                        # libvirt ran the wrapper
    # every call libvirt makes reached the hook, in order
    calls = sorted(p.name for p in out.glob("xml-tiny-*.xml"))
    assert calls == ["xml-tiny-prepare-begin.xml", "xml-tiny-release-end.xml",
                     "xml-tiny-start-begin.xml", "xml-tiny-started-begin.xml",
                     "xml-tiny-stopped-end.xml"]
