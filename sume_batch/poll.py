"""How a run learns job statuses: one poller for all the jobs in flight (part of the execute stage).

Each job is first asked about when it can first be done: after the time jobs of its kind took in
this run from starting to wait to done (by the API's own timestamps, else as polling saw it), or
after the manifest's `poll_interval` until one has finished, and never sooner than the floor
(`FLOOR_S`; `REHEARSAL_FLOOR_S` against a sandbox). A job past that time is asked again after a
share of its age, at most `BACKOFF_CAP` later. With three or more jobs waiting one `GET /jobs` page
(newest first, up to 100 jobs) answers for all of them, so polling costs about one request per round
however many jobs run; with one or two it asks for each by id. The poller sleeps until the next job
is due, wakes early when a job due sooner starts waiting, and sleeps not at all with nothing to wait
for. Jobs wait on the poller, never poll themselves (issue 13).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sume_batch.api import SumeClient
from sume_batch.errors import ApiError
from sume_batch.responses import Job, parse_job
from sume_batch.states import ApiStatus

UNKNOWN_JOB = "the API does not know this job (purged, or made by another workspace)"
LIST_FROM = 3  # waiting jobs from which one list request beats one request per job
PAGE = 100
# The soonest a job is asked about after it starts waiting, and between two rounds of polling;
# a manifest's `poll_interval` below it is honoured as the floor (the docs give no numbers: sume-api.md §4).
# A floor spares an account's read quota (Sume's sibling API allows 120 reads a minute, 10,000 a day:
# sume-api.md §10); a rehearsal spends no quota, so it polls on a floor of `REHEARSAL_FLOOR_S`.
FLOOR_S = 0.2
REHEARSAL_FLOOR_S = 0.02
AGE_SHARE = {"list": 0.1, "id": 0.5}  # a late job is asked again after this share of its age: ×1.1, ×1.5
BACKOFF_CAP = 60.0  # the longest wait between two polls of a job
JITTER = 0.1  # each wait is up to this share longer (at most half a floor), so runs do not poll in step
LEARNED = 16  # the recent durations of a kind that its expected time is drawn from
FINISHED = ("completed_at", "finished_at", "updated_at")  # when a job was done, by the names APIs use


@dataclass
class Watched:
    """A job the run waits for, on the poller's clock."""

    kind: str  # its expected time is learned per kind
    floor: float
    since: float  # when it started waiting
    due: float  # when to ask next
    polls: int = 0  # times it was due and found still running
    running_at: float | None = None  # the last time it was seen still running


@dataclass
class Poller:
    """Tracks the statuses of the Sume jobs the run waits for; `run` polls until `close`."""

    client: SumeClient
    pause: Callable[[float], Any]  # an interruptible sleep; returns True when interrupted
    halt: asyncio.Event = field(default_factory=asyncio.Event)  # the run's interrupt
    clock: Callable[[], float] = time.monotonic  # the clock `pause` sleeps on
    waiting: dict[str, Watched] = field(default_factory=dict)  # Sume job id → how it is waited for
    statuses: dict[str, Job] = field(default_factory=dict)
    learned: dict[str, deque[float]] = field(default_factory=dict)  # kind → recent seconds, watched to done
    tick: asyncio.Event = field(default_factory=asyncio.Event)  # set after every round of polling
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # set when a job is due before `wake_at`
    wake_at: float = math.inf  # when the poller next means to poll (inf: it is not sleeping)
    last_round: float = -math.inf
    requests: int = 0
    closed: bool = False
    rng: random.Random = field(default_factory=random.Random)  # jitter, so many runs do not poll in step
    failure: BaseException | None = None  # polling gave up (retries exhausted): every waiter sees it
    floor: float = FLOOR_S

    def watch(self, sume_ids: Iterable[str], interval: float, *, kind: str | None = None) -> None:
        """Wait for these jobs, `interval` being their kind's first poll interval (the manifest's).
        Without `kind`, jobs watched with the same interval learn from each other."""
        kind = kind if kind is not None else f"every {interval:g} s"
        floor, now = min(self.floor, interval), self.clock()
        expected = self.expected(kind)
        first = interval if expected is None else max(floor, expected)
        for sume_id in sume_ids:
            if sume_id not in self.waiting:
                due = now + self._jittered(first, floor)
                self.waiting[sume_id] = Watched(kind, floor, since=now, due=due)
                if due < self.wake_at:
                    self.wake.set()  # it is due before the poller means to wake: wake it now

    def forget(self, sume_ids: Iterable[str]) -> None:
        for sume_id in sume_ids:
            self.waiting.pop(sume_id, None)
            self.statuses.pop(sume_id, None)

    def done(self, sume_ids: Iterable[str]) -> list[Job] | None:
        """The final states of all these jobs, or None while any is still running."""
        found = [self.statuses.get(sume_id) for sume_id in sume_ids]
        return [job for job in found if job is not None] if all(job and job.done for job in found) else None

    def expected(self, kind: str) -> float | None:
        """Seconds from starting to wait to done that most jobs of this kind took in this run (the
        lower quartile of the recent ones), or None before one has finished."""
        seen = sorted(self.learned.get(kind, ()))
        return seen[len(seen) // 4] if seen else None

    async def next_round(self) -> None:
        """Wait until the poller has polled once more, or the run is interrupted."""
        self.tick.clear()
        waits = [asyncio.ensure_future(self.tick.wait()), asyncio.ensure_future(self.halt.wait())]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for waiting in waits:
            waiting.cancel()

    async def run(self) -> None:
        """Poll until closed; a failure is kept for the waiters rather than lost with this task."""
        try:
            await self._loop()
        except Exception as error:
            self.failure = error
        finally:
            self.closed = True
            self.tick.set()

    async def _loop(self) -> None:
        while not self.closed:
            pending = self._pending()
            if not pending:  # nothing to wait for: sleep until a job starts waiting, not a moment more
                self.wake.clear()
                await self.wake.wait()
                continue
            at = min(one.due for one in pending.values())
            if len(pending) >= LIST_FROM:  # rounds a floor apart, each answering for every job due by then
                at = max(at, self.last_round + min(one.floor for one in pending.values()))
            if at > self.clock():
                slept = await self._sleep_until(at)
                if slept is None:
                    continue  # woken by a job due sooner: plan again
                if slept:
                    return  # the run was interrupted
            now = max(self.clock(), at)  # a pause on another clock than ours must not make us spin
            await self._round(self._pending(), now)  # with the jobs that started waiting meanwhile
            self.last_round = now
            self.tick.set()

    async def _sleep_until(self, at: float) -> bool | None:
        """Sleep until `at`: True when interrupted, None when woken because a job is due sooner."""
        self.wake.clear()
        self.wake_at = at
        nap = asyncio.ensure_future(self.pause(at - self.clock()))
        woken = asyncio.ensure_future(self.wake.wait())
        try:
            await asyncio.wait((nap, woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.wake_at = math.inf
            for task in (nap, woken):
                task.cancel()
        return bool(nap.result()) if nap.done() and not nap.cancelled() else None

    async def _round(self, pending: dict[str, Watched], now: float) -> None:
        """Ask about the jobs due by `now` (a list page answers for the others too), then plan the
        next poll of each."""
        due = sorted(sume_id for sume_id, one in pending.items() if one.due <= now)
        listing = len(pending) >= LIST_FROM
        answered = await (self.poll_list(due, pending) if listing else self.poll_each(due))
        share = AGE_SHARE["list" if listing else "id"]
        for sume_id, one in pending.items():
            job = answered.get(sume_id)
            if job is not None and job.done:
                continue
            if job is not None:
                one.running_at = now
            if one.due <= now or (job is not None and one.polls):  # due, or late and asked again anyway
                one.polls += 1
                wait = min(max(one.floor, (now - one.since) * share), BACKOFF_CAP)
                one.due = now + self._jittered(wait, one.floor)

    async def poll_each(self, due: list[str]) -> dict[str, Job]:
        """GET each job; one job's failure is that job's, never the whole run's."""
        answered: dict[str, Job] = {}
        for sume_id in due:
            self.requests += 1
            try:
                item = await self.client.get(f"/jobs/{sume_id}")
                job = parse_job(item)
            except ApiError as error:
                if error.status != 404:
                    self._check_budget(error)
                    continue  # transient for this job: try again when it is next due
                item = {}
                job = Job(sume_id, ApiStatus.FAILED, error_code="not_found", error_message=UNKNOWN_JOB)
            answered[sume_id] = self.record(dataclasses.replace(job, id=sume_id), item)  # under the id asked
        return answered

    def _check_budget(self, error: Exception) -> None:
        """Reads that keep failing after the run's retries are spent mean an outage: stop the run."""
        if self.client.budget.remaining < 0:
            raise error

    async def poll_list(self, due: list[str], pending: Mapping[str, Watched]) -> dict[str, Job]:
        """Page through `GET /jobs` (newest first) until every due job was seen; every pending job
        a page shows is answered too."""
        unseen, answered, cursor = set(due), {}, None
        for _ in range(len(pending) // PAGE + 2):
            self.requests += 1
            try:
                page = await self.client.jobs(limit=PAGE, cursor=cursor)
            except ApiError as error:
                self._check_budget(error)
                break  # ask for the rest by id below
            for item in page.get("data") or ():
                if isinstance(item, Mapping) and (job := parse_job(item)).id in pending:
                    unseen.discard(job.id)
                    answered[job.id] = self.record(job, item)
            cursor = page.get("next_cursor")
            if not unseen or not page.get("has_more") or not cursor:
                break
        if unseen:  # older than the pages we read (or hidden from lists): ask for them by id
            answered |= await self.poll_each(sorted(unseen))
        return answered

    def record(self, job: Job, item: Mapping[str, Any]) -> Job:
        """Keep a job's status; a job seen done for the first time teaches its kind's expected time."""
        before = self.statuses.get(job.id)
        self.statuses[job.id] = job
        one = self.waiting.get(job.id)
        if job.status == ApiStatus.COMPLETED and not (before and before.done) and one is not None:
            # Completed jobs only: a failure may come early. What is learned is the time from starting
            # to wait to done. The API's own times give it exactly for a job just made (and free of
            # clock skew), but a job of an earlier run was made long before this run waited for it:
            # it was done within the time it was waited for. Without the API's times, the middle of
            # the span in which polling saw it finish.
            now, took = self.clock(), api_seconds(item)
            if took is None:
                took = ((one.running_at or one.since) + now) / 2 - one.since
            self.learned.setdefault(one.kind, deque(maxlen=LEARNED)).append(min(took, now - one.since))
        return job

    def _pending(self) -> dict[str, Watched]:
        """The jobs watched and not yet known to be done."""
        return {
            sume_id: one
            for sume_id, one in self.waiting.items()
            if not ((job := self.statuses.get(sume_id)) is not None and job.done)
        }

    def _jittered(self, seconds: float, floor: float) -> float:
        return seconds + self.rng.uniform(0.0, min(JITTER * seconds, floor / 2))


def api_seconds(item: Mapping[str, Any]) -> float | None:
    """How long the API says a finished job took, from its `created_at` to when it was done, if the
    job object carries both (the docs name no timestamps: sume-api.md §4, so either may be missing)."""
    start = _moment(item.get("created_at"))
    end = next((moment for name in FINISHED if (moment := _moment(item.get(name))) is not None), None)
    if start is None or end is None or not 0.0 <= end - start < 86_400 * 30:
        return None
    return end - start


def _moment(value: object) -> float | None:
    """An ISO 8601 timestamp (or Unix seconds) as Unix seconds; None for anything else."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.timestamp() if moment.tzinfo is not None else None
