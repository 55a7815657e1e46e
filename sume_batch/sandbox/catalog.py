"""The sandbox workspace's fixed contents: account, Brand DNA profiles and avatars.

Ids are stable across seeds so tests and example manifests can name them. Paths are relative to
the server; the routes turn them into absolute URLs for the request's host.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

UrlFor = Callable[[str], str]


@dataclass(frozen=True)
class Avatar:
    """An avatar and what it can be used for (`talking_head`, `ugc_ad`, `face_swap`)."""

    id: str
    name: str
    visibility: str  # "public" or "workspace"
    capabilities: tuple[str, ...]
    language: str = "en"

    def to_json(self, url: UrlFor) -> dict[str, Any]:
        """The avatar as the API answers it."""
        return {
            "id": self.id,
            "object": "avatar",
            "name": self.name,
            "visibility": self.visibility,
            "status": "ready",
            "capabilities": list(self.capabilities),
            "languages": [self.language],
            "preview_image_url": url(f"/storage/avatars/{self.id}/preview.png"),
            "preview_video_url": url(f"/storage/avatars/{self.id}/preview.mp4"),
        }


@dataclass(frozen=True)
class Brand:
    """A sanitized Brand DNA profile."""

    id: str
    name: str
    domain: str
    tone: str
    claims: tuple[str, ...]
    colors: tuple[str, ...]
    image_notes: tuple[str, ...]
    current: bool = False

    def to_json(self, url: UrlFor) -> dict[str, Any]:
        """The profile as the API answers it; `images[].reference_url` feed image generation."""
        images = [
            {"id": f"{self.id}_img{n}", "description": note, "reference_url": url(self.image_path(n))}
            for n, note in enumerate(self.image_notes, start=1)
        ]
        return {
            "id": self.id,
            "object": "brand",
            "name": self.name,
            "domain": self.domain,
            "is_current": self.current,
            "tone": self.tone,
            "product_claims": list(self.claims),
            "colors": list(self.colors),
            "images": images,
        }

    def image_path(self, n: int) -> str:
        """Where reference image `n` (1-based) is served."""
        return f"/storage/brand/{self.id}/reference-{n}.png"


AVATARS = (
    Avatar("avatar_maya01", "Maya", "public", ("talking_head", "ugc_ad", "face_swap")),
    Avatar("avatar_leo02", "Leo", "public", ("talking_head", "ugc_ad")),
    Avatar("avatar_sofia03", "Sofia", "public", ("face_swap",), language="es"),
    Avatar("avatar_kenji04", "Kenji", "public", ("ugc_ad", "face_swap"), language="ja"),
    Avatar("avatar_amara05", "Amara", "workspace", ("talking_head", "ugc_ad", "face_swap")),
    Avatar("avatar_noah06", "Noah", "workspace", ("talking_head",)),
)

BRANDS = (
    Brand(
        "brand_glowlab",
        "GlowLab Skincare",
        "glowlab.example",
        "warm, clinical, reassuring",
        ("dermatologist tested", "fragrance free", "visible glow in 14 days"),
        ("#F4E1D2", "#1F3A5F", "#FFFFFF"),
        ("serum bottle on marble", "model applying cream", "product lineup flat lay"),
        current=True,
    ),
    Brand(
        "brand_trailpeak",
        "TrailPeak Outdoor",
        "trailpeak.example",
        "bold, adventurous, practical",
        ("waterproof to 10,000 mm", "lifetime warranty"),
        ("#2E4A2E", "#F2A541"),
        ("backpack on a ridge", "jacket in the rain"),
    ),
)


def find_avatar(avatar_id: str) -> Avatar | None:
    """The avatar with this id, if the workspace can see it."""
    return next((avatar for avatar in AVATARS if avatar.id == avatar_id), None)


def current_brand() -> Brand:
    """The profile the server picks for `GET /brand/current`."""
    return next(brand for brand in BRANDS if brand.current)


def static_media_paths() -> list[str]:
    """Every fixed media path the storage serves without a signature."""
    paths = [path for avatar in AVATARS for path in avatar.to_json(str).values() if _is_media(path)]
    paths += [brand.image_path(n) for brand in BRANDS for n in range(1, len(brand.image_notes) + 1)]
    return paths


def _is_media(value: object) -> bool:
    return isinstance(value, str) and value.startswith("/storage/")


def account_json(
    api_key: str, plan: str, *, workspace_id: str, user_id: str, email: str, environment: str = "sandbox"
) -> dict[str, Any]:
    """`GET /me`: the user, the workspace and sanitized metadata about the key (never the key)."""
    return {
        "object": "account",
        **({"environment": environment} if environment else {}),  # not in the docs: "these are rehearsals"
        "user": {"id": user_id, "object": "user", "name": "Sandbox Owner", "email": email},
        "workspace": {"id": workspace_id, "object": "workspace", "name": "Sandbox Workspace", "plan": plan},
        "api_key": {
            "id": "key_" + _key_id(api_key),
            "object": "api_key",
            "name": "Sandbox test key",
            "prefix": api_key[:10],
            "mode": "test",
            "scopes": ["read", "generate", "upload"],
        },
    }


def _key_id(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()[:12]
