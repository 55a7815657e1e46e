"""poll: one poller serves every job in flight — a list page for many, by id for few, unknown ids
failed; it wakes when a job can first be done (learned per kind, never below the floor), wakes early
for a job due sooner than its sleep, and never sleeps with nothing to wait for (issue 13)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from sume_batch.api import SumeClient
from sume_batch.bounds import Pacer
from sume_batch.poll import BACKOFF_CAP, FLOOR_S, JITTER, REHEARSAL_FLOOR_S, UNKNOWN_JOB, Poller, api_seconds
from sume_batch.sandbox import SandboxConfig, create_app
from sume_batch.states import ApiStatus

BASE = "http://sandbox.test/api/v1"
IDLE_YIELDS = 100  # loop turns with nothing runnable before time moves on (the sandbox runs in-process)


class Clock:
    """Virtual time for the sandbox and the poller: it moves only when every task waits for it, to
    the earliest sleeper's deadline, so polling costs no wall time and a sleep can be overtaken."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self.order = itertools.count()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self.sleepers, (self.now + max(seconds, 0.0), next(self.order), future))
        await future

    async def drive(self) -> None:
        while True:
            for _ in range(IDLE_YIELDS):
                await asyncio.sleep(0)
            while self.sleepers and self.sleepers[0][2].done():  # a sleep cut short
                heapq.heappop(self.sleepers)
            if self.sleepers:
                at, _, future = heapq.heappop(self.sleepers)
                self.now = max(self.now, at)
                future.set_result(None)


@dataclass
class World:
    """A poller on an in-process sandbox, on virtual time, with every request and pause it made."""

    clock: Clock
    client: SumeClient
    poller: Poller
    sent: list[tuple[float, str]] = field(default_factory=list)  # (virtual time, path) of each request
    pauses: list[float] = field(default_factory=list)

    def asked(self, sume_id: str) -> list[float]:
        """When this job was asked for by id."""
        return [at for at, path in self.sent if path.endswith(f"/jobs/{sume_id}")]

    def polls(self) -> list[str]:
        return [path for _, path in self.sent if "/jobs" in path and not path.endswith("/result")]


def with_poller(
    test: Callable[[World], Awaitable[None]], *, floor: float = FLOOR_S, **overrides: Any
) -> None:
    config = SandboxConfig.from_profile("instant", seed=3, **overrides)
    clock = Clock()
    app = create_app(config, clock=clock, sleep=clock.sleep)

    async def main() -> None:
        driving = asyncio.ensure_future(clock.drive())
        sent: list[tuple[float, str]] = []

        async def log(request: httpx.Request) -> None:
            if request.method == "GET":
                sent.append((clock.now, request.url.path))

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, event_hooks={"request": [log]}) as http:
            client = SumeClient(http, api_key=config.api_key, base_url=BASE, sleep=clock.sleep,
                                rng=random.Random(1), pacer=Pacer(clock=clock))  # fmt: skip
            pauses: list[float] = []

            async def pause(seconds: float) -> bool:
                pauses.append(seconds)
                await clock.sleep(seconds)
                return False

            poller = Poller(client, pause, clock=clock, rng=random.Random(2), floor=floor)
            world = World(clock, client, poller, sent, pauses)
            task = asyncio.ensure_future(poller.run())
            try:
                await asyncio.wait_for(test(world), timeout=30)
            finally:
                poller.closed = True
                task.cancel()
                driving.cancel()

    asyncio.run(main())


KEYS = itertools.count()


async def made(client: SumeClient, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        n = next(KEYS)  # a key of its own: the sandbox answers a repeated key with the job it made
        created = await client.create("/images/generations", {"prompt": f"p{n}"}, idempotency_key=f"k{n}")
        ids += created.job_ids
    return ids


async def until_done(poller: Poller, ids: list[str]) -> list[Any]:
    while (final := poller.done(ids)) is None:
        await poller.next_round()
    return final


def test_many_waiting_jobs_are_answered_by_list_pages_not_one_request_each() -> None:
    async def test(world: World) -> None:
        ids = await made(world.client, 30)
        world.poller.watch(ids, 2.0, kind="image")
        final = await until_done(world.poller, ids)
        assert {job.id for job in final} == set(ids) and all(
            job.status == ApiStatus.COMPLETED for job in final
        )
        assert all(path.endswith("/jobs") for path in world.polls())  # list pages only
        assert world.poller.requests == len(world.polls()) < len(ids) / 2  # each page answered for many

    with_poller(test, durations={"image_generation": 5.0}, capacity=30)


def test_a_list_page_answers_for_jobs_not_yet_due_and_those_that_started_waiting_meanwhile() -> None:
    async def test(world: World) -> None:
        first = await made(world.client, 3)
        world.poller.watch(first, 2.0, kind="image")  # due at 2 s
        await world.clock.sleep(1.0)
        later = await made(world.client, 1)
        world.poller.watch(later, 2.0, kind="image")  # due at 3 s, watched while the poller sleeps
        await until_done(world.poller, first)
        assert world.poller.done(later) is not None  # the page at 2 s showed it done already
        assert world.clock.now < 3.0 and world.polls() == ["/api/v1/jobs"]

    with_poller(test)


def test_one_waiting_job_is_asked_for_by_id_until_it_is_done() -> None:
    async def test(world: World) -> None:
        (job_id,) = await made(world.client, 1)
        world.poller.watch([job_id], 1.0)
        assert world.poller.done([job_id]) is None  # not yet polled: still running as far as we know
        (final,) = await until_done(world.poller, [job_id])
        assert (final.id, final.status) == (job_id, ApiStatus.COMPLETED)
        assert world.polls() == [f"/api/v1/jobs/{job_id}"] * len(world.polls())

    with_poller(test, durations={"image_generation": 3.0})


def test_a_job_watched_while_the_poller_sleeps_for_a_later_one_is_polled_at_its_own_due_time() -> None:
    async def test(world: World) -> None:
        (slow,) = await made(world.client, 1)
        world.poller.watch([slow], 10.0, kind="video")  # first asked for at 10 s
        await world.clock.sleep(1.0)
        assert world.sent == []  # the poller sleeps until the slow job is due
        (quick,) = await made(world.client, 1)
        world.poller.watch([quick], 2.0, kind="image")  # due at 3 s: sooner than the poller meant to wake
        await until_done(world.poller, [quick])
        (asked,) = world.asked(quick)
        assert 3.0 <= asked <= 3.0 + JITTER * 2.0  # at its own due time (jitter only ever delays)
        assert world.asked(slow) == [] and world.poller.done([slow]) is None  # not due yet: not asked
        await until_done(world.poller, [slow])
        (asked,) = world.asked(slow)
        assert 10.0 <= asked <= 10.0 + FLOOR_S

    with_poller(test, durations={"image_generation": 1.0})


def test_with_nothing_to_wait_for_the_poller_does_not_sleep_or_poll() -> None:
    async def test(world: World) -> None:
        await world.clock.sleep(50.0)
        assert world.pauses == [] and world.sent == []  # nothing watched: it waits for a job, not a timer
        (job_id,) = await made(world.client, 1)
        world.poller.watch([job_id], 1.0)
        await until_done(world.poller, [job_id])
        pauses, requests = len(world.pauses), world.poller.requests
        await world.clock.sleep(100.0)  # the job is done but still watched: nothing left to wait for
        assert (len(world.pauses), world.poller.requests) == (pauses, requests)
        (again,) = await made(world.client, 1)
        world.poller.watch([again], 1.0)  # a new job wakes it
        await until_done(world.poller, [again])
        assert world.asked(again)

    with_poller(test)


def test_a_kinds_learned_time_moves_the_first_poll_of_slow_jobs_past_their_interval() -> None:
    async def test(world: World) -> None:
        (first,) = await made(world.client, 1)
        world.poller.watch([first], 1.0, kind="image")
        await until_done(world.poller, [first])
        assert len(world.asked(first)) > 1  # nothing learned yet: asked from 1 s on, backing off
        assert world.poller.expected("image") == 6.0  # from the API's own times: created to done
        (second,) = await made(world.client, 1)
        since = world.clock.now
        world.poller.watch([second], 1.0, kind="image")
        await until_done(world.poller, [second])
        (asked,) = world.asked(second)  # asked once, when it could first be done
        assert 6.0 <= asked - since <= 6.0 + FLOOR_S

    with_poller(test, durations={"image_generation": 6.0})


@pytest.mark.parametrize("floor", [FLOOR_S, REHEARSAL_FLOOR_S])
def test_a_kinds_learned_time_never_brings_a_poll_below_the_floor(floor: float) -> None:
    async def test(world: World) -> None:
        (first,) = await made(world.client, 1)
        world.poller.watch([first], 1.0, kind="image")
        await until_done(world.poller, [first])
        assert world.poller.expected("image") == 0.0  # the instant profile's jobs take no time
        (second,) = await made(world.client, 1)
        since = world.clock.now
        world.poller.watch([second], 1.0, kind="image")
        await until_done(world.poller, [second])
        (asked,) = world.asked(second)
        assert floor <= asked - since <= floor * 1.5  # sooner than the interval, never sooner than the floor

    with_poller(test, floor=floor)


def test_a_job_made_long_before_it_was_waited_for_teaches_only_the_time_it_was_waited_for() -> None:
    async def test(world: World) -> None:
        (resumed,) = await made(world.client, 1)  # as if by an earlier run: it took 30 s, long ago
        await world.clock.sleep(40.0)
        world.poller.watch([resumed], 1.0, kind="image")
        await until_done(world.poller, [resumed])
        expected = world.poller.expected("image")
        assert expected is not None and 1.0 <= expected <= 1.0 + FLOOR_S  # not the 30 s the API states

    with_poller(test, durations={"image_generation": 30.0})


def test_a_job_long_past_its_expected_time_is_still_asked_for_within_the_backoff_cap() -> None:
    async def test(world: World) -> None:
        (job_id,) = await made(world.client, 1)
        world.poller.watch([job_id], 1.0)
        await world.clock.sleep(900.0)
        asked = world.asked(job_id)
        gaps = [later - sooner for sooner, later in itertools.pairwise(asked)]
        assert all(later >= sooner - FLOOR_S for sooner, later in itertools.pairwise(gaps))  # it backs off
        assert (
            max(gaps) <= BACKOFF_CAP + FLOOR_S and 900.0 - asked[-1] <= BACKOFF_CAP + FLOOR_S
        )  # ... boundedly
        assert len(asked) < 30

    with_poller(test, durations={"image_generation": 10_000.0})


def test_a_job_the_api_does_not_know_ends_failed_as_not_found() -> None:
    async def test(world: World) -> None:
        world.poller.watch(["job_never_made"], 1.0)
        (final,) = await until_done(world.poller, ["job_never_made"])
        assert (final.status, final.error_code, final.error_message) == (
            ApiStatus.FAILED,
            "not_found",
            UNKNOWN_JOB,
        )

    with_poller(test)


def test_a_forgotten_job_is_polled_no_more() -> None:
    async def test(world: World) -> None:
        ids = await made(world.client, 2)
        world.poller.watch(ids, 1.0)
        await until_done(world.poller, ids)
        world.poller.forget(ids)
        assert world.poller.waiting == {} and world.poller.statuses == {}

    with_poller(test)


def test_the_time_a_job_took_is_read_from_the_api_only_when_it_states_both_ends() -> None:
    start = "2026-01-01T00:00:00.000Z"
    assert api_seconds({"created_at": start, "updated_at": "2026-01-01T00:00:05.250Z"}) == 5.25
    assert api_seconds({"created_at": 100, "completed_at": 112.5, "updated_at": 200}) == 12.5
    assert api_seconds({"created_at": start}) is None
    assert api_seconds({"created_at": start, "updated_at": "yesterday"}) is None
    assert api_seconds({"created_at": "2026-01-01T00:00:00", "updated_at": "2026-01-01T00:00:05"}) is None
    assert api_seconds({"created_at": start, "updated_at": "2025-12-31T23:59:59Z"}) is None  # ends before
