"""The machine's registry: every Sume job id any run store here holds, per target, and the ids a
store could not take.

Reconciliation adopts a job only if no store knows it; a campaign's own store cannot know the jobs
of another campaign in the same workspace, so every store also enters its ids here, and
reconciliation leaves alone whatever is here. When a store cannot be written (a full disk, a
read-only folder), the ids a create returned are kept here instead (the registry normally lives on
another disk: `$SUME_BATCH_HOME`, else `$XDG_STATE_HOME/sume-batch`, else `~/.local/state/sume-batch`),
and the next run of that store takes them back.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from sume_batch.target import Target

SCHEMA = """
CREATE TABLE IF NOT EXISTS known (target TEXT NOT NULL, sume_id TEXT NOT NULL, store TEXT NOT NULL,
    PRIMARY KEY (target, sume_id));
CREATE TABLE IF NOT EXISTS rescued (target TEXT NOT NULL, store TEXT NOT NULL, key TEXT NOT NULL,
    sume_ids TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (target, store, key));
"""
BUSY_MS = 5_000  # several runs on one machine share the file


def registry_home(env: Mapping[str, str]) -> Path:
    if env.get("SUME_BATCH_HOME"):
        return Path(env["SUME_BATCH_HOME"])
    state = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local" / "state")
    return Path(state) / "sume-batch"


class Registry:
    """The registry, seen from one store at one target."""

    def __init__(self, db: sqlite3.Connection, target: Target, store: Path | object) -> None:
        self.db, self.target = db, target.id
        self.store = str(store.resolve()) if isinstance(store, Path) else str(store)  # a shared store's name

    @classmethod
    def open(cls, home: Path, target: Target, store: Path | object) -> Registry | None:
        """None when the registry cannot be used here: reconciliation then adopts nothing by time."""
        try:
            home.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(home / "registry.sqlite", isolation_level=None, timeout=BUSY_MS / 1000)
        except (OSError, sqlite3.Error):
            return None
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # see `add`; `rescue` asks for FULL
            db.executescript(SCHEMA)
        except sqlite3.Error:  # not a database, or damaged: closed, never left open
            db.close()
            return None
        return cls(db, target, store)

    def close(self) -> None:
        self.db.close()

    def add(self, sume_ids: Iterable[str]) -> None:
        """Enter ids this store now holds (after the store has them, durably). Not fsynced: a write in
        WAL mode outlives a killed process, and what only a power cut could lose is kept in the
        store itself; it costs no fsync per create."""
        self.db.executemany(
            "INSERT OR IGNORE INTO known VALUES (?, ?, ?)",
            ((self.target, one, self.store) for one in sume_ids),
        )

    def foreign(self) -> set[str]:
        """Ids other stores at this target hold: never another campaign's job to adopt."""
        rows = self.db.execute(
            "SELECT sume_id FROM known WHERE target = ? AND store != ?", (self.target, self.store)
        )
        return {sume_id for (sume_id,) in rows}

    def rescue(self, key: str, sume_ids: Iterable[str]) -> bool:
        """Keep ids the store could not take; False if this cannot be written either."""
        try:
            self.db.execute("PRAGMA synchronous=FULL")  # these ids are kept nowhere else
            with self.db:
                self.db.execute(
                    "INSERT OR REPLACE INTO rescued VALUES (?, ?, ?, ?, ?)",
                    (self.target, self.store, key, json.dumps(list(sume_ids)), time.time()),
                )
        except sqlite3.Error:
            return False
        return True

    def rescued_anywhere(self) -> set[str]:
        """Every id kept for any store at this target: paid jobs, never another's to adopt."""
        rows = self.db.execute("SELECT sume_ids FROM rescued WHERE target = ?", (self.target,))
        return {one for (ids,) in rows for one in json.loads(ids)}

    def rescued(self) -> dict[str, tuple[str, ...]]:
        """Job key → ids a run could not record in this store."""
        rows = self.db.execute(
            "SELECT key, sume_ids FROM rescued WHERE target = ? AND store = ?", (self.target, self.store)
        )
        return {key: tuple(json.loads(ids)) for key, ids in rows}

    def forget_rescued(self, keys: Iterable[str]) -> None:
        self.db.executemany(
            "DELETE FROM rescued WHERE target = ? AND store = ? AND key = ?",
            ((self.target, self.store, key) for key in keys),
        )


@contextlib.contextmanager
def opened(env: Mapping[str, str], target: Target, store: Path | object) -> Iterator[Registry | None]:
    registry = Registry.open(registry_home(env), target, store)
    try:
        yield registry
    finally:
        if registry is not None:
            registry.close()
