"""Jobs on the sandbox clock: the status schedule, capacity, credits, failures, results and determinism."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sandbox_helpers import Sandbox, job_id_of

from sume_batch.sandbox import PLANTED_EMAIL, PLANTED_PROVIDER_TOKEN

pytestmark = pytest.mark.anyio
IMAGE = {"prompt": "A jar on marble"}


async def create(client: httpx.AsyncClient, path: str = "/images/generations", body: Any = None) -> str:
    response = await client.post(path, json=body or IMAGE)
    assert response.status_code in (200, 202), response.text
    return job_id_of(response.json())


async def status(client: httpx.AsyncClient, job_id: str) -> str:
    return str((await client.get(f"/jobs/{job_id}")).json()["status"])


async def test_a_job_moves_through_its_statuses_as_the_clock_advances(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    box = make_sandbox("instant", durations={"image_generation": 10.0})
    async with box.client() as client:
        job_id = await create(client)
        seen = [await status(client, job_id)]
        for _ in range(3):
            box.clock.advance(4.0)
            seen.append(await status(client, job_id))
    assert seen == ["running", "running", "processing", "completed"]


async def test_capacity_keeps_extra_jobs_queued_until_a_slot_frees(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    box = make_sandbox("instant", capacity=1, durations={"image_generation": 10.0})
    async with box.client() as client:
        first, second = await create(client), await create(client)
        credits = (await client.get("/credits")).json()
        assert credits["active_generation_capacity"] == {"limit": 1, "active": 1}
        assert [await status(client, first), await status(client, second)] == ["running", "queued"]
        box.clock.advance(10.0)
        assert [await status(client, first), await status(client, second)] == ["completed", "running"]
        box.clock.advance(10.0)
        assert await status(client, second) == "completed"


async def test_queued_jobs_start_when_the_earlier_one_finished_not_when_polled(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    box = make_sandbox("instant", capacity=1, durations={"image_generation": 10.0})
    async with box.client() as client:
        first, second = await create(client), await create(client)
        box.clock.advance(25.0)  # nobody polled at t=10, yet the second job started then and is done
        assert [await status(client, first), await status(client, second)] == ["completed", "completed"]


async def test_credits_are_reserved_then_spent_or_refunded(make_sandbox: Callable[..., Sandbox]) -> None:
    box = make_sandbox(
        "instant", credits=100, durations={"video_generation": 5.0}, faults={"job_failed": 0.0}
    )
    async with box.client() as client:
        await create(client, "/videos/generations", {"prompt": "x", "duration": 10, "resolution": "720p"})
        credits = (await client.get("/credits")).json()
        assert (credits["remaining_credits"], credits["reserved_credits"]) == (60, 40)
        box.clock.advance(5.0)
        credits = (await client.get("/credits")).json()
        assert (credits["remaining_credits"], credits["reserved_credits"]) == (60, 0)
        box.state.apply_config(box.state.config.with_overrides(faults={"job_failed": 1.0}))
        await create(client, "/images/generations", {"prompt": "x", "image_count": 3})
        assert box.state.stats_json()["credits"] == {
            "spent": 40,
            "reserved": 0,
            "refunded": 12,
            "remaining": 60,
        }


async def test_a_short_balance_is_a_402_and_creates_nothing(make_sandbox: Callable[..., Sandbox]) -> None:
    box = make_sandbox("instant", credits=10)
    async with box.client() as client:
        response = await client.post("/ads/videos", json={"avatar_id": "avatar_maya01", "script": "Hi"})
        assert response.status_code == 402
        error = response.json()["error"]
        assert error["code"] == "insufficient_credits"
        assert error["message"] == "Not enough credits for this request."
        assert error["details"] == {"required_credits": 60, "remaining_credits": 10}
        assert (await client.get("/jobs")).json()["data"] == []
    assert box.state.stats_json()["job_ids"] == []


async def test_failed_jobs_carry_a_sanitized_error_and_sometimes_a_planted_leak(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    box = make_sandbox("instant", faults={"job_failed": 1.0, "leaky_error": 1.0})
    async with box.client() as client:
        job = (await client.get(f"/jobs/{await create(client)}")).json()
        assert job["status"] == "failed"
        assert set(job["error"]) == {"code", "message", "details"}
        leak = str(job["error"]["details"])
        assert PLANTED_EMAIL in leak and PLANTED_PROVIDER_TOKEN in leak
        result = await client.get(f"/jobs/{job['id']}/result")
        assert result.status_code == 409
        assert result.json()["error"]["details"] == {"job_id": job["id"], "status": "failed"}


async def test_echo_input_returns_the_request_in_job_objects_results_and_failures(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    box = make_sandbox("instant", echo_input=True, faults={"job_failed": 0.5, "leaky_error": 0.0}, seed=4)
    body = {**IMAGE, "prompt": "a bottle, mail ops@brand.example"}
    async with box.client() as client:
        jobs = [(await client.get(f"/jobs/{await create(client, body=body)}")).json() for _ in range(8)]
        assert all(job["input"]["prompt"] == body["prompt"] for job in jobs)
        failed = [job for job in jobs if job["status"] == "failed"]
        done = [job for job in jobs if job["status"] == "completed"]
        assert failed and done
        assert all(job["error"]["message"].endswith(f"Request: {body['prompt']!r}") for job in failed)
        assert all(job["error"]["details"]["request"]["prompt"] == body["prompt"] for job in failed)
        result = (await client.get(f"/jobs/{done[0]['id']}/result")).json()
        assert result["input"]["prompt"] == body["prompt"] and result["result"]["images"]


@pytest.mark.parametrize(
    ("faults", "statuses"),
    [({"job_expired": 1.0}, {"expired"}), ({"job_canceled": 1.0}, {"canceled", "cancelled"})],
)
async def test_other_endings_and_both_cancel_spellings(
    make_sandbox: Callable[..., Sandbox], faults: dict[str, float], statuses: set[str]
) -> None:
    box = make_sandbox("instant", faults=faults)
    async with box.client() as client:
        jobs = [(await client.get(f"/jobs/{await create(client)}")).json() for _ in range(12)]
        assert {job["status"] for job in jobs} == statuses
        assert all(job["error"]["code"] in ("job_expired", "job_canceled") for job in jobs)
        listed = (await client.get("/jobs", params={"status": sorted(statuses)[0]})).json()["data"]
        assert len(listed) == 12


async def test_result_is_409_until_completed(make_sandbox: Callable[..., Sandbox]) -> None:
    box = make_sandbox("instant", durations={"image_generation": 3.0})
    async with box.client() as client:
        job_id = await create(client)
        early = await client.get(f"/jobs/{job_id}/result")
        assert early.status_code == 409 and early.json()["error"]["code"] == "job_not_completed"
        box.clock.advance(3.0)
        assert (await client.get(f"/jobs/{job_id}/result")).status_code == 200


async def test_results_differ_by_type_and_their_media_is_served(
    sandbox: Sandbox, api: httpx.AsyncClient
) -> None:
    image = await create(api, body={"prompt": "x", "image_count": 2})
    video = await create(api, "/videos/generations", {"prompt": "x"})
    analysis = await create(api, "/reference-analysis", {"url": "https://vm.tiktok.com/ZMabc123/"})
    results = {
        job: (await api.get(f"/jobs/{job}/result")).json()["result"] for job in (image, video, analysis)
    }
    assert len(results[image]["images"]) == 2
    assert set(results[video]["video"]) >= {"url", "thumbnail_url"}
    scenes = results[analysis]["analysis"]["scenes"]
    assert {"hook", "scenes", "transcript_summary"} <= set(results[analysis]["analysis"])
    assert all(("media_url" in scene) != ("clip_url" in scene) for scene in scenes)
    async with sandbox.client(auth=False) as storage:
        png = await storage.get(results[image]["images"][0]["url"])
        mp4 = await storage.get(results[video]["video"]["url"])
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n") and png.headers["content-type"] == "image/png"
    assert mp4.content[4:8] == b"ftyp" and mp4.headers["content-type"] == "video/mp4"


async def test_signed_media_urls_expire_and_need_their_signature(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    box = make_sandbox("instant", signed_media_rate=1.0, media_url_ttl=60)
    async with box.client() as client, box.client(auth=False) as storage:
        url = (await client.get(f"/jobs/{await create(client)}/result")).json()["result"]["images"][0]["url"]
        assert "X-Amz-Signature=" in url and "X-Amz-Expires=60" in url
        assert (await storage.get(url)).status_code == 200
        assert (await storage.get(url.split("?")[0])).json()["error"]["code"] == "signature_required"
        assert (await storage.get(url[:-4] + "0000")).json()["error"]["code"] == "signature_mismatch"
        box.clock.advance(61)
        expired = await storage.get(url)
        assert expired.status_code == 403 and expired.json()["error"]["code"] == "request_expired"


async def test_jobs_list_newest_first_with_filters_and_cursor(api: httpx.AsyncClient) -> None:
    made = [await create(api) for _ in range(3)] + [await create(api, "/videos/generations", {"prompt": "x"})]
    first = (await api.get("/jobs", params={"limit": 3})).json()
    assert [job["id"] for job in first["data"]] == made[::-1][:3] and first["has_more"]
    rest = (await api.get("/jobs", params={"limit": 3, "cursor": first["next_cursor"]})).json()
    assert [job["id"] for job in rest["data"]] == [made[0]]
    assert (rest["has_more"], rest["next_cursor"]) == (False, None)
    videos = (await api.get("/jobs", params={"type": "video_generation"})).json()["data"]
    assert [job["id"] for job in videos] == [made[3]]
    bad = await api.get("/jobs", params={"cursor": "nonsense", "limit": 0, "type": "image"})
    assert set(bad.json()["error"]["details"]) == {"cursor", "limit", "type"}  # every problem at once


def run_script(box: Sandbox) -> list[tuple[str, str]]:
    return [(job.id, job.outcome) for job in box.state.jobs.values()]


async def test_the_same_seed_gives_the_same_ids_and_outcomes(make_sandbox: Callable[..., Sandbox]) -> None:
    runs = []
    for seed in (7, 7, 8):
        box = make_sandbox(
            "chaos",
            seed=seed,
            faults={"reset": 0, "server_error": 0, "garbage": 0, "drop_after_commit": 0, "slow": 0},
        )
        async with box.client() as client:
            for _ in range(15):
                await client.post("/images/generations", json=IMAGE)
        runs.append(run_script(box))
    assert runs[0] == runs[1] != runs[2]
    assert {outcome for _, outcome in runs[0]} != {"completed"}  # chaos fails some jobs
