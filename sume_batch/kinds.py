"""The job kinds a manifest can ask for, and the ONE place that maps them to the Sume API.

Where the public docs leave a name unknown (sume-api.md §3.5–3.7, §4, §7) the choice is made here
and nowhere else, so it can be corrected in one edit when the live schema is known. The README's
"What we assumed about the API" table lists the same choices for people.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Kind:
    """One kind of job: what a manifest calls it and how it reaches the API."""

    name: str  # the manifest's `type:`
    api_type: str  # the job `type` the API reports and `GET /jobs?type=` filters by
    path: str  # the create endpoint
    fields: tuple[str, ...]  # the manifest fields that make up the request
    required: tuple[str, ...]
    timeout_s: float  # give up waiting (→ timed_out, resumable) after this long
    poll_s: float  # first poll interval; it backs off from here
    upload_purpose: str | None = None  # a local file is uploaded first with this presign purpose
    upload_field: str | None = None  # the manifest field naming that local file
    prompt_field: str | None = None  # the field reports show as the job's prompt

    @property
    def resendable(self) -> bool:
        """Whether a lost create can be sent again byte for byte under its Idempotency-Key (where
        the API honours it): not an upload's, whose body names a new upload reference each time."""
        return self.upload_field is None


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind(
            name="image",
            api_type="image_generation",
            path="/images/generations",
            fields=(
                "prompt",
                "aspect_ratio",
                "image_count",
                "resolution",
                "quality",
                "reference_image_urls",
                "brand_reference_images",
            ),
            required=("prompt",),
            timeout_s=600,  # Sume's CLI `--wait` default for images
            poll_s=2,
            prompt_field="prompt",
        ),
        Kind(
            name="video",
            api_type="video_generation",
            path="/videos/generations",
            fields=("prompt", "aspect_ratio", "duration", "resolution", "generate_audio"),
            required=("prompt",),
            timeout_s=1800,  # Sume's CLI `--wait` default for videos
            poll_s=10,
            prompt_field="prompt",
        ),
        Kind(
            name="ad_video",
            api_type="ads_video",
            path="/ads/videos",
            fields=("avatar_id", "script", "style", "aspect_ratio", "reference_image_urls"),
            required=("avatar_id", "script"),
            timeout_s=1800,
            poll_s=10,
            prompt_field="script",
        ),
        Kind(
            name="face_swap",
            api_type="face_swap",
            path="/face-swap",
            fields=("source_video", "avatar_ids"),
            required=("source_video", "avatar_ids"),
            timeout_s=1800,
            poll_s=10,
            upload_purpose="face_swap_source_video",
            upload_field="source_video",
        ),
        Kind(
            name="reference_analysis",
            api_type="reference_analysis",
            path="/reference-analysis",
            fields=("url",),
            required=("url",),
            timeout_s=1800,
            poll_s=5,
        ),
        Kind(
            name="asset_upload",
            api_type="asset_ingest",
            path="/assets",
            fields=("file", "title"),
            required=("file",),
            timeout_s=1800,
            poll_s=5,
            upload_purpose="asset_library",
            upload_field="file",
        ),
    )
}


def request_body(
    kind: Kind,
    request: Mapping[str, Any],
    *,
    brand_urls: Sequence[str] = (),
    upload: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON body of the create call for one rendered job.

    `brand_urls` are the Brand DNA `images[].reference_url` values fetched at run time;
    `upload` is the presign response of the job's local file, once its bytes are stored.
    """
    body = {name: value for name, value in request.items() if value is not None}
    if kind.name == "image":
        wanted = body.pop("brand_reference_images", None)
        if wanted is not None:
            chosen = list(brand_urls) if wanted == "all" else list(brand_urls)[: int(wanted)]
            body["reference_image_urls"] = [*body.get("reference_image_urls", []), *chosen]
    if kind.upload_field is not None:
        body.pop(kind.upload_field, None)
        upload = upload or {}
        if kind.name == "face_swap":
            body["source_video_url"] = upload.get("media_url")
        else:
            body["object_key"] = upload.get("object_key")
            body.setdefault("title", request.get(kind.upload_field))
    return body
