"""``vfioctl start --dry-run``: goldens of the plan (tokens redacted), and that it changes
nothing. Cases are the files in data/dryrun/*.xml -> .out (stdout) or .err (exit code +
stderr); VFIOCTL_TEST_REGENERATE=1 rewrites them (review with git diff).

Every case runs against a fresh copy of sim:sriov-server with ``--qemu-version 8.1``;
the temporary directory is written as ``$TMP`` in the goldens.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from launchtest import CAPS_72, DATA, TOKEN

from vfioctl.cli.main import main
from vfioctl.secret import REDACTED

CASES = sorted(p.stem for p in (DATA / "dryrun").glob("*.xml"))


def _run(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, str, str]:
    rc = main(args)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("case", CASES)
def test_dry_run_golden(case: str, host_file: Path, tmp_path: Path,
                        capsys: pytest.CaptureFixture[str], golden: object) -> None:
    src = DATA / "dryrun" / f"{case}.xml"
    before = hashlib.sha256(host_file.read_bytes()).hexdigest()
    rc, out, err = _run(capsys, ["--host", f"sim:{host_file}", "start", str(src),
                                 "--dry-run", "--qemu-version", "8.1"])

    def norm(text: str) -> str:
        return text.replace(str(tmp_path), "$TMP").replace(str(DATA), "$DATA")

    if rc == 0:
        golden.check(src.with_suffix(".out"), norm(out))  # type: ignore[attr-defined]
    else:
        golden.check(src.with_suffix(".err"),  # type: ignore[attr-defined]
                     f"exit {rc}\n{norm(err)}")
    assert TOKEN not in out + err
    assert TOKEN.upper() not in out + err
    # Nothing changed: the host file, no state directory, no runtime directory.
    assert hashlib.sha256(host_file.read_bytes()).hexdigest() == before
    assert not (tmp_path / "h.toml.state").exists()
    assert not any((tmp_path / "xdg").iterdir())


def test_dry_run_json_redacts_and_orders(host_file: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run(capsys, ["--host", f"sim:{host_file}", "start",
                               str(DATA / "dryrun" / "multifunction.xml"), "--dry-run",
                               "--qemu-version", "8.1", "--json"])
    assert rc == 0
    doc = json.loads(out)
    assert TOKEN not in out
    adds = [c["arguments"] for c in doc["qmp"] if c["execute"] == "device_add"]
    # every function of the token's slot is hot-added, function 0 last
    assert [a["addr"] for a in adds] == ["0x6.0x1", "0x6"]
    assert adds[0]["vf-token"] == REDACTED
    assert doc["qmp"][-1] == {"execute": "cont"}
    assert not any("vfio-pci" in a for a in doc["argv"])
    assert "-S" in doc["argv"]


def test_qemu_72_refuses_vf_token_naming_the_version(host_file: Path,
                                                     capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    rc, out, err = _run(capsys, ["--host", f"sim:{host_file}", "start",
                                 str(DATA / "dryrun" / "token-pc.xml"),
                                 "--qemu-caps", str(CAPS_72)])
    assert rc == 3 and out == ""
    assert "needs QEMU >= 8.1, found QEMU 7.2.22" in err
    assert not (host_file.parent / "h.toml.state").exists()


def test_extra_argument_with_the_token_is_refused(host_file: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _run(capsys, ["--host", f"sim:{host_file}", "start",
                               str(DATA / "dryrun" / "token-pc.xml"), "--dry-run",
                               "--qemu-version", "8.1", "--", "-device",
                               f"vfio-pci,host=0000:03:00.1,vf-token={TOKEN.upper()}"])
    assert rc == 2
    assert "contains a VF token" in err and TOKEN not in err.lower()


def test_daemonize_is_refused(host_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _run(capsys, ["--host", f"sim:{host_file}", "start",
                               str(DATA / "dryrun" / "token-pc.xml"), "--dry-run",
                               "--qemu-version", "8.1", "--", "-daemonize"])
    assert rc == 2 and "-daemonize" in err


def test_options_after_file_are_options_not_qemu_args(
        host_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # QEMU arguments need '--'; an unknown option is a usage error, never a start
    rc, _, err = _run(capsys, ["--host", f"sim:{host_file}", "start",
                               str(DATA / "dryrun" / "token-pc.xml"), "--dry-run",
                               "--qemu-version", "8.1", "-cpu", "max"])
    assert rc == 2 and "No such option" in err
