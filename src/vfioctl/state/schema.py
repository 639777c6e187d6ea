"""State: the database's schema, its migrations, and how a writer's connection is set up.

A writer's connection runs in WAL mode, so readers read the last commit while it writes
(:mod:`vfioctl.state.dbfile`), with ``synchronous=NORMAL``: a commit survives the death
of the process (what the journal is for) without an fsync per journal step; only a power
loss can drop the last commits, and a power loss resets the kernel's driver bindings too
(and /run, where a real host keeps this, is tmpfs).
"""

from __future__ import annotations

import sqlite3
from typing import Final

SCHEMA_VERSION: Final = 2

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS devices (
    address           TEXT PRIMARY KEY,
    iommu_group       INTEGER,
    driver            TEXT NOT NULL,    -- the holding driver: vfio-pci or pci-stub
    moved             INTEGER NOT NULL, -- 1: vfioctl detached it and knows its original
    original_driver   TEXT,             -- NULL: it had no driver
    original_override TEXT,
    owner             TEXT,             -- NULL: held for nobody in particular
    managed           INTEGER NOT NULL, -- 1: release(owner) reattaches it
    since             TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS journal (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    op       TEXT NOT NULL,
    owner    TEXT,
    state    TEXT NOT NULL,             -- running | done | rolled-back | rolled-forward
    forward  INTEGER NOT NULL DEFAULT 0,
    pid      INTEGER NOT NULL,
    started  TEXT NOT NULL,
    finished TEXT,
    changes  TEXT NOT NULL              -- JSON {"upsert": [record…], "delete": [addr…]}
);
CREATE TABLE IF NOT EXISTS steps (
    journal_id    INTEGER NOT NULL REFERENCES journal(id),
    seq           INTEGER NOT NULL,
    address       TEXT NOT NULL,
    from_driver   TEXT,
    from_override TEXT,
    to_driver     TEXT,
    to_override   TEXT,
    phase         TEXT NOT NULL,        -- planned | moving | moved | restored
    kind          TEXT NOT NULL DEFAULT 'bind',  -- StepKind
    from_value    TEXT,                 -- numvfs / enable_sriov / token steps
    to_value      TEXT,
    PRIMARY KEY (journal_id, seq)
);
"""

# Version 1 databases (vfioctl 0.1.0) had only bind steps.
_MIGRATE_1_TO_2: Final = """
ALTER TABLE steps ADD COLUMN kind TEXT NOT NULL DEFAULT 'bind';
ALTER TABLE steps ADD COLUMN from_value TEXT;
ALTER TABLE steps ADD COLUMN to_value TEXT;
"""


def set_up_writer(conn: sqlite3.Connection) -> None:
    """WAL, the durability above, and the current schema (created or migrated)."""
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version < SCHEMA_VERSION:
        _migrate(conn)


def has_schema(conn: sqlite3.Connection) -> bool:
    """Whether the database has its tables yet: a reader may see the empty file a writer
    has just created, before the transaction that creates them commits."""
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name IN "
                        "('devices', 'journal')").fetchall()
    return len(rows) == 2


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a database to the current schema in one exclusive transaction (two first
    callers may both get here: the second sees the new version and does nothing)."""
    conn.execute("BEGIN EXCLUSIVE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        if version < SCHEMA_VERSION:
            if version == 1 and "steps" in tables:
                for stmt in _MIGRATE_1_TO_2.strip().splitlines():
                    conn.execute(stmt)
            else:
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
