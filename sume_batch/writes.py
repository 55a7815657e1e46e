"""The run store's writes on one connection: moves queued, with the jobs as they will stand once
written, then written together, one transaction per batch, fsynced only where the store says a move
must be durable (see `store`, which names the moves and checks them against `states`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from sume_batch.records import StoredJob
from sume_batch.states import RESTING, IllegalTransition, JobState, may_move

BATCH = 512  # queued statements (two per move) written together at the most
LINGER_S = 0.5  # the longest a queued statement waits while others keep coming (and at idle points)
KNOWN_MAX = 10_000  # jobs kept in memory with nothing queued for them (a 100k-job run holds few)
_FLOATS = frozenset({"reserved", "required", "retired", "submitted_at", "intent_at", "settled_at"})

Statement = tuple[str, tuple[Any, ...]]
# A shared store's moves: of the runner's jobs, from the state this runner has them in (a move made
# from a stale memory of a job another runner moved would undo that: a create paid twice).
_GUARD = "WHERE key = ? AND (owner IS NULL OR owner = ?) AND state = ?"


@dataclass
class Writes:
    """What is queued on a store's connection, and the transactions that write it, in order."""

    connection: Any  # sqlite3's, or a `pg.Connection`
    read: Callable[[str], StoredJob]  # a job as the file has it
    ticks: Callable[[], float] = time.monotonic
    queued: list[Statement] = field(default_factory=list)
    since: float = 0.0  # on `ticks`: when the oldest queued statement was queued
    # Jobs as they stand once the queue is written: every job a queued move is for, and those met
    # since that this run may still move (one that rests is read afresh if ever needed).
    known: dict[str, StoredJob] = field(default_factory=dict)
    resting: set[str] = field(default_factory=set)  # known jobs a move left resting: forgotten once written
    transactions: int = 0  # committed, for tests and benchmarks
    fsynced: int = 0  # of those, with synchronous=FULL
    failed: bool = False  # the last transaction failed (a full disk, an I/O error): its error was raised
    synchronous: str = ""  # the connection's setting, once this has set it
    owner: int | None = None  # a shared store's runner: it moves only jobs it holds (see `shared`)

    def job(self, key: str) -> StoredJob:
        """The job as it stands once the queue is written: from memory, or read (nothing is queued
        for a job not in memory)."""
        found = self.known.get(key)
        if found is None:
            found = self.read(key)
            if found.state not in RESTING:
                self.known[key] = found
        return found

    def move(
        self, key: str, state: JobState | None, fields: dict[str, Any], *, at: float, note: str | None,
        durable: bool, restart: bool, check: Callable[[Any], None] | None = None,
    ) -> StoredJob:  # fmt: skip
        """Set a job's state (None: keep it) and columns, journalled in `events`: queued, or, when
        `durable`, written and fsynced at once after what is queued; the job as it then stands. An
        arrow the state machine does not have from where the job will stand is refused (a bug of
        ours, never written), unless it is a `restart`. `check(db)`, when given, runs first in the move's
        own transaction, written at once, and may refuse it by raising (a shared store's admission)."""
        job = self.job(key)
        if state is not None and not restart and not may_move(job.state, state):
            raise IllegalTransition(f"job {key}: {job.state} → {state} is not in the state machine")
        values: dict[str, Any] = {"state": job.state if state is None else str(state)}
        values |= {name: _plain(name, value) for name, value in fields.items()}
        columns = {**values, "updated_at": at}
        for name in ("sume_ids", "candidates"):
            if name in columns:
                columns[name] = json.dumps(list(columns[name]))
        assignments = ", ".join(f"{name} = ?" for name in columns)
        where, args = (
            ("WHERE key = ?", (job.key,))
            if self.owner is None
            else (_GUARD, (job.key, self.owner, job.state))
        )
        statements = (
            (f"UPDATE jobs SET {assignments} {where}", (*columns.values(), *args)),  # noqa: S608
            (
                "INSERT INTO events (key, state, at, note) VALUES (?, ?, ?, ?)",
                (key, values["state"], at, note),
            ),
        )
        moved = dataclasses.replace(job, **values)
        if durable or check is not None:  # `check` may refuse the move: in its own transaction, first
            with self.transaction(durable=durable) as db:
                if check is not None:
                    check(db)
                for statement, args in statements:
                    _execute(db, statement, args)
        else:
            self.add(*statements)
        self.known[key] = moved
        if moved.state in RESTING:
            self.resting.add(key)
        else:
            self.resting.discard(key)
        if not durable and self.due():
            self.flush()
        return moved

    def add(self, *statements: Statement) -> None:
        if not self.queued:
            self.since = self.ticks()
        self.queued += statements

    def due(self) -> bool:
        """Whether the queue should be written now: `BATCH` statements, or one `LINGER_S` old."""
        return bool(self.queued) and (len(self.queued) >= BATCH or self.ticks() - self.since >= LINGER_S)

    def begin(self, durable: bool) -> None:
        """Open a write transaction: SQLite's `synchronous` follows `durable`; a PostgreSQL connection
        opens its own (`pg.Connection.begin_write`: fenced by the runner's lease)."""
        db = self.connection
        if isinstance(db, sqlite3.Connection):
            synchronous = "FULL" if durable else "NORMAL"
            if synchronous != self.synchronous:
                db.execute(f"PRAGMA synchronous={synchronous}")
                self.synchronous = synchronous
            db.execute("BEGIN IMMEDIATE")
        else:
            db.begin_write(durable=durable)

    def flush(self) -> None:
        """Write what is queued now, in one transaction (not fsynced); on failure it stays queued."""
        if self.queued:
            with self.transaction():
                pass

    @contextmanager
    def transaction(self, *, durable: bool = False) -> Iterator[Any]:
        """The queued statements, then the caller's, as one transaction; `durable` fsyncs it. Rolled
        back whole if anything fails (the commit included), and the queue kept for the next one."""
        db = self.connection
        try:
            self.begin(durable)
            for statement, args in self.queued:
                _execute(db, statement, args)
            yield db
            db.execute("COMMIT")
        except BaseException as error:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            self.failed = self.failed or isinstance(error, sqlite3.Error)
            raise
        self.failed = False
        self.queued.clear()
        self.transactions += 1
        self.fsynced += durable
        if len(self.known) > KNOWN_MAX:  # nothing is queued now: any job may be read afresh
            self.known.clear()
        for key in self.resting:
            self.known.pop(key, None)
        self.resting.clear()


def _execute(db: Any, statement: str, args: tuple[Any, ...]) -> None:
    cursor = db.execute(statement, args)
    if statement.endswith(_GUARD) and cursor.rowcount == 0:  # a bug of ours: never written
        key, _, state = args[-3:]
        raise IllegalTransition(f"job {key} is another runner's, or was moved on from {state} by one")


def _plain(name: str, value: Any) -> Any:
    """A column's value as reading it back gives it: enums as their strings, REAL columns as floats."""
    if isinstance(value, Enum):
        return value.value
    if name in _FLOATS and value is not None:
        return float(value)
    return value
