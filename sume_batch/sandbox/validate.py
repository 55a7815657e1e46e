"""Request-body checks for the create endpoints: every problem is collected, then one 400 names them all.

Field names and enums follow sume-api.md and the README table; where the docs give no enum
(image `resolution`, `quality`) any non-empty string is accepted.
"""

from __future__ import annotations

import re
from typing import Any

from sume_batch.sandbox.envelope import invalid

OWNER_FIELDS = ("workspace_id", "user_id", "email", "owner", "owner_id")
IMAGE_ASPECT_RATIOS = ("1:1", "4:5", "9:16")
VIDEO_ASPECT_RATIOS = ("9:16", "16:9", "1:1", "4:5")
VIDEO_RESOLUTIONS = ("480p", "720p")
AD_STYLES = {"talking_head": "talking_head", "ugc": "ugc_ad"}  # style → avatar capability it needs
UPLOAD_PURPOSES = ("asset_library", "face_swap_source_video")
UPLOAD_TYPES = ("video/mp4", "video/quicktime", "video/webm", "image/png", "image/jpeg", "image/webp")
MAX_UPLOAD_BYTES = 5 * 1024**3
REFERENCE_URL = re.compile(
    r"^https://((www\.|m\.)?tiktok\.com/@[\w.-]+/video/\d+|(vm|vt)\.tiktok\.com/\w+"
    r"|(www\.)?instagram\.com/(reel|reels)/[\w-]+)/?([?#].*)?$"
)


class Fields:
    """Typed reads from one JSON body; problems pile up in `problems` instead of raising one by one."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.problems: dict[str, str] = {}
        self.read: set[str] = set()

    def text(
        self,
        name: str,
        *,
        required: bool = False,
        default: str | None = None,
        choices: tuple[str, ...] = (),
        max_length: int = 4000,
    ) -> str | None:
        """A string field (stripped), optionally from a fixed set."""
        value = self._get(name, required)
        if value is None:
            return default
        if not isinstance(value, str) or not value.strip():
            self.complain(name, "must be a non-empty string")
            return None
        if choices and value not in choices:
            self.complain(name, f"must be one of {', '.join(choices)}")
            return None
        if len(value) > max_length:
            self.complain(name, f"must be at most {max_length} characters")
            return None
        return value.strip()

    def integer(
        self, name: str, *, low: int, high: int, default: int | None = None, required: bool = False
    ) -> int | None:
        """A whole number in `low..high` (booleans are not numbers here)."""
        value = self._get(name, required)
        if value is None:
            return default
        if type(value) is not int or not low <= value <= high:
            self.complain(name, f"must be an integer from {low} to {high}")
            return None
        return value

    def boolean(self, name: str, *, default: bool) -> bool:
        """A true/false field."""
        value = self._get(name, False)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.complain(name, "must be true or false")
            return default
        return value

    def text_list(self, name: str, *, required: bool = False, max_items: int = 8) -> list[str]:
        """A list of non-empty strings without duplicates."""
        value = self._get(name, required)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.complain(name, "must be a list of non-empty strings")
            return []
        if not 1 <= len(value) <= max_items or len(set(value)) != len(value):
            self.complain(name, f"must hold 1 to {max_items} distinct values")
            return []
        return list(value)

    def complain(self, name: str, message: str) -> None:
        """Record a problem found by a check outside this class."""
        self.problems.setdefault(name, message)

    def finish(self, *, strict: bool) -> list[str]:
        """Refuse with every problem, or return the unknown fields that were ignored."""
        unknown = sorted(set(self.body) - self.read - set(OWNER_FIELDS))
        for name in OWNER_FIELDS:
            if name in self.body:
                self.complain(name, "must not be sent: the API key decides the workspace")
        if strict:
            for name in unknown:
                self.complain(name, "is not a known field")
        if self.problems:
            raise invalid(self.problems)
        return unknown

    def _get(self, name: str, required: bool) -> Any:
        self.read.add(name)
        value = self.body.get(name)
        if value is None and required:
            self.complain(name, "is required")
        return value


def image_params(fields: Fields, own_base: str) -> dict[str, Any]:
    """`POST /images/generations`."""
    references = fields.text_list("reference_image_urls")
    check_reference_urls(fields, references, own_base)
    return {
        "prompt": fields.text("prompt", required=True),
        "aspect_ratio": fields.text("aspect_ratio", default="1:1", choices=IMAGE_ASPECT_RATIOS),
        "image_count": fields.integer("image_count", low=1, high=4, default=1),
        "resolution": fields.text("resolution", max_length=32),
        "quality": fields.text("quality", max_length=32),
        "reference_image_urls": references,
    }


def video_params(fields: Fields) -> dict[str, Any]:
    """`POST /videos/generations`."""
    return {
        "prompt": fields.text("prompt", required=True),
        "aspect_ratio": fields.text("aspect_ratio", default="9:16", choices=VIDEO_ASPECT_RATIOS),
        "duration": fields.integer("duration", low=4, high=15, default=5),
        "resolution": fields.text("resolution", default="480p", choices=VIDEO_RESOLUTIONS),
        "generate_audio": fields.boolean("generate_audio", default=False),
    }


def ads_params(fields: Fields, own_base: str) -> dict[str, Any]:
    """`POST /ads/videos` (the avatar's capability is checked by the caller)."""
    references = fields.text_list("reference_image_urls")
    check_reference_urls(fields, references, own_base)
    return {
        "avatar_id": fields.text("avatar_id", required=True, max_length=100),
        "script": fields.text("script", required=True, max_length=2000),
        "style": fields.text("style", default="talking_head", choices=tuple(AD_STYLES)),
        "aspect_ratio": fields.text("aspect_ratio", default="9:16", choices=VIDEO_ASPECT_RATIOS),
        "reference_image_urls": references,
    }


def face_swap_params(fields: Fields) -> dict[str, Any]:
    """`POST /face-swap` (the source upload and avatars are checked by the caller)."""
    return {
        "source_video_url": fields.text("source_video_url", required=True, max_length=2000),
        "avatar_ids": fields.text_list("avatar_ids", required=True, max_items=10),
    }


def reference_params(fields: Fields) -> dict[str, Any]:
    """`POST /reference-analysis`: one public TikTok or Instagram Reel URL."""
    url = fields.text("url", required=True, max_length=2000)
    if url is not None and not REFERENCE_URL.match(url):
        fields.complain("url", "must be a public TikTok video or Instagram Reel URL (https://...)")
    return {"url": url}


def presign_params(fields: Fields) -> dict[str, Any]:
    """`POST /uploads/presign`."""
    content_type = fields.text("content_type", required=True, choices=UPLOAD_TYPES)
    purpose = fields.text("purpose", default="asset_library", choices=UPLOAD_PURPOSES)
    if purpose == "face_swap_source_video" and content_type and not content_type.startswith("video/"):
        fields.complain("content_type", "must be a video type for purpose face_swap_source_video")
    return {
        "filename": fields.text("filename", required=True, max_length=255),
        "content_type": content_type,
        "size_bytes": fields.integer("size_bytes", required=True, low=1, high=MAX_UPLOAD_BYTES),
        "purpose": purpose,
    }


def finalize_params(fields: Fields) -> dict[str, Any]:
    """`POST /assets` (the object key is checked by the caller)."""
    return {
        "object_key": fields.text("object_key", required=True, max_length=1024),
        "title": fields.text("title", max_length=200),
    }


def check_reference_urls(fields: Fields, urls: list[str], own_base: str) -> None:
    """Reference images must be HTTPS URLs, or URLs this sandbox handed out."""
    for url in urls:
        if not (url.startswith("https://") or url.startswith(own_base)):
            fields.complain("reference_image_urls", f"must be HTTPS URLs Sume returned, got {url[:60]!r}")
