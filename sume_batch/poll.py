"""How a run learns job statuses: one poller for all the jobs in flight (part of the execute stage).

With many jobs waiting, one `GET /jobs` page (newest first, up to 100 jobs) answers for all of
them, so polling costs about one request per interval however many jobs run; with one or two
waiting it asks for each by id and backs off. Jobs wait on the poller, never poll themselves.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sume_batch.api import SumeClient
from sume_batch.errors import ApiError
from sume_batch.responses import Job, parse_job
from sume_batch.states import ApiStatus

UNKNOWN_JOB = "the API does not know this job (purged, or made by another workspace)"
LIST_FROM = 3  # waiting jobs from which one list request beats one request per job
PAGE = 100
BACKOFF, BACKOFF_CAP = 1.5, 60.0


@dataclass
class Poller:
    """Tracks the statuses of the Sume jobs the run waits for; `run` polls until `close`."""

    client: SumeClient
    pause: Callable[[float], Any]  # an interruptible sleep; returns True when interrupted
    halt: asyncio.Event = field(default_factory=asyncio.Event)  # the run's interrupt
    waiting: dict[str, float] = field(default_factory=dict)  # Sume job id → its kind's poll interval
    statuses: dict[str, Job] = field(default_factory=dict)
    tick: asyncio.Event = field(default_factory=asyncio.Event)  # set after every round of polling
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # set when a job starts waiting
    requests: int = 0
    closed: bool = False
    rng: random.Random = field(default_factory=random.Random)  # jitter, so many runs do not poll in step
    failure: BaseException | None = None  # polling gave up (retries exhausted): every waiter sees it

    def watch(self, sume_ids: Iterable[str], interval: float) -> None:
        for sume_id in sume_ids:
            self.waiting.setdefault(sume_id, interval)
        self.wake.set()

    def forget(self, sume_ids: Iterable[str]) -> None:
        for sume_id in sume_ids:
            self.waiting.pop(sume_id, None)
            self.statuses.pop(sume_id, None)

    def done(self, sume_ids: Iterable[str]) -> list[Job] | None:
        """The final states of all these jobs, or None while any is still running."""
        found = [self.statuses.get(sume_id) for sume_id in sume_ids]
        return [job for job in found if job is not None] if all(job and job.done for job in found) else None

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
        backoff = 1.0
        while not self.closed:
            if not self.waiting:
                self.wake.clear()
                await self.wake.wait()
                continue
            interval = min(self.waiting.values())
            pending = [
                sume_id
                for sume_id in self.waiting
                if not (sume_id in self.statuses and self.statuses[sume_id].done)
            ]
            if len(pending) >= LIST_FROM:
                backoff = 1.0  # one request answers for all of them: keep the interval short
            if await self.pause(min(interval * backoff, BACKOFF_CAP) * self.rng.uniform(0.9, 1.1)):
                return
            changed = await (
                self.poll_list(pending) if len(pending) >= LIST_FROM else self.poll_each(pending)
            )
            backoff = 1.0 if changed else backoff * BACKOFF
            self.tick.set()

    async def poll_each(self, pending: list[str]) -> bool:
        """GET each job; one job's failure is that job's, never the whole run's."""
        changed = False
        for sume_id in pending:
            self.requests += 1
            try:
                job = await self.client.job(sume_id)
            except ApiError as error:
                if error.status != 404:
                    self._check_budget(error)
                    continue  # transient for this job: try again next round
                job = Job(sume_id, ApiStatus.FAILED, error_code="not_found", error_message=UNKNOWN_JOB)
            changed |= self.record(dataclasses.replace(job, id=sume_id))  # filed under the id we asked for
        return changed

    def _check_budget(self, error: Exception) -> None:
        """Reads that keep failing after the run's retries are spent mean an outage: stop the run."""
        if self.client.budget.remaining < 0:
            raise error

    async def poll_list(self, pending: list[str]) -> bool:
        """Page through `GET /jobs` (newest first) until every pending job was seen."""
        unseen, changed, cursor = set(pending), False, None
        for _ in range(len(pending) // PAGE + 2):
            self.requests += 1
            try:
                page = await self.client.jobs(limit=PAGE, cursor=cursor)
            except ApiError as error:
                self._check_budget(error)
                break  # ask for the rest by id below
            for item in page.get("data") or ():
                if not isinstance(item, Mapping):
                    continue
                job = parse_job(item)
                if job.id in unseen:
                    unseen.discard(job.id)
                    changed |= self.record(job)
            cursor = page.get("next_cursor")
            if not unseen or not page.get("has_more") or not cursor:
                break
        if unseen:  # older than the pages we read (or hidden from lists): ask for them by id
            changed |= await self.poll_each(sorted(unseen))
        return changed

    def record(self, job: Job) -> bool:
        before = self.statuses.get(job.id)
        self.statuses[job.id] = job
        return before is None or before.status != job.status
