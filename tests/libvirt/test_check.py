"""``vfioctl libvirt check``: the manager's plan and the warnings, as golden files."""

from __future__ import annotations

from pathlib import Path

import pytest
from libvirttest import domain_xml, run

GOLDEN = Path(__file__).parent / "golden"
GPU_OPT_IN = "<vfioctl:hostdev address='0000:01:00.0' group='allow'/>"
VF_TOKEN = "<vfioctl:hostdev address='0000:03:02.0' vf-token='stored'/>"
SEV = "<launchSecurity type='sev'><policy>0x0003</policy></launchSecurity>"

CASES = {
    "gpu-group-opt-in": ("ws", dict(hostdevs=["0000:01:00.0"], meta=[GPU_OPT_IN])),
    "gpu-no-opt-in": ("ws", dict(hostdevs=["0000:01:00.0"])),
    "gpu-both-functions": ("ws", dict(hostdevs=["0000:01:00.0", "0000:01:00.1"])),
    "managed-yes": ("ws", dict(hostdevs=["0000:06:00.0"], managed="yes")),
    "confidential": ("ws", dict(hostdevs=["0000:01:00.0"], meta=[GPU_OPT_IN], extra=SEV)),
    "vf-token": ("srv", dict(name="vm", hostdevs=["0000:03:02.0"], meta=[VF_TOKEN],
                             emulator="libexec/vfioctl-qemu")),
    "vf-without-token": ("srv", dict(name="vm", hostdevs=["0000:03:02.0"],
                                     emulator="libexec/vfioctl-qemu")),
    "vf-token-confidential": ("srv", dict(name="vm", hostdevs=["0000:03:02.0"],
                                          meta=[VF_TOKEN], extra=SEV,
                                          emulator="libexec/vfioctl-qemu")),
    "no-hostdevs": ("ws", dict()),
}


@pytest.mark.parametrize("case", list(CASES))
def test_check(case: str, request: pytest.FixtureRequest, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
               golden: object) -> None:
    fixture, kwargs = CASES[case]
    host_file: Path = request.getfixturevalue(fixture)
    request.getfixturevalue("wrapper")        # libexec/vfioctl-qemu under tmp_path
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VFIOCTL_HOST", f"sim:{host_file.name}")
    xml = tmp_path / "domain.xml"
    xml.write_text(domain_xml(**kwargs))       # type: ignore[arg-type]
    before = host_file.read_text()
    rc, out, err = run(monkeypatch, capfd, ["libvirt", "check", "domain.xml"])
    assert host_file.read_text() == before     # check changes nothing
    golden.check(GOLDEN / f"check-{case}.txt",  # type: ignore[attr-defined]
                 f"$ vfioctl libvirt check domain.xml\n{out}--- stderr\n{err}--- exit {rc}\n")


def test_a_defined_domain_is_read_by_name(ws: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch,
                                          capfd: pytest.CaptureFixture[str]) -> None:
    defined = tmp_path / "qemu"
    defined.mkdir()
    (defined / "win10.xml").write_text(domain_xml(hostdevs=["0000:01:00.0"], meta=[GPU_OPT_IN]))
    rc, out, _ = run(monkeypatch, capfd, ["libvirt", "check", "win10", "--config-dir",
                                          str(defined)])
    assert rc == 0 and "0000:01:00.1: snd_hda_intel -> vfio-pci" in out
    rc, out, err = run(monkeypatch, capfd, ["libvirt", "check", "nosuch", "--config-dir",
                                            str(defined)])
    assert (rc, out) == (4, "") and f"{defined}/nosuch.xml not found" in err
