"""Uploads (sume-api.md §7): presign → PUT to storage with only the required headers → finalize.

The object key doubles as the storage path, as with S3: `upload_url` is `PUT /storage/<key>?<signature>`
and `media_url` is the plain `GET /storage/<key>` that Face Swap takes as its source video.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

META_HEADER = "x-amz-meta-sume-upload-token"


@dataclass(eq=False)
class Upload:
    """One presigned upload, and its bytes once they have been PUT."""

    id: str
    object_key: str
    filename: str
    content_type: str
    size_bytes: int
    purpose: str
    token: str
    expires_at: float  # epoch seconds
    data: bytes | None = None
    asset_id: str | None = None

    @property
    def path(self) -> str:
        """The storage path for both the PUT and later GETs."""
        return f"/storage/{self.object_key}"

    @property
    def required_headers(self) -> dict[str, str]:
        """Exactly the headers the storage PUT must carry."""
        return {"Content-Type": self.content_type, META_HEADER: self.token}

    def missing_header(self, headers: dict[str, str]) -> str | None:
        """The first required header that is absent or different in `headers` (lower-cased names)."""
        for name, value in self.required_headers.items():
            if headers.get(name.lower()) != value:
                return name
        return None


def object_key(workspace_id: str, upload_id: str, filename: str) -> str:
    """A storage key for an upload, keeping only safe characters of the file name."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", filename).strip("._") or "upload"
    return f"uploads/{workspace_id}/{upload_id}/{safe[:120]}"


def presign_json(upload: Upload, upload_url: str, media_url: str, expires_at: str) -> dict[str, Any]:
    """The `POST /uploads/presign` answer (README table: the doc's three fields plus two of ours)."""
    return {
        "object": "upload",
        "id": upload.id,
        "upload_url": upload_url,
        "method": "PUT",
        "required_headers": upload.required_headers,
        "object_key": upload.object_key,
        "media_url": media_url,
        "purpose": upload.purpose,
        "expires_at": expires_at,
    }
