"""Credit prices: our estimates, since Sume publishes no per-job prices (sume-api.md §5).

The defaults below are deliberately conservative guesses, labelled as estimates everywhere
they are shown. A manifest's `pricing:` or `--pricing FILE` (same shape) replaces any of them;
`null` marks a price unknown. A job whose price cannot be worked out is unknown — never 0 —
and `run` refuses it unless the user allows unknown prices.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_PRICES: dict[str, dict[str, Any]] = {
    "image": {"per_image": 4, "resolution_multiplier": {}, "quality_multiplier": {}},
    "video": {"per_second": {"480p": 3, "720p": 6}, "audio_per_second": 1},
    "ad_video": {"per_job": 60},
    "face_swap": {"per_avatar": 20},
    "reference_analysis": {"per_job": 5},
    "asset_upload": {"per_job": 1},
}


@dataclass(frozen=True)
class Price:
    """A job's estimated cost; `credits` is None when unknown, and `why` says what is missing."""

    credits: float | None
    why: str = ""


def merge_prices(*overrides: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The default table with each override laid over it, later ones winning, key by key."""
    table = {kind: dict(entry) for kind, entry in DEFAULT_PRICES.items()}
    for override in overrides:
        for kind, entry in override.items():
            for name, value in entry.items():
                if isinstance(value, dict):
                    table[kind][name] = {**table[kind].get(name, {}), **value}
                else:
                    table[kind][name] = value
    return table


def price_job(kind: str, request: Mapping[str, Any], table: Mapping[str, Mapping[str, Any]]) -> Price:
    """The estimated credits of one rendered request of the given kind."""
    entry = table[kind]
    if kind == "image":
        return _image(request, entry)
    if kind == "video":
        return _video(request, entry)
    if kind == "face_swap":
        return _times(entry.get("per_avatar"), len(request["avatar_ids"]), "face_swap.per_avatar")
    return _times(entry.get("per_job"), 1, f"{kind}.per_job")


def _image(request: Mapping[str, Any], entry: Mapping[str, Any]) -> Price:
    price = _times(entry.get("per_image"), request.get("image_count", 1), "image.per_image")
    for field in ("resolution", "quality"):
        value = request.get(field)
        if value is None or price.credits is None:
            continue
        multiplier = entry.get(f"{field}_multiplier", {}).get(value)
        if multiplier is None:
            return Price(None, f"no price for image {field} {value!r} (set pricing.image.{field}_multiplier)")
        price = Price(price.credits * multiplier)
    return price


def _video(request: Mapping[str, Any], entry: Mapping[str, Any]) -> Price:
    duration, resolution = request.get("duration"), request.get("resolution")
    if duration is None or resolution is None:
        missing = "duration" if duration is None else "resolution"
        return Price(None, f"video {missing} not set, and the API's default is not documented")
    per_second = entry.get("per_second", {}).get(resolution)
    if per_second is None:
        return Price(None, f"no price for video resolution {resolution!r} (set pricing.video.per_second)")
    audio = entry.get("audio_per_second") if request.get("generate_audio") else 0
    if audio is None:
        return Price(None, "no price for video audio (set pricing.video.audio_per_second)")
    return Price(duration * (per_second + audio))


def _times(unit: float | None, count: int, name: str) -> Price:
    if unit is None:
        return Price(None, f"{name} is unknown (set it under pricing:)")
    return Price(unit * count)
