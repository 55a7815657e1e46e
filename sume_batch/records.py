"""What a run store holds, and every way of reading it: job and run records, and the queries
`plan`, `status`, `report` and the executor ask. A store opened with `reading` can do nothing else.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

from sume_batch import migrations, pg
from sume_batch.errors import StoreError
from sume_batch.states import CHARGED, IN_FLIGHT_CREATE, PAID_WHEN_FILES, JobState
from sume_batch.target import Target

# A job that may have cost credits (`states.charged`), in SQL: the parameters are `CHARGED_ARGS`.
CHARGED_WHERE = (
    f"(state IN ({', '.join('?' * len(CHARGED))}) OR (state IN ({', '.join('?' * len(PAID_WHEN_FILES))})"  # noqa: S608
    " AND key IN (SELECT key FROM files)))"
)
CHARGED_ARGS = (*sorted(CHARGED), *sorted(PAID_WHEN_FILES))

Place = Path | pg.Address  # where a store is: a SQLite file, or a campaign's schema in PostgreSQL


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


class Answer(NamedTuple):
    """What reconciliation needs of a job that has ids (see `StoreReader.answered`)."""

    sume_ids: tuple[str, ...]
    intent_at: float | None
    submitted_at: float | None


@dataclass(frozen=True)
class RunRecord:
    """One `run` of a campaign as the store remembers it."""

    seq: int
    started_at: float
    ended_at: float | None  # None: still going, or killed before it could say
    info: Mapping[str, Any]  # what was known at the start: campaign, manifest, folders, plan, balance
    outcome: Mapping[str, Any]  # what was known at the end: stopped, exit code, balance


class StoreReader:
    """A campaign's run store, read: its jobs, runs, files and credits."""

    def __init__(
        self, connection: Any, clock: Callable[[], float] = time.time, path: Place | None = None
    ) -> None:
        self.connection = connection
        self.clock = clock
        self.path = path

    @property
    def db(self) -> Any:
        """The connection every read goes through (a `RunStore` writes what it has queued first)."""
        return self.connection

    @property
    def path_name(self) -> str:
        return str(self.path) if self.path else "the run store"

    def target(self) -> Target | None:
        """The API target this store's jobs belong to; None for a store from before targets."""
        row = self.db.execute("SELECT value FROM meta WHERE name = 'target'").fetchone()
        return Target.from_json(json.loads(row[0])) if row else None

    def runs(self) -> list[RunRecord]:
        """Every run recorded, oldest first (stores older than version 3 recorded none)."""
        rows = self.db.execute("SELECT seq, started_at, ended_at, info, outcome FROM runs ORDER BY seq")
        return [
            RunRecord(seq, started, ended, json.loads(info), json.loads(outcome))
            for seq, started, ended, info, outcome in rows
        ]

    def files(self, key: str | None = None) -> list[dict[str, Any]]:
        query, args = "SELECT key, path, sume_id, sha256, bytes, content_type FROM files", tuple[str, ...]()
        if key is not None:
            query, args = query + " WHERE key = ?", (key,)
        names = ("key", "path", "sume_id", "sha256", "bytes", "content_type")
        return [
            dict(zip(names, row, strict=True)) for row in self.db.execute(query + " ORDER BY key, path", args)
        ]

    def jobs(self, keys: Iterable[str] | None = None) -> dict[str, StoredJob]:
        """Job key → job: every job, or those of `keys` the store holds."""
        wanted, db = None if keys is None else set(keys), self.db
        if wanted is not None and len(wanted) <= _FEW:
            return {job.key: job for job in map(self._fetch, wanted) if job is not None}
        rows = db.execute(f"SELECT {_SELECT} FROM jobs ORDER BY rowid")  # noqa: S608
        return {row[0]: _decode(row) for row in rows if wanted is None or row[0] in wanted}

    def job(self, key: str) -> StoredJob:
        job = self._fetch(key)
        if job is None:
            raise KeyError(key)
        return job

    def _fetch(self, key: str) -> StoredJob | None:
        """The job as the file has it (what a `RunStore` has queued for it aside)."""
        query = f"SELECT {_SELECT} FROM jobs WHERE key = ?"  # noqa: S608
        row = self.connection.execute(query, (key,)).fetchone()
        return None if row is None else _decode(row)

    def jobs_in(self, states: Iterable[str]) -> list[StoredJob]:
        """The jobs in these states, in plan order (read through the `jobs_state` index: at the start
        of a run, the few jobs a crash or a lost answer left behind, among however many are done)."""
        chosen = sorted(set(states))
        marks = ", ".join("?" * len(chosen))
        query = f"SELECT {_SELECT} FROM jobs WHERE state IN ({marks}) ORDER BY rowid"  # noqa: S608
        return [_decode(row) for row in self.db.execute(query, chosen)]

    def keys_in(self, states: Iterable[str]) -> set[str]:
        """The keys of the jobs in these states (the index alone answers)."""
        chosen = sorted(set(states))
        query = f"SELECT key FROM jobs WHERE state IN ({', '.join('?' * len(chosen))})"  # noqa: S608
        return {key for (key,) in self.db.execute(query, chosen)}

    def states(self) -> dict[str, str]:
        """Job key → state, for every job (two columns read: no request decoded)."""
        return dict(self.db.execute("SELECT key, state FROM jobs ORDER BY rowid"))

    def ids(self) -> dict[str, str]:
        """Job key → job id, for every job (two columns read)."""
        return dict(self.db.execute("SELECT key, id FROM jobs ORDER BY rowid"))

    def priciest(self) -> list[StoredJob]:
        """Of each kind, the job whose stated price is the highest against its estimate (any with a
        stated price, where none has an estimate): all a budget learns from a store (`Budget.from_store`)."""
        if _dialect(self.db) == "postgresql":
            query = (
                f"SELECT DISTINCT ON (kind) {_SELECT}, 0 FROM jobs WHERE required IS NOT NULL"  # noqa: S608
                " ORDER BY kind, required / NULLIF(estimate, 0) DESC NULLS LAST"
            )
        else:
            query = f"SELECT {_SELECT}, MAX(required / estimate) FROM jobs WHERE required IS NOT NULL GROUP BY kind"  # noqa: E501, S608
        return [_decode(row[:-1]) for row in self.db.execute(query)]  # SQLite: the row of the MAX

    def answered(self) -> list[Answer]:
        """The ids of every job that has some, with its create's intent and answer times: what
        reconciliation knows of every create that was answered (three columns read)."""
        rows = self.db.execute("SELECT sume_ids, intent_at, submitted_at FROM jobs WHERE sume_ids != '[]'")
        return [Answer(tuple(json.loads(ids)), intent, submitted) for ids, intent, submitted in rows]

    def plan_of(self, run: int | None) -> list[StoredJob]:
        """The jobs a run planned, in plan order; every job when `run` is None."""
        query = f"SELECT {_SELECT} FROM jobs"  # noqa: S608
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
            " LEFT JOIN (SELECT key, MAX(at) AS again FROM events WHERE state = ? GROUP BY key) AS r"
            " ON r.key = e.key WHERE r.again IS NULL OR e.at >= r.again GROUP BY e.key, e.state",
            (JobState.PLANNED,),
        )
        for key, state, at in rows:
            found.setdefault(key, {})[state] = float(at)
        return found

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

    def committed_downstream(self) -> float:
        """What the campaign's downstream jobs (see `stages`: their matrix names an upstream) have
        spent or hold: the part of a chain's worst case already paid for."""
        upstream = (
            "(matrix::jsonb ->> 'upstream')"
            if _dialect(self.db) == "postgresql"
            else "json_extract(matrix, '$.upstream')"
        )
        query = (
            f"SELECT COALESCE(SUM(reserved), 0) FROM jobs WHERE {CHARGED_WHERE} AND {upstream} IS NOT NULL"  # noqa: S608
        )
        return float(self.db.execute(query, CHARGED_ARGS).fetchone()[0])

    def _sums(self) -> tuple[float, float, float]:
        """Reserved and stated credits of the jobs that may have cost credits, and all retired ones."""
        row = self.db.execute(
            f"SELECT COALESCE(SUM(CASE WHEN {CHARGED_WHERE} THEN reserved END), 0),"  # noqa: S608
            f" COALESCE(SUM(CASE WHEN {CHARGED_WHERE} THEN required END), 0), COALESCE(SUM(retired), 0)"
            " FROM jobs",
            (*CHARGED_ARGS, *CHARGED_ARGS),
        ).fetchone()
        return float(row[0]), float(row[1]), float(row[2])

    def may_have_cost(self, key: str) -> bool:
        query = f"SELECT 1 FROM jobs WHERE key = ? AND {CHARGED_WHERE}"  # noqa: S608
        return self.db.execute(query, (key, *CHARGED_ARGS)).fetchone() is not None

    def made_by_rehearsals(self) -> list[StoredJob]:
        """Jobs whose current ids a sandbox run made (by the journal: the run going when they came), or
        whose create a sandbox run left in flight."""
        runs = sorted((run.started_at, bool(run.info.get("sandbox"))) for run in self.runs())
        query = "SELECT key, MAX(at) FROM events WHERE state = ? GROUP BY key"
        made = dict(self.db.execute(query, (JobState.SUBMITTED,)))
        found = []
        for job in self.jobs().values():
            in_flight = not job.sume_ids and job.state in IN_FLIGHT_CREATE
            when = job.intent_at if in_flight else made.get(job.key)
            if (job.sume_ids or in_flight) and when is not None:
                going = [sandbox for started, sandbox in runs if started <= when]
                if going and going[-1]:
                    found.append(job)
        return found


def _dialect(db: Any) -> str:
    """Which SQL a connection speaks: a `pg.Connection` says so, sqlite3's is SQLite."""
    return str(getattr(db, "dialect", "sqlite"))


_COLUMNS = tuple(field.name for field in fields(StoredJob))  # the jobs table's columns of the same names
_SELECT = ", ".join(_COLUMNS)
_FEW = 64  # up to this many keys are read one by one (by the primary key), more in one scan


def _decode(row: tuple[Any, ...]) -> StoredJob:
    # Positional, in the order of `_COLUMNS` (StoredJob's own): a 100,000-job store is decoded whole.
    (key, id_, kind, request, matrix, state, estimate, reserved, required, attempts, sume_ids, sume_status,
     error_code, error_message, request_id, submitted_at, intent_at, settled_at, candidates, error_job_id,
     retired) = row  # fmt: skip
    return StoredJob(
        key, id_, kind, json.loads(request), {} if matrix == "{}" else json.loads(matrix), state,
        estimate, reserved, required, attempts, _ids(sume_ids), sume_status, error_code, error_message,
        request_id, submitted_at, intent_at, settled_at, _ids(candidates), error_job_id, retired,
    )  # fmt: skip


def _ids(text: str) -> tuple[str, ...]:
    return () if text == "[]" else tuple(json.loads(text))


def checked_version(db: Any, path: Place) -> int:
    """The store's schema version, if this tool can read it."""
    found = migrations.version(db)
    if found is None:
        raise sqlite3.DatabaseError("it has no schema version")
    if found > migrations.SCHEMA_VERSION:
        raise StoreError(f"{path} was written by a newer sume-batch (store version {found}); upgrade")
    return found


def unusable(path: Place, error: Exception) -> StoreError:
    """The one message for a store that cannot be used: name it, and never start afresh silently."""
    return StoreError(f"{path} is not a usable run store ({error}); move it aside to start afresh")


@contextmanager
def reading(path: Place) -> Iterator[StoreReader]:
    """The store at `path`, read-only (for `plan`, `status` and `report`: no lock, no write, safe
    during a run). A store in a folder we may not write (whose WAL index cannot be made) is read as
    immutable: no run can be writing there either. An older store is read from a migrated copy
    (a PostgreSQL store is migrated in place, under its lock: several readers share it)."""
    if isinstance(path, pg.Address):
        try:
            with pg.reading_connection(path) as connection:
                if checked_version(connection, path) < migrations.SCHEMA_VERSION:
                    pg.open_store(path, create=migrations.create, migrate=migrate_checked(path)).close()
                yield StoreReader(connection, clock=time.time, path=path)
        except sqlite3.DatabaseError as error:
            raise unusable(path, error) from None
        return
    try:
        db = _open_read_only(path)
        found = checked_version(db, path)
        if found < migrations.SCHEMA_VERSION:
            old, db = db, migrations.migrated_copy(db)
            old.close()
        with contextlib.closing(db):
            yield StoreReader(db, clock=time.time, path=path)
    except sqlite3.DatabaseError as error:
        raise unusable(path, error) from None


def migrate_checked(path: Place) -> Callable[[Any], None]:
    """Check a store's schema version, and bring it to this one's."""
    return lambda db: migrations.migrate(db, checked_version(db, path))


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
