"""The api stage: one async method per Sume endpoint over one `httpx.AsyncClient`.

Everything the client must tolerate lives here and in `kinds`: the error envelope mapped once to
our exceptions, the documented response variants (job id as `job.id` or `job_id`, `canceled` or
`cancelled`), media found generically in result payloads, and retries classified by what a retry
could cost — reads retry, a create is re-sent only when no job can have been made. Whatever answers
is held to `bounds`: every body is streamed and capped, every request has a total deadline, every
wait a server asks for is capped and ends at once when the run is stopped (`halt`).
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
import tenacity

from sume_batch import __version__
from sume_batch.bounds import DOWNLOAD_TIME_ENV, REQUEST_ENV, Bounds, Pacer, bounded_request, retry_after
from sume_batch.errors import (
    ApiError,
    AuthError,
    BoundError,
    InsufficientCreditsError,
    TransportError,
    UncertainCreateError,
)
from sume_batch.responses import Created, Job, created_job_ids, parse_job, stated_credits

DEFAULT_BASE_URL = "https://www.sume.so/api/v1"
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
NETWORK_WORDS: tuple[tuple[type[httpx.HTTPError], str], ...] = (
    (httpx.ConnectTimeout, "timed out connecting to the API"),
    (httpx.ConnectError, "could not connect to the API"),
    (httpx.ReadTimeout, "the API stopped sending its answer"),
    (httpx.WriteTimeout, "the API stopped reading the request"),
    (httpx.PoolTimeout, "no connection to the API came free"),
    (httpx.RemoteProtocolError, "the API broke the HTTP protocol"),
    (httpx.ReadError, "the connection broke while reading the answer"),
    (httpx.WriteError, "the connection broke while sending the request"),
)

Sleep = Callable[[float], Awaitable[None]]
OnWait = Callable[[str, float], None]  # (why, seconds): what the run waits for; 0 s when it stops waiting


@dataclass
class RetryBudget:
    """Retries left for the whole run: an outage stops the run instead of hammering the API."""

    remaining: int = 200

    def take(self) -> bool:
        self.remaining -= 1
        return self.remaining >= 0


def error_from(response: httpx.Response, what: str | None = None) -> ApiError:
    """The error envelope (or whatever came instead) → one of our exceptions; details kept, not shown.

    `what` (`GET /jobs/job_1`: method and path, never the query) names the request in a message
    about a body that is not the envelope."""
    try:
        body = response.json()
    except (ValueError, RecursionError):  # RecursionError: JSON nested thousands deep
        body = None
    body = body if isinstance(body, dict) else {}
    envelope: dict[str, Any] = body["error"] if isinstance(body.get("error"), dict) else {}
    request_id = body.get("request_id")
    request_id = request_id if isinstance(request_id, str) else response.headers.get("x-request-id")
    code, message = envelope.get("code"), envelope.get("message")
    code = code if isinstance(code, str) else None
    if not envelope:
        message = "the API answered with a body that is not the documented JSON"
        message = f"{what}: {message}" if what else message
    kwargs: dict[str, Any] = {
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
        bounds: Bounds | None = None,
        halt: asyncio.Event | None = None,
    ) -> None:
        """`bounds` defaults to the `SUME_BATCH_*` variables of the environment; setting `halt` ends
        every wait of this client at once (and its retries), so an interrupt never waits on a server."""
        self.http, self.base_url, self.sleep = http, base_url.rstrip("/"), sleep
        self.bounds = bounds if bounds is not None else Bounds.from_env(os.environ)
        self.halt = halt if halt is not None else asyncio.Event()
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
        result: dict[str, Any] = await self._retrying(send, what="POST /uploads/presign")
        return result

    async def get(self, path: str, **params: object) -> dict[str, Any]:
        query = {name: str(value).lower() if isinstance(value, bool) else value
                 for name, value in params.items() if value is not None}  # fmt: skip
        send = partial(self._request, "GET", path, "read", params=query)
        result: dict[str, Any] = await self._retrying(send, what=f"GET {path}")
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
            request_id = payload.get("request_id")
            return Created(ids, stated_credits(payload), request_id if isinstance(request_id, str) else None)

        created: Created = await self._retrying(attempt, what=f"POST {path}", create=True)
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
        what = f"{method} {path}"
        delay = self.pacer.delay(bucket, self.bounds.wait_seconds)
        if delay > 0:  # once halted, a create's `before_send` withholds it; a read goes out once more
            await self._wait_for(f"pacing {bucket}s to the rate limit before {what}", delay)
        headers = {**self.headers, **kwargs.pop("headers", {})}
        async with self.gate:
            if before_send is not None:
                before_send()
            self.requests += 1
            response = await self._exchange(method, path, headers=headers, **kwargs)
        self.pacer.observe(bucket, response.headers)
        return decode(response, what)

    async def _exchange(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request and its whole answer, within the total deadline and the body bound.

        Per-read timeouts alone let a server that drips a byte every few seconds hold a request
        for ever (issue 11); redirects are never followed, so the key goes nowhere but the API."""
        return await bounded_request(
            self.http, method, self.base_url + path, what=f"{method} {path}", limit=self.bounds.body_bytes,
            seconds=self.bounds.request_seconds, setting=REQUEST_ENV, **kwargs,
        )  # fmt: skip

    async def _retrying(self, call: Callable[[], Awaitable[Any]], *, what: str, create: bool = False) -> Any:
        """`call` with retries as the error allows; a network failure ends as our TransportError."""
        pending: list[tuple[BaseException | None, str]] = []  # the error each wait follows, and why

        def wait(state: tenacity.RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            seconds, why = self._backoff(error, state.attempt_number, what)
            pending.append((error, why))
            return seconds

        async def sleep(seconds: float) -> None:
            error, why = pending[-1]
            if await self._wait_for(why, seconds) and error is not None:
                raise error  # stopped while waiting: give up with the error that made us wait

        retrying = tenacity.AsyncRetrying(
            sleep=sleep,
            stop=tenacity.stop_after_attempt(self.max_attempts),
            wait=wait,
            retry=tenacity.retry_if_exception(self._refused if create else self._transient),
            reraise=True,
        )
        try:
            return await retrying(call)
        except httpx.HTTPError as error:  # foreign errors mapped once, naming the request
            raise TransportError(f"{what}: {network_failure(error)}") from error

    def _transient(self, error: BaseException) -> bool:
        """Worth another try for a read: the network, a timeout, a garbage body, 408, 429 or 5xx —
        never a bound we set, nor a redirect (it would only redirect again)."""
        if isinstance(error, BoundError) or (
            isinstance(error, TransportError) and error.status is not None and 300 <= error.status < 400
        ):
            return False
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

    def _backoff(self, error: BaseException | None, attempt: int, what: str) -> tuple[float, str]:
        """How long to wait before attempt `attempt + 1`, and why, capped at `bounds.wait_seconds`:
        a day-long Retry-After must not freeze the run."""
        asked = getattr(error, "retry_after", None)
        if asked is None:  # full jitter: uniform in [0, min(cap, base × 2^n)]
            asked = self.rng.uniform(0, min(30.0, 0.5 * 2 ** (attempt - 1)))
        status = error.status if isinstance(error, ApiError) else None
        why = f"backing off {status} on {what}" if status else f"retrying {what} after a network error"
        cap = self.bounds.wait_seconds
        if asked > cap:
            why += f" (asked for {asked:.0f} s, capped)"
        return min(float(asked), cap), why

    async def _wait_for(self, why: str, seconds: float) -> bool:
        """Wait, showing why, unless `halt` is set first; True when halted."""
        self._waiting(why, seconds)
        try:
            return await self._pause(seconds)
        finally:
            self._waiting(why, 0.0)

    async def _pause(self, seconds: float) -> bool:
        if self.halt.is_set():
            return True
        pause, halted = asyncio.ensure_future(self.sleep(seconds)), asyncio.ensure_future(self.halt.wait())
        try:
            await asyncio.wait((pause, halted), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pause, halted):
                task.cancel()
        return self.halt.is_set()

    def _waiting(self, why: str, seconds: float) -> None:
        if self.on_wait is not None:
            self.on_wait(why, seconds)


def decode(response: httpx.Response, what: str = "the request") -> dict[str, Any]:
    """A response's JSON object, or the matching exception (with any Retry-After attached)."""
    request_id = response.headers.get("x-request-id")
    if 300 <= response.status_code < 400:
        raise TransportError(
            f"{what}: the API answered with a redirect, and sume-batch follows none (no credential may"
            " go elsewhere); check SUME_API_BASE_URL",
            status=response.status_code, request_id=request_id,
        )  # fmt: skip
    if response.status_code >= 400:
        error = error_from(response, what)
        error.retry_after = retry_after(response.headers)  # type: ignore[attr-defined]
        raise error
    try:
        body = response.json()
    except (ValueError, RecursionError):
        body = None
    if isinstance(body, dict) and request_id:
        body.setdefault("request_id", request_id)  # the id to quote to support, header or body
    if not isinstance(body, dict):
        message = f"{what}: the API answered with a body that is not a JSON object"
        raise TransportError(message, status=response.status_code, request_id=request_id)
    return body


def network_failure(error: httpx.HTTPError) -> str:
    """What went wrong on the network, in words; never the URL (its query may be signed)."""
    for kind, words in NETWORK_WORDS:
        if isinstance(error, kind):
            detail = f": {str(error)[:200]}" if kind is httpx.ConnectError and str(error) else ""
            return f"{words} ({type(error).__name__}{detail})"
    return f"no usable answer ({type(error).__name__})"


async def upload_bytes(
    storage: httpx.AsyncClient, target: Mapping[str, Any], data: bytes, *, bounds: Bounds | None = None
) -> None:
    """PUT a file to a presigned `upload_url` with only its `required_headers` — never the API key.

    `storage` must be a client without credentials (see `execute`); the URL is signed, so it is
    never printed. Its answer is held to the same bounds as an API answer (the longest download
    deadline, as an upload may be as large).
    """
    bounds = bounds if bounds is not None else Bounds.from_env(os.environ)
    url, given = target.get("upload_url"), target.get("required_headers")
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise TransportError("POST /uploads/presign: the answer holds no upload_url")
    headers = {str(name): str(value) for name, value in given.items()} if isinstance(given, Mapping) else {}
    seconds = max(bounds.download_seconds.values())
    response = await bounded_request(
        storage, "PUT", url, what="PUT (the presigned upload URL)", limit=bounds.body_bytes, seconds=seconds,
        setting=DOWNLOAD_TIME_ENV, content=data, headers=headers,
    )  # fmt: skip
    if response.status_code >= 300:
        raise error_from(response, "PUT (the presigned upload URL)")
