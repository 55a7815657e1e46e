"""How much a server may make a run read, and how long it may make it wait (issue 11).

One value per run, from `SUME_BATCH_*` environment variables (the README's "Bounds" lists them),
used by the api client for every API answer and by the execute stage for every download. A bound
that is hit is a `BoundError`: the request is never retried, the run goes on with the next job.
The waits servers ask for (`Retry-After`, `RateLimit-*`) are read here too, in both forms seen.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from sume_batch.errors import ApiError, BoundError, UsageError

KiB, MiB, GiB = 1024, 1024**2, 1024**3
# A "seconds to wait" header above this is a Unix time (2001-09-09 onwards), not a delay: some servers
# send `RateLimit-Reset: 1767225600` where the spec says delta-seconds, and a run must not sleep 56 years.
EPOCH_FROM = 1e9

BODY_ENV = "SUME_BATCH_MAX_BODY"
REQUEST_ENV = "SUME_BATCH_REQUEST_DEADLINE"
WAIT_ENV = "SUME_BATCH_MAX_WAIT"
DOWNLOAD_ENV = "SUME_BATCH_MAX_DOWNLOAD"
DOWNLOAD_TIME_ENV = "SUME_BATCH_DOWNLOAD_DEADLINE"

KINDS = ("image", "video", "ad_video", "face_swap", "reference_analysis", "asset_upload")
VIDEO_KINDS = frozenset({"video", "ad_video", "face_swap", "asset_upload"})
DOWNLOAD_BYTES = {kind: 2 * GiB if kind in VIDEO_KINDS else 64 * MiB for kind in KINDS}
DOWNLOAD_SECONDS = {kind: 3600.0 if kind in VIDEO_KINDS else 600.0 for kind in KINDS}

_SIZE = re.compile(r"(?i)^\s*(\d+(?:\.\d+)?)\s*(b|kb|kib|mb|mib|gb|gib|tb|tib)?\s*$")
T = TypeVar("T")
_UNITS = {"b": 1, "kb": 1000, "kib": KiB, "mb": 1000**2, "mib": MiB, "gb": 1000**3, "gib": GiB,
          "tb": 1000**4, "tib": 1024**4}  # fmt: skip


@dataclass(frozen=True)
class Bounds:
    """Every size and time bound a server cannot push a run past."""

    body_bytes: int = 16 * MiB  # one API answer, decompressed
    request_seconds: float = 120.0  # one API request from connect to its last body byte
    wait_seconds: float = 120.0  # one wait a server asks for (Retry-After, RateLimit-Reset) or a backoff
    download_bytes: Mapping[str, int] = field(default_factory=lambda: dict(DOWNLOAD_BYTES))
    download_seconds: Mapping[str, float] = field(default_factory=lambda: dict(DOWNLOAD_SECONDS))

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Bounds:
        """The defaults, with whatever `SUME_BATCH_*` variables are set; a bad value is a UsageError."""
        default = cls()
        return cls(
            body_bytes=_one(env, BODY_ENV, parse_size, default.body_bytes),
            request_seconds=_one(env, REQUEST_ENV, parse_seconds, default.request_seconds),
            wait_seconds=_one(env, WAIT_ENV, parse_seconds, default.wait_seconds),
            download_bytes=_per_kind(env, DOWNLOAD_ENV, parse_size, DOWNLOAD_BYTES),
            download_seconds=_per_kind(env, DOWNLOAD_TIME_ENV, parse_seconds, DOWNLOAD_SECONDS),
        )

    async def download_to(
        self, storage: httpx.AsyncClient, url: str, path: Path, *, kind: str, name: str
    ) -> tuple[str, int]:
        """Stream a media URL into `path` within the bounds of a `kind` job; its sha256 and size.

        A bound that is hit is a BoundError without a status (no answer of the server's is wrong:
        ours is the limit). The caller removes `path` on any failure."""
        limit, seconds = self.download_limit(kind), self.download_deadline(kind)
        too_big = BoundError(
            f"download of {name} is larger than {describe_size(limit)} ({DOWNLOAD_ENV} sets the bound"
            f" for {kind} jobs)"
        )
        digest, size = hashlib.sha256(), 0
        try:
            async with asyncio.timeout(seconds), storage.stream("GET", url) as response:
                if response.status_code >= 300:
                    raise ApiError(f"download of {name} failed", status=response.status_code)
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise too_big
                with path.open("wb") as handle:
                    async for block in response.aiter_bytes():
                        size += len(block)
                        if size > limit:
                            raise too_big
                        digest.update(block)
                        handle.write(block)
        except TimeoutError as error:
            message = f"download of {name} took longer than {seconds:g} s ({DOWNLOAD_TIME_ENV} sets the bound"
            raise BoundError(f"{message} for {kind} jobs)") from error
        return digest.hexdigest(), size

    def download_limit(self, kind: str) -> int:
        return self.download_bytes.get(kind, max(self.download_bytes.values()))

    def download_deadline(self, kind: str) -> float:
        return self.download_seconds.get(kind, max(self.download_seconds.values()))


def parse_size(text: str) -> int:
    """`16MiB`, `64 MB`, `1000000`: a size in bytes (KiB = 1024, kB = 1000)."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError("not a size (like 16MiB, 500MB or 1000000)")
    size = int(float(match[1]) * _UNITS[(match[2] or "b").lower()])
    if size <= 0:
        raise ValueError("must be more than 0 bytes")
    return size


def parse_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError("not a number of seconds") from None
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError("must be a number of seconds above 0")
    return seconds


def _one(env: Mapping[str, str], name: str, parse: Callable[[str], T], default: T) -> T:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        return parse(text)
    except ValueError as error:
        raise UsageError(f"{name}={text!r}: {error}") from None


def _per_kind(
    env: Mapping[str, str], name: str, parse: Callable[[str], T], defaults: Mapping[str, T]
) -> dict[str, T]:
    """`64MiB` (every kind) or `image=64MiB,video=1GiB` (those kinds; the others keep their default)."""
    text = env.get(name, "").strip()
    chosen = dict(defaults)
    for item in filter(None, (part.strip() for part in text.split(","))):
        kind, equals, value = item.rpartition("=")
        kind = kind.strip()
        if equals and kind not in defaults:
            raise UsageError(f"{name}: unknown job type {kind!r} (expected one of {', '.join(KINDS)})")
        try:
            parsed = parse(value.strip())
        except ValueError as error:
            raise UsageError(f"{name}={text!r}: {item!r}: {error}") from None
        chosen.update({kind: parsed} if equals else dict.fromkeys(defaults, parsed))
    return chosen


def seconds_until(value: str, now: float) -> float | None:
    """A wait from a header that should hold delta-seconds but may hold a Unix time; None if neither."""
    try:
        number = float(value)
    except ValueError:
        return None
    if not math.isfinite(number):
        return None
    return max(0.0, number - now if number > EPOCH_FROM else number)


async def read_capped(response: httpx.Response, limit: int, *, what: str, setting: str) -> bytes:
    """A streamed body, read whole only while it stays within `limit` bytes (decompressed)."""
    request_id = response.headers.get("x-request-id")
    too_big = (
        f"{what}: the answer is larger than {describe_size(limit)}, so it was not read;"
        f" {setting} sets the bound"
    )
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BoundError(too_big, request_id=request_id)
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise BoundError(too_big, request_id=request_id)
        chunks.append(chunk)
    return b"".join(chunks)


REBUILT = frozenset({"content-encoding", "content-length", "transfer-encoding"})  # of the streamed body


async def bounded_request(
    http: httpx.AsyncClient, method: str, url: str, *, what: str, limit: int, seconds: float, setting: str,
    **kwargs: Any,
) -> httpx.Response:  # fmt: skip
    """One request and its whole answer within `seconds` and `limit` bytes, never following a redirect;
    returned as an ordinary response. `what` names it in errors (method and path: never the query)."""
    request_id = None
    try:
        async with (
            asyncio.timeout(seconds),
            http.stream(method, url, follow_redirects=False, **kwargs) as response,
        ):
            request_id = response.headers.get("x-request-id")
            content = await read_capped(response, limit, what=what, setting=BODY_ENV)
    except TimeoutError as error:
        message = f"{what} timed out: no whole answer within {seconds:g} s ({setting} sets the bound)"
        raise BoundError(message, request_id=request_id) from error
    headers = [(name, value) for name, value in response.headers.multi_items() if name.lower() not in REBUILT]
    return httpx.Response(response.status_code, headers=headers, content=content, request=response.request)


def describe_size(size: int) -> str:
    for unit, name in ((GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB")):
        if size >= unit:
            return f"{size / unit:g} {name}"
    return f"{size} bytes"


@dataclass
class _Bucket:
    remaining: int | None = None
    reset_at: float = 0.0


@dataclass
class Pacer:
    """Reads `RateLimit-*` headers and waits for the window to reset before the server says 429."""

    clock: Callable[[], float] = time.monotonic
    buckets: dict[str, _Bucket] = field(default_factory=dict)
    wall: Callable[[], float] = time.time  # what a `RateLimit-Reset` sent as a Unix time is measured from

    def delay(self, bucket: str, cap: float = float("inf")) -> float:
        """How long to wait before a request of `bucket`, at most `cap` (then the server is asked again)."""
        state = self.buckets.setdefault(bucket, _Bucket())
        if state.remaining is not None and state.remaining <= 0:
            state.reset_at = min(state.reset_at, self.clock() + cap)
            return max(0.0, state.reset_at - self.clock())
        if state.remaining is not None:
            state.remaining -= 1  # spend it now, so concurrent requests see it gone
        return 0.0

    def observe(self, bucket: str, headers: httpx.Headers) -> None:
        remaining = headers.get("ratelimit-remaining") or headers.get("x-ratelimit-remaining")
        reset = headers.get("ratelimit-reset") or headers.get("x-ratelimit-reset")
        if remaining is None or reset is None:
            return
        seconds = seconds_until(reset, self.wall())  # delta-seconds as documented, or a Unix time
        try:
            left = int(remaining)
        except ValueError:
            return
        if seconds is not None:
            self.buckets[bucket] = _Bucket(left, self.clock() + seconds)


def retry_after(headers: httpx.Headers, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: seconds, an HTTP-date, or (wrongly) a Unix time."""
    value = headers.get("retry-after")
    if not value:
        return None
    wall = time.time() if now is None else now
    seconds = seconds_until(value, wall)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when - wall)
