"""poll: one poller serves every job in flight — a list page for many, by id for few, unknown ids failed."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from sume_batch.api import SumeClient
from sume_batch.bounds import Pacer
from sume_batch.poll import UNKNOWN_JOB, Poller
from sume_batch.sandbox import SandboxConfig, create_app
from sume_batch.states import ApiStatus

BASE = "http://sandbox.test/api/v1"


class Clock:
    """Sandbox time that moves only when someone sleeps: polling costs no wall time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def with_poller(test: Callable[[SumeClient, Poller], Awaitable[None]], **overrides: Any) -> None:
    config = SandboxConfig.from_profile("instant", seed=3, **overrides)
    clock = Clock()
    app = create_app(config, clock=clock, sleep=clock.sleep)

    async def pause(seconds: float) -> bool:
        await clock.sleep(seconds)
        return False

    async def main() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
            client = SumeClient(http, api_key=config.api_key, base_url=BASE, sleep=clock.sleep,
                                rng=random.Random(1), pacer=Pacer(clock=clock))  # fmt: skip
            poller = Poller(client, pause, rng=random.Random(2))
            task = asyncio.ensure_future(poller.run())
            try:
                await asyncio.wait_for(test(client, poller), timeout=30)
            finally:
                poller.closed = True
                task.cancel()

    asyncio.run(main())


async def made(client: SumeClient, count: int) -> list[str]:
    ids = []
    for n in range(count):
        created = await client.create("/images/generations", {"prompt": f"p{n}"}, idempotency_key=f"k{n}")
        ids += created.job_ids
    return ids


async def until_done(poller: Poller, ids: list[str]) -> list[Any]:
    while (final := poller.done(ids)) is None:
        await poller.next_round()
    return final


def test_many_waiting_jobs_are_answered_by_list_pages_not_one_request_each() -> None:
    async def test(client: SumeClient, poller: Poller) -> None:
        ids = await made(client, 12)
        poller.watch(ids, 2.0)
        final = await until_done(poller, ids)
        assert {job.id for job in final} == set(ids) and all(
            job.status == ApiStatus.COMPLETED for job in final
        )
        assert poller.requests < len(ids)  # one page answered for all of them

    with_poller(test, durations={"image_generation": 5.0}, capacity=20)


def test_one_waiting_job_is_asked_for_by_id_until_it_is_done() -> None:
    async def test(client: SumeClient, poller: Poller) -> None:
        (job_id,) = await made(client, 1)
        poller.watch([job_id], 1.0)
        assert poller.done([job_id]) is None  # not yet polled: still running as far as we know
        (final,) = await until_done(poller, [job_id])
        assert (final.id, final.status) == (job_id, ApiStatus.COMPLETED)

    with_poller(test, durations={"image_generation": 3.0})


def test_a_job_the_api_does_not_know_ends_failed_as_not_found() -> None:
    async def test(client: SumeClient, poller: Poller) -> None:
        poller.watch(["job_never_made"], 1.0)
        (final,) = await until_done(poller, ["job_never_made"])
        assert (final.status, final.error_code, final.error_message) == (
            ApiStatus.FAILED,
            "not_found",
            UNKNOWN_JOB,
        )

    with_poller(test)


def test_a_forgotten_job_is_polled_no_more() -> None:
    async def test(client: SumeClient, poller: Poller) -> None:
        ids = await made(client, 2)
        poller.watch(ids, 1.0)
        await until_done(poller, ids)
        poller.forget(ids)
        assert poller.waiting == {} and poller.statuses == {}

    with_poller(test)
