"""Several runners on one campaign and one account: leases, claims and the admission controller,
kept in a shared PostgreSQL store (see `pg`). Every time here is the database server's clock, so
runners on machines whose clocks disagree still agree on when a lease ends.

- **A runner holds a lease** on its campaign's store (one row of `sume_batch.runners`: host, pid, CI
  run, expiry), renewed every third of the lease by a thread of its own. A runner that dies renews
  nothing: its lease ends within `lease` seconds, and with it every claim and permit it held.
- **Fencing**: each write transaction of a runner first locks its own lease row and checks that it
  has not ended (`fence`). A runner that lost its lease (stopped too long, or `sume-batch unlock
  --force`) writes nothing more and stops; whoever took over its jobs reads them as it left them.
- **Claims**: a runner works a job only once it has claimed it (`jobs.owner`): free, its own, or
  another runner's whose lease has ended. The claim locks the old owner's lease row first, so
  that runner's last write ends first and none comes after, then the job's row; both with
  `FOR UPDATE SKIP LOCKED`, never waited for (a job being written now is not claimable now), so
  runners claiming each other's jobs cannot deadlock.
- **Admission, per account** (the API target): jobs generating within the account's capacity
  (`permit`: leased rows, a dead runner's do not count), one create on the wire at a time where
  the API is not known to honour Idempotency-Key (`creating`: a session advisory lock, released by
  the server when a runner's connection dies), and credit reservations within the campaign's cap
  and the workspace's monthly cap (`admit`, in the reservation's own transaction).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sume_batch import pg
from sume_batch.errors import LockedError
from sume_batch.records import CHARGED_ARGS, CHARGED_WHERE
from sume_batch.states import HOLDS_PERMIT, JobState

LEASE_S = 30.0  # a dead runner's jobs wait at most this long for another (--lease, SUME_BATCH_LEASE_S)
PERMIT_WAIT_S = (0.02, 0.5)  # between two tries for a capacity permit: from, doubling to
CREATE_LOCK_POLL_S = 0.01  # between two tries for the account's create lock
CI_VARIABLES = (
    "GITHUB_RUN_ID",
    "CI_JOB_ID",
    "BUILDKITE_BUILD_ID",
    "CIRCLE_WORKFLOW_ID",
    "JOB_COMPLETION_INDEX",
)


def ci_run(env: Mapping[str, str]) -> str | None:
    """The CI run a runner belongs to, when it says (GitHub Actions, GitLab, a Kubernetes Job...)."""
    found = [f"{name}={env[name]}" for name in CI_VARIABLES if env.get(name)]
    return ", ".join(found) or None


@dataclass(frozen=True)
class Holder:
    """A runner's lease, as `unlock` and a refusal show it."""

    id: int
    host: str
    pid: int
    ci: str | None
    age_s: float
    expires_in_s: float

    def describe(self) -> str:
        state = f"lease ends in {self.expires_in_s:.0f} s" if self.expires_in_s > 0 else "lease ended"
        ci = f", {self.ci}" if self.ci else ""
        return f"runner {self.id}: pid {self.pid} on {self.host}{ci}, started {self.age_s:.0f} s ago, {state}"


def holders(url: str, schema: str) -> list[Holder]:
    """Every runner of this store whose row is still there, live first."""
    with contextlib.closing(pg.connect(url)) as db:
        rows = db.execute(
            "SELECT id, host, pid, ci, EXTRACT(EPOCH FROM clock_timestamp() - started_at),"
            " EXTRACT(EPOCH FROM expires_at - clock_timestamp()) FROM sume_batch.runners WHERE store = ?"
            " ORDER BY expires_at DESC",
            (schema,),
        ).fetchall()
    return [Holder(int(a), str(b), int(c), d, float(e), float(f)) for a, b, c, d, e, f in rows]


def end_leases(url: str, schema: str) -> int:
    """End every lease on this store now (`unlock --force`): their runners are fenced out."""
    with contextlib.closing(pg.connect(url)) as db:
        cursor = db.execute(
            "UPDATE sume_batch.runners SET expires_at = clock_timestamp() WHERE store = ?"
            " AND expires_at > clock_timestamp()",
            (schema,),
        )
        return int(cursor.rowcount)


def _interval(seconds: float) -> str:
    return f"{seconds:.3f} seconds"


class Elsewhere(NamedTuple):
    """Jobs of a run that are not a runner's own (`Runner.unfinished_elsewhere`)."""

    held: int  # by live runners still working
    left: int  # by runners whose lease ended
    free: int  # by no runner


class LeaseLost(sqlite3.OperationalError):
    """This runner's lease ended: it writes nothing more (its jobs may be another runner's now)."""


@dataclass
class Runner:
    """One runner of a campaign on a shared store: its lease, its claims, and the admission
    controller of its account. Open with `Runner.join`; `close` ends the lease."""

    address: pg.Address
    account: str  # the API target's id: one admission controller per account
    lease: float
    id: int = 0
    db: pg.Connection | None = None  # permits and the create lock: not the store's own connection
    lost: bool = False
    stop: threading.Event = field(default_factory=threading.Event)
    beating: threading.Thread | None = None
    creating_held: bool = False

    @classmethod
    def join(cls, address: pg.Address, account: str, *, lease: float, env: Mapping[str, str]) -> Runner:
        runner = cls(address, account, lease)
        runner.db = pg.connect(address.url)
        pg.ensure_shared(runner.db)
        row = runner.db.execute(
            "INSERT INTO sume_batch.runners (store, account, host, pid, ci, expires_at, lease_s)"
            " VALUES (?, ?, ?, ?, ?, clock_timestamp() + ?::interval, ?) RETURNING id",
            (
                address.schema,
                account,
                socket.gethostname(),
                os.getpid(),
                ci_run(env),
                _interval(lease),
                lease,
            ),
        ).fetchone()
        runner.id = int(row[0])
        runner.beating = threading.Thread(target=runner._heartbeat, name="sume-batch lease", daemon=True)
        runner.beating.start()
        return runner

    def _heartbeat(self) -> None:
        """Renew the lease every third of it, on a connection of its own (a busy event loop cannot
        starve it); a lease found ended is lost for good."""
        beat = pg.connect(self.address.url)
        try:
            while not self.stop.wait(self.lease / 3):
                try:
                    row = beat.execute(
                        "UPDATE sume_batch.runners SET expires_at = clock_timestamp() + ?::interval"
                        " WHERE id = ? AND expires_at > clock_timestamp() RETURNING 1",
                        (_interval(self.lease), self.id),
                    ).fetchone()
                except sqlite3.Error:
                    continue  # the server is away for a moment: the fence decides, at the next write
                if row is None:
                    self.lost = True
                    return
        finally:
            beat.close()

    def fence(self, db: pg.Connection) -> None:
        """First in each of the store's write transactions: this runner's lease must still stand."""
        row = db.execute(
            "SELECT 1 FROM sume_batch.runners WHERE id = ? AND expires_at > clock_timestamp() FOR SHARE",
            (self.id,),
        ).fetchone()
        if row is None:
            self.lost = True
            raise LeaseLost(
                f"this runner's lease on {self.address} ended (it was stopped longer than its"
                f" {self.lease:g} s"
                " lease, or unlocked by force): it writes nothing more, and other runners may take its jobs"
            )

    # --- one run, several runners -------------------------------------------------------------------

    @contextlib.contextmanager
    def beginning(self) -> Iterator[None]:
        """While a runner decides whether to begin a run or join the one going (`run.begin`): one
        runner of the store at a time, so runners started together begin one run between them."""
        assert self.db is not None
        key = self._beginning_key()
        self.db.execute("SELECT pg_advisory_lock(?)", (key,))
        try:
            yield
        finally:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("SELECT pg_advisory_unlock(?)", (key,))

    def _beginning_key(self) -> int:
        """The store's lock on a run's beginning and end: one runner of the store at a time."""
        return pg.lock_key(f"begin:{self.address.schema}")

    def live_run(self) -> int | None:
        """The run live runners of this store are working, if any: a runner joins it."""
        assert self.db is not None
        row = self.db.execute(
            "SELECT max(run) FROM sume_batch.runners WHERE store = ? AND id != ? AND run IS NOT NULL"
            " AND expires_at > clock_timestamp()",
            (self.address.schema, self.id),
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def work_for(self, run: int) -> None:
        assert self.db is not None
        self.db.execute("UPDATE sume_batch.runners SET run = ? WHERE id = ?", (run, self.id))

    def leave(self, run: int) -> int:
        """This runner is done with the run: how many live runners still work it. One runner of the
        store at a time (as in `beginning`), so of runners done at once exactly one is the last."""
        assert self.db is not None
        with self._transaction() as db:
            db.execute("SELECT pg_advisory_xact_lock(?)", (self._beginning_key(),))
            db.execute("UPDATE sume_batch.runners SET run = NULL WHERE id = ?", (self.id,))
            row = db.execute(
                "SELECT count(*) FROM sume_batch.runners WHERE store = ? AND id != ? AND run = ?"
                " AND expires_at > clock_timestamp()",
                (self.address.schema, self.id, run),
            ).fetchone()
        return int(row[0])

    # --- claims ----------------------------------------------------------------------------------

    def claim(self, db: pg.Connection, key: str) -> tuple[bool, bool]:
        """In the store's write transaction: whether this runner now holds the job, and whether it
        was not this runner's until now (so what this runner remembers of it may be stale: another
        may have moved it, and let it go when it ended)."""
        row = db.execute("SELECT owner FROM jobs WHERE key = ?", (key,)).fetchone()
        if row is None:
            return False, False
        owner = row[0]
        if owner is not None and owner != self.id:
            live = db.execute(
                "SELECT expires_at > clock_timestamp() FROM sume_batch.runners WHERE id = ?", (owner,)
            ).fetchone()
            if live is not None and live[0]:
                return False, False
            # Its lease ended: lock its row, so a last write of its own still going ends first and
            # none comes after (the fence takes this row); never waited for, so two runners taking
            # each other's rows cannot deadlock: if it is writing now, the job is not claimable now.
            if (
                live is not None
                and db.execute(
                    "SELECT 1 FROM sume_batch.runners WHERE id = ? FOR UPDATE SKIP LOCKED", (owner,)
                ).fetchone()
                is None
            ):
                return False, False
        locked = db.execute("SELECT owner FROM jobs WHERE key = ? FOR UPDATE SKIP LOCKED", (key,)).fetchone()
        if locked is None or locked[0] != owner:
            return False, False  # being written, or claimed meanwhile: not claimable now
        if owner != self.id:
            db.execute("UPDATE jobs SET owner = ? WHERE key = ?", (self.id, key))
        return True, owner != self.id

    def idle(self, idle: bool) -> None:
        """Say whether this runner is done with what it could do (it then only waits for the others):
        the others wait for the jobs a working runner holds, never for an idle one's leftovers."""
        assert self.db is not None
        self.db.execute("UPDATE sume_batch.runners SET idle = ? WHERE id = ?", (idle, self.id))

    def unfinished_elsewhere(
        self, db: pg.Connection, keys: AbstractSet[str], states: AbstractSet[str]
    ) -> Elsewhere:
        """Of these jobs in these states that are not this runner's: how many live runners still
        working hold, how many a dead one left, and how many are free (let go by a runner that
        ended without doing them: its creates had stopped, say). An idle runner's are none of
        these: like a run's leftovers, they wait for the next run."""
        chosen = sorted(states)
        marks = ", ".join("?" * len(chosen))
        query = (
            "SELECT j.key, CASE WHEN j.owner IS NULL THEN 'free' WHEN r.id IS NULL OR r.expires_at <="  # noqa: S608
            " clock_timestamp() THEN 'left' WHEN r.idle THEN 'idle' ELSE 'held' END FROM jobs AS j LEFT JOIN"
            f" sume_batch.runners AS r ON r.id = j.owner WHERE j.state IN ({marks})"
            " AND (j.owner IS NULL OR j.owner != ?)"
        )
        found = collections.Counter(how for key, how in db.execute(query, (*chosen, self.id)) if key in keys)
        return Elsewhere(found["held"], found["left"], found["free"])

    # --- admission -------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def permit(
        self, key: str, capacity: int, pause: Callable[[float], Awaitable[bool]], *,
        generating: Callable[[], bool], longest: float,
    ) -> AsyncIterator[bool]:  # fmt: skip
        """Hold one of the account's `capacity` generation permits while the job may be generating at
        the API; yields False when the run was stopped while waiting (the job waits for the next run).

        A permit outlives this block while the job may still be generating (`generating()`: its
        create on the wire, the job left unfinished, or its create's answer lost; see
        `states.HOLDS_PERMIT`, `execute.Executor.settle_lost`), and outlives its runner the same way:
        the account's jobs in flight count, whoever is watching them. Such a permit is taken over by
        the runner that claims the job next, and ends once the job is found to be no longer
        generating, or `longest` seconds (the longest a job may take) after it was taken."""
        assert self.db is not None
        wait, granted, deadline = PERMIT_WAIT_S[0], False, time.monotonic() + longest
        while not granted and time.monotonic() < deadline:  # past it, the job waits for the next run
            granted = self._try_permit(key, capacity, longest)
            if not granted:
                if await pause(wait):
                    break
                wait = min(wait * 2, PERMIT_WAIT_S[1])
        try:
            yield granted
        finally:
            if granted and not generating():
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute(
                        "DELETE FROM sume_batch.permits WHERE account = ? AND store = ? AND key = ?",
                        (self.account, self.address.schema, key),
                    )

    def _try_permit(self, key: str, capacity: int, longest: float) -> bool:
        assert self.db is not None
        with self._transaction() as db:
            db.execute("SELECT pg_advisory_xact_lock(?)", (pg.lock_key(f"permits:{self.account}"),))
            self._free_left_permits(db, longest)
            (held,) = db.execute(
                "SELECT count(*) FROM sume_batch.permits WHERE account = ? AND NOT (store = ? AND key = ?)",
                (self.account, self.address.schema, key),
            ).fetchone()
            if int(held) >= capacity:
                return False
            db.execute(
                "INSERT INTO sume_batch.permits VALUES (?, ?, ?, ?, clock_timestamp()) ON CONFLICT"
                " (account, store, key) DO UPDATE SET runner = excluded.runner",  # or a dead one's, taken
                (self.account, self.address.schema, key, self.id),
            )
            return True

    def _free_left_permits(self, db: pg.Connection, longest: float) -> None:
        """End the permits no live runner holds whose jobs are no longer generating (or too old to be).
        A dead runner's lost create (`uncertain`) keeps its permit until whoever takes the job over
        settles it: it may have made a job that is generating still."""
        left = db.execute(
            "SELECT store, key, at < clock_timestamp() - ?::interval FROM sume_batch.permits AS p"
            " WHERE account = ? AND NOT EXISTS (SELECT 1 FROM sume_batch.runners AS r WHERE r.id = p.runner"
            " AND r.expires_at > clock_timestamp())",
            (_interval(longest), self.account),
        ).fetchall()
        for store, key, old in left:
            found = None
            with contextlib.suppress(sqlite3.Error):  # a store dropped meanwhile: nothing generates for it
                found = db.execute(f'SELECT state FROM "{store}".jobs WHERE key = ?', (key,)).fetchone()  # noqa: S608
            if old or found is None or found[0] not in HOLDS_PERMIT | {JobState.UNCERTAIN}:
                db.execute(
                    "DELETE FROM sume_batch.permits WHERE account = ? AND store = ? AND key = ?",
                    (self.account, store, key),
                )

    @contextlib.asynccontextmanager
    async def probing(self, kind: str, pause: Callable[[float], Awaitable[bool]]) -> AsyncIterator[bool]:
        """Hold the campaign's lock on probing a kind's price (see `execute.Executor.probing`)."""
        async with self._session_lock(f"probe:{self.address.schema}:{kind}", pause) as held:
            yield held

    @contextlib.asynccontextmanager
    async def _session_lock(
        self, name: str, pause: Callable[[float], Awaitable[bool]]
    ) -> AsyncIterator[bool]:
        """An advisory lock of this runner's session (the server releases it if the runner dies),
        polled for; False when the run was stopped first."""
        assert self.db is not None
        key = pg.lock_key(name)
        while not self.db.execute("SELECT pg_try_advisory_lock(?)", (key,)).fetchone()[0]:
            if await pause(CREATE_LOCK_POLL_S):
                yield False
                return
        try:
            yield True
        finally:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("SELECT pg_advisory_unlock(?)", (key,))

    @contextlib.asynccontextmanager
    async def creating(self, pause: Callable[[float], Awaitable[bool]]) -> AsyncIterator[bool]:
        """Hold the account's create lock: one create of any runner on the wire at a time, so a lost
        create's time window holds no other create of ours (see `reconcile`). False: stopped first."""
        async with self._session_lock(f"create:{self.account}", pause) as held:
            yield held

    def rate_wait(self) -> float:
        """Seconds until the account may create again, by the last create rate limit any runner of it
        saw (`RateLimit-Remaining: 0` until `RateLimit-Reset`); 0 when it may now."""
        assert self.db is not None
        row = self.db.execute(
            "SELECT remaining, EXTRACT(EPOCH FROM reset_at - clock_timestamp()) FROM sume_batch.rate"
            " WHERE account = ?",
            (self.account,),
        ).fetchone()
        return float(row[1]) if row is not None and row[0] <= 0 and float(row[1]) > 0 else 0.0

    def rate_seen(self, remaining: int, seconds: float) -> None:
        """What a create's answer said of the account's create rate limit, for every runner."""
        assert self.db is not None
        self.db.execute(
            "INSERT INTO sume_batch.rate VALUES (?, ?, clock_timestamp() + ?::interval) ON CONFLICT (account)"
            " DO UPDATE SET remaining = excluded.remaining, reset_at = excluded.reset_at",
            (self.account, remaining, _interval(seconds)),
        )

    def admit(
        self, db: pg.Connection, credits: float, *, cap: float | None, monthly: float | None
    ) -> str | None:
        """In the reservation's own transaction: why reserving `credits` more would cross the
        campaign's cap or the workspace's monthly cap, or None. What every runner holds counts: the
        jobs that may have cost credits, and the reservations of live runners."""
        db.execute("SELECT pg_advisory_xact_lock(?)", (pg.lock_key(f"credits:{self.account}"),))
        if cap is not None:
            held = campaign_held(db)
            if held + credits > cap + 1e-9:
                return f"{held + credits:g} > {cap:g} (every runner's reservations counted)"
        if monthly is not None:
            (spent,) = db.execute(
                "SELECT COALESCE(SUM(credits), 0) FROM sume_batch.ledger WHERE account = ? AND month = ?",
                (self.account, pg.month_of(time.time())),
            ).fetchone()
            if float(spent) + credits > monthly + 1e-9:
                total = float(spent) + credits
                return f"{total:g} > budget.monthly_credits {monthly:g} this month in this workspace"
        return None

    def foreign(self) -> set[str]:
        """Job ids the other campaigns' stores in this database hold at this target: never another
        campaign's job for reconciliation to adopt, whichever machine made it."""
        assert self.db is not None
        found: set[str] = set()
        rows = self.db.execute(
            "SELECT schema FROM sume_batch.stores WHERE target = ? AND schema != ?",
            (self.account, self.address.schema),
        ).fetchall()
        for (schema,) in rows:
            with contextlib.suppress(sqlite3.Error):  # a store dropped meanwhile holds nothing
                query = (
                    f'SELECT sume_ids, candidates FROM "{schema}".jobs WHERE sume_ids != ? OR candidates != ?'  # noqa: S608
                )
                for ids, candidates in self.db.execute(query, ("[]", "[]")):
                    found.update(json.loads(ids), json.loads(candidates))
        return found

    def mark_start(self) -> None:
        """The moment this runner read the balance it watches (see `budget.BalanceWatch.everyone`)."""
        assert self.db is not None
        self.db.execute(
            "UPDATE sume_batch.runners SET started_at = clock_timestamp() WHERE id = ?", (self.id,)
        )

    def reserved_since_start(self) -> float:
        """What every runner of the account has reserved since this one's `mark_start`."""
        assert self.db is not None
        row = self.db.execute(
            "SELECT COALESCE(SUM(l.credits), 0) FROM sume_batch.ledger AS l, sume_batch.runners AS r"
            " WHERE r.id = ? AND l.account = ? AND l.at >= r.started_at",
            (self.id, self.account),
        ).fetchone()
        return float(row[0])

    def ledger(self, key: str, delta: float) -> tuple[str, tuple[Any, ...]]:
        """The statement that enters a change of a job's reservation in the workspace's ledger."""
        return (
            "INSERT INTO sume_batch.ledger (account, month, store, key, credits) VALUES (?, ?, ?, ?, ?)",
            (self.account, pg.month_of(time.time()), self.address.schema, key, delta),
        )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[pg.Connection]:
        assert self.db is not None
        self.db.execute("BEGIN")
        try:
            yield self.db
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def close(self) -> None:
        """End the lease: this runner's claims are free at once, and its permits once their jobs
        are found to be generating no more (see `permit`)."""
        self.stop.set()
        if self.db is not None:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute(
                    f'UPDATE "{self.address.schema}".jobs SET owner = NULL WHERE owner = ?',  # noqa: S608 - our name
                    (self.id,),
                )
                self.db.execute("DELETE FROM sume_batch.runners WHERE id = ?", (self.id,))
            self.db.close()


def campaign_held(db: pg.Connection) -> float:
    """What a shared campaign has spent or holds: its charged jobs, earlier lives, and the credits
    live runners have reserved for creates not yet sent."""
    query = (
        f"SELECT COALESCE(SUM(CASE WHEN {CHARGED_WHERE} THEN reserved WHEN state = ? AND owner IN"  # noqa: S608
        " (SELECT id FROM sume_batch.runners WHERE expires_at > clock_timestamp()) THEN reserved ELSE 0"
        " END), 0) + COALESCE(SUM(retired), 0) FROM jobs"
    )
    row = db.execute(query, (*CHARGED_ARGS, JobState.RESERVED)).fetchone()
    return float(row[0])


@contextlib.contextmanager
def joined(address: pg.Address, account: str, *, lease: float, env: Mapping[str, str]) -> Iterator[Runner]:
    """This process as a runner of the campaign at `address`, for the length of the block."""
    try:
        runner = Runner.join(address, account, lease=lease, env=env)
    except sqlite3.Error as error:
        raise LockedError(f"cannot join {address} as a runner: {error}") from None
    try:
        yield runner
    finally:
        runner.close()
