"""The token store and lifecycle on the simulator: modes, reuse of the stored token while
VFs are open, stale copies (rebind, unbind, kernel changed behind vfioctl's back)."""

from __future__ import annotations

import os
import stat
import uuid

import pytest
from tokenops import (
    change_numvfs,
    check_vf,
    forget_token,
    get_token,
    open_vf,
    set_token,
    show_token,
)
from tokentest import Q35_PF, Q35_PLAIN, Q35_VF, Q35_VF2

from vfioctl.errors import DeviceInUse, PermissionDenied, ReadOnlyHost, UsageError
from vfioctl.manager import HostdevManager, TokenNotFound, TokenStale
from vfioctl.secret import REDACTED, VfToken
from vfioctl.sim.host import SimHost
from vfioctl.vfio.device import TokenNotAccepted, VfTokenRejected, open_device

TOK = VfToken(uuid.UUID("11111111-2222-3333-4444-555555555555"))


def test_set_stores_0600_in_0700_and_the_kernel_has_it(q35: SimHost) -> None:
    old = os.umask(0)
    try:
        _, path = set_token(q35, Q35_PF, TOK)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert q35.kernel.vf_tokens[Q35_PF] == uuid.UUID(TOK.reveal())
    assert get_token(q35, Q35_PF) == TOK
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")], "no temp left"


def test_default_token_is_fresh_and_random(q35: SimHost) -> None:
    a, _ = set_token(q35, Q35_PF)
    b, _ = set_token(q35, Q35_PF)
    assert a.token != b.token
    assert check_vf(q35, Q35_VF).with_token


def test_set_while_a_vf_is_open_is_refused_naming_the_user(q35: SimHost) -> None:
    """Rotation under an open VF would lock its user out at the next open."""
    set_token(q35, Q35_PF, TOK)
    with open_vf(q35, Q35_VF), pytest.raises(DeviceInUse) as info:
        set_token(q35, Q35_PF)
    assert str(info.value).startswith(f"VF {Q35_VF} of PF {Q35_PF} is open by pid "
                                      f"{os.getpid()} ")
    assert info.value.hint is not None and "--force" in info.value.hint
    assert get_token(q35, Q35_PF) == TOK, "nothing changed"


def test_set_while_a_vf_is_open_uses_the_stored_token(q35: SimHost) -> None:
    set_token(q35, Q35_PF, TOK)
    with open_vf(q35, Q35_VF):
        new, _ = set_token(q35, Q35_PF, force=True)  # PF opens only with TOK now
        with open_vf(q35, Q35_VF2) as h:          # the new one is current
            assert h.info.num_irqs == 5
    assert get_token(q35, Q35_PF) == new.token


def test_set_while_vfs_are_open_without_a_stored_token_is_explained(q35: SimHost) -> None:
    set_token(q35, Q35_PF, TOK)
    with open_vf(q35, Q35_VF):
        forget_token(q35, Q35_PF)
        with pytest.raises(VfTokenRejected, match=f"PF {Q35_PF} has VFs in use by another "
                           "VFIO user"):
            set_token(q35, Q35_PF, force=True)
    assert q35.kernel.vf_tokens[Q35_PF] == uuid.UUID(TOK.reveal()), "kernel untouched"


def test_failed_set_keeps_the_old_file(q35: SimHost) -> None:
    _, path = set_token(q35, Q35_PF, TOK)
    q35.faults.fail_ioctl("DEVICE_FEATURE", 5)
    with pytest.raises(Exception, match="DEVICE_FEATURE"):
        set_token(q35, Q35_PF)
    assert get_token(q35, Q35_PF) == TOK
    assert sorted(p.name for p in path.parent.iterdir()) == [Q35_PF]


def test_token_on_a_vf_or_a_plain_device_is_refused(q35: SimHost) -> None:
    with pytest.raises(TokenNotAccepted, match=f"{Q35_VF} is not an SR-IOV PF bound to "
                       f"vfio-pci: it is a VF of {Q35_PF}"):
        set_token(q35, Q35_VF)
    with pytest.raises(TokenNotAccepted, match=f"{Q35_PLAIN} is not an SR-IOV PF bound to "
                       "vfio-pci: it has no SR-IOV capability"):
        set_token(q35, Q35_PLAIN)


def test_pf_on_its_kernel_driver_is_refused(make_host: object) -> None:
    assert callable(make_host)
    host: SimHost = make_host("sriov-server")
    with pytest.raises(TokenNotAccepted, match=r"0000:03:00.0 is not an SR-IOV PF bound "
                       r"to vfio-pci \(driver: i40e\)"):
        set_token(host, "0000:03:00.0")


def test_no_stored_token(q35: SimHost) -> None:
    with pytest.raises(TokenNotFound, match=f"no VF token stored for PF {Q35_PF}"):
        get_token(q35, Q35_PF)
    with pytest.raises(TokenNotFound):
        check_vf(q35, Q35_VF)


def test_vf_without_token_is_refused_with_the_explanation(q35: SimHost) -> None:
    set_token(q35, Q35_PF, TOK)
    with pytest.raises(VfTokenRejected) as exc:
        check_vf(q35, Q35_VF, use_token=False)
    assert str(exc.value) == (f"VF token required for {Q35_VF}; its PF {Q35_PF} is driven "
                              "from userspace: EACCES (Permission denied)")
    assert f"vfioctl token set {Q35_PF}" in (exc.value.hint or "")
    assert exc.value.exit_code == 6


def test_manager_forgets_the_copy_when_the_pf_changes_driver(q35: SimHost) -> None:
    set_token(q35, Q35_PF, TOK)
    change_numvfs(q35, Q35_PF, 0, allow_enable_sriov=True)
    HostdevManager(q35).reattach([Q35_PF])
    assert show_token(q35, Q35_PF).stored is None
    with pytest.raises(TokenNotFound):
        get_token(q35, Q35_PF)
    # detached again: vfio-pci made a new random token; still nothing stale is kept
    HostdevManager(q35).detach([Q35_PF])
    assert show_token(q35, Q35_PF).stored is None


def test_stale_when_the_pf_is_rebound_behind_vfioctls_back(q35: SimHost) -> None:
    set_token(q35, Q35_PF, TOK)
    change_numvfs(q35, Q35_PF, 0, allow_enable_sriov=True)
    dev = f"sys/bus/pci/devices/{Q35_PF}"
    q35.write(f"{dev}/driver_override", "\n")
    q35.write(f"{dev}/driver/unbind", str(Q35_PF))
    q35.write("sys/bus/pci/drivers_probe", str(Q35_PF))
    status = show_token(q35, Q35_PF)
    assert status.stale is not None and "no longer bound to vfio-pci" in status.stale
    with pytest.raises(TokenStale, match=r"is stale: PF .* is no longer bound"):
        get_token(q35, Q35_PF)


def test_stale_copy_detected_by_the_kernel(q35: SimHost) -> None:
    set_token(q35, Q35_PF, TOK)
    with open_device(q35, Q35_PF, token=VfToken.generate()):   # sets another token
        pass
    with pytest.raises(VfTokenRejected, match=f"the stored VF token of PF {Q35_PF} is "
                       f"stale: the kernel refused it for {Q35_VF}"):
        check_vf(q35, Q35_VF)


def test_a_token_file_others_can_read_is_refused(q35: SimHost) -> None:
    _, path = set_token(q35, Q35_PF, TOK)
    path.chmod(0o644)
    with pytest.raises(PermissionDenied, match="has mode 0644") as exc:
        get_token(q35, Q35_PF)
    assert TOK.reveal() not in str(exc.value) + str(exc.value.hint)


def test_read_only_host_has_no_tokens() -> None:
    host = SimHost.bundled("sriov-server")
    with pytest.raises(ReadOnlyHost):
        set_token(host, "0000:03:00.0")


@pytest.mark.parametrize("text", ["", "xyz", "11111111-2222-3333-4444-55555555555",
                                  "{11111111-2222-3333-4444-555555555555}",
                                  "11111111222233334444555555555555",
                                  "11111111-2222-3333-4444-55555555555g"])
def test_malformed_tokens_are_usage_errors_that_do_not_echo(text: str) -> None:
    with pytest.raises(UsageError) as exc:
        VfToken.parse(text)
    if text:
        assert text not in str(exc.value) and text not in str(exc.value.hint)
    assert exc.value.exit_code == 2


def test_token_value_never_prints_itself() -> None:
    tok = VfToken.parse(" 11111111-2222-3333-4444-555555555555\n".upper())
    secret = tok.reveal()
    assert secret == "11111111-2222-3333-4444-555555555555"
    for shown in (str(tok), repr(tok), f"{tok}", f"{tok!r}", "%s" % (tok,),  # noqa: UP031
                  format(tok, "x"),
                  repr([tok]), repr({"t": tok})):
        assert secret not in shown and REDACTED in shown
    with pytest.raises(TypeError):
        import pickle
        pickle.dumps(tok)
