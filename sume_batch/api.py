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
from pathlib import Path
from typing import Any

import httpx
import tenacity

from sume_batch import __version__
from sume_batch.bounds import DOWNLOAD_TIME_ENV, REQUEST_ENV, Bounds, Pacer, bounded_request
from sume_batch.errors import ApiError, BoundError, TransportError, UncertainCreateError
from sume_batch.responses import Created, Job, created_job_ids, parse_job, stated_credits
from sume_batch.target import DEFAULT_BASE_URL
from sume_batch.wire import decode, error_from, network_failure

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
DOWNLOAD_ATTEMPTS = 3
IN_FLIGHT_SPARE = 4  # requests in flight beyond one per job: the poller's page, balance reads, a result
IN_FLIGHT_MAX = 64  # however many jobs run at once (the rate-limit headers pace them all the same)

Sleep = Callable[[float], Awaitable[None]]
OnWait = Callable[[str, float], None]  # (why, seconds): what the run waits for; 0 s when it stops waiting


def in_flight_for(concurrency: int) -> int:
    """HTTP requests to the API a run of `concurrency` jobs at once may have in flight: one per job (its
    create, its result) and a few spare for polling and balance reads, bounded (issue 13)."""
    return max(1, min(concurrency + IN_FLIGHT_SPARE, IN_FLIGHT_MAX))


@dataclass
class RetryBudget:
    """Retries left for the whole run: an outage stops the run instead of hammering the API."""

    remaining: int = 200

    def take(self) -> bool:
        self.remaining -= 1
        return self.remaining >= 0


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
        max_in_flight: int = IN_FLIGHT_SPARE * 2,  # `run` sizes it to its jobs (`size_for`)
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
        self.gate = asyncio.Semaphore(max_in_flight)  # HTTP requests in flight (see `in_flight_for`)
        self.max_attempts, self.on_wait, self.rng = max_attempts, on_wait, rng or random.Random()
        self.headers = {
            "Authorization": f"Bearer {api_key}",
            "User-Agent": f"sume-batch/{__version__}",
            "Accept": "application/json",
        }
        self.requests = 0

    def size_for(self, concurrency: int) -> None:
        """Let `concurrency` jobs' requests be in flight at once (`in_flight_for`); called between
        requests, as `run` does once the account's capacity is known."""
        self.gate = asyncio.Semaphore(in_flight_for(concurrency))

    async def me(self) -> dict[str, Any]:
        return await self.get("/me")

    async def credits(self) -> dict[str, Any]:
        return await self.get("/credits")

    async def brand_current(self) -> dict[str, Any]:
        return await self.get("/brand/current")

    async def jobs(self, *, type: str | None = None, status: str | None = None, limit: int | None = None,
                   cursor: str | None = None) -> dict[str, Any]:  # fmt: skip
        return await self.get("/jobs", type=type, status=status, limit=limit, cursor=cursor)

    async def job(self, job_id: str) -> Job:
        return parse_job(await self.get(f"/jobs/{job_id}"))

    async def job_result(self, job_id: str) -> dict[str, Any]:
        return await self.get(f"/jobs/{job_id}/result")

    async def presign(
        self, *, filename: str, content_type: str, size_bytes: int, purpose: str
    ) -> dict[str, Any]:
        """A temporary upload target; a presign makes no job and costs nothing, so it retries like a read."""
        body = {"filename": filename, "content_type": content_type, "size_bytes": size_bytes}
        send = partial(self._request, "POST", "/uploads/presign", "read", json={**body, "purpose": purpose})
        what = "POST /uploads/presign"
        found: dict[str, Any] = await self._retrying(send, what=what, worth=self._transient)
        return found

    async def get(self, path: str, **params: object) -> dict[str, Any]:
        query = {name: str(value).lower() if isinstance(value, bool) else value
                 for name, value in params.items() if value is not None}  # fmt: skip
        send = partial(self._request, "GET", path, "read", params=query)
        result: dict[str, Any] = await self._retrying(send, what=f"GET {path}", worth=self._transient)
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

        created: Created = await self._retrying(attempt, what=f"POST {path}", worth=self._refused)
        return created

    async def download(
        self, storage: httpx.AsyncClient, url: str, path: Path, *, kind: str, name: str
    ) -> tuple[str, int]:
        """Stream a media URL into `path` within its kind's bounds (`Bounds.download_to`); its sha256
        and size. Retried like a read, but never past a refused (expired) link or one of our bounds."""
        fetch = partial(self.bounds.download_to, storage, url, path, kind=kind, name=name)
        found: tuple[str, int] = await self._retrying(
            fetch, what=f"download of {name}", worth=self._fetchable, attempts=DOWNLOAD_ATTEMPTS
        )
        return found

    async def upload(self, storage: httpx.AsyncClient, target: Mapping[str, Any], data: bytes) -> None:
        """PUT a file to a presigned `upload_url` with only its `required_headers`, never the API key.

        `storage` must be a client without credentials; the URL is signed, so it is never printed.
        Its answer is held to the same bounds as an API answer (the longest download deadline, as an
        upload may be as large). Not retried: the storage's refusal is the job's."""
        url, given = target.get("upload_url"), target.get("required_headers")
        what = "PUT (the presigned upload URL)"
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise TransportError("POST /uploads/presign: the answer holds no upload_url")
        given = given if isinstance(given, Mapping) else {}
        headers = {str(name): str(value) for name, value in given.items()}
        seconds = max(self.bounds.download_seconds.values())
        try:
            response = await bounded_request(
                storage, "PUT", url, what=what, limit=self.bounds.body_bytes, seconds=seconds,
                setting=DOWNLOAD_TIME_ENV, content=data, headers=headers,
            )  # fmt: skip
        except httpx.HTTPError as error:
            raise TransportError(f"{what}: {network_failure(error)}") from error
        if response.status_code >= 300:
            raise error_from(response, what)

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

    async def _retrying(
        self, call: Callable[[], Awaitable[Any]], *, what: str, worth: Callable[[BaseException], bool],
        attempts: int | None = None,
    ) -> Any:  # fmt: skip
        """The one retry policy: `call`, tried again while `worth(error)` says a retry could help and
        cannot cost (reads, creates and downloads each have theirs), after a full-jitter backoff or
        the server's Retry-After (capped), ended at once by `halt`. httpx's errors end here, as our
        TransportError naming the request."""
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
            stop=tenacity.stop_after_attempt(attempts or self.max_attempts),
            wait=wait,
            retry=tenacity.retry_if_exception(worth),
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

    @staticmethod
    def _fetchable(error: BaseException) -> bool:
        """Worth another try for a download: the network, or the storage failing — not a refused
        (expired) link, which the next run fetches afresh, nor one of our bounds."""
        if isinstance(error, BoundError):
            return False
        refused = isinstance(error, ApiError) and error.status == 403
        return isinstance(error, httpx.TransportError) or (isinstance(error, ApiError) and not refused)

    def _backoff(self, error: BaseException | None, attempt: int, what: str) -> tuple[float, str]:
        """How long to wait before attempt `attempt + 1`, and why, capped at `bounds.wait_seconds`:
        a day-long Retry-After must not freeze the run."""
        asked = error.retry_after if isinstance(error, ApiError) else None
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
