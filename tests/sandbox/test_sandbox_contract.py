"""Contract: every endpoint, in-process and over loopback, answers in the shapes of sume-api.md and the README table."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import jsonschema
import pytest
from sandbox_helpers import AUTH, Sandbox, job_id_of

from sume_batch.sandbox import RunningSandbox

pytestmark = pytest.mark.anyio

JOB_TYPES = [
    "image_generation",
    "video_generation",
    "ads_video",
    "face_swap",
    "reference_analysis",
    "asset_ingest",
]
STATUSES = ["queued", "running", "processing", "completed", "failed", "canceled", "cancelled", "expired"]
STR = {"type": "string", "minLength": 1}
URL = {"type": "string", "pattern": "^https?://"}
INT = {"type": "integer"}
NUM = {"type": "number"}


def obj(required: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "required": list(required), "properties": required, **extra}


ENVELOPE = obj(
    {
        "error": obj({"code": STR, "message": STR, "details": {"type": "object"}}),
        "request_id": {"type": "string", "pattern": "^req_"},
    }
)
ERROR = {"anyOf": [{"type": "null"}, obj({"code": STR, "message": STR})]}
JOB = obj(
    {
        "id": {"type": "string", "pattern": "^job_"},
        "object": {"const": "job"},
        "type": {"enum": JOB_TYPES},
        "status": {"enum": STATUSES},
        "created_at": STR,
        "updated_at": STR,
        "error": ERROR,
        "result_url": {"anyOf": [{"type": "null"}, URL]},
    }
)


def listing(item: dict[str, Any]) -> dict[str, Any]:
    return obj(
        {
            "object": {"const": "list"},
            "data": {"type": "array", "items": item},
            "has_more": {"type": "boolean"},
            "next_cursor": {"type": ["string", "null"]},
        }
    )


def created(object_name: str) -> dict[str, Any]:
    """A create answer: `job.id` or a top-level `job_id` (the documented conflict), or both."""
    return {
        "allOf": [
            obj({"object": {"const": object_name}}),
            {
                "anyOf": [
                    obj({"job": obj({"id": {"pattern": "^job_"}, "status": {"const": "queued"}})}),
                    obj({"job_id": {"pattern": "^job_"}}),
                ]
            },
        ]
    }


ME = obj({"user": {"type": "object"}, "workspace": {"type": "object"}, "api_key": obj({"prefix": STR})})
CREDITS = obj(
    {
        "object": {"const": "credits"},
        "plan": STR,
        "monthly_credits": INT,
        "bonus_credits": INT,
        "remaining_credits": INT,
        "active_generation_capacity": obj({"limit": INT, "active": INT}),
    }
)
BRAND = obj(
    {
        "id": STR,
        "object": {"const": "brand"},
        "images": {"type": "array", "items": obj({"reference_url": URL})},
    }
)
AVATAR = obj(
    {
        "id": {"pattern": "^avatar_"},
        "object": {"const": "avatar"},
        "capabilities": {"type": "array", "items": {"enum": ["talking_head", "ugc_ad", "face_swap"]}},
    }
)
ASSET = {
    "allOf": [
        obj(
            {
                "id": {"pattern": "^asset_"},
                "object": {"const": "asset"},
                "title": STR,
                "thumbnail_url": URL,
                "start_time_seconds": NUM,
                "end_time_seconds": NUM,
                "source_video": obj({"media_url": URL}),
                "metadata": obj({"visual_summary": STR, "cta_present": {"type": "boolean"}}),
            }
        ),
    ]
}
SEARCHED = {
    "allOf": [ASSET, obj({"search": obj({"mode": {"enum": ["auto", "text"]}, "score": NUM, "query": STR})})]
}
UNSEARCHED = {"allOf": [ASSET, {"not": {"required": ["search"]}}]}
PRESIGN = obj(
    {
        "upload_url": URL,
        "required_headers": {"type": "object", "additionalProperties": {"type": "string"}},
        "object_key": STR,
        "media_url": URL,
        "expires_at": STR,
    }
)
RESULT = {"allOf": [JOB, obj({"result": {"type": "object"}, "status": {"const": "completed"}})]}


@pytest.fixture(params=["in-process", "loopback"])
async def client(
    request: pytest.FixtureRequest, sandbox: Sandbox, live: RunningSandbox
) -> AsyncIterator[httpx.AsyncClient]:
    if request.param == "in-process":
        async with sandbox.client() as in_process:
            yield in_process
    else:
        async with httpx.AsyncClient(base_url=live.base_url, headers=AUTH) as over_loopback:
            yield over_loopback


def check(response: httpx.Response, schema: dict[str, Any], status: int | tuple[int, ...] = 200) -> Any:
    """Assert status, request id header and body shape; return the body."""
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status_code in statuses, response.text
    assert response.headers["x-request-id"].startswith("req_")
    body = response.json()
    jsonschema.validate(body, schema)
    if "request_id" in body:
        assert body["request_id"] == response.headers["x-request-id"]
    return body


async def test_read_endpoints(client: httpx.AsyncClient) -> None:
    check(await client.get("/me"), ME)
    check(await client.get("/credits"), CREDITS)
    brands = check(await client.get("/brand"), listing(BRAND))
    check(await client.get("/brand", params={"domain": brands["data"][0]["domain"]}), listing(BRAND))
    check(await client.get("/brand/current"), BRAND)
    avatars = check(await client.get("/avatars"), listing(AVATAR))
    check(await client.get(f"/avatars/{avatars['data'][0]['id']}"), AVATAR)
    assets = check(await client.get("/assets", params={"limit": 3}), listing(UNSEARCHED))
    check(await client.get(f"/assets/{assets['data'][0]['id']}"), UNSEARCHED)
    query = {"q": "woman camera hook", "source_type": "generated", "limit": 5, "sort": "relevance"}
    check(await client.get("/assets", params=query), listing(SEARCHED))
    check(await client.get("/jobs", params={"limit": 5}), listing(JOB))


async def test_errors_share_the_envelope(client: httpx.AsyncClient) -> None:
    check(await client.get("/me", headers={"Authorization": "Bearer sume_test_wrong"}), ENVELOPE, 401)
    check(await client.get("/me", headers={"Authorization": "Bearer sume_test_noaccess"}), ENVELOPE, 403)
    check(await client.get("/jobs/job_missing"), ENVELOPE, 404)
    check(await client.get("/avatars/avatar_missing"), ENVELOPE, 404)
    check(await client.get("/assets/asset_missing"), ENVELOPE, 404)
    check(await client.get("/jobs", params={"status": "done"}), ENVELOPE, 400)
    check(await client.post("/images/generations", json={"aspect_ratio": "2:1"}), ENVELOPE, 400)
    check(await client.delete("/jobs"), ENVELOPE, 405)


async def test_create_endpoints_and_results(client: httpx.AsyncClient) -> None:
    bodies = {
        "/images/generations": ({"prompt": "A jar on marble", "aspect_ratio": "4:5"}, "image_generation"),
        "/videos/generations": ({"prompt": "Demo", "duration": 4, "resolution": "480p"}, "video_generation"),
        "/ads/videos": ({"avatar_id": "avatar_maya01", "script": "Hi!", "style": "ugc"}, "ads_video"),
        "/reference-analysis": ({"url": "https://www.instagram.com/reel/Cx1y2z3/"}, "reference_analysis"),
    }
    job_ids = []
    for path, (body, object_name) in bodies.items():
        answer = check(await client.post(path, json=body), created(object_name), (200, 202))
        job_ids.append(job_id_of(answer))
    assert answer["required_credits"] == 5 and answer["job_id"] == job_ids[-1]
    source = await upload(client, "face_swap_source_video")
    swap = {"source_video_url": source["media_url"], "avatar_ids": ["avatar_maya01", "avatar_sofia03"]}
    swapped = check(await client.post("/face-swap", json=swap), listing(JOB), (200, 202))
    assert swapped["job_ids"] == [job["id"] for job in swapped["data"]]
    for job_id in [*job_ids, *swapped["job_ids"]]:
        check(await client.get(f"/jobs/{job_id}"), JOB)
        check(await client.get(f"/jobs/{job_id}/result"), RESULT)
    check(await client.get("/jobs", params={"type": "face_swap"}), listing(JOB))


async def test_upload_flow(client: httpx.AsyncClient) -> None:
    presigned = await upload(client, "asset_library")
    answer = check(
        await client.post("/assets", json={"object_key": presigned["object_key"], "title": "Surf day"}),
        {"allOf": [ASSET, created("asset")]},
        (200, 202),
    )
    assert answer["status"] == "processing"
    ingest = check(await client.get(f"/jobs/{job_id_of(answer)}/result"), RESULT)
    assert ingest["type"] == "asset_ingest" and ingest["result"]["asset_id"] == answer["id"]
    found = check(await client.get("/assets", params={"q": "surf"}), listing(SEARCHED))
    assert [asset["id"] for asset in found["data"]] == [answer["id"]]


async def upload(client: httpx.AsyncClient, purpose: str) -> dict[str, Any]:
    """Presign, then PUT bytes with only the required headers (no API key)."""
    ask = {"filename": "clip.mp4", "content_type": "video/mp4", "size_bytes": 4, "purpose": purpose}
    presigned: dict[str, Any] = check(await client.post("/uploads/presign", json=ask), PRESIGN)
    put = await client.send(
        without_key(
            client.build_request(
                "PUT", presigned["upload_url"], content=b"abcd", headers=presigned["required_headers"]
            )
        )
    )
    assert put.status_code == 200 and put.headers["x-request-id"].startswith("req_")
    return presigned


def without_key(request: httpx.Request) -> httpx.Request:
    """The request minus the client's default API key: storage must never see it."""
    del request.headers["Authorization"]
    return request
