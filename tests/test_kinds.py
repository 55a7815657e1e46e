"""kinds: the one map from a manifest's job types to the API, and the create body each job sends."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from sume_batch import bounds
from sume_batch.kinds import KINDS, request_body
from sume_batch.sandbox import SandboxConfig, create_app
from sume_batch.sandbox.config import JOB_TYPES
from sume_batch.sandbox.routes_create import ROUTES

BRAND = ("https://brand.test/1.png", "https://brand.test/2.png", "https://brand.test/3.png")


def test_every_kind_reaches_a_create_endpoint_and_job_type_the_api_has() -> None:
    served = {route.path.removeprefix("/api/v1") for route in ROUTES}
    assert sorted(kind.path for kind in KINDS.values()) == sorted(served)
    assert sorted(kind.api_type for kind in KINDS.values()) == sorted(JOB_TYPES)
    assert tuple(KINDS) == bounds.KINDS  # the download bounds are set per kind, by these names


@pytest.mark.parametrize("kind", KINDS.values(), ids=list(KINDS))
def test_a_kinds_fields_hold_what_it_requires_uploads_and_shows(kind: Any) -> None:
    assert set(kind.required) <= set(kind.fields)
    named = [kind.upload_field, kind.prompt_field]
    assert all(name in kind.fields for name in named if name is not None)
    assert (kind.upload_field is None) == (kind.upload_purpose is None)
    assert 0 < kind.poll_s < kind.timeout_s


@pytest.mark.parametrize(
    ("request_", "body"),
    [
        ({"prompt": "p", "aspect_ratio": None, "image_count": 2}, {"prompt": "p", "image_count": 2}),
        ({"prompt": "p", "brand_reference_images": "all"}, {"prompt": "p", "reference_image_urls": list(BRAND)}),
        ({"prompt": "p", "brand_reference_images": 2}, {"prompt": "p", "reference_image_urls": list(BRAND[:2])}),
        ({"prompt": "p", "brand_reference_images": 9}, {"prompt": "p", "reference_image_urls": list(BRAND)}),
        (  # the manifest's own references first, then the brand's
            {"prompt": "p", "reference_image_urls": ["https://mine.test/a.png"], "brand_reference_images": 1},
            {"prompt": "p", "reference_image_urls": ["https://mine.test/a.png", BRAND[0]]},
        ),
        ({"prompt": "p", "reference_image_urls": ["https://mine.test/a.png"]},
         {"prompt": "p", "reference_image_urls": ["https://mine.test/a.png"]}),
        ({"prompt": "p", "brand_reference_images": None}, {"prompt": "p"}),
    ],
)  # fmt: skip
def test_an_image_body_takes_its_brand_references_from_the_brand_dna(
    request_: dict[str, Any], body: dict[str, Any]
) -> None:
    before = dict(request_)
    assert request_body(KINDS["image"], request_, brand_urls=BRAND) == body
    assert request_ == before  # the job's request is left as it was


def test_an_image_asking_for_brand_references_with_none_fetched_sends_its_own() -> None:
    request_ = {
        "prompt": "p",
        "reference_image_urls": ["https://mine.test/a.png"],
        "brand_reference_images": "all",
    }
    assert request_body(KINDS["image"], request_) == {
        "prompt": "p",
        "reference_image_urls": ["https://mine.test/a.png"],
    }


@pytest.mark.parametrize(
    ("kind", "request_", "upload", "body"),
    [
        ("face_swap", {"source_video": "clips/a.mp4", "avatar_ids": ["av_1"]},
         {"media_url": "https://up.test/a.mp4", "object_key": "k/a.mp4"},
         {"avatar_ids": ["av_1"], "source_video_url": "https://up.test/a.mp4"}),
        ("asset_upload", {"file": "logos/a.png", "title": None}, {"object_key": "k/a.png", "media_url": "https://up.test/a.png"},
         {"object_key": "k/a.png", "title": "logos/a.png"}),  # the file's name is its title by default
        ("asset_upload", {"file": "logos/a.png", "title": "Logo"}, {"object_key": "k/a.png"},
         {"object_key": "k/a.png", "title": "Logo"}),
        ("face_swap", {"source_video": "a.mp4", "avatar_ids": ["av_1"]}, None,
         {"avatar_ids": ["av_1"], "source_video_url": None}),  # never the local path
    ],
)  # fmt: skip
def test_a_local_file_is_sent_as_its_upload_never_as_its_path(
    kind: str, request_: dict[str, Any], upload: dict[str, Any] | None, body: dict[str, Any]
) -> None:
    assert request_body(KINDS[kind], request_, upload=upload) == body


@pytest.mark.parametrize(
    ("kind", "request_"),
    [
        ("video", {"prompt": "p", "aspect_ratio": "16:9", "duration": 5, "resolution": "720p", "generate_audio": False}),
        ("reference_analysis", {"url": "https://www.tiktok.com/@brand/video/7300000000000000000"}),
        ("image", {"prompt": "p", "aspect_ratio": "1:1", "image_count": 1, "brand_reference_images": "all"}),
    ],
)  # fmt: skip
def test_the_api_takes_each_body_and_knows_every_field_in_it(kind: str, request_: dict[str, Any]) -> None:
    config = SandboxConfig.from_profile("instant", strict_unknown_fields=True)  # an unknown field is a 400

    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(config))
        async with httpx.AsyncClient(transport=transport, base_url="http://sandbox.test/api/v1") as http:
            return await http.post(
                KINDS[kind].path,
                json=request_body(KINDS[kind], request_, brand_urls=BRAND),
                headers={"Authorization": f"Bearer {config.api_key}"},
            )

    response = asyncio.run(main())
    assert response.status_code in (200, 202), response.text
