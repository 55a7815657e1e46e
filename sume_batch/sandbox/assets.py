"""The Asset Library: scene assets (seeded ones plus ingested uploads) and the search of sume-api.md §8.

Scenes disagree on media field names on purpose: some carry `media_url`, some `clip_url` (with
`source_media_url`), some no clip at all, so a client must fall back to the source video + timecodes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sume_batch.sandbox.catalog import UrlFor

MEDIA_FIELDS = ("media_url", "clip_url", None)


@dataclass(eq=False)
class Asset:
    """One scene asset (or an uploaded video while it is being ingested)."""

    id: str
    title: str
    source_type: str  # "generated" or "upload"
    segment_type: str
    start: float
    end: float
    created_at: float  # epoch seconds
    source_id: str
    source_title: str
    metadata: dict[str, Any] = field(default_factory=dict)
    media_field: str | None = "media_url"
    status: str = "ready"  # "processing" until its ingest job completes, "failed" if it does not

    @property
    def duration(self) -> float:
        """Scene length in seconds."""
        return round(self.end - self.start, 2)

    @property
    def source_path(self) -> str:
        """Where the whole source video is served."""
        return f"/storage/assets/{self.source_id}/source.mp4"

    def media_paths(self) -> list[str]:
        """Every path this asset links to."""
        return [
            self.source_path,
            f"/storage/assets/{self.id}/clip.mp4",
            f"/storage/assets/{self.id}/thumb.png",
        ]

    def haystack(self) -> str:
        """All searchable text, lower-cased."""
        meta = self.metadata
        parts = [
            self.title,
            self.segment_type,
            str(meta.get("visual_summary", "")),
            str(meta.get("transcript", "")),
        ]
        for name in ("tags", "keywords", "brands", "products", "action_labels"):
            parts.extend(str(value) for value in meta.get(name, []))
        return " ".join(parts).lower()

    def to_json(self, url: UrlFor, iso: Callable[[float], str], *, full: bool) -> dict[str, Any]:
        """The asset as the API answers it; `full` adds the transcript (for `GET /assets/{id}`)."""
        body: dict[str, Any] = {
            "id": self.id,
            "object": "asset",
            "title": self.title,
            "status": self.status,
            "source_type": self.source_type,
            "segment_type": self.segment_type,
            "start_time_seconds": self.start,
            "end_time_seconds": self.end,
            "duration_seconds": self.duration,
            "created_at": iso(self.created_at),
            "thumbnail_url": url(f"/storage/assets/{self.id}/thumb.png"),
            "source_video": {
                "id": self.source_id,
                "object": "source_video",
                "title": self.source_title,
                "media_url": url(self.source_path),
            },
        }
        if self.media_field is not None:
            body[self.media_field] = url(f"/storage/assets/{self.id}/clip.mp4")
        if self.media_field == "clip_url":
            body["source_media_url"] = url(self.source_path)
        shown = dict(self.metadata) if full else {k: v for k, v in self.metadata.items() if k != "transcript"}
        body["metadata"] = shown
        return body


def seed_assets(now: float) -> list[Asset]:
    """The workspace's pre-indexed scenes, created over the past weeks."""
    assets = []
    for index, row in enumerate(_SEED_ROWS):
        title, source, segment, start, end, days, summary, transcript, tags, brand, product, cta = row
        source_id, source_title, source_type = _SOURCES[source]
        metadata = {
            "visual_summary": summary,
            "transcript": transcript,
            "action_labels": _actions(summary),
            "brands": [brand],
            "products": [product],
            "tags": list(tags),
            "keywords": [word for word in tags if len(word) > 4],
            "cta_present": cta,
            "cta_time_seconds": round(start + 1.0, 2) if cta else None,
        }
        assets.append(
            Asset(
                f"asset_seed{index + 1:02d}",
                title,
                source_type,
                segment,
                start,
                end,
                now - days * 86400,
                source_id,
                source_title,
                metadata,
                MEDIA_FIELDS[index % 3],
            )
        )
    return assets


def _actions(summary: str) -> list[str]:
    verbs = re.findall(r"\b(\w+ing)\b", summary.lower())
    return verbs or ["static shot"]


_SOURCES = {
    "glow": ("src_glowlaunch", "GlowLab serum launch", "generated"),
    "glowugc": ("src_glowugc", "GlowLab customer testimonial", "upload"),
    "rain": ("src_trailrain", "TrailPeak rain jacket test", "generated"),
    "hike": ("src_trailhike", "Ridge hike vlog", "upload"),
}

_SEED_ROWS: tuple[tuple[Any, ...], ...] = (
    (
        "Serum hook",
        "glow",
        "hook",
        0.0,
        3.5,
        20,
        "Woman holding serum bottle up to the camera in a bright bathroom",
        "Stop scrolling, this serum changed my skin in two weeks.",
        ("skincare", "serum", "bathroom", "woman"),
        "GlowLab",
        "Glow Serum",
        False,
    ),
    (
        "Dropper close-up",
        "glow",
        "product_demo",
        3.5,
        9.0,
        20,
        "Close-up of a dropper applying serum to a cheek",
        "Two drops, morning and night.",
        ("skincare", "closeup", "serum"),
        "GlowLab",
        "Glow Serum",
        False,
    ),
    (
        "Shop now end card",
        "glow",
        "cta",
        9.0,
        12.0,
        20,
        "Product lineup with a shop now text overlay",
        "Tap the link to get yours.",
        ("skincare", "lineup", "endcard"),
        "GlowLab",
        "Glow Serum",
        True,
    ),
    (
        "Car testimonial",
        "glowugc",
        "testimonial",
        0.0,
        6.2,
        9,
        "Woman talking to the camera in a parked car",
        "I was skeptical, but my redness is gone.",
        ("testimonial", "car", "woman", "camera"),
        "GlowLab",
        "Calm Cream",
        False,
    ),
    (
        "Laughing hook",
        "glowugc",
        "hook",
        6.2,
        8.7,
        9,
        "Woman laughing at the camera before showing the jar",
        "Okay, I have to show you this.",
        ("hook", "woman", "camera", "laughing"),
        "GlowLab",
        "Calm Cream",
        False,
    ),
    (
        "Rain hook",
        "rain",
        "hook",
        0.0,
        3.0,
        5,
        "Hiker in a yellow jacket standing in heavy rain, looking at camera",
        "Ten thousand millimetres. Let's test that.",
        ("outdoor", "rain", "jacket", "camera"),
        "TrailPeak",
        "Storm Shell",
        False,
    ),
    (
        "Water beading demo",
        "rain",
        "product_demo",
        3.0,
        10.0,
        5,
        "Slow motion of water beading on a jacket sleeve",
        "Not a single drop gets through.",
        ("outdoor", "rain", "slowmotion"),
        "TrailPeak",
        "Storm Shell",
        False,
    ),
    (
        "Warranty end card",
        "rain",
        "cta",
        10.0,
        13.0,
        5,
        "Logo end card with lifetime warranty text and a link",
        "Lifetime warranty. Link below.",
        ("endcard", "warranty"),
        "TrailPeak",
        "Storm Shell",
        True,
    ),
    (
        "Ridge sunrise",
        "hike",
        "b_roll",
        0.0,
        8.0,
        2,
        "Drone shot circling a mountain ridge at sunrise",
        "",
        ("outdoor", "drone", "sunrise", "mountain"),
        "TrailPeak",
        "Summit Pack",
        False,
    ),
    (
        "Gear trust talk",
        "hike",
        "testimonial",
        8.0,
        15.5,
        2,
        "Man with a backpack explaining why he trusts his gear",
        "This pack has done three summers with me.",
        ("testimonial", "backpack", "man", "camera"),
        "TrailPeak",
        "Summit Pack",
        False,
    ),
)
