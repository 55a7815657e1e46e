"""Read endpoints: account, credits, Brand DNA, avatars, and the Asset Library search of sume-api.md §8."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sandbox_helpers import Sandbox

pytestmark = pytest.mark.anyio


async def ids(api: httpx.AsyncClient, **params: Any) -> list[str]:
    response = await api.get("/assets", params=params)
    assert response.status_code == 200, response.text
    return [asset["id"] for asset in response.json()["data"]]


async def test_me_describes_the_key_without_showing_it(api: httpx.AsyncClient) -> None:
    me = (await api.get("/me")).json()
    assert set(me) >= {"user", "workspace", "api_key"}
    assert me["api_key"]["prefix"] == "sume_test_" and "sume_test_sandbox_key" not in str(me)


async def test_credits_follow_the_config(sandbox: Sandbox, api: httpx.AsyncClient) -> None:
    sandbox.state.apply_config(sandbox.state.config.with_overrides(credits=50, bonus_credits=7, plan="pro"))
    credits = (await api.get("/credits")).json()
    assert (credits["plan"], credits["monthly_credits"], credits["bonus_credits"]) == ("pro", 50, 7)
    assert credits["remaining_credits"] == 57


async def test_brands_filter_by_domain_and_references_are_served(
    sandbox: Sandbox, api: httpx.AsyncClient
) -> None:
    everyone = (await api.get("/brand")).json()["data"]
    assert len(everyone) == 2
    for domain in ("trailpeak.example", "https://www.TrailPeak.example/about"):
        found = (await api.get("/brand", params={"domain": domain})).json()["data"]
        assert [brand["id"] for brand in found] == ["brand_trailpeak"]
    current = (await api.get("/brand/current")).json()
    assert current["is_current"] and current["images"]
    async with sandbox.client(auth=False) as storage:
        image = await storage.get(current["images"][0]["reference_url"])
    assert image.content.startswith(b"\x89PNG")
    made = await api.post(
        "/images/generations",
        json={"prompt": "x", "reference_image_urls": [current["images"][0]["reference_url"]]},
    )
    assert made.status_code == 200  # the sandbox's own (http) reference URLs are accepted


async def test_avatars_page_and_carry_capabilities(api: httpx.AsyncClient) -> None:
    first = (await api.get("/avatars", params={"limit": 4})).json()
    rest = (await api.get("/avatars", params={"limit": 4, "cursor": first["next_cursor"]})).json()
    assert len(first["data"]) == 4 and first["has_more"] and len(rest["data"]) == 2 and not rest["has_more"]
    visibility = {avatar["visibility"] for avatar in first["data"] + rest["data"]}
    assert visibility == {"public", "workspace"}
    assert (await api.get("/avatars/avatar_noah06")).json()["capabilities"] == ["talking_head"]


async def test_search_scores_and_only_then_has_a_search_block(api: httpx.AsyncClient) -> None:
    hits = (await api.get("/assets", params={"q": "woman camera hook", "search_mode": "text"})).json()["data"]
    scores = [hit["search"]["score"] for hit in hits]
    assert scores == sorted(scores, reverse=True) and scores[0] == 1.0
    assert {hit["search"]["mode"] for hit in hits} == {"text"}
    listed = (await api.get("/assets")).json()["data"]
    assert all("search" not in asset for asset in listed) and len(listed) == 10
    assert all("transcript" not in asset["metadata"] for asset in listed)
    one = (await api.get(f"/assets/{listed[0]['id']}")).json()
    assert "transcript" in one["metadata"]


async def test_scenes_name_their_media_in_every_documented_way(api: httpx.AsyncClient) -> None:
    listed = (await api.get("/assets")).json()["data"]
    kinds = {("media_url" in a, "clip_url" in a, "source_media_url" in a) for a in listed}
    assert kinds == {(True, False, False), (False, True, True), (False, False, False)}
    assert all(
        a["source_video"]["media_url"] and a["end_time_seconds"] > a["start_time_seconds"] for a in listed
    )


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"source_type": "upload", "segment_type": "hook"}, ["asset_seed05"]),
        ({"brand": "trailpeak", "cta_present": "true"}, ["asset_seed08"]),
        ({"product": "Calm Cream", "tag": "car"}, ["asset_seed04"]),
        ({"keyword": "drone"}, ["asset_seed09"]),
        (
            {"min_duration_seconds": "7", "sort": "duration_desc"},
            ["asset_seed09", "asset_seed10", "asset_seed07"],
        ),
        ({"max_duration_seconds": "2.9", "sort": "created_at_asc"}, ["asset_seed05"]),
        (
            {"created_after": "2025-12-26T00:00:00Z", "created_before": "2025-12-29T00:00:00+00:00"},
            ["asset_seed06", "asset_seed07", "asset_seed08"],
        ),
        ({"q": "rain jacket", "source_type": "generated", "limit": "1"}, ["asset_seed06"]),
    ],
)
async def test_search_filters(api: httpx.AsyncClient, params: dict[str, str], expected: list[str]) -> None:
    assert await ids(api, **params) == expected


async def test_search_pages_with_a_cursor(api: httpx.AsyncClient) -> None:
    first = (await api.get("/assets", params={"limit": 6})).json()
    rest = (await api.get("/assets", params={"limit": 6, "cursor": first["next_cursor"]})).json()
    assert len(first["data"]) + len(rest["data"]) == 10 and rest["next_cursor"] is None
    assert not {a["id"] for a in first["data"]} & {a["id"] for a in rest["data"]}


async def test_bad_search_parameters_are_all_named(api: httpx.AsyncClient) -> None:
    params = {
        "sort": "best",
        "search_mode": "fuzzy",
        "cta_present": "maybe",
        "min_duration_seconds": "-1",
        "created_after": "yesterday",
        "limit": "500",
    }
    response = await api.get("/assets", params=params)
    assert response.status_code == 400
    assert set(response.json()["error"]["details"]) == {
        "sort",
        "search_mode",
        "cta_present",
        "min_duration_seconds",
        "created_after",
    }
