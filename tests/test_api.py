"""api: the client against the sandbox in-process — shapes, errors, and retries by what they cost."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from sume_batch.api import RetryBudget, SumeClient
from sume_batch.bounds import Pacer
from sume_batch.errors import (
    ApiError,
    AuthError,
    InsufficientCreditsError,
    TransportError,
    UncertainCreateError,
)
from sume_batch.responses import (
    balance_of,
    capacity_of,
    find_media,
)
from sume_batch.sandbox import NO_ACCESS_KEY, SandboxConfig, create_app

BASE = "http://sandbox.test/api/v1"


class Clock:
    """Sandbox time that only moves when the client sleeps: retries cost no wall time."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def with_client(
    test: Callable[[SumeClient, httpx.AsyncClient, Clock], Awaitable[None]],
    *,
    key: str | None = None,
    **overrides: Any,
) -> None:
    config = SandboxConfig.from_profile("instant", seed=7, **overrides)
    clock = Clock()
    app = create_app(config, clock=clock, sleep=clock.sleep)

    async def main() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
            client = SumeClient(
                http, api_key=key or config.api_key, base_url=BASE, sleep=clock.sleep, rng=random.Random(1),
                pacer=Pacer(clock=clock),
            )  # fmt: skip
            await test(client, http, clock)

    asyncio.run(main())


async def stats(http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.get("http://sandbox.test/_sandbox/stats")
    body: dict[str, Any] = response.json()
    return body


def test_reads_and_their_tolerant_parsing() -> None:
    async def test(client: SumeClient, http: httpx.AsyncClient, clock: Clock) -> None:
        assert set(await client.me()) >= {"user", "workspace", "api_key"}
        credits = await client.credits()
        assert balance_of(credits) == 10_000
        assert capacity_of(credits) == 4
        brand = await client.brand_current()
        assert brand  # the sandbox's Brand DNA profile
        jobs = await client.jobs(limit=5)
        assert {key: jobs[key] for key in ("object", "data", "has_more")} == {
            "object": "list",
            "data": [],
            "has_more": False,
        }

    with_client(test)


@pytest.mark.parametrize("shape", ["job", "job_id", "both", "mixed"])
def test_create_reads_every_documented_response_shape(shape: str) -> None:
    async def test(client: SumeClient, http: httpx.AsyncClient, clock: Clock) -> None:
        for n in range(4):
            created = await client.create("/images/generations", {"prompt": f"p{n}"}, idempotency_key=f"k{n}")
            assert len(created.job_ids) == 1 and created.job_ids[0].startswith("job_")
            job = await client.job(created.job_ids[0])
            assert (job.id, job.status, job.type) == (created.job_ids[0], "completed", "image_generation")
            result = await client.job_result(job.id)
            media = list(find_media(result))
            assert media and all(item.content_type == "image/png" for item in media)

    with_client(test, create_shape=shape)


def test_face_swap_answers_one_job_per_avatar_and_reference_analysis_states_credits() -> None:
    async def test(client: SumeClient, http: httpx.AsyncClient, clock: Clock) -> None:
        upload = await client.presign(
            filename="a.mp4", content_type="video/mp4", size_bytes=10, purpose="face_swap_source_video"
        )
        storage = httpx.AsyncClient(transport=http._transport)
        async with storage:
            put = await storage.put(
                upload["upload_url"], content=b"0123456789", headers=upload["required_headers"]
            )
            assert put.status_code < 300
        body = {"source_video_url": upload["media_url"], "avatar_ids": ["avatar_maya01", "avatar_sofia03"]}
        created = await client.create("/face-swap", body, idempotency_key="fs")
        assert len(created.job_ids) == 2
        analysis = await client.create(
            "/reference-analysis", {"url": "https://www.tiktok.com/@a/video/123"}, idempotency_key="ra"
        )
        assert analysis.required_credits is not None and analysis.required_credits > 0

    with_client(test)


def test_auth_errors_keep_the_request_id_and_never_show_details() -> None:
    async def missing(client: SumeClient, http: httpx.AsyncClient, clock: Clock) -> None:
        with pytest.raises(AuthError) as caught:
            await client.me()
        assert caught.value.status == 401 and caught.value.request_id.startswith("req_")

    async def no_access(client: SumeClient, http: httpx.AsyncClient, clock: Clock) -> None:
        with pytest.raises(AuthError) as caught:
            await client.create("/images/generations", {"prompt": "p"}, idempotency_key="k")
        assert caught.value.status == 403
        assert "details" not in str(caught.value)

    with_client(missing, key="sume_test_wrong_key_000")
    with_client(no_access, key=NO_ACCESS_KEY)


def test_a_refused_body_is_an_api_error_not_a_retry() -> None:
    async def test(client: SumeClient, http: httpx.AsyncClient, clock: Clock) -> None:
        with pytest.raises(ApiError) as caught:
            await client.create("/videos/generations", {"prompt": "p", "duration": 99}, idempotency_key="k")
        assert caught.value.status == 400 and not isinstance(caught.value, UncertainCreateError)
        assert client.requests == 1

    with_client(test)


def test_insufficient_credits_is_its_own_error() -> None:
    async def test(client: SumeClient, http: httpx.AsyncClient, clock: Clock) -> None:
        with pytest.raises(InsufficientCreditsError) as caught:
            await client.create(
                "/ads/videos", {"avatar_id": "avatar_maya01", "script": "hi"}, idempotency_key="k"
            )
        assert (caught.value.status, caught.value.code) == (402, "insufficient_credits")

    with_client(test, credits=10)


def test_reads_retry_5xx_then_give_up() -> None:
    async def test(client: SumeClient, http: httpx.AsyncClient, clock: Clock) -> None:
        with pytest.raises(ApiError) as caught:
            await client.credits()
        assert caught.value.status is not None and caught.value.status >= 500
        assert client.requests == 6  # max_attempts
        assert len(clock.slept) == 5

    with_client(test, faults={"server_error": 1.0})


def test_reads_retry_resets_and_garbage() -> None:
    for fault in ("reset", "garbage"):

        async def test(client: SumeClient, http: httpx.AsyncClient, clock: Clock) -> None:
            with pytest.raises((httpx.ReadError, TransportError)):
                await client.me()
            assert client.requests == 6

        with_client(test, faults={fault: 1.0})


def test_the_retry_budget_stops_an_outage() -> None:
    async def test(client: SumeClient, http: httpx.AsyncClient, clock: Clock) -> None:
        client.budget = RetryBudget(remaining=3)
        for _ in range(3):
            with pytest.raises(ApiError):
                await client.me()
        assert client.requests == 3 + 3  # three retries in all, then each call fails at once

    with_client(test, faults={"server_error": 1.0})


@pytest.mark.parametrize("fault", ["server_error", "reset", "garbage", "drop_after_commit"])
def test_a_create_with_an_unknown_outcome_is_uncertain_and_never_resent(fault: str) -> None:
    async def test(client: SumeClient, http: httpx.AsyncClient, clock: Clock) -> None:
        with pytest.raises(UncertainCreateError):
            await client.create("/images/generations", {"prompt": "p"}, idempotency_key="once")
        assert client.requests == 1

    with_client(test, faults={fault: 1.0})


def test_a_rate_limited_create_waits_for_retry_after_and_is_resent() -> None:
    async def test(client: SumeClient, http: httpx.AsyncClient, clock: Clock) -> None:
        client.pacer = Pacer(clock=lambda: -1e9)  # blind pacing, so the server's 429 is what stops us
        for n in range(3):
            await client.create("/images/generations", {"prompt": f"p{n}"}, idempotency_key=f"k{n}")
        counts = await stats(http)
        assert counts["credits"]["spent"] + counts["credits"]["reserved"] == 12
        assert clock.slept and clock.slept[0] >= 1  # Retry-After honoured

    with_client(test, rate_limits={"creates_per_minute": 2})


def test_pacing_slows_down_before_the_server_says_429() -> None:
    async def test(client: SumeClient, http: httpx.AsyncClient, clock: Clock) -> None:
        for n in range(5):
            await client.create("/images/generations", {"prompt": f"p{n}"}, idempotency_key=f"k{n}")
        statuses = (await stats(http))["requests"]
        assert not any("429" in str(key) or "429" in str(value) for key, value in _flatten(statuses))
        assert clock.slept  # it waited for the window instead

    with_client(test, rate_limits={"creates_per_minute": 2})


def _flatten(value: object, prefix: str = "") -> list[tuple[str, object]]:
    if isinstance(value, dict):
        return [pair for key, item in value.items() for pair in _flatten(item, f"{prefix}/{key}")]
    return [(prefix, value)]


def test_user_agent_and_bearer_are_sent() -> None:
    seen: list[httpx.Request] = []

    async def main() -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return httpx.Response(200, json={"user": {}})

        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            await SumeClient(http, api_key="sume_test_x", base_url=BASE).me()

    asyncio.run(main())
    assert seen[0].headers["user-agent"].startswith("sume-batch/")
    assert seen[0].headers["authorization"] == "Bearer sume_test_x"
    assert str(seen[0].url) == BASE + "/me"


def test_network_failures_name_the_request_and_exit_69() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    async def main() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as http:
            client = SumeClient(http, api_key="sume_test_x", base_url=BASE, sleep=Clock().sleep)
            with pytest.raises(TransportError) as caught:
                await client.job("job_1")
        assert (
            str(caught.value)
            == "GET /jobs/job_1: could not connect to the API (ConnectError: [Errno 111] Connection refused)"
        )
        assert caught.value.exit_code == 69 and client.requests == 6

    asyncio.run(main())
