"""The hook as libvirt calls it (DOMAIN OP SUBOP EXTRA, the XML on stdin) on simulated
hosts: what it takes and gives back, what it refuses, and bad input."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from libvirttest import UUID, domain_xml, drivers, hook

from vfioctl.sim.faults import SimCrash

GPU, AUDIO = "0000:01:00.0", "0000:01:00.1"
OWNER = f"libvirt:win10:{UUID}"
OPT_IN = f"<vfioctl:hostdev address='{GPU}' group='allow'/>"


def on_vfio(state: dict[str, str | None]) -> set[str]:
    return {a for a, d in state.items() if d == "vfio-pci"}


def held(host_file: Path) -> dict[str, str | None]:
    import vfioctl

    with vfioctl.open(f"sim:{host_file}") as host:
        return {str(s.record.addr): s.record.owner for s in host.status()}


def test_prepare_takes_the_whole_group_with_the_opt_in_and_release_gives_it_back(
        ws: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    xml = domain_xml(hostdevs=[GPU], meta=[OPT_IN])
    assert hook(monkeypatch, capfd, "win10", "prepare", "begin", xml) == (0, "", "")
    after = drivers(ws)
    assert (after[GPU], after[AUDIO]) == ("vfio-pci", "vfio-pci")
    assert after["0000:00:01.0"] == "pcieport"          # the root port is left alone
    assert on_vfio(after) == {GPU, AUDIO}
    assert held(ws) == {GPU: OWNER, AUDIO: OWNER}
    # the calls in between change nothing and print nothing
    for op, sub in (("start", "begin"), ("started", "begin"), ("stopped", "end")):
        assert hook(monkeypatch, capfd, "win10", op, sub, xml) == (0, "", "")
    assert drivers(ws) == after
    assert hook(monkeypatch, capfd, "win10", "release", "end", xml, "destroyed") == (0, "", "")
    # the workstation's GPU and its audio function boot on nouveau and snd_hda_intel
    assert (drivers(ws)[GPU], drivers(ws)[AUDIO]) == ("nouveau", "snd_hda_intel")
    assert on_vfio(drivers(ws)) == set()
    assert held(ws) == {}


def test_a_shared_group_without_the_opt_in_is_refused_with_one_line(
        ws: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    before = ws.read_text()
    rc, out, err = hook(monkeypatch, capfd, "win10", "prepare", "begin",
                        domain_xml(hostdevs=[GPU]))
    assert rc == 5 and out == ""
    assert err.count("\n") == 1
    assert err.startswith("vfioctl: error: cannot detach 0000:01:00.0 alone: IOMMU group 1 "
                          "also holds 0000:01:00.1 (snd_hda_intel)")
    assert ws.read_text() == before
    assert not (ws.parent / "ws.toml.state").exists()


def test_managed_yes_hostdevs_are_left_to_libvirt(
        ws: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    before = ws.read_text()
    xml = domain_xml(hostdevs=["0000:06:00.0"], managed="yes")
    assert hook(monkeypatch, capfd, "win10", "prepare", "begin", xml) == (0, "", "")
    assert ws.read_text() == before


def test_a_device_held_for_another_domain_is_refused(
        ws: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    xml = domain_xml(hostdevs=[GPU], meta=[OPT_IN])
    assert hook(monkeypatch, capfd, "win10", "prepare", "begin", xml)[0] == 0
    other = domain_xml("linux", hostdevs=[AUDIO], uuid="0b7c0a56-37d7-4c5e-9a0c-0d2f4e5a6b7c")
    rc, _, err = hook(monkeypatch, capfd, "linux", "prepare", "begin", other)
    assert rc == 5 and f"is in use by '{OWNER}'" in err and err.count("\n") == 1
    assert held(ws) == {GPU: OWNER, AUDIO: OWNER}


BAD_XML = {
    "malformed": "<domain><name>win10</name><uuid>x</uuid",
    "truncated": domain_xml(hostdevs=[GPU], meta=[OPT_IN])[:200],
    "empty": "",
    "not a domain": "<network><name>win10</name></network>",
    "no uuid": "<domain type='kvm'><name>win10</name><memory>65536</memory></domain>",
    "another domain": domain_xml("other", hostdevs=[GPU], meta=[OPT_IN]),
    "metadata without hostdev": domain_xml(meta=[OPT_IN]),
    "bad metadata": domain_xml(hostdevs=[GPU], meta=[f"<vfioctl:hostdev address='{GPU}' "
                                                     "group='yes'/>"]),
}


@pytest.mark.parametrize("xml", list(BAD_XML.values()), ids=list(BAD_XML))
@pytest.mark.parametrize("op,subop", [("prepare", "begin"), ("start", "begin")])
def test_bad_xml_aborts_prepare_and_start_with_one_line(
        ws: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
        xml: str, op: str, subop: str) -> None:
    before = ws.read_text()
    rc, out, err = hook(monkeypatch, capfd, "win10", op, subop, xml)
    assert rc == 3, err
    assert out == "" and err.count("\n") == 1 and err.startswith("vfioctl: error: ")
    assert ws.read_text() == before


UNREADABLE = {k: v for k, v in BAD_XML.items() if "metadata" not in k}


@pytest.mark.parametrize("xml", list(UNREADABLE.values()), ids=list(UNREADABLE))
@pytest.mark.parametrize("op,subop", [("release", "end"), ("stopped", "end")])
def test_bad_xml_on_release_and_stopped_is_a_log_line_and_changes_nothing(
        ws: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
        xml: str, op: str, subop: str) -> None:
    assert hook(monkeypatch, capfd, "win10", "prepare", "begin",
                domain_xml(hostdevs=[GPU], meta=[OPT_IN]))[0] == 0
    taken = ws.read_text()
    rc, out, err = hook(monkeypatch, capfd, "win10", op, subop, xml)
    assert (rc, out) == (0, "")
    assert err.count("\n") == 1 and err.startswith("vfioctl: domain 'win10': ")
    assert err.rstrip().endswith("nothing changed")
    assert ws.read_text() == taken


def test_release_needs_only_the_domains_name_and_uuid(
        ws: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    """What vfioctl cannot read in a hostdev or its metadata never keeps the devices
    from going back (libvirt's live XML at release differs from the one at prepare)."""
    assert hook(monkeypatch, capfd, "win10", "prepare", "begin",
                domain_xml(hostdevs=[GPU], meta=[OPT_IN]))[0] == 0
    xml = BAD_XML["bad metadata"].replace("<hostdev ", "<hostdev rom='?' ")
    assert hook(monkeypatch, capfd, "win10", "release", "end", xml) == (0, "", "")
    assert held(ws) == {} and on_vfio(drivers(ws)) == set()


def test_a_hostdev_that_does_not_exist(
        ws: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    before = ws.read_text()
    xml = domain_xml(hostdevs=["0000:42:00.0"])
    rc, out, err = hook(monkeypatch, capfd, "win10", "prepare", "begin", xml)
    assert (rc, out) == (4, "") and err.count("\n") == 1 and "0000:42:00.0" in err
    # release never needs the device: it gives back what vfioctl holds for the owner
    assert hook(monkeypatch, capfd, "win10", "release", "end", xml) == (0, "", "")
    assert ws.read_text() == before


def test_unknown_operations(ws: Path, monkeypatch: pytest.MonkeyPatch,
                            capfd: pytest.CaptureFixture[str]) -> None:
    before = ws.read_text()
    xml = domain_xml(hostdevs=[GPU], meta=[OPT_IN])
    rc, out, err = hook(monkeypatch, capfd, "win10", "frobnicate", "begin", xml)
    assert (rc, out) == (0, "")
    assert err == "vfioctl: unknown libvirt hook operation 'frobnicate' for domain " \
                  "'win10': ignored\n"
    for op in ("migrate", "restore", "reconnect", "attach"):
        assert hook(monkeypatch, capfd, "win10", op, "begin", xml) == (0, "", "")
    rc, _, err = hook(monkeypatch, capfd, "win10", "prepare", "end", xml)
    assert rc == 2 and "unexpected libvirt hook call 'prepare end'" in err
    rc, _, err = hook(monkeypatch, capfd, "win10", "release", "begin", xml)
    assert rc == 0 and "unexpected libvirt hook call 'release begin'" in err
    assert ws.read_text() == before


def test_a_hook_killed_mid_prepare_is_recovered_by_the_next_call(
        ws: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    hardware = ws.read_text()
    crash = "\n[crash]\nat_write = 3\napplied = true\n"
    ws.write_text(hardware + crash)
    xml = domain_xml(hostdevs=[GPU], meta=[OPT_IN])
    with pytest.raises(SimCrash):
        hook(monkeypatch, capfd, "win10", "prepare", "begin", xml)
    ws.write_text(ws.read_text().replace(crash, ""))
    assert on_vfio(drivers(ws))                     # the crash left a half-done detach
    # libvirt calls release after a failed prepare: it first rolls the detach back
    rc, out, err = hook(monkeypatch, capfd, "win10", "release", "end", xml)
    assert (rc, out) == (0, "")
    assert "rolled back an interrupted detach" in err
    assert drivers(ws)[GPU] == "nouveau" and drivers(ws)[AUDIO] == "snd_hda_intel"
    assert on_vfio(drivers(ws)) == set() and held(ws) == {}
    # and the next start works
    assert hook(monkeypatch, capfd, "win10", "prepare", "begin", xml) == (0, "", "")
    assert held(ws) == {GPU: OWNER, AUDIO: OWNER}


# -- VF tokens ------------------------------------------------------------------------------
VF = "0000:03:02.0"
TOKEN_META = f"<vfioctl:hostdev address='{VF}' vf-token='stored'/>"


def stored_token(host_file: Path) -> str:
    import vfioctl

    with vfioctl.open(f"sim:{host_file}") as host:
        return host.get_token("0000:03:00.0").reveal()


def test_a_vf_of_a_userspace_pf_without_its_token_is_refused(
        srv: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
        wrapper: Path) -> None:
    before = srv.read_text()
    rc, _, err = hook(monkeypatch, capfd, "vm", "prepare", "begin",
                      domain_xml("vm", hostdevs=[VF], emulator=str(wrapper)))
    assert rc == 3 and err.count("\n") == 1
    assert f"VF {VF} has no VF token, but its PF 0000:03:00.0 is driven from userspace" in err
    assert "vf-token='stored'" in err
    assert srv.read_text() == before


def test_a_token_vf_needs_the_wrapper_as_emulator(
        srv: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    rc, _, err = hook(monkeypatch, capfd, "vm", "prepare", "begin",
                      domain_xml("vm", hostdevs=[VF], meta=[TOKEN_META]))
    assert rc == 3 and "is not vfioctl's wrapper: QEMU would get no token" in err


def test_the_token_is_handed_off_between_start_and_started_only(
        srv: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
        wrapper: Path, run_dir: Path) -> None:
    uid, gid = os.getuid(), os.getgid()
    xml = domain_xml("vm", hostdevs=[VF], meta=[TOKEN_META], emulator=str(wrapper),
                     dac=f"+{uid}:+{gid}")
    handoff = run_dir / f"{UUID}.json"
    before = drivers(srv)
    assert hook(monkeypatch, capfd, "vm", "prepare", "begin", xml) == (0, "", "")
    assert drivers(srv)[VF] == "vfio-pci" and not handoff.exists()
    assert hook(monkeypatch, capfd, "vm", "start", "begin", xml) == (0, "", "")
    st = handoff.stat()
    assert stat.S_IMODE(st.st_mode) == 0o400 and st.st_uid == uid
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o711
    assert json.loads(handoff.read_text()) == {
        "devices": [{"host": VF, "vf-token": stored_token(srv)}]}
    assert hook(monkeypatch, capfd, "vm", "started", "begin", xml) == (0, "", "")
    assert not handoff.exists()
    # a start that fails after start begin: stopped (and release) remove it too
    assert hook(monkeypatch, capfd, "vm", "start", "begin", xml)[0] == 0
    assert hook(monkeypatch, capfd, "vm", "stopped", "end", xml) == (0, "", "")
    assert not handoff.exists()
    assert hook(monkeypatch, capfd, "vm", "release", "end", xml) == (0, "", "")
    assert drivers(srv) == before


def test_a_missing_stored_token_aborts_the_start(
        srv: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
        wrapper: Path) -> None:
    import vfioctl

    with vfioctl.open(f"sim:{srv}") as host:
        host.forget_token("0000:03:00.0")
    before = srv.read_text()
    xml = domain_xml("vm", hostdevs=[VF], meta=[TOKEN_META], emulator=str(wrapper))
    rc, _, err = hook(monkeypatch, capfd, "vm", "prepare", "begin", xml)
    assert rc == 3 and err.count("\n") == 1 and "0000:03:00.0" in err
    assert srv.read_text() == before


SEV = "<launchSecurity type='sev'><policy>0x0003</policy></launchSecurity>"


def test_a_confidential_guest_gets_a_vf_of_a_userspace_pf_only_with_the_opt_in(
        srv: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
        wrapper: Path) -> None:
    xml = domain_xml("vm", hostdevs=[VF], meta=[TOKEN_META], emulator=str(wrapper),
                     extra=SEV)
    before = srv.read_text()
    rc, _, err = hook(monkeypatch, capfd, "vm", "prepare", "begin", xml)
    assert rc == 3 and err.count("\n") == 1
    assert "is a confidential guest (<launchSecurity type='sev'>)" in err
    assert "allow-untrusted-pf='yes'" in err and "--allow-untrusted-pf" not in err
    assert srv.read_text() == before
    allowed = xml.replace("<vfioctl:devices ", "<vfioctl:devices allow-untrusted-pf='yes' ")
    assert hook(monkeypatch, capfd, "vm", "prepare", "begin", allowed) == (0, "", "")
    assert held(srv) == {"0000:03:00.0": None, VF: f"libvirt:vm:{UUID}"}
