"""store: a damaged store is a clear error, never a silent fresh start; old stores migrate."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from helpers import invoke, write

from sume_batch.errors import StoreError
from sume_batch.migrations import SCHEMA_VERSION
from sume_batch.store import RunStore

V1_SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE jobs (key TEXT PRIMARY KEY, id TEXT NOT NULL, kind TEXT NOT NULL, request TEXT NOT NULL,
    matrix TEXT NOT NULL, state TEXT NOT NULL, estimate REAL, reserved REAL NOT NULL DEFAULT 0, required REAL,
    attempts INTEGER NOT NULL DEFAULT 0, sume_ids TEXT NOT NULL DEFAULT '[]', sume_status TEXT, error_code TEXT,
    error_message TEXT, request_id TEXT, submitted_at REAL, updated_at REAL NOT NULL);
CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, state TEXT NOT NULL, at REAL NOT NULL,
    note TEXT);
CREATE TABLE files (key TEXT NOT NULL, path TEXT NOT NULL, sume_id TEXT NOT NULL, sha256 TEXT NOT NULL,
    bytes INTEGER NOT NULL, content_type TEXT NOT NULL, PRIMARY KEY (key, path));
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO jobs (key, id, kind, request, matrix, state, sume_ids, updated_at)
    VALUES ('k1', 'img-1', 'image', '{}', '{}', 'downloaded', '["job_1"]', 0);
"""


def test_a_new_store_is_created_at_the_current_version(tmp_path: Path) -> None:
    store = RunStore.open(tmp_path / "s.sqlite")
    assert store.db.execute("SELECT value FROM meta").fetchone() == (str(SCHEMA_VERSION),)
    store.close()


def test_a_version_1_store_is_migrated_and_keeps_its_jobs(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        db.executescript(V1_SCHEMA)
    store = RunStore.open(tmp_path / "s.sqlite")
    job = store.job("k1")
    assert (job.state, job.sume_ids, job.candidates, job.intent_at) == ("downloaded", ("job_1",), (), None)
    assert store.db.execute("SELECT value FROM meta").fetchone() == (str(SCHEMA_VERSION),)
    store.close()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda path: path.write_bytes(b"this is not sqlite at all" * 100), "file is not a database"),
        (lambda path: path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2]), "malformed"),
    ],
    ids=["garbage", "truncated"],
)
def test_a_damaged_store_is_a_clear_error(tmp_path: Path, damage: object, reason: str) -> None:
    path = tmp_path / "s.sqlite"
    store = RunStore.open(path)
    store.add_planned((f"k{n}", f"img-{n}", "image", {"prompt": "p" * 200}, {}, 4.0) for n in range(2000))
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    damage(path)  # type: ignore[operator]
    with pytest.raises(StoreError, match=f"s.sqlite is not a usable run store .*{reason}.*move it aside"):
        RunStore.open(path)


def test_a_newer_store_is_refused(tmp_path: Path) -> None:
    RunStore.open(tmp_path / "s.sqlite").close()
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        db.execute("UPDATE meta SET value = '99'")
    with pytest.raises(StoreError, match="written by a newer sume-batch \\(store version 99\\); upgrade"):
        RunStore.open(tmp_path / "s.sqlite")


def test_run_on_a_corrupt_store_stops_before_sending_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "version: 1\nname: c\njobs:\n  - {id: a, type: image, prompt: p}\n")
    (tmp_path / ".sume-batch").mkdir()
    (tmp_path / ".sume-batch/c.rehearsal.sqlite").write_bytes(b"garbage" * 1000)
    result = invoke("run", "campaign.yaml", "--sandbox", "--yes")
    assert result.code == 2
    assert result.err.startswith("error: .sume-batch/c.rehearsal.sqlite is not a usable run store (")
    assert (tmp_path / ".sume-batch/c.rehearsal.sqlite").read_bytes() == b"garbage" * 1000  # untouched
