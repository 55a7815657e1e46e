"""The execute stage: every planned job through create → poll → result → download, concurrently.

Each job follows the state machine of DESIGN.md and the store records every arrow before it is
taken: the intent (and an Idempotency-Key) before the create, the job id before anything else.
A job that fails becomes a value in the store, never an exception that cancels its siblings.
Credits are reserved before each create (see `budget`), so no create can cross the budget at any
concurrency, and the price the API states settles each reservation.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import mimetypes
import random
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from sume_batch.api import SumeClient, upload_bytes
from sume_batch.budget import BalanceWatch, Budget
from sume_batch.errors import (
    ApiError,
    AuthError,
    InsufficientCreditsError,
    StoreWriteError,
    UncertainCreateError,
)
from sume_batch.expand import JobSpec
from sume_batch.kinds import request_body
from sume_batch.manifest import ConfinementError, confine_file, read_regular
from sume_batch.poll import Poller
from sume_batch.pricing import Price
from sume_batch.reconcile import CRASH_WINDOW_S, LOST_CREATE_GRACE_S, SLACK_S, reconcile
from sume_batch.redact import Redactor
from sume_batch.registry import Registry
from sume_batch.responses import Created, Media, balance_of, find_media, validation_detail
from sume_batch.store import RunStore, StoredJob

DOWNLOAD_ATTEMPTS = 3
FINAL_REFUSALS = frozenset({400, 404, 409, 422})  # the request itself was refused: resending cannot help
DATA_KINDS = frozenset({"reference_analysis", "asset_upload"})  # their result JSON is an output too
SECONDARY_ROLES = ("thumbnail", "preview", "poster")  # downloaded only when a result has nothing else
RECONCILE_PASSES = 2  # after the jobs: adopt or re-submit what this run's lost creates did (and waits)
MAX_UPLOAD_BYTES = 2 << 30  # 2 GiB: a local file a job uploads is read whole, so it is bounded
QUIET_MIN_S = 0.02  # beyond the window's own slack, after a lost answer (see `_create`)
QUIET_DEFAULT_S = 0.25  # the window's uncertainty until a create of this run has been answered
PROOF_WAIT_MAX_S = 90.0  # the most a run's end waits to prove a lost create made nothing; else the next run

Clock = Callable[[], float]
Sleep = Callable[[float], Any]
OnChange = Callable[[str, str], None]  # (job id, new state)


class NotSentError(Exception):
    """A create was withheld before any byte left (the run was stopped)."""


class OverBudgetError(Exception):
    """A create was withheld: at the price the API has since stated, it would cross the cap."""


@dataclass(frozen=True)
class Settings:
    """What a run needs to know beyond the jobs themselves."""

    folder: Path  # the manifest's folder: local upload files are relative to it
    downloads: Path
    concurrency: int
    timeouts: Mapping[str, float]
    poll_intervals: Mapping[str, float]
    lost_create_grace: float = LOST_CREATE_GRACE_S  # see `reconcile`
    roots: tuple[Path, ...] = ()  # where local files may be (the manifest's folder and allowed roots)


@dataclass
class Executor:
    """Runs jobs against one client and one store; effects (clock, sleep, HTTP) are passed in.

    Without an API known to honour Idempotency-Key, creates go out one at a time: a create whose
    answer is lost then shares its time window with no other create of ours, which is what lets
    `reconcile` find the job it made (or prove it made none)."""

    client: SumeClient
    storage: httpx.AsyncClient  # carries no credentials: for presigned uploads and media downloads
    store: RunStore
    settings: Settings
    redactor: Redactor
    clock: Clock  # wall time, for what is stored and compared with the API's own times
    ticks: Clock = time.monotonic  # for intervals: a jump of the wall clock must not time a job out
    budget: Budget = field(default_factory=lambda: Budget(cap=None))
    balance: BalanceWatch = field(default_factory=lambda: BalanceWatch(start=None))
    registry: Registry | None = None
    sleep: Sleep = asyncio.sleep
    on_change: OnChange = lambda job_id, state: None
    rng: random.Random = field(default_factory=random.Random)
    stopped: str | None = None  # why no new job may be created (auth, credits, interrupt)
    brand_urls: tuple[str, ...] = ()
    idempotency_honoured: bool = False  # the API is known to honour Idempotency-Key (v1 documents none)
    same_key: set[str] = field(default_factory=set)  # uncertain jobs re-sent with their lost create's key
    halt: asyncio.Event = field(default_factory=asyncio.Event)  # set by `interrupt`: stop waiting too
    unrecorded: dict[str, tuple[str, ...]] = field(default_factory=dict)  # job id → ids the store lacks
    poller: Poller = field(init=False)
    creating: asyncio.Lock = field(default_factory=asyncio.Lock)  # one create at a time (see above)
    probes: dict[str, asyncio.Lock] = field(default_factory=dict)  # kind → its price-confirming create
    requests: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # job key → request, to match echoes
    quiet_until: float = 0.0  # no create before this: the last one's answer was lost (see `_create`)
    fastest: float = QUIET_DEFAULT_S  # the quickest answered create of this run, intent to answer

    @property
    def reserved(self) -> float:
        return self.budget.committed

    async def run(self, jobs: Sequence[tuple[JobSpec, Price]]) -> None:
        """Take every job as far as it can go; the store says where each one ended."""
        self.requests = {spec.key: spec.request for spec, _ in jobs}
        if any("brand_reference_images" in spec.request for spec, _ in jobs):
            brand = await self.client.brand_current()
            self.brand_urls = tuple(
                str(image["reference_url"]) for image in brand.get("images", ()) if image.get("reference_url")
            )
        slots = asyncio.Semaphore(self.settings.concurrency)
        started = self.clock()
        self.poller = Poller(self.client, self._pause, halt=self.halt)
        self.take_rescued()
        self.settle_in_flight()
        polling = asyncio.ensure_future(self.poller.run())

        async def one(spec: JobSpec, price: Price) -> None:
            async with slots:
                await self.advance(spec, price, started)

        try:
            await self.reconcile()  # creates whose answers earlier runs lost
            self.resend_uncertain(jobs)
            self.budget.committed = self.store.committed()  # a re-sent create reserves afresh
            await asyncio.gather(*(one(spec, price) for spec, price in jobs))
            for _ in range(RECONCILE_PASSES):  # and those this run lost
                again = set(await self.reconcile(final=True))
                if not again:
                    break
                await asyncio.gather(*(one(spec, price) for spec, price in jobs if spec.key in again))
        finally:
            self.poller.closed = True
            polling.cancel()

    async def advance(self, spec: JobSpec, price: Price, started: float) -> None:
        """One job from wherever the store says it stands to as far as it can go."""
        try:
            job = self.store.job(spec.key)
            if job.state in ("planned", "reserved", "skipped"):
                job = await self.submit(spec, price, job)
            if job.state in ("submitted", "timed_out"):
                job = await self.wait(job, started)
            if job.state in ("completed", "fetched") and not self.halt.is_set():
                try:
                    await self.download(job)
                except (httpx.HTTPError, ApiError, OSError) as error:  # this job's, not the run's
                    current = self.store.job(spec.key)  # stays completed/fetched: the next run downloads it
                    message = self.redactor.text(f"download failed: {error}")
                    self._move(current, current.state, error_message=message)
        except (StoreWriteError, sqlite3.Error) as error:  # nothing more can be recorded: stop everything
            self.interrupt(self.redactor.text(f"the run store could not be written: {error}"))
        except Exception as error:
            message = self.redactor.text(f"{type(error).__name__}: {error}")
            self.store.move(spec.key, self.store.job(spec.key).state, note=f"stopped: {message}")
            self.stop(f"could not continue: {message}")

    async def reconcile(self, *, final: bool = False) -> list[str]:
        """Settle what can be settled among uncertain creates (see `reconcile`): the keys of jobs
        adopted (to poll) or proven never made (to submit). At the end of a run (`final`) it waits,
        within the grace, for the moment a lost create's absence can be proven."""
        settled: dict[str, str] = {}
        if self.unrecorded:  # the store cannot be written: nothing can be settled now
            return []
        for _ in range(RECONCILE_PASSES):
            try:
                outcome = await reconcile(
                    self.client, self.store, foreign=self.foreign(), requests=self.requests,
                    now=self.clock(), grace=self.settings.lost_create_grace,
                )  # fmt: skip
            except (ApiError, httpx.HTTPError) as error:  # they stay uncertain; the next run tries again
                self.stop(f"could not reconcile uncertain creates: {self.redactor.text(str(error))}")
                break
            settled |= outcome.settled
            wait = None if outcome.next_proof is None else outcome.next_proof - self.clock()
            if self.halt.is_set() or not final or wait is None or wait > PROOF_WAIT_MAX_S:
                break
            if self.client.on_wait is not None:
                self.client.on_wait("proving a lost create made no job", wait)
            if await self._pause(max(wait, 0.0)):
                break
        for key, state in settled.items():
            self.on_change(self.store.job(key).id, state)
        self.remember(id_ for key in settled for id_ in self.store.job(key).sume_ids)
        self.budget.committed = self.store.committed()  # no create is in flight here
        return list(settled)

    def foreign(self) -> set[str]:
        """Job ids no uncertain create of this store may adopt: those other campaigns' stores on this
        machine hold at this target, those kept for any store after a write failure, and those this
        run could not record."""
        mine = {one for ids in self.unrecorded.values() for one in ids}
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
            if job is not None and not job.sume_ids:
                note = "job ids recovered from the registry: the store could not be written when they came"
                self._move(job, "submitted", durable=True, sume_ids=ids, submitted_at=job.intent_at,
                           candidates=[], error_message=None, note=note)  # fmt: skip
                self.remember(ids)
                taken.append(key)
        self.registry.forget_rescued(taken)  # ids for a job that has others stay kept, for a person

    def resend_uncertain(self, jobs: Sequence[tuple[JobSpec, Price]]) -> None:
        """Where the API honours Idempotency-Key, send a lost create again with its own key: the API
        answers with the job it made, or makes it now. Not for uploads: their bodies cannot be
        reproduced byte for byte (new upload references), and a changed body under one key is refused."""
        if not self.idempotency_honoured:
            return
        stored = self.store.jobs(spec.key for spec, _ in jobs)
        for spec, _ in jobs:
            job = stored[spec.key]
            if job.state == "uncertain" and job.attempts and spec.kind.upload_field is None:
                self.same_key.add(spec.key)
                self._move(
                    job, "planned", note="re-sent with the same Idempotency-Key (--idempotency-honoured)"
                )

    def settle_in_flight(self) -> None:
        """Creates a crashed run left in flight may exist: report them uncertain, never resend.

        The dead run sent nothing after such a create (creates go one at a time), and it was dead by
        the time this run took the lock: so the create's window ends now, or CRASH_WINDOW_S after its
        intent, whichever is sooner (a later job is no job of a create that old)."""
        note = "the previous run stopped while this job's create was in flight; it may exist"
        now, longest = self.clock(), max(CRASH_WINDOW_S, self.client.bounds.request_seconds + 30)
        for job in self.store.jobs().values():
            if job.state == "submitting":
                settled = min(now, job.intent_at + longest) if job.intent_at else None
                self._move(job, "uncertain", error_message=note, settled_at=settled)

    def stop(self, why: str) -> None:
        self.stopped = self.stopped or why

    def interrupt(self, why: str) -> None:
        """Stop creating and stop waiting; creates already in flight finish so their ids are kept."""
        self.stop(why)
        self.halt.set()

    async def _pause(self, seconds: float) -> bool:
        """Sleep, unless interrupted first; True when interrupted."""
        if self.halt.is_set():
            return True
        pause = asyncio.ensure_future(self.sleep(seconds))
        halted = asyncio.ensure_future(self.halt.wait())
        await asyncio.wait((pause, halted), return_when=asyncio.FIRST_COMPLETED)
        for task in (pause, halted):
            task.cancel()
        return self.halt.is_set()

    def _move(self, job: StoredJob, state: str, *, durable: bool = False, **fields: Any) -> StoredJob:
        self.store.move(job.key, state, durable=durable, **fields)
        self.on_change(job.id, state)
        return self.store.job(job.key)

    async def submit(self, spec: JobSpec, price: Price, job: StoredJob) -> StoredJob:
        """Reserve, create and record one job. The first job of a kind whose price the API has not
        confirmed goes alone: the others of its kind wait until its price is known."""
        kind = spec.kind.name
        while kind not in self.budget.confirmed and not self.stopped:
            probe = self.probes.setdefault(kind, asyncio.Lock())
            if probe.locked():
                async with probe:  # wait for the kind's price, then look again
                    continue
            async with probe:
                return await self._submit(spec, price, job, probe=True)
        return await self._submit(spec, price, job, probe=False)

    async def _submit(self, spec: JobSpec, price: Price, job: StoredJob, *, probe: bool) -> StoredJob:
        if self.stopped:
            return job
        cost = self.budget.cost(spec.kind.name, price.credits)
        if cost is None or not self.budget.admits(cost):
            why = "price unknown (--assume-price)" if cost is None else f"{self.budget.committed + cost:g}"
            return self._move(job, "skipped", note=f"budget: {why} > {self.budget.cap}")
        self.budget.reserve(cost)  # before any await: no other job can take the same credits
        job = self._move(job, "reserved", reserved=cost)
        attempt = job.attempts if spec.key in self.same_key else job.attempts + 1

        def about_to_send() -> None:  # the HTTP slot is held: the bytes go out right after this
            if self.stopped:
                raise NotSentError(self.stopped)
            resent = spec.key in self.same_key  # a re-send keeps its first create's window
            intent = job.intent_at if resent else self.clock()
            self._move(job, "submitting", durable=True, attempts=attempt, intent_at=intent)

        try:
            upload = await self.upload(spec)
            body = request_body(spec.kind, spec.request, brand_urls=self.brand_urls, upload=upload)
            async with self.creating if not self.idempotency_honoured else contextlib.nullcontext():
                cost += self._reprice(spec, price, cost)  # the kind's price may have been learned meanwhile
                created = await self._create(spec, body, attempt, about_to_send)
        except (OverBudgetError, NotSentError, ApiError, httpx.HTTPError, OSError) as error:
            return self._failed(spec, job, cost, error)
        return await self._created(spec, price, job, created, cost, probe=probe)

    def _failed(self, spec: JobSpec, job: StoredJob, cost: float, error: Exception) -> StoredJob:
        """Where a create that did not answer with ids leaves its job and its reservation."""
        resent = spec.key in self.same_key and not isinstance(error, NotSentError | OverBudgetError)
        if isinstance(error, UncertainCreateError) or resent:
            # Sent, outcome unknown: the reservation stays, it may have been charged. A refusal of a
            # re-sent key (409 in progress, 422 body changed) says nothing of the first create's job.
            self.balance.sent += cost
            why = f"re-sent with the same Idempotency-Key, answered: {error}" if resent else str(error)
            settled = job.settled_at if resent else self.clock()
            request_id = error.request_id if isinstance(error, ApiError) else None
            return self._move(job, "uncertain", error_message=self.redactor.text(why), request_id=request_id,
                              settled_at=settled)  # fmt: skip
        self.budget.release(cost)
        if isinstance(error, OverBudgetError):
            return self._move(job, "skipped", reserved=0, note=f"budget: {error}")
        return self._not_created(job, error)

    def _reprice(self, spec: JobSpec, price: Price, cost: float) -> float:
        """Reserve what the kind's price, learned while this job waited, adds; refuse past the cap."""
        extra = (self.budget.cost(spec.kind.name, price.credits) or cost) - cost
        if extra <= 0:
            return 0.0
        if not self.budget.admits(extra):
            raise OverBudgetError(f"{self.budget.committed + extra:g} > {self.budget.cap} at the API's price")
        self.budget.reserve(extra)
        return extra

    async def _create(
        self, spec: JobSpec, body: Mapping[str, Any], attempt: int, about_to_send: Callable[[], None]
    ) -> Created:
        """One create, after the quiet gap a lost answer leaves: the next create of ours must not
        fall inside the lost one's time window, or reconciliation could not tell them apart. That
        window is the lost create's span widened by the uncertainty of the API's skew, which the
        quickest answered create bounds (see `reconcile.measure`), plus its slack."""
        if (quiet := self.quiet_until - self.ticks()) > 0 and await self._pause(quiet):
            raise NotSentError(self.stopped or "interrupted")
        try:
            created = await self.client.create(
                spec.kind.path, body, idempotency_key=f"sb-{spec.key}-{attempt}", before_send=about_to_send
            )
        except UncertainCreateError:
            self.quiet_until = self.ticks() + self.fastest + 2 * SLACK_S + QUIET_MIN_S
            raise
        return created

    async def _created(
        self, spec: JobSpec, price: Price, job: StoredJob, created: Created, cost: float, *, probe: bool
    ) -> StoredJob:
        """Record the ids first (fsynced), then settle the price and, now and then, look at the balance."""
        charged = created.required_credits
        self.balance.sent += cost
        self.balance.creates += 1
        try:
            job = self._move(
                job, "submitted", durable=True, sume_ids=created.job_ids, required=charged,
                reserved=cost if charged is None else charged, request_id=created.request_id,
                submitted_at=self.clock(), error_code=None, error_message=None,
            )  # fmt: skip
        except (sqlite3.Error, OSError) as error:
            raise self.lost_ids(job, created.job_ids, error) from error
        if job.intent_at is not None and job.submitted_at is not None:
            self.fastest = min(self.fastest, max(0.0, job.submitted_at - job.intent_at))
        self.remember(created.job_ids)
        if charged is not None:
            self.budget.settle(spec.kind.name, price.credits, cost, charged)
            self.balance.sent += charged - cost
        elif probe:
            await self.confirm_price(spec, price, job, cost)
        if self.balance.due():
            await self.check_balance()
        return job

    def lost_ids(self, job: StoredJob, sume_ids: tuple[str, ...], error: Exception) -> StoreWriteError:
        """The store could not take a create's ids: stop creating, keep them in the registry, and
        say them (ids are not secrets) so no paid job is ever lost."""
        self.unrecorded[job.id] = sume_ids
        kept = self.registry is not None and self.registry.rescue(job.key, sume_ids)
        self.interrupt(self.redactor.text(f"the run store could not be written: {error}"))
        where = "kept in the registry for the next run" if kept else "NOT kept anywhere: note them"
        return StoreWriteError(f"{job.id}: made {', '.join(sume_ids)}, {where}")

    async def confirm_price(self, spec: JobSpec, price: Price, job: StoredJob, cost: float) -> None:
        """The API stated no price for the first job of a kind: the balance says what it cost."""
        kind = spec.kind.name
        excess = self.balance.excess(await self.read_balance())
        if excess > 0:
            charged = cost + excess
            self.budget.settle(kind, price.credits, cost, charged)
            self.balance.sent += excess
            note = f"the balance fell by {charged:g} credits for it, where {cost:g} were estimated"
            self.store.move(job.key, job.state, reserved=charged, required=charged, note=note)
        self.budget.confirmed.add(kind)  # at our estimate when the balance agrees (or cannot say)

    async def check_balance(self) -> None:
        """Every BALANCE_EVERY creates: a balance falling faster than this run's reservations stops it."""
        balance = await self.read_balance()
        excess = self.balance.excess(balance)
        if excess > 0:
            self.stop(
                f"the balance fell {excess:,.0f} credits more than this run reserved: the API charges more "
                "than it states, or something else spends in this workspace; no new job was created"
            )

    async def read_balance(self) -> float | None:
        try:
            return balance_of(await self.client.credits())
        except (ApiError, httpx.HTTPError):
            return None

    def _not_created(self, job: StoredJob, error: Exception) -> StoredJob:
        """No job was made. Final (`rejected`) only when the API refused the request itself;
        anything that can pass — credits, auth, rate limits, a failed upload, an interrupt —
        leaves the job `planned`, so the next run submits it."""
        api = error if isinstance(error, ApiError) else None
        if isinstance(error, AuthError | InsufficientCreditsError):
            self.stop(f"the API refused new jobs: {self.redactor.text(str(error))}")
        final = api is not None and api.status in FINAL_REFUSALS and not isinstance(error, AuthError)
        message = str(api.args[0]) if api is not None else f"not sent: {error}"
        detail = validation_detail(api.details) if api is not None else ""
        fields: dict[str, Any] = {
            "error_code": api.code if api else None,
            "error_message": self.redactor.text(f"{message.rstrip('.')}: {detail}" if detail else message),
            "request_id": api.request_id if api else None,
        }
        return self._move(job, "rejected" if final else "planned", reserved=0, **fields)

    async def upload(self, spec: JobSpec) -> dict[str, Any] | None:
        """Presign and PUT the job's local file (presigns make no job and cost nothing)."""
        kind = spec.kind
        if kind.upload_field is None or kind.upload_purpose is None:
            return None
        try:  # confined again now: a file or symlink swapped since `validate` must not be sent
            path = confine_file(str(spec.request[kind.upload_field]), folder=self.settings.folder,
                                roots=self.settings.roots or (self.settings.folder.resolve(),))  # fmt: skip
        except ConfinementError as error:
            raise OSError(str(error)) from None
        data = read_regular(path, limit=MAX_UPLOAD_BYTES)
        if len(data) > MAX_UPLOAD_BYTES:
            raise OSError(f"{path.name} is larger than {MAX_UPLOAD_BYTES >> 20} MiB, the most a job uploads")
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        target = await self.client.presign(
            filename=path.name, content_type=content_type, size_bytes=len(data), purpose=kind.upload_purpose
        )
        await upload_bytes(self.storage, target, data)
        return target

    async def wait(self, job: StoredJob, started: float) -> StoredJob:
        """Wait (on the shared poller) until all our Sume jobs are terminal or the timeout passes;
        the time already spent is read once from the wall clock, the rest counted monotonically."""
        spent = max(0.0, self.clock() - max(job.submitted_at or started, started))
        deadline = self.ticks() + self.settings.timeouts[job.kind] - spent
        if job.state == "timed_out":
            job = self._move(job, "submitted", note="resumed")
        self.poller.watch(job.sume_ids, self.settings.poll_intervals[job.kind])
        try:
            while (final := self.poller.done(job.sume_ids)) is None:
                if self.poller.failure is not None:
                    raise self.poller.failure
                if self.ticks() >= deadline:
                    return self._move(job, "timed_out")
                if self.halt.is_set() or self.poller.closed:
                    return job  # interrupted: still submitted, so the next run polls it again
                await self.poller.next_round()
        finally:
            self.poller.forget(job.sume_ids)
        failures = [state for state in final if state.status != "completed"]
        if not failures:
            return self._move(job, "completed", sume_status="completed")
        failure = failures[0]
        message = self.redactor.text(failure.error_message) if failure.error_message else failure.status
        fields: dict[str, Any] = {
            "sume_status": failure.status, "error_code": failure.error_code, "error_job_id": failure.id,
        }  # fmt: skip
        if len(failures) < len(final):  # some of a Face Swap's avatars made it: keep what was paid for
            message = f"{len(failures)} of {len(final)} jobs {failure.status}: {message}"
            return self._move(job, "completed", error_message=message, **fields)
        return self._move(job, failure.status, error_message=message, **fields)

    async def download(self, job: StoredJob) -> None:
        """Fetch each result afresh (links are signed and expire) and save its outputs under our names."""
        self.settings.downloads.mkdir(parents=True, exist_ok=True)
        results = []
        for sume_id in job.sume_ids:
            try:
                results.append((sume_id, await self.client.job_result(sume_id)))
            except ApiError:
                if not job.error_code:  # only a partly failed job has results that do not exist
                    raise
        if job.state == "completed":
            job = self._move(job, "fetched")
        labels = output_labels(job)
        outputs = [(sume_id, item) for sume_id, result in results for item in primary_media(result)]
        per_job, seen = Counter(sume_id for sume_id, _ in outputs), Counter[str]()
        for sume_id, item in outputs:
            seen[sume_id] += 1
            label = labels.get(sume_id)
            if per_job[sume_id] > 1:  # several files from one Sume job: number them
                label = f"{label}-{seen[sume_id]}" if label else str(seen[sume_id])
            await self.save(job, sume_id, output_name(job.id, label, item.content_type), item)
        if job.kind in DATA_KINDS or not outputs:  # an analysis or an ingest: its result is the output
            for sume_id, result in results:
                data = json.dumps(
                    self.redactor.value(result.get("result", result)), indent=2, ensure_ascii=False
                )
                name = output_name(
                    job.id, labels.get(sume_id) if len(results) > 1 else None, "application/json"
                )
                self.write(job, sume_id, name, data.encode(), "application/json")
        self._move(job, job.sume_status if job.error_code and job.sume_status else "downloaded")

    async def save(self, job: StoredJob, sume_id: str, name: str, item: Media) -> None:
        """Stream one output to `<name>.part`, then rename; a dropped transfer is tried again."""
        for attempt in range(DOWNLOAD_ATTEMPTS):
            try:
                await self._stream(job, sume_id, name, item)
                return
            except (httpx.HTTPError, ApiError) as error:
                # 403: a refused (expired) link, the next run fetches fresh links; no status: one of
                # our bounds (`bounds.BoundError`: too large, too slow), which a retry would hit again
                final = isinstance(error, ApiError) and error.status in (403, None)
                if attempt + 1 == DOWNLOAD_ATTEMPTS or final:
                    raise
                await self._pause(self.rng.uniform(0, 2**attempt))

    async def _stream(self, job: StoredJob, sume_id: str, name: str, item: Media) -> None:
        """One download within its kind's size and time bounds (`bounds`, SUME_BATCH_MAX_DOWNLOAD and
        SUME_BATCH_DOWNLOAD_DEADLINE); a failed one, a full disk included, leaves no `.part` behind."""
        partial = self.settings.downloads / f".{name}.part"
        try:
            sha, size = await self.client.bounds.download_to(
                self.storage, item.url, partial, kind=job.kind, name=name
            )
            partial.replace(self.settings.downloads / name)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        self.store.add_file(
            job.key, path=name, sume_id=sume_id, sha256=sha, size=size, content_type=item.content_type
        )

    def write(self, job: StoredJob, sume_id: str, name: str, data: bytes, content_type: str) -> None:
        partial = self.settings.downloads / f".{name}.part"
        try:
            partial.write_bytes(data)
            partial.replace(self.settings.downloads / name)
        except BaseException:  # a full disk leaves no `.part` behind; the next run writes it again
            partial.unlink(missing_ok=True)
            raise
        sha = hashlib.sha256(data).hexdigest()
        self.store.add_file(
            job.key, path=name, sume_id=sume_id, sha256=sha, size=len(data), content_type=content_type
        )


def primary_media(result: Mapping[str, Any]) -> list[Media]:
    """The outputs to keep: every media URL but thumbnails and previews, unless that is all there is."""
    found = list({item.url: item for item in find_media(result)}.values())
    primary = [item for item in found if not any(role in item.role for role in SECONDARY_ROLES)]
    return primary or found


def output_labels(job: StoredJob) -> dict[str, str]:
    """A file-name suffix per Sume job: the avatar for Face Swap (one job per avatar), else a number
    when the create made several jobs; none for the usual single job."""
    avatars = job.request.get("avatar_ids") if job.kind == "face_swap" else None
    if isinstance(avatars, list) and len(avatars) == len(job.sume_ids):
        return dict(zip(job.sume_ids, map(str, avatars), strict=True))
    if len(job.sume_ids) == 1:
        return {}
    return {sume_id: str(index) for index, sume_id in enumerate(job.sume_ids, start=1)}


def output_name(job_id: str, label: str | None, content_type: str) -> str:
    """A file name from the manifest's job id (and avatar id) — never from the server."""
    extension = mimetypes.guess_extension(content_type) or ".bin"
    return f"{job_id}{'-' + label if label else ''}{extension}"
