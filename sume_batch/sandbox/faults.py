"""Misbehaviour on demand: per-key rate limits, 5xx, slow answers, resets, garbage, drop-after-commit.

Over uvicorn a reset really resets (RST) and a drop really closes the socket before any byte is
sent, so clients see `httpx.ReadError` / `httpx.RemoteProtocolError`. In-process (ASGITransport)
there is no socket, so the same httpx exceptions are raised out of the app instead.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.types import Message, Scope, Send

from sume_batch.sandbox.config import Faults, RateLimits

TRANSPORT_KEY = "sume.transport"  # set by the uvicorn wrapper in `server.py`
FAULT_KINDS = ("reset", "server_error", "garbage", "drop_after_commit", "slow", "rate_limit")
WINDOW_SECONDS = 60.0


@dataclass
class RateLimiter:
    """Fixed one-minute windows per (key, bucket) on the sandbox clock."""

    windows: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)  # → (window, count)

    def check(
        self, key: str, bucket: str, limits: RateLimits, now: float
    ) -> tuple[list[tuple[str, str]], bool]:
        """The RateLimit headers for this request, and whether it may proceed (counted if so)."""
        limit = limits.reads_per_minute if bucket == "read" else limits.creates_per_minute
        if limit is None:
            return [], True
        window = int(now // WINDOW_SECONDS)
        seen_window, count = self.windows.get((key, bucket), (window, 0))
        count = count if seen_window == window else 0
        allowed = count < limit
        if allowed:
            count += 1
            self.windows[(key, bucket)] = (window, count)
        reset = max(1, math.ceil((window + 1) * WINDOW_SECONDS - now))
        return rate_headers(limit, limit - count, reset), allowed


def rate_headers(limit: int, remaining: int, reset: int) -> list[tuple[str, str]]:
    """The draft-standard `RateLimit-*` headers plus their legacy `X-RateLimit-*` twins."""
    values = {"Limit": limit, "Remaining": max(0, remaining), "Reset": reset}
    return [
        (f"{prefix}RateLimit-{name}", str(value)) for prefix in ("", "X-") for name, value in values.items()
    ]


def draw_fault(rng: random.Random, faults: Faults, *, is_create: bool) -> str | None:
    """Which fault (if any) hits this request; always five draws, so the stream stays aligned."""
    draws = [rng.random() for _ in range(5)]
    rates = (
        faults.reset,
        faults.server_error,
        faults.garbage,
        faults.drop_after_commit if is_create else 0.0,
        faults.slow,
    )
    for kind, draw, rate in zip(FAULT_KINDS, draws, rates, strict=False):
        if draw < rate:
            return kind
    return None


def take_scripted(script: list[dict[str, Any]], method: str, path: str) -> dict[str, Any] | None:
    """The first queued one-shot fault matching this request, used up by one."""
    for entry in script:
        if entry["method"] in ("*", method) and path.startswith(entry["path"]):
            entry["times"] -= 1
            if entry["times"] <= 0:
                script.remove(entry)
            return entry
    return None


def server_error(rng: random.Random, request_id: str, status: int | None = None) -> tuple[int, bytes, str]:
    """A 500 / 503 envelope, or a proxy's 502 HTML page: (status, body, content type)."""
    status = status or rng.choice((500, 502, 503))
    if status == 502:
        return (
            502,
            b"<html><head><title>502 Bad Gateway</title></head><body>Bad Gateway</body></html>",
            ("text/html"),
        )
    code = "service_unavailable" if status == 503 else "internal_error"
    body = {
        "error": {"code": code, "message": "Something went wrong on our side.", "details": {}},
        "request_id": request_id,
    }
    return status, json.dumps(body).encode(), "application/json"


def garbage(rng: random.Random, real: bytes) -> bytes:
    """Bytes that are not the JSON they claim to be: truncated JSON, an HTML page, or binary noise."""
    choice = rng.randrange(3)
    if choice == 0:
        return real[: max(1, len(real) // 2)]
    if choice == 1:
        return b"<!DOCTYPE html><html><body>upstream connect error or disconnect/reset</body></html>"
    return bytes([0xFF, 0xFE, 0x00]) + rng.randbytes(29)


async def reset_connection(scope: Scope) -> None:
    """Reset the client's connection (RST), or raise `httpx.ReadError` when served in-process."""
    transport = scope.get(TRANSPORT_KEY)
    if transport is None:
        raise httpx.ReadError("[sandbox fault] connection reset by peer")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await _abort(transport)


async def drop_connection(scope: Scope) -> None:
    """Close the connection without a byte of answer, or raise `httpx.RemoteProtocolError` in-process."""
    transport = scope.get(TRANSPORT_KEY)
    if transport is None:
        raise httpx.RemoteProtocolError("[sandbox fault] server disconnected without sending a response")
    await _abort(transport)


async def _abort(transport: asyncio.Transport) -> None:
    transport.abort()
    for _ in range(3):  # let uvicorn see the loss, so it does not try to answer on our behalf
        await asyncio.sleep(0)


class CapturedResponse:
    """An ASGI `send` that keeps the response instead of sending it."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")

    async def replay(self, send: Send, body: bytes | None = None) -> None:
        """Send the kept response, optionally with another body (Content-Length fixed to match)."""
        body = self.body if body is None else body
        headers = [(k, v) for k, v in self.headers if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})
