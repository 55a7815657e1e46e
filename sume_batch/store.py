"""The run store: a SQLite journal (WAL) of every job's state, the one source of truth for a run.

Every move is recorded before it is acted on. A create's intent (`intend`, before its bytes go out),
the job ids it answered with (`created`, `adopt`) and a price learned from the balance (`price`) are
durable: committed at once with `synchronous=FULL` (fsync), after what is queued, in order. Every
other move is queued (`writes`) and written with the next durable one, after a batch or a moment,
and whenever the store is read, the run interrupted or the store closed (`synchronous=NORMAL`, which
survives the process being killed). So the file always holds a prefix of the moves made, and a kill
loses only moves made since the last create went out or had its ids kept: each write says what
losing it means (the next run does again what costs nothing). No URL is ever stored: result links
are signed and expire, so they are fetched again when needed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sume_batch import migrations, pg
from sume_batch.errors import LockedError, OverBudgetError, StoreError
from sume_batch.records import (
    Place,
    RunRecord,
    StoredJob,
    StoreReader,
    checked_version,
    migrate_checked,
    unusable,
)
from sume_batch.states import PAID_WHEN_FILES, JobState, charged
from sume_batch.target import Target, aside_path, legacy_path, store_path
from sume_batch.writes import Writes

if TYPE_CHECKING:
    from sume_batch.shared import Runner

Clock = Callable[[], float]
Stored = Callable[[Mapping[str, Any], Mapping[str, Any]], tuple[Mapping[str, Any], Mapping[str, Any]]]


class RunStore(StoreReader):
    """A campaign's run store; open one per process with `RunStore.open` (or `reading`).

    Its writes are named for what happened to a job (`reserve`, `intend`, `created`, `adopt`, ...),
    journalled in `events`, refused (`IllegalTransition`) where the state machine (`states`) has no
    such arrow from where the job will stand once the queue is written, and return the job as it then
    stands (no caller reads it back). Every read sees the queued moves (`db` writes them first)."""

    def __init__(
        self, connection: Any, clock: Clock = time.time, path: Place | None = None, *,
        ticks: Clock = time.monotonic,
    ) -> None:  # fmt: skip
        super().__init__(connection, clock, path)
        self.writes = Writes(connection, super().job, ticks)
        self.runner: Runner | None = None  # a shared store's: see `share`

    def share(self, runner: Runner, *, cap: float | None, monthly: float | None) -> None:
        """Work this (PostgreSQL) store as one of several runners (see `shared`): every write fenced
        by `runner`'s lease, jobs claimed before they are worked, reservations admitted against what
        every runner holds (`cap`) and what the workspace spent this month (`monthly`)."""
        self.runner, self.caps = runner, (cap, monthly)
        self.connection.fence = runner.fence
        self.writes.owner = runner.id

    def claim(self, key: str) -> bool:
        """Whether this process may work the job now: always, unless the store is shared (then the
        job must be free, this runner's, or left by a runner whose lease ended)."""
        if self.runner is None:
            return True
        with self.writes.transaction() as db:
            mine, stale = self.runner.claim(db, key)
        if stale:  # another runner moved it: read it afresh
            self.writes.known.pop(key, None)
        return mine

    @classmethod
    def open(
        cls, path: Place, *, target: Target | None = None, campaign: str = "", clock: Clock = time.time
    ) -> RunStore:
        """Open (or create) the store at `path`, checked and migrated to this version's schema, and
        bound to `target`: a store that records another target is refused (see `target`).

        A damaged store is an error that names the file, never a silent fresh start: a fresh
        store would forget which jobs were paid for, and the next run would buy them again.
        """
        db = _open_shared(path) if isinstance(path, pg.Address) else _open_file(path)
        store = cls(db, clock, path)
        if target is not None:
            store.bind(path, target, campaign)
        return store

    def bind(self, path: Place, target: Target, campaign: str) -> None:
        recorded = self.target()
        if recorded is None:
            value = _json({**target.to_json(), "campaign": campaign})
            with self.writes.transaction(durable=True) as db:
                db.execute(
                    "INSERT INTO meta VALUES ('target', ?)"
                    " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (value,),
                )
        elif recorded != target:
            raise StoreError(
                f"{path} holds the jobs of {recorded.describe()}, not of {target.describe()}; "
                "its jobs mean nothing there"
            )

    def close(self) -> None:
        """Write what is queued, and close. A store whose last write failed raised that error where
        it happened: what is still queued is then given up (as a kill would lose it), not raised again."""
        failed = self.writes.failed
        try:
            self.writes.flush()
        except sqlite3.Error:
            if not failed:
                raise
        finally:
            self.connection.close()

    @property
    def db(self) -> Any:
        """The connection, for reading: what is queued is written first, so a read sees every move."""
        self.writes.flush()
        return self.connection

    def flush(self) -> None:
        """Write every queued move now, in one transaction; one that fails stays queued, and raises."""
        self.writes.flush()

    @contextmanager
    def transaction(self, *, durable: bool = False) -> Iterator[Any]:
        """One atomic write of the caller's own, after what is queued; `durable` fsyncs it. What it
        changes is unknown here, so every job is read afresh afterwards."""
        with self.writes.transaction(durable=durable) as db:
            yield db
        self.writes.known.clear()

    # --- runs and plans ------------------------------------------------------------------------------

    def add_planned(
        self, rows: Iterable[tuple[str, str, str, Mapping[str, Any], Mapping[str, Any], float | None]], *,
        run: int | None = None, stored: Stored | None = None,
    ) -> int:  # fmt: skip
        """Record planned jobs (key, id, kind, request, matrix, estimate); known keys keep their state
        (and their request: only their id and estimate follow the plan). Returns how many are new.

        `run` marks them as the plan of that run (see `begin_run`): a run's report covers its plan.
        `stored(request, matrix)` gives a new job's request and matrix as the store keeps them (see
        `redact.stored_variant`); a known job's are never computed.
        """
        now, rows = self.clock(), list(rows)
        with self.transaction() as db:
            known = {key: (id_, est) for key, id_, est in db.execute("SELECT key, id, estimate FROM jobs")}
            fresh = {row[0]: row for row in rows if row[0] not in known}
            keep = stored or (lambda request, matrix: (request, matrix))
            db.executemany(
                "INSERT INTO jobs (key, id, kind, request, matrix, state, estimate, updated_at, run)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",  # another runner's plan
                ((key, id_, kind, *map(_json, keep(req, mx)), JobState.PLANNED, est, now, run)
                 for key, id_, kind, req, mx, est in fresh.values()),
            )  # fmt: skip
            moved = [
                (id_, est, key) for key, id_, *_, est in rows if known.get(key, (id_, est)) != (id_, est)
            ]
            db.executemany("UPDATE jobs SET id = ?, estimate = ? WHERE key = ?", moved)
            if run is not None and len(fresh) < len(rows):  # the known jobs join the run's plan at once
                db.execute("CREATE TEMP TABLE IF NOT EXISTS planned (key TEXT PRIMARY KEY)")
                db.executemany(
                    "INSERT INTO temp.planned VALUES (?) ON CONFLICT DO NOTHING", ((row[0],) for row in rows)
                )
                db.execute("UPDATE jobs SET run = ? WHERE key IN (SELECT key FROM temp.planned)", (run,))
                db.execute("DELETE FROM temp.planned")
        return len(fresh)

    def begin_run(self, info: Mapping[str, Any]) -> RunRecord:
        """Record that a run starts, with what the reports say about it (campaign, manifest, folders)."""
        now = self.clock()
        with self.writes.transaction(durable=True) as db:
            query = "INSERT INTO runs (started_at, info) VALUES (?, ?) RETURNING seq"
            (seq,) = db.execute(query, (now, _json(info))).fetchone()
        return RunRecord(seq=int(seq), started_at=now, ended_at=None, info=dict(info), outcome={})

    def end_run(self, seq: int, outcome: Mapping[str, Any]) -> None:
        """Record how a run ended (stopped why, exit code, balance after)."""
        row = (self.clock(), _json(outcome), seq)
        with self.writes.transaction() as db:
            db.execute("UPDATE runs SET ended_at = ?, outcome = ? WHERE seq = ?", row)

    # --- a job's life (see `states`): each move is durable, or says why a kill that loses it is harmless

    def reserve(self, key: str, credits: float) -> StoredJob:
        """Credits are held for the job's create (`budget`): nothing is sent yet. Lost: the job is
        where it was (`reserved` counts no credit as charged), and the next run reserves again.
        On a shared store it is written at once, admitted against every runner's holdings (see
        `shared.Runner.admit`), and refused with `OverBudgetError` past a cap."""
        if self.runner is None:
            return self._move(key, JobState.RESERVED, reserved=credits)
        runner, (cap, monthly) = self.runner, self.caps

        delta = credits - self.writes.job(key).reserved

        def admit(db: Any) -> None:
            if why := runner.admit(db, delta, cap=cap, monthly=monthly):
                raise OverBudgetError(why)
            if delta:
                db.execute(*runner.ledger(key, delta))

        return self._move(key, JobState.RESERVED, check=admit, reserved=credits)

    def skip(self, key: str, why: str) -> StoredJob:
        """The budget (or an unknown price) holds the job back. Lost: the next run asks the budget again."""
        return self._move(key, JobState.SKIPPED, reserved=0, note=f"budget: {why}")

    def block(self, key: str, why: str) -> StoredJob:
        """A downstream job whose upstream failed: never sent, never charged (see `stages`)."""
        return self._move(key, JobState.BLOCKED, error_message=why, note=why)

    def intend(self, key: str, *, attempt: int, at: float) -> StoredJob:
        """The create is about to go out. Durable, with every move before it: a crash after this
        leaves an `uncertain` job, and the store holds all this run did before the bytes went out."""
        return self._move(key, JobState.SUBMITTING, durable=True, attempts=attempt, intent_at=at)

    def created(
        self, key: str, sume_ids: Iterable[str], *, reserved: float, required: float | None,
        request_id: str | None, at: float,
    ) -> StoredJob:  # fmt: skip
        """The create answered with its job ids: durable before anything else is done."""
        return self._move(key, JobState.SUBMITTED, durable=True, sume_ids=tuple(sume_ids), required=required,
                          reserved=reserved, request_id=request_id, submitted_at=at, error_code=None,
                          error_message=None)  # fmt: skip

    def adopt(self, key: str, sume_ids: Iterable[str], *, at: float | None, note: str) -> StoredJob:
        """Job ids found for a create whose answer was lost (`reconcile`, the registry's rescue): durable."""
        return self._move(key, JobState.SUBMITTED, durable=True, sume_ids=tuple(sume_ids), submitted_at=at,
                          candidates=(), error_code=None, error_message=None, note=note)  # fmt: skip

    def lose(
        self, key: str, *, why: str, request_id: str | None, settled_at: float | None, code: str | None = None
    ) -> StoredJob:
        """The create was sent and its outcome is unknown: its reservation stays (it may be charged).
        Lost: it stays `submitting` (as charged), and the next run makes it `uncertain` at once."""
        fields: dict[str, Any] = {"error_message": why, "request_id": request_id, "settled_at": settled_at}
        if code is not None:
            fields["error_code"] = code
        return self._move(key, JobState.UNCERTAIN, **fields)

    def suspect(self, key: str, candidates: Iterable[str], *, why: str) -> StoredJob:
        """An uncertain create stays so, with the ids it may have made. Lost: found again next time."""
        return self._move(key, JobState.UNCERTAIN, candidates=tuple(candidates), error_message=why)

    def refuse(
        self, key: str, *, final: bool, code: str | None, why: str, request_id: str | None
    ) -> StoredJob:
        """No job was made: `rejected` when the request itself was refused, else `planned` again. Lost:
        it stays `submitting`, then `uncertain`, proven never made, and sent again (refusals are free)."""
        state = JobState.REJECTED if final else JobState.PLANNED
        return self._move(key, state, reserved=0, error_code=code, error_message=why, request_id=request_id)

    def reopen(self, key: str, *, note: str) -> StoredJob:
        """An uncertain create proven never made: `planned`. Lost: it stays `uncertain`, and the next
        run proves it again."""
        fields: dict[str, Any] = {"reserved": 0, "candidates": (), "error_code": None, "error_message": None}
        return self._move(key, JobState.PLANNED, note=note, **fields)

    def resume(self, key: str) -> StoredJob:
        """A job that timed out is waited for again. Lost: the next run resumes it again."""
        return self._move(key, JobState.SUBMITTED, note="resumed")

    def time_out(self, key: str) -> StoredJob:
        """We stopped waiting. Lost: the job stays `submitted`, and the next run polls it (as it would)."""
        return self._move(key, JobState.TIMED_OUT)

    def finish(
        self, key: str, state: JobState, *, sume_status: str, code: str | None = None,
        why: str | None = None, failed_id: str | None = None,
    ) -> StoredJob:  # fmt: skip
        """Generation ended (`completed`, or how it failed); a Face Swap partly made is `completed`
        with the failure of its other avatars. Lost: the job stays `submitted`; the next run polls it
        and learns the same (reading costs nothing)."""
        fields: dict[str, Any] = {"error_code": code, "error_message": why, "error_job_id": failed_id}
        return self._move(key, state, sume_status=sume_status, **(fields if why else {}))

    def fetched(self, key: str) -> StoredJob:
        """The results were read: downloading. Lost: the next run reads them again."""
        return self._move(key, JobState.FETCHED)

    def downloaded(self, key: str, state: JobState = JobState.DOWNLOADED) -> StoredJob:
        """Every output is saved; a Face Swap partly made ends in the state of its failures. Lost
        (with its files' records, queued before it): the next run downloads them again, over them."""
        return self._move(key, state)

    def price(self, key: str, credits: float, *, note: str) -> StoredJob:
        """What the job cost, learned from the balance: its reservation follows. Durable: the budget
        of every later run must count it."""
        return self._move(key, None, durable=True, reserved=credits, required=credits, note=note)

    def annotate(self, key: str, note: str | None = None, *, why: str | None = None) -> StoredJob:
        """A note in the journal (and, with `why`, the job's message), its state unchanged. Lost: a
        note (such as why a download failed: the next run downloads again)."""
        fields: dict[str, Any] = {"error_message": why} if why is not None else {}
        return self._move(key, None, note=note, **fields)

    def restart(self, job: StoredJob, *, note: str, retire: bool = True) -> StoredJob:
        """Make a job `planned` again (`--regenerate`, `--retry-failed`): its ids stay in the journal,
        and what it may have cost moves to `retired`, so the budget still counts it (`retire`). Lost
        (nothing is sent before the run's start is written, durably): the flag does it again."""
        now = self.job(job.key)  # a failed job with files was paid for (a Face Swap partly made)
        paid = charged(now.state) or (now.state in PAID_WHEN_FILES and self.may_have_cost(now.key))
        retired = now.retired + (now.reserved if retire and paid else 0.0)
        moved = self._move(job.key, JobState.PLANNED, restart=True, note=note, sume_ids=(), candidates=(),
                           error_code=None, error_message=None, error_job_id=None, sume_status=None,
                           reserved=0, submitted_at=None, intent_at=None, settled_at=None,
                           retired=retired)  # fmt: skip
        self.forget_files(job.key)
        return moved

    def start_again(self, keys: Iterable[str], again: frozenset[str], *, flag: str) -> None:
        """Make the jobs in the `again` states (the `flag` buys them again) `planned`, see `restart`:
        their old job ids stay in the journal, and what they cost stays counted against the budget."""
        wanted = set(keys)
        for job in self.jobs_in(again) if again else ():
            if job.key in wanted and self.claim(job.key):
                self.restart(job, note=f"{flag}: was {job.state} as {', '.join(job.sume_ids) or 'no job id'}")

    def job(self, key: str) -> StoredJob:
        """The job as it stands, queued moves included (from memory once the store has met it)."""
        return self.writes.job(key)

    def _move(
        self, key: str, state: JobState | None, *, durable: bool = False, note: str | None = None,
        restart: bool = False, check: Callable[[Any], None] | None = None, **fields: Any,
    ) -> StoredJob:  # fmt: skip
        now = self.clock()
        if self.runner is not None and "reserved" in fields and not restart and check is None:  # the ledger
            delta = float(fields["reserved"]) - self.writes.job(key).reserved
            if delta:
                self.writes.add(self.runner.ledger(key, delta))
        return self.writes.move(key, state, fields, at=now, note=note, durable=durable, restart=restart,
                                check=check)  # fmt: skip

    # --- outputs (queued like the moves they come with) ----------------------------------------------

    def add_file(
        self, key: str, *, path: str, sume_id: str, sha256: str, size: int, content_type: str
    ) -> None:
        row = (key, path, sume_id, sha256, size, content_type)
        self.writes.add((_ADD_FILE, row))

    def forget_files(self, key: str) -> None:
        """Drop a job's output records (its files stay on disk until new ones replace them)."""
        self.writes.add(("DELETE FROM files WHERE key = ?", (key,)))


_ADD_FILE = (
    "INSERT INTO files VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key, path) DO UPDATE SET"
    " sume_id = excluded.sume_id, sha256 = excluded.sha256, bytes = excluded.bytes,"
    " content_type = excluded.content_type"
)


def _open_shared(path: pg.Address) -> pg.Connection:
    """A shared store's connection, its schema made or checked and migrated (see `pg.open_store`)."""
    try:
        return pg.open_store(path, create=migrations.create, migrate=migrate_checked(path))
    except sqlite3.DatabaseError as error:
        raise unusable(path, error) from None


def _open_file(path: Path) -> sqlite3.Connection:
    """A SQLite store's connection, the file checked and migrated (see `RunStore.open`)."""
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
        if fresh:
            migrations.create(db)
        else:
            migrations.migrate(db, checked_version(db, path))
    except sqlite3.OperationalError as error:
        if fresh or "readonly" in str(error) or "unable to open" in str(error):
            raise cannot_keep(path, error) from None
        raise unusable(path, error) from None
    except sqlite3.DatabaseError as error:
        raise unusable(path, error) from None
    return db


def _json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def cannot_keep(path: Path, error: Exception) -> StoreError:
    """A folder the store cannot be made in (read-only, not a folder, no permission)."""
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return StoreError(
        f"cannot keep the run store in {path.parent}: {reason}; choose another with --state-dir"
    )


@contextmanager
def run_lock(store: Path) -> Iterator[None]:
    """Hold the store's lock for one run; a second run is refused at once, naming the holder.

    `flock` belongs to the open file, so the kernel releases it when the holder exits or is killed:
    a lock left by a dead process never blocks (unlike a lock file that outlives its writer).
    """
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(lock_path(store), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as error:
        raise cannot_keep(store, error) from None
    try:
        if holder := held_by(descriptor):
            raise LockedError(f"another sume-batch run is using {store} ({holder}); wait for it or stop it")
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


def lock_path(store: Path) -> Path:
    return store.with_name(store.name + ".lock")


def held_by(descriptor: int) -> str | None:
    """Take the lock on an open lock file; who holds it instead (as it wrote itself down), or None
    when it is now ours."""
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.pread(descriptor, 200, 0).decode(errors="replace").strip() or "another process"
    return None


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
    lock_path(legacy).unlink(missing_ok=True)
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
