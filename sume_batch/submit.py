"""The create path of the execute stage: reserve credits, send one create, record what it made.

The intent (and an Idempotency-Key) is written before the create, the job ids it answers with
before anything else. Credits are reserved before each create (see `budget`), so no create can cross
the budget at any concurrency, and the price the API states settles each reservation. Without an API
known to honour Idempotency-Key, creates go out one at a time: a create whose answer is lost then
shares its time window with no other create of ours, which is what lets `reconcile` find the job it
made (or prove it made none).

`Submitting` is the part of `execute.Executor` that does this; the executor supplies the run's
client, store, budget and stop signal (the attributes declared below).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

from sume_batch.api import SumeClient
from sume_batch.budget import BalanceWatch, Budget
from sume_batch.errors import (
    ApiError,
    AuthError,
    InsufficientCreditsError,
    OverBudgetError,
    StoreWriteError,
    UncertainCreateError,
)
from sume_batch.expand import JobSpec
from sume_batch.kinds import request_body
from sume_batch.pricing import Price
from sume_batch.reconcile import RESEND_REFUSED, SLACK_S, resendable
from sume_batch.records import StoredJob
from sume_batch.redact import Redactor
from sume_batch.registry import Registry
from sume_batch.responses import Created, balance_of, capacity_of, validation_detail
from sume_batch.store import RunStore
from sume_batch.transfer import Transfers
from sume_batch.workspace import MissingMedia, live_request

FINAL_REFUSALS = frozenset({400, 404, 409, 422})  # the request itself was refused: resending cannot help
QUIET_MIN_S = 0.02  # beyond the window's own slack, after a lost answer (see `_create`)
QUIET_DEFAULT_S = 0.25  # the window's uncertainty until a create of this run has been answered


class NotSentError(Exception):
    """A create was withheld before any byte left (the run was stopped)."""


class Submitting:
    """Reserve, create and record one job at a time (see the module's docstring)."""

    client: SumeClient
    store: RunStore
    transfers: Transfers
    redactor: Redactor
    budget: Budget
    balance: BalanceWatch
    registry: Registry | None
    clock: Callable[[], float]
    ticks: Callable[[], float]
    stopped: str | None
    idempotency_honoured: bool
    unrecorded: dict[str, tuple[str, ...]]  # job id → ids the store could not take
    creating: asyncio.Lock  # one create at a time (see above)
    probes: dict[str, asyncio.Lock]  # kind → its price-confirming create
    brand_urls: tuple[str, ...]
    live_urls: Mapping[str, str]  # workspace URLs as stored → as read now (`workspace.live_request`)
    quiet_until: float  # no create before this: the last one's answer was lost (see `keep_quiet`)
    fastest: float  # the quickest answered create of this run, intent to answer
    capacity_now: int | None  # the account's generation capacity, as `/credits` last said it

    # The executor's own: stop creating; stop waiting too; an interruptible sleep (True: interrupted);
    # a job as a store write returned it, announced; ids entered in the machine's registry.
    stop: Callable[[str], None]
    interrupt: Callable[[str], None]
    pause: Callable[[float], Awaitable[bool]]
    changed: Callable[[StoredJob], StoredJob]
    remember: Callable[[Iterable[str]], None]
    gate: Callable[[], AbstractAsyncContextManager[bool]]  # the account's create lock (a shared store)
    probing: Callable[[str], AbstractAsyncContextManager[bool]]  # one price probe per kind, all runners

    async def submit(self, spec: JobSpec, price: Price, job: StoredJob) -> StoredJob:
        """Reserve, create and record one job. The first job of a kind whose price the API has not
        confirmed goes alone: the others of its kind wait until its price is known."""
        kind = spec.kind.name
        while kind not in self.budget.confirmed and not self.stopped:
            probe = self.probes.setdefault(kind, asyncio.Lock())
            if probe.locked():
                async with probe:  # wait for the kind's price, then look again
                    continue
            async with probe, self.probing(kind) as alone:  # a shared store: one probe of all runners
                if alone and kind not in self.budget.confirmed:
                    return await self._submit(spec, price, job, probe=True)
        return await self._submit(spec, price, job, probe=False)

    async def _submit(self, spec: JobSpec, price: Price, job: StoredJob, *, probe: bool) -> StoredJob:
        if self.stopped:
            return job
        cost = self.budget.cost(spec.kind.name, price.credits)
        if cost is None or not self.budget.admits(cost):
            why = "price unknown (--assume-price)" if cost is None else f"{self.budget.committed + cost:g}"
            return self.changed(self.store.skip(job.key, f"{why} > {self.budget.cap}"))
        self.budget.reserve(cost)  # before any await: no other job can take the same credits
        try:
            job = self.changed(self.store.reserve(job.key, cost))
        except OverBudgetError as error:  # a shared store: other runners hold the rest of the cap
            self.budget.release(cost)
            return self.changed(self.store.skip(job.key, str(error)))
        attempt = job.attempts + 1

        intended: list[StoredJob] = []
        on_the_wire = [0.0]  # what this create may already cost while its answer is awaited

        def about_to_send() -> None:  # the HTTP slot is held: the bytes go out right after this
            if self.stopped:
                raise NotSentError(self.stopped)
            if intended:  # the client sends it again (a 429, a refused connection): its intent stands
                return
            intended.append(self.changed(self.store.intend(job.key, attempt=attempt, at=self.clock())))
            on_the_wire[0] = cost
            self.balance.flying += cost

        try:
            request = self._live(spec)
            upload = await self.transfers.upload(spec)
            body = request_body(spec.kind, request, brand_urls=self.brand_urls, upload=upload)
            async with self.creating if not self.idempotency_honoured else contextlib.nullcontext():
                cost += self._reprice(spec, price, cost)  # the kind's price may have been learned meanwhile
                created = await self._create(spec, body, attempt, about_to_send)
        except (OverBudgetError, NotSentError, ApiError, OSError) as error:
            return self._failed(spec, job, cost, error)
        finally:  # answered or not, it is counted from here on as `sent` (see `_created`, `_failed`)
            self.balance.flying -= on_the_wire[0]
        return await self._created(spec, price, job, created, cost, probe=probe)

    def _failed(self, spec: JobSpec, job: StoredJob, cost: float, error: Exception) -> StoredJob:
        """Where a create that did not answer with ids leaves its job and its reservation."""
        if isinstance(error, UncertainCreateError):  # sent, outcome unknown: it may have been charged
            self.balance.sent += cost
            return self._lost(job, error)
        self.budget.release(cost)
        if isinstance(error, OverBudgetError):
            return self.changed(self.store.skip(job.key, str(error)))
        return self._not_created(job, error)

    def _lost(self, job: StoredJob, error: Exception, *, resent: bool = False) -> StoredJob:
        """A create was sent and its outcome is unknown: `uncertain`, its reservation kept. A re-send
        the API refused (`FINAL_REFUSALS`) says nothing of the first create's job, and its key
        cannot settle it (`reconcile.RESEND_REFUSED`); one refused for auth or credits stops the run."""
        why = self.redactor.text(f"re-sent with the same Idempotency-Key: {error}" if resent else str(error))
        request_id = error.request_id if isinstance(error, ApiError) else None
        code = RESEND_REFUSED if resent and self._refused(error) else None
        lost = self.store.lose(job.key, why=why, request_id=request_id, settled_at=self.clock(), code=code)
        return self.changed(lost)

    async def resend(self, spec: JobSpec, price: Price, job: StoredJob) -> StoredJob | None:
        """Send a lost create (`uncertain`) again under its own Idempotency-Key, where the API honours
        it: the API answers with the job the first made, or makes it now. None: nothing went out
        (the run was stopped, or media its request names is gone), and the job is as it was.

        It never leaves the states of a create that may have made a job until it is answered: from
        `uncertain` to `submitting` (its first intent's time and reservation kept: it may have been
        charged) and, answered, `submitted`; lost again, or refused (409 in progress, 422 body
        changed: nothing said of the first create's job), `uncertain`. Killed at any moment, the
        next run finds it there and sends the same key again: never a new key, which would buy a
        second job where the first create made one. Not for uploads, nor once the API has refused
        a re-send (`reconcile.resendable`): those are reconciled by time."""
        if self.stopped or not resendable(job) or not job.attempts:
            return None
        cost, sent = job.reserved, [False]

        def about_to_send() -> None:
            if self.stopped:
                raise NotSentError(self.stopped)
            if not sent[0]:
                self.changed(
                    self.store.intend(job.key, attempt=job.attempts, at=job.intent_at or self.clock())
                )
                sent[0], self.balance.flying = True, self.balance.flying + cost

        try:
            body = request_body(spec.kind, self._live(spec), brand_urls=self.brand_urls, upload=None)
            created = await self._create(spec, body, job.attempts, about_to_send)
        except (NotSentError, ApiError, OSError) as error:
            return self._lost(job, error, resent=True) if sent[0] else None
        finally:
            if sent[0]:
                self.balance.flying -= cost
        return await self._created(spec, price, job, created, cost, probe=False)

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
        if (quiet := self.quiet_until - self.ticks()) > 0 and await self.pause(quiet):
            raise NotSentError(self.stopped or "interrupted")
        try:
            async with self.gate() as open_:
                if not open_:
                    raise NotSentError(self.stopped or "interrupted")
                created = await self.client.create(
                    spec.kind.path,
                    body,
                    idempotency_key=f"sb-{spec.key}-{attempt}",
                    before_send=about_to_send,
                )
        except UncertainCreateError:
            self.keep_quiet()
            raise
        return created

    def keep_quiet(self) -> None:
        """A create's answer was lost (or a crashed run's create was in flight until now): the next
        create of ours waits until that create's time window is well behind it (see `_create`)."""
        self.quiet_until = self.ticks() + self.fastest + 2 * SLACK_S + QUIET_MIN_S

    async def _created(
        self, spec: JobSpec, price: Price, job: StoredJob, created: Created, cost: float, *, probe: bool
    ) -> StoredJob:
        """Record the ids first (fsynced), then settle the price and, now and then, look at the balance."""
        charged = created.required_credits
        self.balance.sent += cost
        self.balance.creates += 1
        try:
            job = self.store.created(
                job.key, created.job_ids, reserved=cost if charged is None else charged, required=charged,
                request_id=created.request_id, at=self.clock(),
            )  # fmt: skip
            self.changed(job)
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
            self.store.price(job.key, charged, note=note)
        self.budget.confirmed.add(kind)  # at our estimate when the balance agrees (or cannot say)

    async def check_balance(self) -> None:
        """Every BALANCE_EVERY creates: a balance falling faster than this run's reservations stops it."""
        excess = self.balance.excess(await self.read_balance())
        if excess > 0:
            self.stop(
                f"the balance fell {excess:,.0f} credits more than this run reserved: the API charges more "
                "than it states, or something else spends in this workspace; no new job was created"
            )

    async def read_balance(self) -> float | None:
        """The balance now; the account's generation capacity is re-read with it (`capacity_now`)."""
        try:
            answer = await self.client.credits()
        except ApiError:
            return None
        self.capacity_now = capacity_of(answer) or self.capacity_now
        return balance_of(answer)

    def _live(self, spec: JobSpec) -> Mapping[str, Any]:
        """The job's request with workspace URLs as this run read them; NotSentError if one is gone."""
        try:
            return live_request(spec.request, self.live_urls)
        except MissingMedia as error:
            raise NotSentError(str(error)) from None

    def _refused(self, error: Exception) -> bool:
        """Whether the API refused the request itself (`FINAL_REFUSALS`: sending it again cannot
        help). A refusal for auth or credits stops the run: no job of it can be created now."""
        if isinstance(error, AuthError | InsufficientCreditsError):
            self.stop(f"the API refused new jobs: {self.redactor.text(str(error))}")
        return (
            isinstance(error, ApiError)
            and error.status in FINAL_REFUSALS
            and not isinstance(error, AuthError)
        )

    def _not_created(self, job: StoredJob, error: Exception) -> StoredJob:
        """No job was made. Final (`rejected`) only when the API refused the request itself;
        anything that can pass — credits, auth, rate limits, a failed upload, an interrupt —
        leaves the job `planned`, so the next run submits it."""
        api = error if isinstance(error, ApiError) else None
        final = self._refused(error)
        message = str(api.args[0]) if api is not None else f"not sent: {error}"
        detail = validation_detail(api.details) if api is not None else ""
        why = self.redactor.text(f"{message.rstrip('.')}: {detail}" if detail else message)
        code, request_id = (api.code, api.request_id) if api else (None, None)
        refused = self.store.refuse(job.key, final=final, code=code, why=why, request_id=request_id)
        return self.changed(refused)
