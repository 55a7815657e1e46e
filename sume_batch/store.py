"""The run store: a SQLite journal (WAL) of every job's state, the one source of truth for a run.

Every transition is written before it is acted on. The create intent and the job id the API
returns are committed with `synchronous=FULL` (fsync) so they survive a crash or power loss;
cheaper updates use `NORMAL`, which survives the process being killed. No URL is ever stored:
result links are signed and expire, so they are fetched again when needed.
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
from typing import Any

from sume_batch import migrations
from sume_batch.errors import LockedError, StoreError
from sume_batch.records import RunRecord, StoredJob, StoreReader, checked_version, unusable
from sume_batch.states import IllegalTransition, JobState, may_move
from sume_batch.target import Target, aside_path, legacy_path, store_path


class RunStore(StoreReader):
    """A campaign's run store; open one per process with `RunStore.open` (or `reading`).

    Its writes are named for what happened to a job (`reserve`, `intend`, `created`, `adopt`, ...);
    each is one transaction, journalled in `events`, and refused (`IllegalTransition`) when the state
    machine (`states`) has no such arrow from where the job stands."""

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
        store = cls(db, clock, path)
        if target is not None:
            store.bind(path, target, campaign)
        return store

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

    # --- runs and plans ------------------------------------------------------------------------------

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
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET id = excluded.id, estimate = excluded.estimate,"
                " run = COALESCE(excluded.run, run)",
                (
                    (key, id_, kind, _json(req), _json(mx), JobState.PLANNED, est, now, run)
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

    # --- a job's life (see `states`) -----------------------------------------------------------------

    def reserve(self, key: str, credits: float) -> None:
        """Credits are held for the job's create (`budget`): nothing is sent yet."""
        self._move(key, JobState.RESERVED, reserved=credits)

    def skip(self, key: str, why: str) -> None:
        """The budget (or an unknown price) holds the job back; its reservation is given up."""
        self._move(key, JobState.SKIPPED, reserved=0, note=f"budget: {why}")

    def intend(self, key: str, *, attempt: int, at: float) -> None:
        """The create is about to go out (durable: a crash after this leaves an `uncertain` job)."""
        self._move(key, JobState.SUBMITTING, durable=True, attempts=attempt, intent_at=at)

    def created(
        self, key: str, sume_ids: Iterable[str], *, reserved: float, required: float | None,
        request_id: str | None, at: float,
    ) -> None:  # fmt: skip
        """The create answered with its job ids: durable before anything else is done."""
        self._move(key, JobState.SUBMITTED, durable=True, sume_ids=list(sume_ids), required=required,
                   reserved=reserved, request_id=request_id, submitted_at=at, error_code=None,
                   error_message=None)  # fmt: skip

    def adopt(self, key: str, sume_ids: Iterable[str], *, at: float | None, note: str) -> None:
        """Job ids found for a create whose answer was lost (`reconcile`, or the registry's rescue)."""
        self._move(key, JobState.SUBMITTED, durable=True, sume_ids=list(sume_ids), submitted_at=at,
                   candidates=[], error_message=None, note=note)  # fmt: skip

    def lose(self, key: str, *, why: str, request_id: str | None, settled_at: float | None) -> None:
        """The create was sent and its outcome is unknown: its reservation stays (it may be charged)."""
        self._move(key, JobState.UNCERTAIN, error_message=why, request_id=request_id, settled_at=settled_at)

    def suspect(self, key: str, candidates: Iterable[str], *, why: str) -> None:
        """An uncertain create stays so, with the ids it may have made."""
        self._move(key, JobState.UNCERTAIN, candidates=list(candidates), error_message=why)

    def refuse(self, key: str, *, final: bool, code: str | None, why: str, request_id: str | None) -> None:
        """No job was made: `rejected` when the request itself was refused, else `planned` again."""
        state = JobState.REJECTED if final else JobState.PLANNED
        self._move(key, state, reserved=0, error_code=code, error_message=why, request_id=request_id)

    def reopen(self, key: str, *, note: str) -> None:
        """An uncertain create proven never made, or to be re-sent under its own key: `planned`."""
        self._move(key, JobState.PLANNED, reserved=0, candidates=[], error_message=None, note=note)

    def resume(self, key: str) -> None:
        """A job that timed out is waited for again."""
        self._move(key, JobState.SUBMITTED, note="resumed")

    def time_out(self, key: str) -> None:
        self._move(key, JobState.TIMED_OUT)

    def finish(
        self, key: str, state: JobState, *, sume_status: str, code: str | None = None,
        why: str | None = None, failed_id: str | None = None,
    ) -> None:  # fmt: skip
        """Generation ended (`completed`, or how it failed); a Face Swap partly made is `completed`
        with the failure of its other avatars."""
        fields: dict[str, Any] = {"error_code": code, "error_message": why, "error_job_id": failed_id}
        self._move(key, state, sume_status=sume_status, **(fields if why else {}))

    def fetched(self, key: str) -> None:
        """The results were read: downloading."""
        self._move(key, JobState.FETCHED)

    def downloaded(self, key: str, state: JobState = JobState.DOWNLOADED) -> None:
        """Every output is saved; a Face Swap partly made ends in the state of its failures."""
        self._move(key, state)

    def price(self, key: str, credits: float, *, note: str) -> None:
        """What the job cost, learned from the balance: its reservation follows."""
        self._move(key, None, reserved=credits, required=credits, note=note)

    def annotate(self, key: str, note: str | None = None, *, why: str | None = None) -> None:
        """A note in the journal (and, with `why`, the job's message), its state unchanged."""
        fields: dict[str, Any] = {"error_message": why} if why is not None else {}
        self._move(key, None, note=note, **fields)

    def restart(self, job: StoredJob, *, note: str, retire: bool = True) -> None:
        """Make a job `planned` again (`--regenerate`, `--retry-failed`): its ids stay in the journal,
        and what it may have cost moves to `retired`, so the budget still counts it (`retire`)."""
        retired = job.retired + (job.reserved if retire and self.may_have_cost(job.key) else 0.0)
        self._move(job.key, JobState.PLANNED, restart=True, note=note, sume_ids=[], candidates=[],
                   error_code=None, error_message=None, error_job_id=None, sume_status=None, reserved=0,
                   submitted_at=None, intent_at=None, settled_at=None, retired=retired)  # fmt: skip
        self.forget_files(job.key)

    def start_again(self, keys: Iterable[str], again: frozenset[str], *, flag: str) -> None:
        """Make the jobs in the `again` states (the `flag` buys them again) `planned`, see `restart`:
        their old job ids stay in the journal, and what they cost stays counted against the budget."""
        if not again:
            return
        for job in self.jobs(keys).values():
            if job.state in again:
                self.restart(job, note=f"{flag}: was {job.state} as {', '.join(job.sume_ids) or 'no job id'}")

    def _move(
        self, key: str, state: JobState | None, *, durable: bool = False, note: str | None = None,
        restart: bool = False, **fields: Any,
    ) -> None:  # fmt: skip
        """Set a job's state (None: keep it) and columns, journalled in `events`, atomically; an arrow
        the state machine does not have is refused (a bug of ours, never written)."""
        now = self.clock()
        with self.transaction(durable=durable) as db:
            row = db.execute("SELECT state FROM jobs WHERE key = ?", (key,)).fetchone()
            if row is None:
                raise KeyError(key)
            if state is None:
                state = JobState(row[0])
            elif not restart and not may_move(row[0], state):
                raise IllegalTransition(f"job {key}: {row[0]} → {state} is not in the state machine")
            columns = {"state": str(state), "updated_at": now, **fields}
            for name in ("sume_ids", "candidates"):
                if name in columns:
                    columns[name] = json.dumps(list(columns[name]))
            assignments = ", ".join(f"{name} = ?" for name in columns)
            db.execute(f"UPDATE jobs SET {assignments} WHERE key = ?", (*columns.values(), key))  # noqa: S608
            db.execute(
                "INSERT INTO events (key, state, at, note) VALUES (?, ?, ?, ?)", (key, str(state), now, note)
            )

    # --- outputs -------------------------------------------------------------------------------------

    def add_file(
        self, key: str, *, path: str, sume_id: str, sha256: str, size: int, content_type: str
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?)",
                (key, path, sume_id, sha256, size, content_type),
            )

    def forget_files(self, key: str) -> None:
        """Drop a job's output records (its files stay on disk until new ones replace them)."""
        with self.transaction() as db:
            db.execute("DELETE FROM files WHERE key = ?", (key,))


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
