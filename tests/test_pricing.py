"""pricing: the estimate of each kind of request; unknown is never 0."""

from __future__ import annotations

from typing import Any

import pytest

from sume_batch.pricing import DEFAULT_PRICES, Price, merge_prices, price_job


@pytest.mark.parametrize(
    ("kind", "request_", "overrides", "expected"),
    [
        ("image", {"prompt": "p"}, {}, Price(4)),
        ("image", {"prompt": "p", "image_count": 3}, {}, Price(12)),
        (
            "image",
            {"prompt": "p", "resolution": "2k"},
            {},
            Price(None, "no price for image resolution '2k' (set pricing.image.resolution_multiplier)"),
        ),
        (
            "image",
            {"prompt": "p", "resolution": "2k"},
            {"image": {"resolution_multiplier": {"2k": 2.5}}},
            Price(10),
        ),
        ("image", {"prompt": "p", "quality": "hd"}, {"image": {"quality_multiplier": {"hd": 2}}}, Price(8)),
        (
            "image",
            {"prompt": "p"},
            {"image": {"per_image": None}},
            Price(None, "image.per_image is unknown (set it under pricing:)"),
        ),
        ("video", {"prompt": "p", "duration": 5, "resolution": "480p"}, {}, Price(15)),
        (
            "video",
            {"prompt": "p", "duration": 5, "resolution": "720p", "generate_audio": True},
            {},
            Price(35),
        ),
        (
            "video",
            {"prompt": "p", "resolution": "480p"},
            {},
            Price(None, "video duration not set, and the API's default is not documented"),
        ),
        (
            "video",
            {"prompt": "p", "duration": 4},
            {},
            Price(None, "video resolution not set, and the API's default is not documented"),
        ),
        (
            "video",
            {"prompt": "p", "duration": 4, "resolution": "720p"},
            {"video": {"per_second": {"720p": 10}}},
            Price(40),
        ),
        ("ad_video", {"avatar_id": "a", "script": "s"}, {}, Price(60)),
        ("face_swap", {"source_video": "v", "avatar_ids": ["a", "b", "c"]}, {}, Price(60)),
        ("reference_analysis", {"url": "u"}, {}, Price(5)),
        ("asset_upload", {"file": "f"}, {"asset_upload": {"per_job": 0}}, Price(0)),
    ],
)
def test_price_job(kind: str, request_: dict[str, Any], overrides: dict[str, Any], expected: Price) -> None:
    assert price_job(kind, request_, merge_prices(overrides)) == expected


def test_merge_does_not_touch_the_defaults() -> None:
    merge_prices({"video": {"per_second": {"480p": 100}}})
    assert DEFAULT_PRICES["video"]["per_second"] == {"480p": 3, "720p": 6}


def test_later_overrides_win_key_by_key() -> None:
    table = merge_prices({"video": {"per_second": {"480p": 1}}}, {"video": {"per_second": {"720p": 2}}})
    assert table["video"]["per_second"] == {"480p": 1, "720p": 2}
