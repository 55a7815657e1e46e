"""The api stage: one async method per Sume endpoint over one `httpx.AsyncClient`.

Everything the client must tolerate lives here and in `kinds`: the error envelope mapped once to
our exceptions, the documented response variants (job id as `job.id` or `job_id`, `canceled` or
`cancelled`), media found generically in result payloads, and retries classified by what a retry
could cost — reads retry, a create is re-sent only when no job can have been made.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import httpx
import tenacity

from sume_batch import __version__
from sume_batch.errors import (
    ApiError,
    AuthError,
    InsufficientCreditsError,
    TransportError,
    UncertainCreateError,
)
from sume_batch.responses import Created, Job, created_job_ids, parse_job

DEFAULT_BASE_URL = "https://www.sume.so/api/v1"
MAX_RETRY_AFTER = 120.0  # seconds
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})

Sleep = Callable[[float], Awaitable[None]]
OnWait = Callable[[str, float], None]  # (why, seconds): tells the progress display why we wait


@dataclass
class RetryBudget:
    """Retries left for the whole run: an outage stops the run instead of hammering the API."""

    remaining: int = 200

    def take(self) -> bool:
        self.remaining -= 1
        return self.remaining >= 0


@dataclass
class _Bucket:
    remaining: int | None = None
    reset_at: float = 0.0


@dataclass
class Pacer:
    """Reads `RateLimit-*` headers and waits for the window to reset before the server says 429."""

    clock: Callable[[], float] = time.monotonic
    buckets: dict[str, _Bucket] = field(default_factory=dict)

    def delay(self, bucket: str) -> float:
        state = self.buckets.setdefault(bucket, _Bucket())
        if state.remaining is not None and state.remaining <= 0:
            return max(0.0, state.reset_at - self.clock())
        if state.remaining is not None:
            state.remaining -= 1  # spend it now, so concurrent requests see it gone
        return 0.0

    def observe(self, bucket: str, headers: httpx.Headers) -> None:
        remaining = headers.get("ratelimit-remaining") or headers.get("x-ratelimit-remaining")
        reset = headers.get("ratelimit-reset") or headers.get("x-ratelimit-reset")
        if remaining is None or reset is None:
            return
        try:
            self.buckets[bucket] = _Bucket(int(remaining), self.clock() + float(reset))
        except ValueError:
            return


def retry_after(headers: httpx.Headers, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header, in its seconds or HTTP-date form."""
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def error_from(response: httpx.Response) -> ApiError:
    """The error envelope (or whatever came instead) → one of our exceptions; details kept, not shown."""
    try:
        body = response.json()
    except ValueError:
        body = None
    body = body if isinstance(body, dict) else {}
    envelope: dict[str, Any] = body["error"] if isinstance(body.get("error"), dict) else {}
    request_id = body.get("request_id")
    request_id = request_id or response.headers.get("x-request-id")
    code, message = envelope.get("code"), envelope.get("message")
    if not envelope:
        message = "the API answered with a body that is not the documented JSON"
    kwargs = {
        "status": response.status_code,
        "code": code,
        "request_id": request_id,
        "details": envelope.get("details"),
    }
    if response.status_code in (401, 403):
        return AuthError(str(message or "not authorised"), **kwargs)
    if response.status_code == 402 or code == "insufficient_credits":
        return InsufficientCreditsError(str(message or "not enough credits"), **kwargs)
    if not envelope and response.status_code < 500:
        return TransportError(str(message), **kwargs)
    return ApiError(str(message or "request failed"), **kwargs)


class SumeClient:
    """The Sume Public API, one async method per endpoint; effects (HTTP, sleep, clock) are passed in."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        sleep: Sleep = asyncio.sleep,
        budget: RetryBudget | None = None,
        pacer: Pacer | None = None,
        max_in_flight: int = 8,
        max_attempts: int = 6,
        on_wait: OnWait | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.http, self.base_url, self.sleep = http, base_url.rstrip("/"), sleep
        self.budget, self.pacer = budget or RetryBudget(), pacer or Pacer()
        self.gate = asyncio.Semaphore(max_in_flight)  # HTTP requests in flight, far fewer than jobs
        self.max_attempts, self.on_wait, self.rng = max_attempts, on_wait, rng or random.Random()
        self.headers = {
            "Authorization": f"Bearer {api_key}",
            "User-Agent": f"sume-batch/{__version__}",
            "Accept": "application/json",
        }
        self.requests = 0

    async def me(self) -> dict[str, Any]:
        return await self.get("/me")

    async def credits(self) -> dict[str, Any]:
        return await self.get("/credits")

    async def brand(self, domain: str | None = None) -> dict[str, Any]:
        return await self.get("/brand", domain=domain)

    async def brand_current(self) -> dict[str, Any]:
        return await self.get("/brand/current")

    async def avatars(self, **filters: object) -> dict[str, Any]:
        return await self.get("/avatars", **filters)

    async def avatar(self, avatar_id: str) -> dict[str, Any]:
        return await self.get(f"/avatars/{avatar_id}")

    async def jobs(self, *, type: str | None = None, status: str | None = None, limit: int | None = None,
                   cursor: str | None = None) -> dict[str, Any]:  # fmt: skip
        return await self.get("/jobs", type=type, status=status, limit=limit, cursor=cursor)

    async def job(self, job_id: str) -> Job:
        return parse_job(await self.get(f"/jobs/{job_id}"))

    async def job_result(self, job_id: str) -> dict[str, Any]:
        return await self.get(f"/jobs/{job_id}/result")

    async def assets(self, **search: object) -> dict[str, Any]:
        return await self.get("/assets", **search)

    async def asset(self, asset_id: str) -> dict[str, Any]:
        return await self.get(f"/assets/{asset_id}")

    async def presign(
        self, *, filename: str, content_type: str, size_bytes: int, purpose: str
    ) -> dict[str, Any]:
        """A temporary upload target; a presign makes no job and costs nothing, so it retries like a read."""
        body = {
            "filename": filename,
            "content_type": content_type,
            "size_bytes": size_bytes,
            "purpose": purpose,
        }
        send = partial(self._request, "POST", "/uploads/presign", "read", json=body)
        result: dict[str, Any] = await self._retrying(send)
        return result

    async def get(self, path: str, **params: object) -> dict[str, Any]:
        query = {name: str(value).lower() if isinstance(value, bool) else value
                 for name, value in params.items() if value is not None}  # fmt: skip
        send = partial(self._request, "GET", path, "read", params=query)
        result: dict[str, Any] = await self._retrying(send)
        return result

    async def create(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        idempotency_key: str,
        before_send: Callable[[], None] | None = None,
    ) -> Created:
        """POST a create; re-sent only when no job can have been made (connection refused, 429).

        Anything else that leaves the outcome unknown raises UncertainCreateError, never a retry.
        `before_send` runs with the HTTP slot held and pacing done, just before the bytes go out:
        the caller records its intent there, or raises to send nothing.
        """
        headers = {"Idempotency-Key": idempotency_key}

        async def attempt() -> Created:
            try:
                payload = await self._request(
                    "POST", path, "create", json=body, headers=headers, before_send=before_send
                )
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout):
                raise  # the request never left: safe to send again
            except httpx.TransportError as error:
                raise UncertainCreateError(
                    f"the connection failed after the create was sent ({type(error).__name__})"
                ) from error
            except ApiError as error:
                if error.status == 429 or not (
                    error.status is None or error.status >= 500 or isinstance(error, TransportError)
                ):
                    raise
                raise UncertainCreateError(f"the create's outcome is unknown: {error}", status=error.status,
                                           request_id=error.request_id) from error  # fmt: skip
            ids = created_job_ids(payload)
            if not ids:
                raise UncertainCreateError(
                    "the create was answered without a job id", request_id=payload.get("request_id")
                )
            credits = payload.get("required_credits")
            return Created(
                ids, float(credits) if isinstance(credits, int | float) else None, payload.get("request_id")
            )

        created: Created = await self._retrying(attempt, create=True)
        return created

    async def _request(
        self,
        method: str,
        path: str,
        bucket: str,
        *,
        before_send: Callable[[], None] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        delay = self.pacer.delay(bucket)
        if delay > 0:
            self._waiting(f"pacing {bucket}s to the rate limit", delay)
            await self.sleep(delay)
        headers = {**self.headers, **kwargs.pop("headers", {})}
        async with self.gate:
            if before_send is not None:
                before_send()
            self.requests += 1
            response = await self.http.request(method, self.base_url + path, headers=headers, **kwargs)
        self.pacer.observe(bucket, response.headers)
        return decode(response)

    async def _retrying(self, call: Callable[[], Awaitable[Any]], *, create: bool = False) -> Any:
        retrying = tenacity.AsyncRetrying(
            sleep=self.sleep,
            stop=tenacity.stop_after_attempt(self.max_attempts),
            wait=self._wait,
            retry=tenacity.retry_if_exception(self._refused if create else self._transient),
            reraise=True,
        )
        return await retrying(call)

    def _transient(self, error: BaseException) -> bool:
        """Worth another try for a read: the network, a timeout, a garbage body, 408, 429 or 5xx."""
        transient = isinstance(error, httpx.TransportError | TransportError) or (
            isinstance(error, ApiError) and error.status in RETRYABLE_STATUS
        )
        return transient and self.budget.take()

    def _refused(self, error: BaseException) -> bool:
        """Worth another try for a create: only where the server cannot have made a job."""
        refused = isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout) or (
            isinstance(error, ApiError) and error.status == 429
        )
        return refused and self.budget.take()

    def _wait(self, state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        seconds = getattr(error, "retry_after", None)
        if seconds is not None:
            seconds = min(seconds, MAX_RETRY_AFTER)  # a day-long Retry-After must not freeze the run
        if seconds is None:  # full jitter: uniform in [0, min(cap, base × 2^n)]
            seconds = self.rng.uniform(0, min(30.0, 0.5 * 2 ** (state.attempt_number - 1)))
        why = (
            f"backing off {error.status}"
            if isinstance(error, ApiError) and error.status
            else "retrying after a network error"
        )
        self._waiting(why, seconds)
        return float(seconds)

    def _waiting(self, why: str, seconds: float) -> None:
        if self.on_wait is not None:
            self.on_wait(why, seconds)


def decode(response: httpx.Response) -> dict[str, Any]:
    """A response's JSON object, or the matching exception (with any Retry-After attached)."""
    if response.status_code >= 400:
        error = error_from(response)
        error.retry_after = retry_after(response.headers)  # type: ignore[attr-defined]
        raise error
    try:
        body = response.json()
    except ValueError:
        body = None
    request_id = response.headers.get("x-request-id")
    if isinstance(body, dict) and request_id:
        body.setdefault("request_id", request_id)  # the id to quote to support, header or body
    if not isinstance(body, dict):
        message = "the API answered with a body that is not a JSON object"
        raise TransportError(message, status=response.status_code, request_id=request_id)
    return body


async def upload_bytes(storage: httpx.AsyncClient, target: Mapping[str, Any], data: bytes) -> None:
    """PUT a file to a presigned `upload_url` with only its `required_headers` — never the API key.

    `storage` must be a client without credentials (see `execute`); the URL is signed, so it is
    never printed.
    """
    headers = {str(name): str(value) for name, value in (target.get("required_headers") or {}).items()}
    response = await storage.put(str(target["upload_url"]), content=data, headers=headers)
    if response.status_code >= 300:
        raise error_from(response)
