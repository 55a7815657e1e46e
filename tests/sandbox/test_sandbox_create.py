"""Creates: body validation, answer shapes and statuses, the Idempotency-Key switch, auth and request ids."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sandbox_helpers import AUTH, Sandbox, job_id_of

from sume_batch.sandbox import RunningSandbox

pytestmark = pytest.mark.anyio
IMAGE = {"prompt": "A jar on marble"}


async def details(client: httpx.AsyncClient, path: str, body: Any) -> dict[str, str]:
    response = await client.post(path, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "bad_request"
    found: dict[str, str] = response.json()["error"]["details"]
    return found


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        (
            "/images/generations",
            {"aspect_ratio": "2:3", "image_count": True},
            {
                "prompt": "is required",
                "aspect_ratio": "must be one of 1:1, 4:5, 9:16",
                "image_count": "must be an integer from 1 to 4",
            },
        ),
        (
            "/images/generations",
            {"prompt": "x", "reference_image_urls": ["http://evil.example/a.png"]},
            {"reference_image_urls": "must be HTTPS URLs Sume returned, got 'http://evil.example/a.png'"},
        ),
        (
            "/videos/generations",
            {"prompt": "x", "duration": 3, "resolution": "1080p", "generate_audio": "no"},
            {
                "duration": "must be an integer from 4 to 15",
                "resolution": "must be one of 480p, 720p",
                "generate_audio": "must be true or false",
            },
        ),
        (
            "/ads/videos",
            {"avatar_id": "avatar_sofia03", "script": "Hi", "style": "ugc"},
            {"avatar_id": "avatar 'avatar_sofia03' lacks the 'ugc_ad' capability"},
        ),
        (
            "/ads/videos",
            {"avatar_id": "avatar_nobody", "script": ""},
            {
                "avatar_id": "no avatar 'avatar_nobody' in this workspace",
                "script": "must be a non-empty string",
            },
        ),
        (
            "/face-swap",
            {"source_video_url": "https://example.com/v.mp4", "avatar_ids": []},
            {
                "avatar_ids": "must hold 1 to 10 distinct values",
                "source_video_url": "must be the media_url of a received upload with purpose face_swap_source_video",
            },
        ),
        (
            "/reference-analysis",
            {"url": "https://www.youtube.com/watch?v=x"},
            {"url": "must be a public TikTok video or Instagram Reel URL (https://...)"},
        ),
        (
            "/uploads/presign",
            {
                "filename": "a.png",
                "content_type": "image/png",
                "size_bytes": 0,
                "purpose": "face_swap_source_video",
            },
            {
                "size_bytes": "must be an integer from 1 to 5368709120",
                "content_type": "must be a video type for purpose face_swap_source_video",
            },
        ),
        (
            "/assets",
            {"object_key": "uploads/nope", "title": 5},
            {"object_key": "no bytes were uploaded under this key", "title": "must be a non-empty string"},
        ),
        (
            "/images/generations",
            {"prompt": "x", "workspace_id": "ws_1"},
            {"workspace_id": "must not be sent: the API key decides the workspace"},
        ),
    ],
)
async def test_bad_bodies_are_refused_with_every_problem(
    api: httpx.AsyncClient, path: str, body: Any, expected: dict[str, str]
) -> None:
    assert await details(api, path, body) == expected


@pytest.mark.parametrize(
    ("raw", "problem"), [(b"{nope", "is not valid JSON"), (b"[1]", "must be a JSON object")]
)
async def test_a_body_that_is_not_a_json_object(api: httpx.AsyncClient, raw: bytes, problem: str) -> None:
    response = await api.post(
        "/images/generations", content=raw, headers={"Content-Type": "application/json"}
    )
    assert response.json()["error"]["details"] == {"body": problem}


async def test_unknown_fields_are_ignored_and_counted_unless_strict(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    box = make_sandbox()
    async with box.client() as client:
        assert (await client.post("/images/generations", json={**IMAGE, "colour": "red"})).status_code in (
            200,
            202,
        )
        assert box.state.stats_json()["unknown_fields"] == {"/api/v1/images/generations:colour": 1}
        box.state.apply_config(box.state.config.with_overrides(strict_unknown_fields=True))
        refused = await client.post("/images/generations", json={**IMAGE, "colour": "red"})
        assert refused.json()["error"]["details"] == {"colour": "is not a known field"}


@pytest.mark.parametrize(
    ("shape", "keys"),
    [
        ("job", {"object", "job"}),
        ("job_id", {"object", "job_id", "status"}),
        ("both", {"object", "job", "job_id"}),
    ],
)
async def test_the_create_shape_knob(
    make_sandbox: Callable[..., Sandbox], shape: str, keys: set[str]
) -> None:
    async with make_sandbox(create_shape=shape).client() as client:
        body = (await client.post("/images/generations", json=IMAGE)).json()
    assert set(body) == keys and body["object"] == "image_generation"


async def test_mixed_serves_every_shape_and_both_statuses(make_sandbox: Callable[..., Sandbox]) -> None:
    async with make_sandbox().client() as client:
        answers = [await client.post("/videos/generations", json={"prompt": "x"}) for _ in range(24)]
    assert {frozenset(a.json()) - {"object", "status"} for a in answers} == {
        frozenset({"job"}),
        frozenset({"job_id"}),
        frozenset({"job", "job_id"}),
    }
    assert {a.status_code for a in answers} == {200, 202}


async def test_idempotency_honoured_replays_without_charging(make_sandbox: Callable[..., Sandbox]) -> None:
    box = make_sandbox(idempotency="honour")
    async with box.client() as client:
        key = {"Idempotency-Key": "intent-1"}
        first = await client.post("/images/generations", json=IMAGE, headers=key)
        again = await client.post("/images/generations", json=IMAGE, headers=key)
        other = await client.post("/images/generations", json={"prompt": "else"}, headers=key)
    assert (again.status_code, again.json()) == (first.status_code, first.json())
    assert again.headers["idempotent-replayed"] == "true"
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"
    stats = box.state.stats_json()
    assert stats["creates_by_idempotency_key"] == {"intent-1": 1} and stats["idempotent_replays"] == 1
    assert len(stats["job_ids"]) == 1 and stats["credits"]["spent"] == 4


async def test_idempotency_ignored_makes_a_job_per_request(make_sandbox: Callable[..., Sandbox]) -> None:
    box = make_sandbox(idempotency="ignore")
    async with box.client() as client:
        answers = [
            await client.post("/images/generations", json=IMAGE, headers={"Idempotency-Key": "k"})
            for _ in range(2)
        ]
    assert job_id_of(answers[0].json()) != job_id_of(answers[1].json())
    stats = box.state.stats_json()
    assert stats["creates_by_idempotency_key"] == {"k": 2}
    assert list(stats["creates_by_body_hash"].values()) == [2]


async def test_idempotency_switch_over_loopback(live: RunningSandbox) -> None:
    async with httpx.AsyncClient(
        base_url=live.base_url, headers={**AUTH, "Idempotency-Key": "same"}
    ) as client:
        replayed = {
            job_id_of((await client.post("/images/generations", json=IMAGE)).json()) for _ in range(2)
        }
        live.configure(idempotency="ignore")
        ignored = {job_id_of((await client.post("/images/generations", json=IMAGE)).json()) for _ in range(2)}
    assert len(replayed) == 1 and len(ignored) == 2
    assert live.stats()["creates_by_idempotency_key"] == {"same": 3}


@pytest.mark.parametrize(
    ("headers", "status", "message"),
    [
        ({}, 401, "Missing API key."),
        ({"Authorization": "Bearer sume_test_unknown"}, 401, "Invalid API key."),
        ({"Authorization": "Basic abc"}, 401, "Malformed Authorization header: use 'Bearer <key>'."),
        (
            {"X-Api-Key": "sume_test_noaccess"},
            403,
            "This API key's workspace lacks access to the Public API.",
        ),
    ],
)
async def test_auth_refusals(sandbox: Sandbox, headers: dict[str, str], status: int, message: str) -> None:
    async with sandbox.client(auth=False) as client:
        response = await client.get("/me", headers=headers)
    assert (response.status_code, response.json()["error"]["message"]) == (status, message)
    assert response.json()["request_id"] == response.headers["x-request-id"]


async def test_legacy_header_works_and_request_ids_are_unique(sandbox: Sandbox) -> None:
    async with sandbox.client(auth=False) as client:
        answers = [await client.get("/me", headers={"X-Api-Key": "sume_test_sandbox_key"}) for _ in range(3)]
    assert {a.status_code for a in answers} == {200}
    assert len({a.headers["x-request-id"] for a in answers}) == 3
    assert "sume_test_sandbox_key" not in answers[0].text  # /me shows a prefix, never the key
