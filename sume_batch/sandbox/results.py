"""What a finished job says: its `result` payload (shapes differ by type on purpose) or its error.

Failed jobs sometimes carry a raw provider payload with an email and a provider token in
`error.details`: planted so that client tests can prove those never reach a log or report.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from sume_batch.sandbox.jobs import Job

PLANTED_EMAIL = "leaky.provider.owner@example.com"
PLANTED_PROVIDER_TOKEN = "prov_sk_live_PLANTED_DO_NOT_PRINT_7f3a"  # noqa: S105 (a planted fake)

MediaUrl = Callable[[str], str]  # a media path → an absolute (possibly signed) URL

_FAILURES = (
    ("generation_failed", "The generation could not be completed."),
    ("content_policy_violation", "The request was rejected by content moderation."),
    ("provider_timeout", "The generation provider did not finish in time."),
)
_ENDINGS = {
    "expired": ("job_expired", "The job expired before it could finish."),
    "canceled": ("job_canceled", "The job was canceled."),
    "cancelled": ("job_canceled", "The job was cancelled."),
}


def failure_error(
    outcome: str, rng: random.Random, *, leaky: bool, echo: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The `error` a job ending in `outcome` shows; None for `completed`. With `echo` (the job's
    request), the message quotes its prompt and the details carry the whole request."""
    if outcome == "completed":
        return None
    code, message = rng.choice(_FAILURES) if outcome == "failed" else _ENDINGS[outcome]
    error: dict[str, Any] = {"code": code, "message": message}
    if echo is not None:
        quoted = echo.get("prompt") or echo.get("script")
        error["message"] = f"{message} Request: {quoted!r}" if quoted else message
        error["details"] = {"request": echo}
    if leaky and outcome == "failed":
        error["details"] = {
            **error.get("details", {}),
            "provider": "upstream-video-x",
            "provider_response": {
                "status": 500,
                "body": f'{{"error":"quota","account":"{PLANTED_EMAIL}","token":"{PLANTED_PROVIDER_TOKEN}"}}',
            },
            "contact": PLANTED_EMAIL,
        }
    return error


def media_paths(job: Job) -> list[str]:
    """Every media path a completed job's result links to."""
    base = f"/storage/media/{job.id}"
    if job.type == "image_generation":
        return [f"{base}/image-{n}.png" for n in range(1, int(job.params.get("image_count", 1)) + 1)]
    if job.type in ("video_generation", "ads_video", "face_swap"):
        return [f"{base}/output.mp4", f"{base}/thumbnail.png"]
    if job.type == "reference_analysis":
        return [f"{base}/scene-{n}.mp4" for n in range(1, 4)]
    return []


def result_payload(job: Job, url: MediaUrl) -> dict[str, Any]:
    """The `result` object of `GET /jobs/{id}/result` for a completed job."""
    paths = media_paths(job)
    if job.type == "image_generation":
        size = {"1:1": (1024, 1024), "4:5": (1024, 1280), "9:16": (1080, 1920)}
        width, height = size.get(str(job.params.get("aspect_ratio")), (1024, 1024))
        return {
            "images": [
                {"url": url(p), "width": width, "height": height, "content_type": "image/png"} for p in paths
            ]
        }
    if job.type == "video_generation":
        return {
            "video": {
                "url": url(paths[0]),
                "thumbnail_url": url(paths[1]),
                "content_type": "video/mp4",
                "duration_seconds": job.params.get("duration"),
                "resolution": job.params.get("resolution"),
            }
        }
    if job.type == "ads_video":
        return {
            "videos": [
                {
                    "url": url(paths[0]),
                    "thumbnail_url": url(paths[1]),
                    "aspect_ratio": job.params.get("aspect_ratio"),
                }
            ],
            "script": job.params.get("script"),
        }
    if job.type == "face_swap":
        return {
            "output_url": url(paths[0]),
            "thumbnail_url": url(paths[1]),
            "avatar_id": job.links.get("avatar_id"),
        }
    if job.type == "reference_analysis":
        return {"analysis": reference_analysis(job, [url(p) for p in paths])}
    return {"asset_id": job.links.get("asset_id"), "status": "ready"}


def primary_url(job: Job, url: MediaUrl) -> str | None:
    """The job's main media URL for the job object's `result_url`, None when it has none."""
    paths = media_paths(job)
    return url(paths[0]) if paths and job.type != "reference_analysis" else None


def reference_analysis(job: Job, scene_urls: list[str]) -> dict[str, Any]:
    """A structured Reference Analysis: hook, scenes (with `media_url` or `clip_url`), transcript, advice."""
    rng = random.Random(job.id)
    source = str(job.params.get("url"))
    bounds = [0.0, 2.8, 7.5, 12.0]
    scenes = []
    for n, (start, end, media) in enumerate(zip(bounds, bounds[1:], scene_urls, strict=False), start=1):
        field = "media_url" if rng.random() < 0.5 else "clip_url"
        scenes.append(
            {
                "index": n,
                "start_time_seconds": start,
                "end_time_seconds": end,
                "role": ("hook", "demo", "cta")[n - 1],
                "description": _SCENES[n - 1],
                field: media,
            }
        )
    return {
        "source_url": source,
        "platform": "tiktok" if "tiktok" in source else "instagram",
        "duration_seconds": bounds[-1],
        "hook": {
            "text": "POV: you finally found a serum that works",
            "start_time_seconds": 0.0,
            "end_time_seconds": 2.8,
            "technique": rng.choice(["pattern interrupt", "question", "bold claim"]),
        },
        "scenes": scenes,
        "transcript_summary": "Creator shows a before/after, demonstrates the product, ends on a code.",
        "on_screen_text": ["before", "after", "code GLOW15"],
        "cta": {"present": True, "text": "Use code GLOW15", "start_time_seconds": 7.5},
        "pacing": {"cuts": 7, "average_shot_seconds": round(bounds[-1] / 7, 2)},
        "recommendations": ["Open on the result, not the product.", "Keep the first cut under 3 seconds."],
    }


_SCENES = (
    "Creator holds a phone showing a before photo, then turns to camera.",
    "Close-up of the product being applied, with captions.",
    "Creator points at on-screen discount code.",
)
