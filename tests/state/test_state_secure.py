"""A state directory another user could have prepared is refused, and nothing is created
where a planted link points."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from statetest import NOBODY, needs_root, record, tree

from vfioctl.state import StateStore, StateUnsafe, TokenStore
from vfioctl.state.secure import open_state_dir


def _enter_writer(store: StateStore) -> None:
    with store.writer(defer=True) as w:
        w.put_records([record()])


def _plain_writer(store: StateStore) -> None:
    with store.writer():
        pass


ACCESSES: dict[str, Callable[[StateStore], object]] = {
    "writer": _plain_writer,
    "first-write": _enter_writer,
    "read_records": lambda s: s.read_records(),
    "needs_recovery": lambda s: s.needs_recovery(),
    "token-load": lambda s: TokenStore(s.directory).load(record().addr),
    "token-list": lambda s: TokenStore(s.directory).list_staged(),
}


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """Where an attacker's links point: it must stay empty."""
    path = tmp_path / "outside"
    path.mkdir()
    return path


@needs_root
@pytest.mark.parametrize("planted", ["vfioctl.lock", "vfioctl.db", "vfioctl.db-wal",
                                     "vfioctl.db-shm"])
@pytest.mark.parametrize("access", sorted(ACCESSES))
def test_a_directory_owned_by_another_user_is_refused(
        tmp_path: Path, outside: Path, planted: str, access: str) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / planted).symlink_to(outside / "target")
    os.chown(state, NOBODY, NOBODY)
    with pytest.raises(StateUnsafe) as info:
        ACCESSES[access](StateStore(state, timeout=0.1))
    assert str(info.value) == f"state directory {state} is owned by uid {NOBODY}, not root"
    assert info.value.hint == "remove it or fix its owner"
    assert info.value.exit_code == 77
    assert tree(outside) == []
    assert sorted(os.listdir(state)) == [planted]


@pytest.mark.parametrize("planted,access", [
    ("vfioctl.lock", "writer"), ("vfioctl.lock", "first-write"),
    ("vfioctl.db", "first-write"), ("vfioctl.db", "read_records"),
    ("vfioctl.db", "needs_recovery"), ("vfioctl.db-wal", "first-write"),
    ("vfioctl.db-wal", "read_records"), ("vfioctl.db-shm", "first-write"),
])
def test_a_link_inside_our_own_directory_is_not_followed(
        tmp_path: Path, outside: Path, planted: str, access: str) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / planted).symlink_to(outside / "target")
    with pytest.raises(StateUnsafe, match=f"{state / planted} is a symbolic link"):
        ACCESSES[access](StateStore(state, timeout=0.1))
    assert tree(outside) == []
    assert not (state / "vfioctl.db").is_file()


def test_the_state_directory_itself_may_not_be_a_link(tmp_path: Path, outside: Path) -> None:
    (tmp_path / "state").symlink_to(outside)
    for access in ACCESSES.values():
        with pytest.raises(StateUnsafe, match="is a symbolic link, not a directory"):
            access(StateStore(tmp_path / "state", timeout=0.1))
    assert tree(outside) == []


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777])
def test_a_directory_others_may_write_is_refused(tmp_path: Path, mode: int) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(mode)
    with pytest.raises(StateUnsafe, match=f"state directory {state} is writable by"):
        _enter_writer(StateStore(state))
    assert os.listdir(state) == []


@needs_root
def test_a_parent_another_user_owns_is_refused(tmp_path: Path) -> None:
    # The SQLite database is opened by name: whoever owns a directory on the way could
    # rename the state directory away and put a link in its place.
    parent = tmp_path / "home"
    parent.mkdir()
    os.chown(parent, NOBODY, NOBODY)
    with pytest.raises(StateUnsafe) as info:
        _enter_writer(StateStore(parent / "state"))
    assert str(info.value) == f"directory {parent} is owned by uid {NOBODY}, not root"
    assert (info.value.hint or "").startswith("another user could redirect vfioctl's "
                                              "state through it")
    assert os.listdir(parent) == []


def test_a_sticky_world_writable_parent_is_fine(tmp_path: Path) -> None:
    parent = tmp_path / "tmp"
    parent.mkdir()
    parent.chmod(0o1777)
    _enter_writer(StateStore(parent / "state"))
    assert StateStore(parent / "state").read_records() == [record()]


def test_a_world_writable_parent_without_sticky_bit_is_refused(tmp_path: Path) -> None:
    parent = tmp_path / "open"
    parent.mkdir()
    parent.chmod(0o777)
    with pytest.raises(StateUnsafe, match=f"directory {parent} is writable by group and"):
        _enter_writer(StateStore(parent / "state"))
    assert os.listdir(parent) == []


def test_links_among_trusted_ancestors_are_followed(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to("real")
    _enter_writer(StateStore(tmp_path / "alias" / "state"))
    assert (tmp_path / "real" / "state" / "vfioctl.db").is_file()
    with open_state_dir(tmp_path / "alias" / "state", create=False) as d:  # type: ignore[union-attr]
        assert d.real == str(tmp_path / "real" / "state")


def test_missing_parents_are_created_and_the_directory_is_0700(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        _enter_writer(StateStore(tmp_path / "a" / "b" / "state"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a" / "b" / "state").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o755


def test_a_hard_link_is_refused(tmp_path: Path, outside: Path) -> None:
    store = StateStore(tmp_path / "state")
    _enter_writer(store)
    os.link(store.db_path, outside / "alias")
    with pytest.raises(StateUnsafe, match="has 2 hard links"):
        store.read_records()


def test_a_fifo_at_the_lock_is_refused_without_hanging(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.mkfifo(state / "vfioctl.lock")
    with pytest.raises(StateUnsafe, match="is not a regular file"):
        _plain_writer(StateStore(state, timeout=0.1))


@needs_root
def test_a_file_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    _enter_writer(store)
    os.chown(store.db_path, NOBODY, NOBODY)
    with pytest.raises(StateUnsafe, match=f"{store.db_path} is owned by uid {NOBODY}"):
        store.read_records()
    with pytest.raises(StateUnsafe):
        _enter_writer(store)
