"""The run store: a SQLite journal (WAL) of every job's state, the one source of truth for a run.

Every transition is written before it is acted on. The create intent and the job id the API
returns are committed with `synchronous=FULL` (fsync) so they survive a crash or power loss;
cheaper updates use `NORMAL`, which survives the process being killed. No URL is ever stored:
result links are signed and expire, so they are fetched again when needed.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sume_batch.errors import LockedError, StoreError
from sume_batch.target import Target, aside_path, legacy_path, store_path

SCHEMA_VERSION = 4
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
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
    intent_at REAL,
    settled_at REAL,
    candidates TEXT NOT NULL DEFAULT '[]',
    updated_at REAL NOT NULL,
    run INTEGER,
    error_job_id TEXT,
    retired REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    state TEXT NOT NULL,
    at REAL NOT NULL,
    note TEXT
);
CREATE TABLE IF NOT EXISTS files (
    key TEXT NOT NULL,
    path TEXT NOT NULL,
    sume_id TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    PRIMARY KEY (key, path)
);
CREATE TABLE IF NOT EXISTS runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at REAL NOT NULL,
    ended_at REAL,
    info TEXT NOT NULL,
    outcome TEXT NOT NULL DEFAULT '{}'
);
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
}


def _version(db: sqlite3.Connection) -> int | None:
    try:
        row = db.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
    except sqlite3.OperationalError:
        return None
    return int(row[0]) if row else None


def migrate(db: sqlite3.Connection, version: int) -> None:
    """Bring a store from `version` to SCHEMA_VERSION, one migration per transaction."""
    for target in range(version + 1, SCHEMA_VERSION + 1):
        db.execute("BEGIN IMMEDIATE")
        for statement in filter(str.strip, MIGRATIONS[target].split(";")):
            db.execute(statement)
        db.execute("UPDATE meta SET value = ? WHERE name = 'schema_version'", (str(target),))
        db.execute("COMMIT")


# Where a job stands, and what a later `run` does with it (DESIGN.md, "A job's life").
TERMINAL = frozenset({"downloaded", "failed", "canceled", "expired", "rejected", "skipped"})
IN_FLIGHT = frozenset({"submitted", "completed", "fetched", "timed_out"})
CHARGED = frozenset(
    {"submitting", "submitted", "completed", "fetched", "downloaded", "timed_out", "uncertain"}
)
# A job that may have cost credits, in SQL (its parameters: CHARGED): a Face Swap partly made is paid.
_CHARGED_WHERE = (
    f"(state IN ({', '.join('?' * len(CHARGED))}) OR (state = 'failed' AND key IN (SELECT key FROM files)))"  # noqa: S608 - placeholders only
)


@dataclass(frozen=True)
class StoredJob:
    """One row of the store, decoded."""

    key: str
    id: str
    kind: str
    request: Mapping[str, Any]
    matrix: Mapping[str, Any]
    state: str
    estimate: float | None
    reserved: float
    required: float | None
    attempts: int
    sume_ids: tuple[str, ...]
    sume_status: str | None
    error_code: str | None
    error_message: str | None
    request_id: str | None
    submitted_at: float | None
    intent_at: float | None  # when the create was about to be sent
    settled_at: float | None  # when its outcome became unknown (or the crash's latest possible time)
    candidates: tuple[str, ...]  # ids an uncertain create may have made, when more than one fit
    error_job_id: str | None = None  # the Sume job whose error is shown (one of several for Face Swap)
    retired: float = 0.0  # credits the job's earlier lives cost (before --regenerate or --retry-failed)


@dataclass(frozen=True)
class RunRecord:
    """One `run` of a campaign as the store remembers it."""

    seq: int
    started_at: float
    ended_at: float | None  # None: still going, or killed before it could say
    info: Mapping[str, Any]  # what was known at the start: campaign, manifest, folders, plan, balance
    outcome: Mapping[str, Any]  # what was known at the end: stopped, exit code, balance


class RunStore:
    """A campaign's run store; open one per process with `RunStore.open`."""

    def __init__(
        self, connection: sqlite3.Connection, clock: Callable[[], float], path: Path | None = None
    ) -> None:
        self.db = connection
        self.clock = clock
        self.path = path

    @property
    def path_name(self) -> str:
        return str(self.path) if self.path else "the run store"

    @functools.cached_property
    def columns(self) -> str:
        """The job columns to select; a column an older store lacks (read-only, so not migrated)
        reads as its default."""
        return ", ".join(
            name if name in self.present else f"{_DEFAULTS.get(name, 'NULL')} AS {name}" for name in _COLUMNS
        )

    @functools.cached_property
    def present(self) -> frozenset[str]:
        """The job columns this store has (a store opened read-only is not migrated)."""
        return frozenset(row[1] for row in self.db.execute("PRAGMA table_info(jobs)"))

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        target: Target | None = None,
        campaign: str = "",
        clock: Callable[[], float] = time.time,
    ) -> RunStore:
        """Open (or create) the store at `path`, checked and migrated to this version's schema, and
        bound to `target`: a store that records another target is refused (see `target`).

        A damaged store is an error that names the file, never a silent fresh start: a fresh
        store would forget which jobs were paid for, and the next run would buy them again.
        """
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise cannot_keep(path, error) from None
        fresh = not path.exists() or path.stat().st_size == 0
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            if not fresh and db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("its integrity check failed")
            db.execute("PRAGMA journal_mode=WAL")
            version = _version(db) if not fresh else None
            if fresh:
                db.executescript(SCHEMA)
                db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif version is None:
                raise sqlite3.DatabaseError("it has no schema version")
            elif version > SCHEMA_VERSION:
                raise StoreError(
                    f"{path} was written by a newer sume-batch (store version {version}); upgrade"
                )
            else:
                migrate(db, version)
        except sqlite3.OperationalError as error:
            if fresh or "readonly" in str(error) or "unable to open" in str(error):
                raise cannot_keep(path, error) from None
            raise unusable(path, error) from None
        except sqlite3.DatabaseError as error:
            raise unusable(path, error) from None
        store = cls(db, clock, path)
        if target is not None:
            store.bind(path, target, campaign)
        return store

    def target(self) -> Target | None:
        """The API target this store's jobs belong to; None for a store from before targets."""
        row = self.db.execute("SELECT value FROM meta WHERE name = 'target'").fetchone()
        return Target.from_json(json.loads(row[0])) if row else None

    def bind(self, path: Path, target: Target, campaign: str) -> None:
        recorded = self.target()
        if recorded is None:
            value = _json({**target.to_json(), "campaign": campaign})
            with self.transaction(durable=True) as db:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('target', ?)", (value,))
        elif recorded != target:
            raise StoreError(
                f"{path} holds the jobs of {recorded.describe()}, not of {target.describe()}; "
                "its jobs mean nothing there"
            )

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """One atomic write; `durable` fsyncs it (for create intents and job ids)."""
        self.db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def add_planned(
        self,
        rows: Iterable[tuple[str, str, str, Mapping[str, Any], Mapping[str, Any], float | None]],
        *,
        run: int | None = None,
    ) -> int:
        """Record planned jobs (key, id, kind, request, matrix, estimate); known keys keep their state.

        `run` marks them as the plan of that run (see `begin_run`): a run's report covers its plan.
        """
        now = self.clock()
        with self.transaction() as db:
            before = db.total_changes
            db.executemany(
                "INSERT INTO jobs (key, id, kind, request, matrix, state, estimate, updated_at, run)"
                " VALUES (?, ?, ?, ?, ?, 'planned', ?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET id = excluded.id, estimate = excluded.estimate,"
                " run = COALESCE(excluded.run, run)",
                (
                    (key, id_, kind, _json(req), _json(mx), est, now, run)
                    for key, id_, kind, req, mx, est in rows
                ),
            )
            return db.total_changes - before

    def begin_run(self, info: Mapping[str, Any]) -> RunRecord:
        """Record that a run starts, with what the reports say about it (campaign, manifest, folders)."""
        now = self.clock()
        with self.transaction(durable=True) as db:
            cursor = db.execute("INSERT INTO runs (started_at, info) VALUES (?, ?)", (now, _json(info)))
        return RunRecord(
            seq=int(cursor.lastrowid or 0), started_at=now, ended_at=None, info=dict(info), outcome={}
        )

    def end_run(self, seq: int, outcome: Mapping[str, Any]) -> None:
        """Record how a run ended (stopped why, exit code, balance after)."""
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET ended_at = ?, outcome = ? WHERE seq = ?", (self.clock(), _json(outcome), seq)
            )

    def runs(self) -> list[RunRecord]:
        """Every run recorded, oldest first (stores older than version 3 recorded none)."""
        if (_version(self.db) or 0) < 3:  # read-only openings do not migrate
            return []
        rows = self.db.execute("SELECT seq, started_at, ended_at, info, outcome FROM runs ORDER BY seq")
        return [
            RunRecord(seq, started, ended, json.loads(info), json.loads(outcome))
            for seq, started, ended, info, outcome in rows
        ]

    def plan_of(self, run: int | None) -> list[StoredJob]:
        """The jobs a run planned, in plan order; every job when `run` is None."""
        query = f"SELECT {self.columns} FROM jobs"  # noqa: S608
        rows = (
            self.db.execute(query + " ORDER BY rowid")
            if run is None
            else self.db.execute(query + " WHERE run = ? ORDER BY rowid", (run,))
        )
        return [_decode(row) for row in rows]

    def moments(self) -> dict[str, dict[str, float]]:
        """Job key → state → when the job last entered it (from the journal), for reports' timings.

        Only since the job was last made `planned` again (`--regenerate`, `--retry-failed`): the
        times of the outputs it had before belong to those, not to this job's new life."""
        found: dict[str, dict[str, float]] = {}
        rows = self.db.execute(
            "SELECT e.key, e.state, MAX(e.at) FROM events AS e"
            " LEFT JOIN (SELECT key, MAX(at) AS again FROM events WHERE state = 'planned' GROUP BY key) AS r"
            " ON r.key = e.key WHERE r.again IS NULL OR e.at >= r.again GROUP BY e.key, e.state"
        )
        for key, state, at in rows:
            found.setdefault(key, {})[state] = float(at)
        return found

    def restart(self, job: StoredJob, *, note: str, retire: bool = True) -> None:
        """Make a job `planned` again (`--regenerate`, `--retry-failed`): its ids stay in the journal,
        and what it may have cost moves to `retired`, so the budget still counts it (`retire`)."""
        retired = job.retired + (job.reserved if retire and self.may_have_cost(job.key) else 0.0)
        self.move(job.key, "planned", note=note, sume_ids=[], candidates=[], error_code=None,
                  error_message=None, error_job_id=None, sume_status=None, reserved=0, submitted_at=None,
                  intent_at=None, settled_at=None, retired=retired)  # fmt: skip
        self.forget_files(job.key)

    def made_by_rehearsals(self) -> list[StoredJob]:
        """Jobs whose current ids a sandbox run made (by the journal: the run going when they came), or
        whose create a sandbox run left in flight."""
        runs = sorted((run.started_at, bool(run.info.get("sandbox"))) for run in self.runs())
        made = dict(self.db.execute("SELECT key, MAX(at) FROM events WHERE state = 'submitted' GROUP BY key"))
        found = []
        for job in self.jobs().values():
            in_flight = not job.sume_ids and job.state in ("submitting", "uncertain")
            when = job.intent_at if in_flight else made.get(job.key)
            if (job.sume_ids or in_flight) and when is not None:
                going = [sandbox for started, sandbox in runs if started <= when]
                if going and going[-1]:
                    found.append(job)
        return found

    def forget_files(self, key: str) -> None:
        """Drop a job's output records (its files stay on disk until new ones replace them)."""
        with self.transaction() as db:
            db.execute("DELETE FROM files WHERE key = ?", (key,))

    def move(
        self, key: str, state: str, *, durable: bool = False, note: str | None = None, **fields: Any
    ) -> None:
        """Set a job's state (and any columns given), journalled in `events`, atomically."""
        columns = {"state": state, "updated_at": self.clock(), **fields}
        for name in ("sume_ids", "candidates"):
            if name in columns:
                columns[name] = json.dumps(list(columns[name]))
        assignments = ", ".join(f"{name} = ?" for name in columns)
        with self.transaction(durable=durable) as db:
            db.execute(f"UPDATE jobs SET {assignments} WHERE key = ?", (*columns.values(), key))  # noqa: S608
            db.execute(
                "INSERT INTO events (key, state, at, note) VALUES (?, ?, ?, ?)",
                (key, state, columns["updated_at"], note),
            )

    def add_file(
        self, key: str, *, path: str, sume_id: str, sha256: str, size: int, content_type: str
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?)",
                (key, path, sume_id, sha256, size, content_type),
            )

    def files(self, key: str | None = None) -> list[dict[str, Any]]:
        query, args = "SELECT key, path, sume_id, sha256, bytes, content_type FROM files", tuple[str, ...]()
        if key is not None:
            query, args = query + " WHERE key = ?", (key,)
        names = ("key", "path", "sume_id", "sha256", "bytes", "content_type")
        return [
            dict(zip(names, row, strict=True)) for row in self.db.execute(query + " ORDER BY key, path", args)
        ]

    def jobs(self, keys: Iterable[str] | None = None) -> dict[str, StoredJob]:
        rows = self.db.execute(f"SELECT {self.columns} FROM jobs")  # noqa: S608
        wanted = None if keys is None else set(keys)
        return {row[0]: _decode(row) for row in rows if wanted is None or row[0] in wanted}

    def job(self, key: str) -> StoredJob:
        row = self.db.execute(f"SELECT {self.columns} FROM jobs WHERE key = ?", (key,)).fetchone()  # noqa: S608
        if row is None:
            raise KeyError(key)
        return _decode(row)

    def last_event_at(self) -> float | None:
        """When the store was last written (after a crash: about when the writer died)."""
        row = self.db.execute("SELECT MAX(at) FROM events").fetchone()
        return float(row[0]) if row and row[0] is not None else None

    def credits(self) -> tuple[float, float]:
        """(reserved, of which stated by the API) over every job that may have cost credits."""
        reserved, required, _ = self._sums()
        return reserved, required

    def committed(self) -> float:
        """The credits the campaign has spent or holds at this target: every reservation that may
        have been charged, and what earlier lives of re-created jobs cost (the budget covers all)."""
        reserved, _, retired = self._sums()
        return reserved + retired

    def _sums(self) -> tuple[float, float, float]:
        """Reserved and stated credits of the jobs that may have cost credits, and all retired ones."""
        row = self.db.execute(
            f"SELECT COALESCE(SUM(CASE WHEN {_CHARGED_WHERE} THEN reserved END), 0),"  # noqa: S608
            f" COALESCE(SUM(CASE WHEN {_CHARGED_WHERE} THEN required END), 0),"
            f" {'COALESCE(SUM(retired), 0)' if 'retired' in self.present else '0'}"
            " FROM jobs",
            (*CHARGED, *CHARGED),
        ).fetchone()
        return float(row[0]), float(row[1]), float(row[2])

    def may_have_cost(self, key: str) -> bool:
        row = self.db.execute(f"SELECT 1 FROM jobs WHERE key = ? AND {_CHARGED_WHERE}", (key, *CHARGED))  # noqa: S608
        return row.fetchone() is not None


_COLUMNS = (
    "key", "id", "kind", "request", "matrix", "state", "estimate", "reserved", "required", "attempts",
    "sume_ids", "sume_status", "error_code", "error_message", "request_id", "submitted_at",
    "intent_at", "settled_at", "candidates", "error_job_id", "retired",
)  # fmt: skip


def _json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


_DEFAULTS = {"candidates": "'[]'", "retired": "0"}  # columns added since version 1 whose default is not NULL


def _decode(row: tuple[Any, ...]) -> StoredJob:
    values = dict(zip(_COLUMNS, row, strict=True))
    values["request"] = json.loads(values["request"])
    values["matrix"] = json.loads(values["matrix"])
    values["sume_ids"] = tuple(json.loads(values["sume_ids"]))
    values["candidates"] = tuple(json.loads(values["candidates"]))
    return StoredJob(**values)


@contextmanager
def run_lock(store: Path) -> Iterator[None]:
    """Hold the store's lock for one run; a second run is refused at once, naming the holder.

    `flock` belongs to the open file, so the kernel releases it when the holder exits or is killed:
    a lock left by a dead process never blocks (unlike a lock file that outlives its writer).
    """
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(store.with_name(store.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as error:
        raise cannot_keep(store, error) from None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 200, 0).decode(errors="replace").strip() or "another process"
            raise LockedError(
                f"another sume-batch run is using {store} ({holder}); wait for it or stop it"
            ) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


def prepare_store(folder: Path, campaign: str, target: Target) -> list[str]:
    """Make `store_path(folder, campaign, target)` the right store to open for `target` (under its
    lock): a rehearsal store whose sandbox is gone is moved aside, and the first real target takes
    over a store from before targets, its rehearsal-made jobs planned again. Returns what was done."""
    path = store_path(folder, campaign, target)
    if path.exists():
        if target.rehearsal:
            with contextlib.closing(RunStore.open(path)) as store:
                recorded = store.target()
            if recorded is not None and recorded != target:
                aside = aside_path(path)
                move_store(path, aside)
                return [f"the sandbox of the last rehearsal is gone: its store is kept as {aside}, and the"
                        " rehearsal starts afresh"]  # fmt: skip
        return []
    legacy = legacy_path(folder, campaign)
    if target.rehearsal or not legacy.exists():
        return []
    with (
        run_lock(legacy),
        contextlib.closing(RunStore.open(legacy, target=target, campaign=campaign)) as store,
    ):
        rehearsed = store.made_by_rehearsals()
        for job in rehearsed:
            store.restart(job, note="made by a rehearsal (a sandbox run): planned again", retire=False)
    move_store(legacy, path)
    Path(f"{legacy}.lock").unlink(missing_ok=True)
    again = f"; {len(rehearsed)} job(s) a rehearsal made are planned again" if rehearsed else ""
    return [f"{legacy} is from before stores belonged to an API target: it is now {path}, the store of"
            f" {target.describe()}{again}"]  # fmt: skip


def move_store(source: Path, destination: Path) -> None:
    """Rename a store, its WAL folded in first; refused while another connection (a `status`, an
    older run) still has it open, since moving a store under a reader could lose what it holds."""
    in_use = StoreError(f"{source} is in use by another process; try again when it is done")
    with contextlib.closing(sqlite3.connect(source, timeout=1)) as db:
        try:
            ((busy, log, done),) = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            if busy or log not in (-1, done):
                raise in_use
            db.execute("PRAGMA journal_mode=DELETE").fetchall()  # one file from here on: nothing beside it
        except sqlite3.OperationalError:
            raise in_use from None
    for suffix in ("-wal", "-shm"):
        Path(f"{destination}{suffix}").unlink(missing_ok=True)
    source.replace(destination)


def cannot_keep(path: Path, error: Exception) -> StoreError:
    """A folder the store cannot be made in (read-only, not a folder, no permission)."""
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return StoreError(
        f"cannot keep the run store in {path.parent}: {reason}; choose another with --state-dir"
    )


def unusable(path: Path, error: Exception) -> StoreError:
    """The one message for a store that cannot be used: name it, and never start afresh silently."""
    return StoreError(f"{path} is not a usable run store ({error}); move it aside to start afresh")


@contextmanager
def reading(path: Path) -> Iterator[RunStore]:
    """The store at `path`, read-only (for `plan`, `status` and `report`: no lock, no write, safe
    during a run). A store in a folder we may not write (whose WAL index cannot be made) is read as
    immutable: no run can be writing there either."""
    try:
        db = _open_read_only(path)
        with contextlib.closing(db):
            yield RunStore(db, clock=time.time)
    except sqlite3.DatabaseError as error:
        raise unusable(path, error) from None


def _open_read_only(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.OperationalError as error:
        db.close()
        if "readonly" not in str(error) and "unable to open" not in str(error):
            raise
        db = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    return db
