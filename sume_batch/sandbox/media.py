"""Media bytes the sandbox serves (real small PNGs and one real MP4) and S3-style signed query strings.

Signed URLs carry `X-Amz-Date` + `X-Amz-Expires` and an HMAC; the storage routes enforce both, so
a client that caches a URL past its expiry, or strips its query, fails as it would against S3.
"""

from __future__ import annotations

import calendar
import functools
import hashlib
import hmac
import struct
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from urllib.parse import urlencode

SIGNATURE_PARAMS = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
)
CONTENT_TYPES = {".png": "image/png", ".mp4": "video/mp4", ".jpg": "image/jpeg", ".webp": "image/webp"}


def png_bytes(name: str, size: int = 32) -> bytes:
    """A valid solid-colour PNG whose colour is derived from `name`."""
    red, green, blue = hashlib.sha256(name.encode()).digest()[:3]
    row = b"\x00" + bytes((red, green, blue)) * size
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(row * size, 9))
        + (_chunk(b"IEND", b""))
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@functools.cache
def mp4_bytes() -> bytes:
    """A one-second 96x160 H.264/AAC MP4 shipped inside the package (made with ffmpeg)."""
    return resources.files("sume_batch.sandbox").joinpath("data/sample.mp4").read_bytes()


def media_bytes(path: str) -> tuple[bytes, str]:
    """The bytes and content type for a generated media path, chosen by its extension."""
    if path.endswith(".mp4"):
        return mp4_bytes(), "video/mp4"
    return png_bytes(path), "image/png"


def content_type_for(path: str) -> str:
    """The content type a path's extension implies."""
    for suffix, kind in CONTENT_TYPES.items():
        if path.endswith(suffix):
            return kind
    return "application/octet-stream"


@dataclass(frozen=True)
class Signer:
    """Makes and checks signed-looking storage query strings (HMAC-SHA256 over method, path, time)."""

    secret: bytes
    access_key: str = "SANDBOXAKIAEXAMPLE7Q"

    def query(self, method: str, path: str, issued_at: float, ttl: int, signed_headers: str = "host") -> str:
        """The query string that makes `method path` valid for `ttl` seconds from `issued_at` (epoch)."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(issued_at))
        params = {
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Credential": f"{self.access_key}/{stamp[:8]}/us-east-1/s3/aws4_request",
            "X-Amz-Date": stamp,
            "X-Amz-Expires": str(ttl),
            "X-Amz-SignedHeaders": signed_headers,
            "X-Amz-Signature": self._signature(method, path, stamp, str(ttl)),
        }
        return urlencode(params)

    def check(self, method: str, path: str, query: Mapping[str, str], now: float) -> str | None:
        """None when the query is a valid, unexpired signature for `method path`; else an error code."""
        if any(name not in query for name in SIGNATURE_PARAMS):
            return "signature_required"
        stamp, ttl = query["X-Amz-Date"], query["X-Amz-Expires"]
        expected = self._signature(method, path, stamp, ttl)
        if not hmac.compare_digest(expected, query["X-Amz-Signature"]):
            return "signature_mismatch"
        try:
            issued = calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%SZ"))
            expired = now > issued + int(ttl)
        except ValueError:
            return "signature_mismatch"
        return "request_expired" if expired else None

    def _signature(self, method: str, path: str, stamp: str, ttl: str) -> str:
        message = f"{method}\n{path}\n{stamp}\n{ttl}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()
