"""The run store's schema, in one place: the first version's tables and the migrations since.

Written in SQLite's SQL; a PostgreSQL store runs the same scripts through `pg.Connection`, which
spells their types the PostgreSQL way (`pg.translate`), so both backends have one schema history.
`jobs.owner` is the runner that has claimed a job (a shared store's, see `pg`); SQLite leaves it empty.

A store is created as version 1 and migrated, like any old store, so each table is defined once and
there is one versioning mechanism. A store opened read-only (`plan`, `status`, `report`) that is
older than this version is read from a migrated copy in memory: the file itself is left alone.
"""

from __future__ import annotations

import sqlite3
from typing import Any

SCHEMA_VERSION = 5
FIRST = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE jobs (
    key TEXT PRIMARY KEY,
    id TEXT NOT NULL,
    kind TEXT NOT NULL,
    request TEXT NOT NULL,
    matrix TEXT NOT NULL,
    state TEXT NOT NULL,
    estimate REAL,
    reserved REAL NOT NULL DEFAULT 0,
    required REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    sume_ids TEXT NOT NULL DEFAULT '[]',
    sume_status TEXT,
    error_code TEXT,
    error_message TEXT,
    request_id TEXT,
    submitted_at REAL,
    updated_at REAL NOT NULL
);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    state TEXT NOT NULL,
    at REAL NOT NULL,
    note TEXT
);
CREATE TABLE files (
    key TEXT NOT NULL,
    path TEXT NOT NULL,
    sume_id TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    PRIMARY KEY (key, path)
);
CREATE INDEX jobs_state ON jobs (state);
INSERT INTO meta VALUES ('schema_version', '1');
"""

# Each migration takes a store from the version before it to its own: never edit one, add one.
MIGRATIONS: dict[int, str] = {
    2: """
    ALTER TABLE jobs ADD COLUMN intent_at REAL;
    ALTER TABLE jobs ADD COLUMN settled_at REAL;
    ALTER TABLE jobs ADD COLUMN candidates TEXT NOT NULL DEFAULT '[]';
    """,
    3: """
    ALTER TABLE jobs ADD COLUMN run INTEGER;
    ALTER TABLE jobs ADD COLUMN error_job_id TEXT;
    CREATE TABLE runs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        started_at REAL NOT NULL,
        ended_at REAL,
        info TEXT NOT NULL,
        outcome TEXT NOT NULL DEFAULT '{}'
    );
    """,
    4: """
    ALTER TABLE jobs ADD COLUMN retired REAL NOT NULL DEFAULT 0;
    """,
    5: """
    ALTER TABLE jobs ADD COLUMN owner INTEGER;
    """,
}


def version(db: Any) -> int | None:
    """The store's schema version; None for a file that is no store of ours."""
    try:
        row = db.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
    except sqlite3.OperationalError:
        return None
    return int(row[0]) if row else None


def create(db: Any) -> None:
    """Make an empty database a store of this version: the first version, migrated."""
    db.execute("BEGIN IMMEDIATE")
    for statement in _statements(FIRST):
        db.execute(statement)
    db.execute("COMMIT")
    migrate(db, 1)


def migrate(db: Any, since: int) -> None:
    """Bring a store from version `since` to SCHEMA_VERSION, one migration per transaction."""
    for target in range(since + 1, SCHEMA_VERSION + 1):
        db.execute("BEGIN IMMEDIATE")
        for statement in _statements(MIGRATIONS[target]):
            db.execute(statement)
        db.execute("UPDATE meta SET value = ? WHERE name = 'schema_version'", (str(target),))
        db.execute("COMMIT")


def migrated_copy(db: sqlite3.Connection) -> sqlite3.Connection:
    """An in-memory copy of an older store, migrated: how a read-only reader sees it."""
    copy = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    db.backup(copy)
    migrate(copy, version(copy) or 1)
    return copy


def _statements(script: str) -> list[str]:
    return [statement for statement in script.split(";") if statement.strip()]
