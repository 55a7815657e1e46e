"""The execute stage: every planned job through create → poll → result → download, concurrently.

Each job follows the state machine of `states`, and the store records every arrow before it is
taken. A job that fails becomes a value in the store, never an exception that cancels its
siblings; an exception that is a bug of ours stops the run (every job recorded) and is reported as
an internal error (exit 70) once the run has wound down. The create path is `submit.Submitting`,
uploads and downloads are `transfer.Transfers`, polling is `poll.Poller`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sume_batch.api import SumeClient
from sume_batch.budget import BalanceWatch, Budget
from sume_batch.errors import ApiError, StoreWriteError
from sume_batch.expand import JobSpec
from sume_batch.poll import BACKOFF_CAP, FLOOR_S, Poller
from sume_batch.pricing import Price
from sume_batch.reconcile import CRASH_WINDOW_S, LOST_CREATE_GRACE_S, lost_at, reconcile
from sume_batch.records import StoredJob
from sume_batch.redact import Redactor
from sume_batch.registry import Registry
from sume_batch.responses import balance_of
from sume_batch.states import (
    HOLDS_PERMIT,
    IN_FLIGHT_CREATE,
    TO_DOWNLOAD,
    TO_POLL,
    TO_SUBMIT,
    ApiStatus,
    JobState,
    ended_in,
)
from sume_batch.store import RunStore
from sume_batch.submit import QUIET_DEFAULT_S, Submitting
from sume_batch.transfer import Transfers
from sume_batch.workspace import MissingMedia, live_request
from sume_batch.writes import LINGER_S

RECONCILE_PASSES = 2  # after the jobs: adopt or re-submit what this run's lost creates did (and waits)
PROOF_WAIT_MAX_S = 90.0  # the most a run's end waits to prove a lost create made no job; else the next run
LEFT_CHECK_S = 0.25  # a job waiting for a permit looks this often for jobs a dead runner left (`permit`)

Clock = Callable[[], float]
Sleep = Callable[[float], Any]
OnChange = Callable[[str, str, "str | None"], None]  # (job id, new state, why: its redacted message)


@dataclass(frozen=True)
class Settings:
    """What a run needs to know beyond the jobs themselves."""

    concurrency: int
    timeouts: Mapping[str, float]
    poll_intervals: Mapping[str, float]
    poll_floor: float = FLOOR_S  # see `poll`
    lost_create_grace: float = LOST_CREATE_GRACE_S  # see `reconcile`
    capacity: int | None = None  # the account's, from /credits: every runner's jobs within it (`permit`)


@dataclass
class Executor(Submitting):
    """Runs jobs against one client and one store; effects (clock, sleep, HTTP) are passed in."""

    client: SumeClient
    transfers: Transfers
    store: RunStore
    settings: Settings
    redactor: Redactor
    clock: Clock  # wall time, for what is stored and compared with the API's own times
    ticks: Clock = time.monotonic  # for intervals: a jump of the wall clock must not time a job out
    budget: Budget = field(default_factory=lambda: Budget(cap=None))
    balance: BalanceWatch = field(default_factory=lambda: BalanceWatch(start=None))
    registry: Registry | None = None
    sleep: Sleep = asyncio.sleep
    on_change: OnChange = lambda job_id, state, why: None
    rng: random.Random = field(default_factory=random.Random)
    stopped: str | None = None  # why no new job may be created (auth, credits, interrupt)
    crashed: BaseException | None = None  # a bug of ours stopped the run: it ends as an internal error
    brand_urls: tuple[str, ...] = ()
    live_urls: dict[str, str] = field(default_factory=dict)  # see `workspace.live_request`
    idempotency_honoured: bool = False  # the API is known to honour Idempotency-Key (v1 documents none)
    detach: bool = False  # `run --detach`: submit, record the ids, and leave the waiting to a later run
    halt: asyncio.Event = field(default_factory=asyncio.Event)  # set by `interrupt`: stop waiting too
    unrecorded: dict[str, tuple[str, ...]] = field(default_factory=dict)
    poller: Poller = field(init=False)
    creating: asyncio.Lock = field(default_factory=asyncio.Lock)
    probes: dict[str, asyncio.Lock] = field(default_factory=dict)
    requests: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # job key → request, to match echoes
    quiet_until: float = 0.0
    fastest: float = QUIET_DEFAULT_S
    capacity_now: int | None = None  # re-read with the balance; a shared store's permits follow it
    midway: set[str] = field(default_factory=set)  # keys `settle_lost` settled: taken again after the jobs
    outlasting: set[str] = field(default_factory=set)  # lost creates that may be generating (`settle_lost`)
    running: frozenset[str] = frozenset()  # the keys of the jobs `run` takes up now (a chain's stage)
    gave_way: bool = False  # a job waiting for a permit gave way to jobs a dead runner left (`permit`)
    left_seen: tuple[float, bool] = (-LEFT_CHECK_S, False)  # when `left_here` last looked, and what it saw

    @property
    def reserved(self) -> float:
        return self.budget.committed

    async def run(self, jobs: Sequence[tuple[JobSpec, Price]]) -> None:
        """Take every job as far as it can go; the store says where each one ended."""
        self.requests |= {spec.key: self._as_sent(spec.request) for spec, _ in jobs}  # a chain runs again
        self.running = frozenset(spec.key for spec, _ in jobs)
        if any("brand_reference_images" in spec.request for spec, _ in jobs):
            brand = await self.client.brand_current()
            self.brand_urls = tuple(
                str(image["reference_url"]) for image in brand.get("images", ()) if image.get("reference_url")
            )
        # A job holds one of `concurrency` slots while the API generates it (the account's capacity
        # counts jobs being generated, not jobs being downloaded), then one of as many download slots.
        generating, fetching = (asyncio.Semaphore(self.settings.concurrency) for _ in range(2))
        started = self.clock()
        self.poller = Poller(self.client, self.pause, halt=self.halt, clock=self.ticks,
                             floor=self.settings.poll_floor)  # fmt: skip
        self.take_rescued()
        self.settle_in_flight()
        polling, flushing = asyncio.ensure_future(self.poller.run()), asyncio.ensure_future(self.flushing())

        async def one(spec: JobSpec, price: Price) -> None:
            await self.advance(spec, price, started, generating=generating, fetching=fetching)

        try:
            await self.reconcile()  # creates whose answers earlier runs lost
            going = self.store.keys_in(self.going())  # the others are as far as they go
            await asyncio.gather(*(one(spec, price) for spec, price in jobs if spec.key in going))
            for _ in range(RECONCILE_PASSES):  # jobs another's `settle_lost` settled once theirs had ended
                again, self.midway = self.midway, set()
                await asyncio.gather(*(one(spec, price) for spec, price in jobs if spec.key in again))
            for _ in range(RECONCILE_PASSES):  # and those this run lost
                again = set(await self.reconcile(final=True))
                if not again:
                    break
                await asyncio.gather(*(one(spec, price) for spec, price in jobs if spec.key in again))
            while await self.more_here():  # a shared store: what a dead runner left, or one let go
                self.settle_in_flight()
                await self.reconcile(final=True)
                going = self.store.keys_in(self.going())
                await asyncio.gather(*(one(spec, price) for spec, price in jobs if spec.key in going))
        finally:
            self.poller.closed = True
            polling.cancel()
            flushing.cancel()
            self.flush()

    def _as_sent(self, request: Mapping[str, Any]) -> Mapping[str, Any]:
        """A request as its create sends it (workspace URLs as this run read them), to match echoes."""
        try:
            return live_request(request, self.live_urls)
        except MissingMedia:
            return request

    async def advance(
        self, spec: JobSpec, price: Price, started: float, *, generating: asyncio.Semaphore,
        fetching: asyncio.Semaphore,
    ) -> None:  # fmt: skip
        """One job from wherever the store says it stands to as far as it can go, holding a
        `generating` slot from its create until the API has done with it and a `fetching` slot while
        its outputs download. A store that cannot be written stops everything; any other exception
        is a bug of ours: the run stops (creates in flight finish, so their ids are kept) and ends as
        an internal error."""
        try:
            job, shared = self.store.job(spec.key), self.store.runner is not None
            if (
                job.state in TO_SUBMIT
                or (job.state in TO_POLL and not self.detach)
                or (job.state in IN_FLIGHT_CREATE and (shared or self.idempotency_honoured))
            ):
                async with generating:
                    if not self.store.claim(spec.key):  # another runner's (a shared store)
                        return
                    job = self.store.job(spec.key)  # as it stands now that this job's turn has come
                    if job.state == JobState.SUBMITTING:  # left in flight by a runner that died
                        self.settle_in_flight([job])
                        job = self.store.job(spec.key)
                    async with self.permit(spec.key) as granted:  # a dead runner's is taken over
                        if granted and job.state in TO_SUBMIT:
                            job = await self.submit(spec, price, job)
                        if granted and job.state == JobState.UNCERTAIN:
                            job = await self.settle_lost(spec, price, job)
                        if granted and job.state in TO_POLL and not self.detach:
                            job = await self.wait(job, started)
            if job.state in TO_DOWNLOAD and not self.halt.is_set():
                async with fetching:
                    if not self.store.claim(spec.key):
                        return
                    job = self.store.job(spec.key)
                    if job.state in TO_DOWNLOAD:
                        await self.download(job)
        except (StoreWriteError, sqlite3.Error) as error:  # nothing more can be recorded: stop everything
            self.interrupt(self.redactor.text(f"the run store could not be written: {error}"))
        except Exception as error:
            self.crashed = self.crashed or error
            self.interrupt(self.redactor.text(f"internal error: {type(error).__name__}: {error}"))

    async def reconcile(
        self, *, final: bool = False, midway: bool = False, looked: set[str] | None = None
    ) -> list[str]:
        """Settle what can be settled among uncertain creates (see `reconcile`): the keys of jobs
        adopted (to poll) or proven never made (to submit). At the end of a run (`final`) it waits,
        within the grace, for the moment a lost create's absence can be proven; so does a shared
        store's job whose create was lost, `midway`, while it holds its permit (see `advance`).
        `looked` gathers the keys of the uncertain creates the API's listing was searched for."""
        settled: dict[str, str] = {}
        if self.unrecorded:  # the store cannot be written: nothing can be settled now
            return []
        if self.idempotency_honoured and self.store.runner is not None:
            return []  # other runners' creates are on the wire meanwhile: lost ones are re-sent instead
        for _ in range(RECONCILE_PASSES):
            try:
                async with self.gate() as open_:  # no create of another runner's is in flight meanwhile
                    if not open_:
                        break
                    outcome = await reconcile(
                        self.client, self.store, foreign=self.foreign(), requests=self.requests,
                        now=self.clock(), grace=self.settings.lost_create_grace,
                        resent=self.idempotency_honoured,  # this run's are re-sent too (`resend_lost`)
                    )  # fmt: skip
            except ApiError as error:  # they stay uncertain; the next run tries again
                self.stop(f"could not reconcile uncertain creates: {self.redactor.text(str(error))}")
                break
            settled |= outcome.settled
            if looked is not None:
                looked |= outcome.looked
            wait = None if outcome.next_proof is None else outcome.next_proof - self.clock()
            if self.halt.is_set() or not final or wait is None or wait > PROOF_WAIT_MAX_S:
                break
            if self.client.on_wait is not None:
                self.client.on_wait("proving a lost create made no job", wait)
            if await self.pause(max(wait, 0.0)):
                break
        for key in settled:
            self.changed(self.store.job(key))
        self.remember(id_ for key in settled for id_ in self.store.job(key).sume_ids)
        if midway:
            self.midway |= set(settled)
        else:
            self.budget.committed = self.store.committed()  # no create is in flight here
        return list(settled)

    def foreign(self) -> set[str]:
        """Job ids no uncertain create of this store may adopt: those other campaigns' stores on this
        machine hold at this target, those kept for any store after a write failure, and those this
        run could not record."""
        mine = {one for ids in self.unrecorded.values() for one in ids}
        if self.store.runner is not None:  # a shared store: the other campaigns in its database too
            with contextlib.suppress(sqlite3.Error):
                mine |= self.store.runner.foreign()
        try:
            return mine | (
                self.registry.foreign() | self.registry.rescued_anywhere() if self.registry else set()
            )
        except sqlite3.Error:
            return mine

    def remember(self, sume_ids: Iterable[str]) -> None:
        """Enter ids in the machine's registry (after the store has them); best effort."""
        if self.registry is not None:
            with contextlib.suppress(sqlite3.Error):
                self.registry.add(sume_ids)

    def take_rescued(self) -> None:
        """Ids an earlier run could not write to this store (a full disk) go where they belong."""
        if self.registry is None:
            return
        taken = []
        for key, ids in self.registry.rescued().items():
            job = self.store.jobs([key]).get(key)
            if job is not None and not job.sume_ids and self.store.claim(key):
                note = "job ids recovered from the registry: the store could not be written when they came"
                self.changed(self.store.adopt(key, ids, at=job.intent_at, note=note))
                self.remember(ids)
                taken.append(key)
        self.registry.forget_rescued(taken)  # ids for a job that has others stay kept, for a person

    def settle_in_flight(self, jobs: Iterable[StoredJob] | None = None) -> None:
        """Creates a crashed run left in flight may exist: report them uncertain, never resend them
        blindly (where the API honours Idempotency-Key, `settle_lost` sends them under their keys).

        The dead run sent nothing after such a create (creates go one at a time), and it was dead by
        the time this run took the lock (or, on a shared store, claimed the job once the dead runner's
        lease had ended): so the create's window ends now, or CRASH_WINDOW_S after its intent,
        whichever is sooner (a later job is no job of a create that old). A create lost before (a
        re-send under its key keeps its first intent, sent any time since) has its window end now."""
        note = "the previous run stopped while this job's create was in flight; it may exist"
        now, longest = self.clock(), max(CRASH_WINDOW_S, self.client.bounds.request_seconds + 30)
        found = self.store.jobs_in({JobState.SUBMITTING}) if jobs is None else jobs
        for job in self.mine(found):
            resent = job.settled_at is not None
            settled = (now if resent else min(now, job.intent_at + longest)) if job.intent_at else None
            self.changed(self.store.lose(job.key, why=note, request_id=job.request_id, settled_at=settled))
            self.keep_quiet()  # its window may end now: this run's first create must fall well after it

    async def settle_lost(self, spec: JobSpec, price: Price, job: StoredJob) -> StoredJob:
        """A job whose create's answer was lost, settled while it holds its generating slot (and, on
        a shared store, its permit: it may be generating, and the account's other runners must not
        take its place). Where the API honours Idempotency-Key it is sent again with its own key
        (`resend_lost`): the others' creates are on the wire meanwhile (no create lock), so no time
        window would be its alone. Else, on a shared store, it is reconciled once its absence can be
        proven, then polled if adopted, or submitted again if it was never made; a run of its own
        store reconciles its lost creates once the others are done (`run`).

        Left uncertain, it keeps its permit (`outlasting`) while a job it may have made is unfinished
        (`outlast`), and whenever the API's listing could not be searched for it (the API failed,
        or the run was stopped): then nothing says it is not generating, and the permit ends as a
        dead runner's does, when the job is settled or the permit is older than the longest job."""
        shared = self.store.runner is not None
        if shared:
            self.outlasting.add(spec.key)
        if self.idempotency_honoured:
            return await self.resend_lost(spec, price, job)
        if not shared:
            return job
        looked: set[str] = set()
        await self.reconcile(final=True, midway=True, looked=looked)
        job = self.store.job(spec.key)
        if job.state == JobState.UNCERTAIN and spec.key in looked:
            await self.outlast(job)
        return await self.submit(spec, price, job) if job.state in TO_SUBMIT else job

    async def resend_lost(self, spec: JobSpec, price: Price, job: StoredJob) -> StoredJob:
        """Where the API honours Idempotency-Key, a lost create is settled by sending it again under
        its own key (`Submitting.resend`) until an answer comes, never by time (`reconcile`): a
        resend cannot cost. The first goes out at once, each later one after the kind's poll
        interval, doubled after each lost answer (at most BACKOFF_CAP), for at most the kind's
        timeout from this run's first; then, or once the run is stopped, or where nothing can be
        sent (an upload's body cannot be reproduced), it stays uncertain for the next run."""
        deadline = self.ticks() + self.settings.timeouts[job.kind]
        wait = self.settings.poll_intervals[job.kind]
        while job.state == JobState.UNCERTAIN and self.ticks() < deadline:
            resent = await self.resend(spec, price, job)
            if resent is None:
                break
            job = resent
            if job.state == JobState.UNCERTAIN:
                if await self.pause(min(wait, max(deadline - self.ticks(), 0.0))):
                    break
                wait = min(wait * 2, BACKOFF_CAP)
        return job

    async def outlast(self, job: StoredJob) -> None:
        """Hold a lost create's permit while a job it may have made is unfinished at the API.

        Its `candidates` are the jobs that fit its time window when more than one did (another lost
        create's, another client's): it cannot be adopted, but one of them is its own, generating
        or queued behind the account's others, so its place is not the next job's until they are
        all done. Each is read at the kind's poll interval, for at most the kind's timeout after the
        create's answer was lost; a run stopped meanwhile leaves the permit held (see `permit`)."""
        deadline = lost_at(job) + self.settings.timeouts[job.kind]
        left, interval = set(job.candidates), self.settings.poll_intervals[job.kind]
        while left and self.clock() < deadline:
            for sume_id in sorted(left):
                try:
                    if (await self.client.job(sume_id)).done:
                        left.discard(sume_id)
                except ApiError as error:  # unknown to the API: not generating; else read it again
                    if error.status == 404:
                        left.discard(sume_id)
            if left and await self.pause(min(interval, max(deadline - self.clock(), 0.0))):
                return
        self.outlasting.discard(job.key)

    def going(self) -> frozenset[str]:
        """The states of the jobs a run takes up (and, on a shared store, takes over from a dead
        runner): on a shared store, lost creates too, each settled holding its capacity permit
        (`settle_lost`), and so where the API honours Idempotency-Key, each re-sent under its
        key (`resend_lost`); with `--detach`, none waiting for the API."""
        lost = IN_FLIGHT_CREATE if self.store.runner is not None or self.idempotency_honoured else frozenset()
        return TO_SUBMIT | (frozenset() if self.detach else TO_POLL) | TO_DOWNLOAD | lost

    def mine(self, jobs: Iterable[StoredJob]) -> list[StoredJob]:
        """Of these jobs, those this process may work now, as they stand (`RunStore.claim`)."""
        return [self.store.job(job.key) for job in jobs if self.store.claim(job.key)]

    @contextlib.asynccontextmanager
    async def permit(self, key: str) -> AsyncIterator[bool]:
        """One of the account's generation permits, on a shared store (`shared.Runner.permit`):
        every runner's jobs together stay within the account's capacity. False: stopped first."""
        runner = self.store.runner
        if runner is None:
            yield True
            return
        capacity = self.capacity_now or self.settings.capacity or self.settings.concurrency
        longest = max(self.settings.timeouts.values(), default=0.0) + CRASH_WINDOW_S

        def generating() -> bool:
            state = self.store.job(key).state
            return state in HOLDS_PERMIT or (state == JobState.UNCERTAIN and key in self.outlasting)

        async def pause(seconds: float) -> bool:
            if self.left_here():  # their permits may be the ones it waits for: take them over first
                self.gave_way = True
                return True
            return await self.pause(seconds)

        async with runner.permit(key, capacity, pause, generating=generating, longest=longest) as granted:
            yield granted

    def left_here(self) -> bool:
        """Whether this run has jobs a dead runner left (its lease ended) for this one to take over.

        A job waiting for a permit gives way to them (`permit`): the permits they hold are taken
        over by whoever claims them, so waiting for those permits to free up would wait for the
        longest job, and hold a `generating` slot the takeover needs. The run takes them up, then
        the jobs that gave way (`more_here`). Looked up at most every LEFT_CHECK_S."""
        runner, (at, left) = self.store.runner, self.left_seen
        if runner is None or self.ticks() - at < LEFT_CHECK_S:
            return left
        with self.store.writes.transaction() as db:
            left = runner.unfinished_elsewhere(db, self.running, self.going()).left > 0
        self.left_seen = (self.ticks(), left)
        return left

    @contextlib.asynccontextmanager
    async def gate(self) -> AsyncIterator[bool]:
        """On a shared store: unless the API honours Idempotency-Key, the account's create lock, so one
        create of any runner is on the wire at a time (see `submit`); and the account's create rate
        limit as the last answer any runner had said it (`RateLimit-*`). False: stopped first."""
        runner = self.store.runner
        if runner is None:
            yield True
            return
        async with runner.creating(self.pause) if not self.idempotency_honoured else _open() as held:
            ready = held
            if held and (wait := runner.rate_wait()) > 0:  # another runner saw the account's limit reached
                wait = min(wait, self.client.bounds.wait_seconds)
                if self.client.on_wait is not None:
                    self.client.on_wait("the account's create rate limit (seen by another runner)", wait)
                ready = not await self.pause(wait)
            yield ready
            bucket = self.client.pacer.buckets.get("create")
            if ready and bucket is not None and bucket.remaining is not None:
                with contextlib.suppress(sqlite3.Error):
                    runner.rate_seen(bucket.remaining, max(0.0, bucket.reset_at - self.client.pacer.clock()))

    @contextlib.asynccontextmanager
    async def probing(self, kind: str) -> AsyncIterator[bool]:
        """On a shared store, the right to send the kind's first job at an unconfirmed price: one runner
        at a time, and none once another has learned the price (then this budget learns it too), so
        a wrong estimate overspends by one job per kind for all runners together. False: stopped."""
        runner = self.store.runner
        if runner is None:
            yield True
            return
        async with runner.probing(kind, self.pause) as alone:
            for job in self.store.priciest():  # what the other runners have learned meanwhile
                if job.kind == kind and job.required is not None:
                    self.budget.learn(kind, job.estimate, job.required)
            yield alone

    async def more_here(self) -> bool:
        """On a shared store, once this runner has done what it could: whether it has more to do —
        jobs that gave way to a dead runner's (`permit`), or jobs of this run that a dead runner left
        or that no runner holds (one that ended let them go undone). Meanwhile it waits while live
        runners work the rest, at most `others_wait` seconds for runners that do not finish."""
        runner = self.store.runner
        if runner is None or self.halt.is_set():
            return False
        if self.gave_way:
            self.gave_way = False
            return True
        deadline = self.ticks() + self.others_wait()
        runner.idle(True)
        while True:
            with self.store.writes.transaction() as db:
                found = runner.unfinished_elsewhere(db, self.running, self.going())
            if found.left or found.free:
                runner.idle(False)
                return True
            if not found.held or self.ticks() >= deadline:
                return False
            if self.client.on_wait is not None:
                self.client.on_wait(f"{found.held} job(s) other runners are working", runner.lease / 3)
            if await self.pause(min(runner.lease / 3, 1.0)):
                return False

    def others_wait(self) -> float:
        """How long a runner waits for live runners to finish the rest: as long as any job may take,
        and the lease of the slowest to notice a death three times over."""
        lease = self.store.runner.lease if self.store.runner else 0.0
        return max(self.settings.timeouts.values(), default=0.0) + 3 * lease

    def stop(self, why: str) -> None:
        self.stopped = self.stopped or why

    def interrupt(self, why: str) -> None:
        """Stop creating and stop waiting; creates already in flight finish so their ids are kept.
        What the store has queued is written now: a second signal may not leave time for it."""
        self.stop(why)
        self.halt.set()
        self.flush()

    def flush(self) -> None:
        """Write the store's queued moves; a store that cannot be written stops the run (its error
        comes again at the next write or read, which ends the run as a store failure)."""
        try:
            self.store.flush()
        except sqlite3.Error as error:
            self.stop(self.redactor.text(f"the run store could not be written: {error}"))
            self.halt.set()

    async def flushing(self) -> None:
        """Now and then, write what the store has queued while nothing else writes (a long download,
        every job waiting): a kill then loses at most a moment's moves."""
        while True:
            await self.sleep(LINGER_S)
            if self.store.writes.due():
                self.flush()

    async def pause(self, seconds: float) -> bool:
        """Sleep, unless interrupted first; True when interrupted."""
        if self.halt.is_set():
            return True
        pause = asyncio.ensure_future(self.sleep(seconds))
        halted = asyncio.ensure_future(self.halt.wait())
        await asyncio.wait((pause, halted), return_when=asyncio.FIRST_COMPLETED)
        for task in (pause, halted):
            task.cancel()
        return self.halt.is_set()

    def changed(self, job: StoredJob) -> StoredJob:
        """A job as a store write returned it (no read), announced (progress, the run's log)."""
        self.on_change(job.id, job.state, job.error_message)
        return job

    async def wait(self, job: StoredJob, started: float) -> StoredJob:
        """Wait (on the shared poller) until all our Sume jobs are terminal or the timeout passes;
        the time already spent is read once from the wall clock, the rest counted monotonically."""
        spent = max(0.0, self.clock() - max(job.submitted_at or started, started))
        deadline = self.ticks() + self.settings.timeouts[job.kind] - spent
        if job.state == JobState.TIMED_OUT:
            job = self.changed(self.store.resume(job.key))
        self.poller.watch(job.sume_ids, self.settings.poll_intervals[job.kind], kind=job.kind)
        try:
            while (final := self.poller.done(job.sume_ids)) is None:
                if self.poller.failure is not None:
                    raise self.poller.failure
                if self.ticks() >= deadline:
                    return self.changed(self.store.time_out(job.key))
                if self.halt.is_set() or self.poller.closed:
                    return job  # interrupted: still submitted, so the next run polls it again
                await self.poller.next_round()
        finally:
            self.poller.forget(job.sume_ids)
        failures = [state for state in final if state.status != ApiStatus.COMPLETED]
        if not failures:
            done = self.store.finish(job.key, JobState.COMPLETED, sume_status=ApiStatus.COMPLETED)
            return self.changed(done)
        failure = failures[0]
        message = self.redactor.text(failure.error_message) if failure.error_message else failure.status
        state = ended_in(failure.status)
        if len(failures) < len(final):  # some of a Face Swap's avatars made it: keep what was paid for
            message = f"{len(failures)} of {len(final)} jobs {failure.status}: {message}"
            state = JobState.COMPLETED
        ended = self.store.finish(job.key, state, sume_status=failure.status, code=failure.error_code,
                                  why=message, failed_id=failure.id)  # fmt: skip
        return self.changed(ended)

    async def download(self, job: StoredJob) -> None:
        """Fetch each result afresh (links are signed and expire) and save its outputs; a failed
        download is this job's, not the run's: it stays completed/fetched and the next run tries."""
        try:
            results = await self.transfers.results(job)
            if job.state == JobState.COMPLETED:
                job = self.changed(self.store.fetched(job.key))
            await self.transfers.save_outputs(job, results)
        except (ApiError, OSError) as error:
            self.changed(self.store.annotate(job.key, why=self.redactor.text(f"download failed: {error}")))
            return
        final = JobState.DOWNLOADED
        if job.error_code and job.sume_status and job.sume_status != ApiStatus.COMPLETED:
            final = ended_in(ApiStatus(job.sume_status))  # a Face Swap partly made: how its others ended
        self.changed(self.store.downloaded(job.key, final))


@contextlib.asynccontextmanager
async def _open() -> AsyncIterator[bool]:
    yield True


async def balance_after(client: SumeClient, before: float | None, *, halt: asyncio.Event) -> float | None:
    """The balance at the end, for the report's balance change; unknown if it cannot be read quickly
    or the run is being stopped."""
    if before is None or halt.is_set():
        return None
    reading, stopping = asyncio.ensure_future(client.credits()), asyncio.ensure_future(halt.wait())
    try:
        done, _ = await asyncio.wait((reading, stopping), timeout=15, return_when=asyncio.FIRST_COMPLETED)
        return balance_of(reading.result()) if reading in done and not reading.exception() else None
    finally:
        for task in (reading, stopping):
            task.cancel()
