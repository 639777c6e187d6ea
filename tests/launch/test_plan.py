"""Pure parts of the launch plan: runtime directory naming, memory units, redaction."""

from __future__ import annotations

from pathlib import Path

import pytest
from launchtest import DATA, TOKEN

from vfioctl.conf import parse_string
from vfioctl.errors import ConfigError, UsageError
from vfioctl.launch.plan import plan_start, redact_text, runtime_dir
from vfioctl.qemu.caps import caps_for_version
from vfioctl.secret import REDACTED


def test_runtime_dir_under_state_dir() -> None:
    assert runtime_dir(Path("/run/vfioctl"), "vm1") == Path("/run/vfioctl/qemu/vm1")


def test_runtime_dir_falls_back_when_the_socket_path_is_too_long(_runtime_env: Path) -> None:
    deep = Path("/var/lib/" + "d" * 120)
    short = runtime_dir(deep, "vm1")
    assert short.parent == _runtime_env / "vfioctl" / "s"
    assert len(str(short / "qmp.sock")) <= 107
    assert runtime_dir(deep, "vm1") == short  # deterministic: release finds it again
    assert runtime_dir(deep, "vm2") != short


def test_runtime_dir_without_state_dir_uses_xdg(_runtime_env: Path) -> None:
    assert runtime_dir(None, "vm1") == _runtime_env / "vfioctl" / "qemu" / "vm1"


def _domain(memory: str, vcpu: str = "<vcpu>2</vcpu>", kind: str = "qemu") -> str:
    return (f"<domain type='{kind}'><name>m</name>{memory}{vcpu}"
            "<os><type arch='x86_64' machine='pc'>hvm</type></os><devices/></domain>")


@pytest.mark.parametrize("memory,expected", [
    ("<memory>65536</memory>", "65536k"),
    ("<memory unit='MiB'>64</memory>", "65536k"),
    ("<memory unit='G'>1</memory>", "1048576k"),
    ("<memory unit='bytes'>1025</memory>", "2k"),
])
def test_memory_units(memory: str, expected: str) -> None:
    plan = plan_start(parse_string(_domain(memory)), caps_for_version("8.1"),
                      binary="qemu", state_dir=Path("/s"))
    argv = list(plan.argv)
    assert argv[argv.index("-m") + 1] == expected
    assert argv[argv.index("-smp") + 1] == "2"
    assert argv[argv.index("-accel") + 1] == "tcg"


@pytest.mark.parametrize("memory,vcpu,kind,message", [
    ("", "", "qemu", "has no <memory>"),
    ("<memory unit='parsecs'>1</memory>", "", "qemu", "invalid <memory>"),
    ("<memory>64</memory>", "<vcpu>zero</vcpu>", "qemu", "invalid <vcpu>"),
    ("<memory>64</memory>", "", "xen", "domain type 'xen' is not supported"),
])
def test_bad_domain_settings(memory: str, vcpu: str, kind: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        plan_start(parse_string(_domain(memory, vcpu, kind)), caps_for_version("8.1"),
                   binary="qemu", state_dir=Path("/s"))


def test_plan_repr_and_argv_never_hold_the_token() -> None:
    doc = parse_string((DATA / "dryrun" / "token-pc.xml").read_bytes())
    plan = plan_start(doc, caps_for_version("8.1"), binary="qemu", state_dir=Path("/s"))
    assert TOKEN not in repr(plan) and TOKEN not in " ".join(plan.argv)
    assert plan.tokens == (TOKEN,)
    assert plan.qmp_commands(reveal=True)[0]["arguments"]["vf-token"] == TOKEN
    assert TOKEN not in str(plan.qmp_commands())


def test_redact_text_any_case() -> None:
    assert redact_text(f"a {TOKEN.upper()} b {TOKEN}", [TOKEN]) == f"a {REDACTED} b {REDACTED}"


def test_tokens_are_redacted_and_refused_in_every_spelling() -> None:
    undashed = TOKEN.replace("-", "")
    for spelling in (TOKEN, TOKEN.upper(), undashed, undashed.upper()):
        said = f"vfio 0000:03:02.0: vf_token={spelling} rejected"
        assert redact_text(said, [TOKEN]) == f"vfio 0000:03:02.0: vf_token={REDACTED} rejected"
    doc = parse_string((DATA / "dryrun" / "token-pc.xml").read_bytes())
    for extra in (f"x,vf-token={undashed}", "vfio-pci,host=01:00.1,vf-token=" + "0" * 32,
                  "vfio-pci,vf_token=whatever"):
        with pytest.raises(UsageError, match="contains a VF token"):
            plan_start(doc, caps_for_version("8.1"), binary="qemu", state_dir=Path("/s"),
                       extra_args=["-device", extra])
