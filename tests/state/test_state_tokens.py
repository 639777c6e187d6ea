"""The VF-token store: staging primitives for a journaled 'token set', refusal of files
and directories it cannot trust, and malformed files as one-line errors."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import stat
import threading
import time
from pathlib import Path

import pytest
from statetest import NOBODY, needs_root, tree

from vfioctl.address import PciAddress
from vfioctl.errors import HostError, VfioctlError
from vfioctl.secret import VfToken
from vfioctl.state import StoredToken, TokenStore
from vfioctl.state.secure import StateUnsafe

PF = PciAddress.parse("0000:03:00.0")
OTHER_PF = PciAddress.parse("0000:04:00.0")
SECRET = "5e1c5bd0-4d2b-4a3e-9f4e-0123456789ab"


def entry(pf: PciAddress = PF, token: str = SECRET) -> StoredToken:
    return StoredToken(pf, VfToken.parse(token), "2026-01-01T00:00:00+00:00", None)


@pytest.fixture
def store(tmp_path: Path) -> TokenStore:
    return TokenStore(tmp_path / "state")


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# -- staging --------------------------------------------------------------------------------
def test_stage_then_commit(store: TokenStore) -> None:
    name = store.stage(entry())
    assert "/" not in name and name.startswith(".staged-0000:03:00.0-")
    staged = store.directory / name
    assert _mode(staged) == 0o600 and _mode(store.directory) == 0o700
    assert _mode(store.directory.parent) == 0o700
    assert json.loads(staged.read_text())["vf_token"] == SECRET
    assert store.list_staged() == [name]
    assert store.load_staged(name) == entry()
    assert store.load(PF) is None                       # not stored until committed
    assert store.commit_staged(name, PF) == store.path(PF)
    assert store.list_staged() == []
    assert store.load(PF) == entry()
    assert _mode(store.path(PF)) == 0o600


def test_a_commit_replaces_the_stored_token(store: TokenStore) -> None:
    store.commit_staged(store.stage(entry()), PF)
    newer = entry(token="00000000-1111-2222-3333-444444444444")
    store.commit_staged(store.stage(newer), PF)
    assert store.load(PF) == newer
    assert sorted(os.listdir(store.directory)) == [str(PF)]


def test_staged_names_are_unique(store: TokenStore) -> None:
    names = {store.stage(entry()) for _ in range(20)}
    assert len(names) == 20 and sorted(names) == store.list_staged()


def test_discard_is_idempotent(store: TokenStore) -> None:
    name = store.stage(entry())
    store.discard_staged(name)
    store.discard_staged(name)
    assert store.list_staged() == [] and os.listdir(store.directory) == []


def test_a_commit_for_another_pf_is_refused(store: TokenStore) -> None:
    name = store.stage(entry())
    with pytest.raises(HostError, match=r"is not for PF 0000:04:00\.0"):
        store.commit_staged(name, OTHER_PF)
    assert store.list_staged() == [name] and store.load(OTHER_PF) is None


def test_a_staged_file_that_is_gone(store: TokenStore) -> None:
    name = store.stage(entry())
    store.discard_staged(name)
    for call in (lambda: store.load_staged(name), lambda: store.commit_staged(name, PF)):
        with pytest.raises(HostError, match="is gone"):
            call()


@pytest.mark.parametrize("name", ["0000:03:00.0", "../vfioctl.db", "/etc/passwd",
                                  ".staged-0000:03:00.0-1-xyz", ".", "..", ""])
def test_only_staged_names_are_accepted(store: TokenStore, name: str) -> None:
    store.commit_staged(store.stage(entry()), PF)
    for call in (lambda: store.discard_staged(name), lambda: store.load_staged(name),
                 lambda: store.commit_staged(name, PF)):
        with pytest.raises(HostError, match="is not the name of a staged token file") as e:
            call()
        assert e.value.exit_code == 6
    assert store.load(PF) == entry()                    # the stored token is untouched


def test_reading_creates_nothing(tmp_path: Path, store: TokenStore) -> None:
    assert store.list_staged() == []
    assert store.load(PF) is None
    assert store.remove(PF) is False
    store.discard_staged(".staged-0000:03:00.0-1-0123456789abcdef")
    assert tree(tmp_path) == []


def test_the_former_path_api(store: TokenStore) -> None:
    tmp = store.prepare(entry())
    assert tmp.parent == store.directory
    assert store.commit(tmp, PF) == store.path(PF)
    assert store.load(PF) == entry()
    store.discard(store.prepare(entry(OTHER_PF)))
    assert store.list_staged() == []
    assert store.remove(PF) is True and store.load(PF) is None


# -- malformed files ------------------------------------------------------------------------
MALFORMED = {
    "garbage": b"\x00\xff not json at all " + SECRET.encode(),
    "not-utf8": b"\xff\xfe" + SECRET.encode(),
    "a-list": json.dumps([SECRET]).encode(),
    "pf-not-a-string": json.dumps({"pf": 3, "vf_token": SECRET, "set_at": "x"}).encode(),
    "token-not-a-string": json.dumps({"pf": str(PF), "vf_token": [SECRET],
                                      "set_at": "2026-01-01T00:00:00"}).encode(),
    "bad-uuid": json.dumps({"pf": str(PF), "vf_token": SECRET[:-1] + "g",
                            "set_at": "2026-01-01T00:00:00"}).encode(),
    "bad-address": json.dumps({"pf": "nonsense", "vf_token": SECRET,
                               "set_at": "2026-01-01T00:00:00"}).encode(),
    "no-set-at": json.dumps({"pf": str(PF), "vf_token": SECRET}).encode(),
    "bad-set-at": json.dumps({"pf": str(PF), "vf_token": SECRET, "set_at": SECRET}).encode(),
    "held-since-a-number": json.dumps({"pf": str(PF), "vf_token": SECRET, "set_at":
                                       "2026-01-01T00:00:00", "held_since": 5}).encode(),
    "for-another-pf": json.dumps({"pf": str(OTHER_PF), "vf_token": SECRET,
                                  "set_at": "2026-01-01T00:00:00"}).encode(),
    "too-big": json.dumps({"pf": str(PF), "vf_token": SECRET, "set_at":
                           "2026-01-01T00:00:00", "pad": "x" * 5000}).encode(),
    "deeply-nested": b"[" * 4000,
    "empty": b"",
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_token_file_is_one_line_naming_the_file(store: TokenStore,
                                                             case: str) -> None:
    store.commit_staged(store.stage(entry()), PF)
    store.path(PF).write_bytes(MALFORMED[case])
    with pytest.raises(HostError) as info:
        store.load(PF)
    err = info.value
    assert type(err) is HostError and err.exit_code == 6
    assert str(err) == f"token file {store.path(PF)} holds no valid VF token"
    assert SECRET[:8] not in f"{err} {err.hint}" and "\n" not in f"{err}{err.hint}"
    # nothing that could echo the content, even in a --debug traceback
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)


def test_a_malformed_staged_file_is_one_line_too(store: TokenStore) -> None:
    name = store.stage(entry())
    (store.directory / name).write_bytes(b"{")
    with pytest.raises(HostError, match=f"^token file {re.escape(str(store.directory))}"):
        store.commit_staged(name, PF)
    assert store.load(PF) is None


# -- files and directories it cannot trust --------------------------------------------------
@needs_root
def test_a_token_file_planted_by_another_user_is_refused(store: TokenStore) -> None:
    store.commit_staged(store.stage(entry()), PF)
    os.chown(store.path(PF), NOBODY, NOBODY)
    with pytest.raises(StateUnsafe) as info:
        store.load(PF)
    assert str(info.value).startswith(f"token file {store.path(PF)} is owned by uid "
                                      f"{NOBODY}, not root")
    assert info.value.exit_code == 77


def test_a_token_file_others_may_read_is_refused(store: TokenStore) -> None:
    store.commit_staged(store.stage(entry()), PF)
    store.path(PF).chmod(0o644)
    with pytest.raises(StateUnsafe, match="has mode 0644; refusing to use a VF token"):
        store.load(PF)


def test_a_token_file_that_is_a_link_is_not_followed(store: TokenStore,
                                                     tmp_path: Path) -> None:
    store.commit_staged(store.stage(entry()), PF)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text(json.dumps({"pf": str(PF), "vf_token": SECRET, "set_at": "x"}))
    elsewhere.chmod(0o600)
    store.path(PF).unlink()
    store.path(PF).symlink_to(elsewhere)
    with pytest.raises(StateUnsafe, match="is a symbolic link"):
        store.load(PF)


def test_a_token_directory_that_is_a_link_is_refused(store: TokenStore,
                                                     tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o700)
    store.directory.parent.mkdir(mode=0o700)
    store.directory.symlink_to(outside)
    for call in (lambda: store.stage(entry()), lambda: store.load(PF), store.list_staged):
        with pytest.raises(StateUnsafe, match=r"token directory .* is a symbolic link"):
            call()
    assert tree(outside) == []


def test_a_token_directory_others_may_write_is_refused(store: TokenStore) -> None:
    store.commit_staged(store.stage(entry()), PF)
    store.directory.chmod(0o733)
    with pytest.raises(StateUnsafe, match=r"token directory .* is writable by"):
        store.load(PF)


def test_a_token_directory_others_may_read_is_made_private(store: TokenStore) -> None:
    store.commit_staged(store.stage(entry()), PF)
    store.directory.chmod(0o755)
    assert store.load(PF) == entry()
    assert _mode(store.directory) == 0o700


def test_swapping_the_directory_between_stage_and_commit(store: TokenStore,
                                                         tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    name = store.stage(entry())
    store.directory.rename(tmp_path / "hidden")
    store.directory.symlink_to(outside)
    with pytest.raises(StateUnsafe):
        store.commit_staged(name, PF)
    assert tree(outside) == []
    assert os.listdir(tmp_path / "hidden") == [name]


def test_a_racing_swap_never_lands_a_file_outside(store: TokenStore, tmp_path: Path) -> None:
    """Another thread swaps vf-tokens/ for a link to a directory of its choosing, over
    and over, while tokens are staged and committed: every file stays inside."""
    outside = tmp_path / "outside"
    outside.mkdir()
    store.stage(entry())                  # the directories exist
    stop = threading.Event()
    swaps = 0

    def swap() -> None:
        nonlocal swaps
        for i in itertools.count():
            if stop.is_set():
                return
            hidden = tmp_path / f"hidden{i}"
            try:
                os.rename(store.directory, hidden)
                os.symlink(outside, store.directory)
            except OSError:                 # our mkdir won the gap: swap again
                continue
            time.sleep(0.001)
            os.unlink(store.directory)
            with contextlib.suppress(OSError):
                os.rename(hidden, store.directory)
            swaps += 1
            time.sleep(0.001)

    thread = threading.Thread(target=swap)
    thread.start()
    outcomes: dict[str, int] = {}
    try:
        for _ in range(100):
            try:
                store.commit_staged(store.stage(entry()), PF)
                kind = "stored"
            except VfioctlError as err:
                kind = type(err).__name__
            outcomes[kind] = outcomes.get(kind, 0) + 1
            assert tree(outside) == [], outcomes
    finally:
        stop.set()
        thread.join()
    assert swaps > 0 and outcomes.get("StateUnsafe", 0) > 0, outcomes  # the race was real
    assert set(outcomes) <= {"stored", "StateUnsafe", "HostError"}, outcomes
    assert tree(outside) == []
