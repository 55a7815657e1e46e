"""Uploads and storage: presign → PUT with only the required headers → finalize → ingest → searchable."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sandbox_helpers import Sandbox, job_id_of

pytestmark = pytest.mark.anyio
ASK = {"filename": "Beach day!.mp4", "content_type": "video/mp4", "size_bytes": 5, "purpose": "asset_library"}


async def presign(client: httpx.AsyncClient, **changes: Any) -> dict[str, Any]:
    response = await client.post("/uploads/presign", json={**ASK, **changes})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def put_error(storage: httpx.AsyncClient, url: str, headers: dict[str, str]) -> str:
    response = await storage.put(url, content=b"bytes", headers=headers)
    assert response.status_code == 403, response.text
    return str(response.json()["error"]["code"])


async def test_presign_answers_a_signed_put_target(api: httpx.AsyncClient) -> None:
    body = await presign(api)
    assert body["object_key"].endswith("/Beach_day_.mp4")
    assert body["upload_url"].startswith(f"http://sandbox.test/storage/{body['object_key']}?X-Amz-Algorithm=")
    assert body["media_url"] == f"http://sandbox.test/storage/{body['object_key']}"
    assert set(body["required_headers"]) == {"Content-Type", "x-amz-meta-sume-upload-token"}
    assert body["expires_at"].endswith("Z")


async def test_storage_put_checks_headers_signature_and_expiry(
    sandbox: Sandbox, api: httpx.AsyncClient
) -> None:
    body = await presign(api)
    url, headers = body["upload_url"], body["required_headers"]
    async with sandbox.client(auth=False) as storage:
        assert await put_error(storage, url, {"Content-Type": "video/mp4"}) == "missing_required_header"
        assert (
            await put_error(storage, url, {**headers, "Content-Type": "image/png"})
            == "missing_required_header"
        )
        assert (
            await put_error(storage, url.replace("Signature=", "Signature=0"), headers)
            == "signature_mismatch"
        )
        assert await put_error(storage, url.split("?")[0], headers) == "signature_required"
        assert (await storage.get(body["media_url"])).status_code == 404  # nothing uploaded yet
        assert (await storage.put(url, content=b"bytes", headers=headers)).status_code == 200
        got = await storage.get(body["media_url"])
        assert (got.content, got.headers["content-type"]) == (b"bytes", "video/mp4")
        sandbox.clock.advance(901)
        assert await put_error(storage, url, headers) == "request_expired"


@pytest.mark.parametrize(
    "credential", [{"Authorization": "Bearer sume_test_sandbox_key"}, {"X-Api-Key": "k"}]
)
async def test_storage_refuses_and_counts_api_credentials(
    sandbox: Sandbox, api: httpx.AsyncClient, credential: dict[str, str]
) -> None:
    body = await presign(api)
    brand = (await api.get("/brand/current")).json()["images"][0]["reference_url"]
    async with sandbox.client(auth=False) as storage:
        put = await storage.put(
            body["upload_url"], content=b"x", headers={**body["required_headers"], **credential}
        )
        get = await storage.get(brand, headers=credential)
        assert (await storage.get(brand)).status_code == 200
    assert [put.status_code, get.status_code] == [403, 403]
    assert put.json()["error"]["code"] == "credentials_not_allowed"
    assert sandbox.state.stats_json()["storage_requests_with_credentials"] == 2


async def test_an_uploaded_asset_is_searchable_only_after_ingest(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    box = make_sandbox(durations={"asset_ingest": 5.0}, credits=1)
    async with box.client() as client, box.client(auth=False) as storage:
        body = await presign(client)
        early = await client.post("/assets", json={"object_key": body["object_key"], "title": "Surf lesson"})
        assert early.json()["error"]["details"] == {"object_key": "no bytes were uploaded under this key"}
        await storage.put(body["upload_url"], content=b"12345", headers=body["required_headers"])
        asset = (
            await client.post("/assets", json={"object_key": body["object_key"], "title": "Surf lesson"})
        ).json()
        assert (asset["status"], asset["title"]) == ("processing", "Surf lesson")
        assert (await client.get("/assets", params={"q": "surf"})).json()["data"] == []
        assert (await client.get(f"/assets/{asset['id']}")).json()["status"] == "processing"
        box.clock.advance(5.0)
        found = (await client.get("/assets", params={"q": "surf lesson"})).json()["data"]
        assert [(a["id"], a["status"], a["search"]["score"]) for a in found] == [(asset["id"], "ready", 1.0)]
        result = (await client.get(f"/jobs/{job_id_of(asset)}/result")).json()["result"]
        assert result["asset_id"] == asset["id"]
        again = await client.post("/assets", json={"object_key": body["object_key"]})
        assert (again.status_code, again.json()["error"]["code"]) == (409, "already_finalized")
        assert (await client.get("/credits")).json()["remaining_credits"] == 0  # ingest cost its 1 credit


async def test_face_swap_takes_an_uploaded_source_and_makes_a_job_per_avatar(
    sandbox: Sandbox, api: httpx.AsyncClient
) -> None:
    body = await presign(api, purpose="face_swap_source_video")
    async with sandbox.client(auth=False) as storage:
        await storage.put(body["upload_url"], content=b"12345", headers=body["required_headers"])
    avatars = ["avatar_maya01", "avatar_kenji04", "avatar_amara05"]
    answer = await api.post("/face-swap", json={"source_video_url": body["media_url"], "avatar_ids": avatars})
    swapped = answer.json()
    assert len(swapped["data"]) == 3 and swapped["job_ids"] == [job["id"] for job in swapped["data"]]
    results = [(await api.get(f"/jobs/{job_id}/result")).json()["result"] for job_id in swapped["job_ids"]]
    assert [r["avatar_id"] for r in results] == avatars and all("output_url" in r for r in results)
    assert (await api.get("/credits")).json()["remaining_credits"] == 10_000 - 60


async def test_a_library_upload_is_not_a_face_swap_source(sandbox: Sandbox, api: httpx.AsyncClient) -> None:
    body = await presign(api)
    async with sandbox.client(auth=False) as storage:
        await storage.put(body["upload_url"], content=b"12345", headers=body["required_headers"])
    answer = await api.post(
        "/face-swap", json={"source_video_url": body["media_url"], "avatar_ids": ["avatar_maya01"]}
    )
    assert set(answer.json()["error"]["details"]) == {"source_video_url"}
