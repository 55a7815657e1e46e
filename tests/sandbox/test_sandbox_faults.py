"""Faults on demand, in-process and over loopback: rate limits, 5xx, slow, reset, garbage, drop-after-commit."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable

import httpx
import pytest
from sandbox_helpers import AUTH, Sandbox

from sume_batch.sandbox import RunningSandbox

pytestmark = pytest.mark.anyio
IMAGE = {"prompt": "A jar on marble"}
RATE_HEADERS = (
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
)


async def test_reset_raises_read_error_and_commits_nothing(make_sandbox: Callable[..., Sandbox]) -> None:
    box = make_sandbox(faults={"reset": 1.0})
    async with box.client() as client:
        with pytest.raises(httpx.ReadError):
            await client.post("/images/generations", json=IMAGE)
    stats = box.state.stats_json()
    assert stats["job_ids"] == [] and stats["faults"] == {"reset": 1}
    assert stats["requests"]["POST /api/v1/images/generations"] == {"reset": 1}


async def test_drop_after_commit_creates_and_charges_but_never_answers(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    box = make_sandbox(faults={"drop_after_commit": 1.0})
    async with box.client() as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post("/images/generations", json=IMAGE)
        listed = (await client.get("/jobs")).json()["data"]  # reads are never dropped
        refused = await client.post("/images/generations", json={})  # a refusal commits nothing: answered
    stats = box.state.stats_json()
    assert [job["id"] for job in listed] == stats["job_ids"] and len(listed) == 1
    assert stats["credits"]["spent"] == 4
    assert refused.status_code == 400
    assert stats["requests"]["POST /api/v1/images/generations"] == {"dropped after commit": 1, "400": 1}


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors(sandbox: Sandbox, api: httpx.AsyncClient, status: int) -> None:
    sandbox.state.scripted_faults.append(
        {"kind": "server_error", "method": "*", "path": "/api/v1/", "times": 1, "status": status}
    )
    response = await api.post("/images/generations", json=IMAGE)
    assert response.status_code == status
    if status == 502:
        assert response.headers["content-type"] == "text/html"
    else:
        assert response.json()["request_id"] == response.headers["x-request-id"]
    assert ("retry-after" in response.headers) is (status == 503)
    assert sandbox.state.stats_json()["job_ids"] == []  # nothing committed before a 5xx


async def test_garbage_bodies_are_not_json(make_sandbox: Callable[..., Sandbox]) -> None:
    box = make_sandbox(faults={"garbage": 1.0})
    async with box.client() as client:
        answers = [await client.get("/credits") for _ in range(6)]
    for answer in answers:
        assert answer.headers["content-type"] == "application/json"
        with pytest.raises(ValueError):
            json.loads(answer.content)


async def test_slow_answers_wait_on_the_injected_sleep(make_sandbox: Callable[..., Sandbox]) -> None:
    box = make_sandbox(faults={"slow": 1.0, "slow_seconds": 2.5})
    async with box.client() as client:
        assert (await client.get("/me")).status_code == 200
    assert box.sleep.calls == [2.5]


async def test_rate_limits_per_bucket_with_headers(make_sandbox: Callable[..., Sandbox]) -> None:
    box = make_sandbox(rate_limits={"reads_per_minute": 2, "creates_per_minute": 1})
    async with box.client() as client:
        reads = [await client.get("/me") for _ in range(3)]
        creates = [await client.post("/images/generations", json=IMAGE) for _ in range(2)]
        assert [r.status_code for r in reads] == [200, 200, 429]
        assert [r.status_code for r in creates][1] == 429  # creates have their own budget
        assert all(name in reads[0].headers for name in RATE_HEADERS)
        assert reads[1].headers["ratelimit-remaining"] == "0"
        limited = reads[2]
        assert limited.json()["error"]["code"] == "rate_limit_exceeded"
        assert limited.headers["retry-after"] == limited.headers["ratelimit-reset"]
        box.clock.advance(int(limited.headers["retry-after"]))
        assert (await client.get("/me")).status_code == 200


async def test_no_rate_headers_when_unlimited(api: httpx.AsyncClient) -> None:
    assert "ratelimit-limit" not in (await api.get("/me")).headers


async def test_scripted_faults_match_method_and_path(sandbox: Sandbox, raw: httpx.AsyncClient) -> None:
    queued = await raw.post(
        "http://sandbox.test/_sandbox/faults",
        json={"kind": "rate_limit", "method": "POST", "path": "/api/v1/videos", "times": 2},
    )
    assert queued.status_code == 200
    async with sandbox.client() as client:
        assert (await client.post("/images/generations", json=IMAGE)).status_code in (200, 202)
        video = [await client.post("/videos/generations", json={"prompt": "x"}) for _ in range(3)]
    assert [v.status_code for v in video][:2] == [429, 429] and video[2].status_code in (200, 202)
    assert (await raw.get("http://sandbox.test/_sandbox/faults")).json() == {"queued": []}
    bad = await raw.post("http://sandbox.test/_sandbox/faults", json={"kind": "meteor"})
    assert set(bad.json()["error"]["details"]) == {"kind"}


async def test_chaos_misbehaves_in_every_way_deterministically(make_sandbox: Callable[..., Sandbox]) -> None:
    tallies = []
    for _ in range(2):
        box = make_sandbox(
            "chaos", seed=11, rate_limits={"reads_per_minute": None, "creates_per_minute": None}
        )
        async with box.client() as client:
            for n in range(300):
                with contextlib.suppress(httpx.TransportError):  # resets and drops
                    await (
                        client.get("/credits") if n % 2 else client.post("/images/generations", json=IMAGE)
                    )
        tallies.append(box.state.stats_json()["faults"])
    assert tallies[0] == tallies[1]
    assert set(tallies[0]) == {"reset", "server_error", "garbage", "drop_after_commit", "slow"}


def test_every_fault_over_loopback(live: RunningSandbox) -> None:
    with httpx.Client(base_url=live.base_url, headers=AUTH, timeout=5) as client:
        live.add_fault("reset")
        with pytest.raises(httpx.ReadError):
            client.get("/me")
        live.add_fault("drop_after_commit")
        with pytest.raises(httpx.RemoteProtocolError):
            client.post("/images/generations", json=IMAGE)
        assert len(client.get("/jobs").json()["data"]) == 1  # committed although never answered
        live.add_fault("server_error")
        assert client.get("/me").status_code in (500, 502, 503)
        live.add_fault("garbage")
        with pytest.raises(ValueError):
            client.get("/me").json()
        live.configure(faults={"slow": 1.0, "slow_seconds": 0.05})
        assert client.get("/me").status_code == 200
        live.configure(faults={"slow": 0.0}, rate_limits={"reads_per_minute": 1})
        assert [client.get("/me").status_code for _ in range(2)] == [200, 429]
    stats = live.stats()
    assert stats["faults"] == {"reset": 1, "drop_after_commit": 1, "server_error": 1, "garbage": 1, "slow": 1}
    assert stats["requests"]["GET /api/v1/me"]["reset"] == 1


async def test_a_dropped_create_retried_with_its_key_gets_the_same_job_under_honour(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    box = make_sandbox(idempotency="honour", create_shape="job")
    box.state.scripted_faults.append(
        {"kind": "drop_after_commit", "method": "POST", "path": "/api/v1/images", "times": 1, "status": None}
    )
    async with box.client(headers={"Idempotency-Key": "intent-7"}) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post("/images/generations", json=IMAGE)
        retried = await client.post("/images/generations", json=IMAGE)
    stats = box.state.stats_json()
    assert retried.json()["job"]["id"] == stats["job_ids"][0] and len(stats["job_ids"]) == 1
    assert retried.headers["idempotent-replayed"] == "true" and stats["credits"]["spent"] == 4
