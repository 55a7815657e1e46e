"""The gate every request passes: request id, counting, then for `/api/v1` auth, rate limits and faults.

A pure ASGI middleware (not `BaseHTTPMiddleware`), because faults must be able to swallow or cut
off a response after the route handler has committed it.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sume_batch.sandbox import faults
from sume_batch.sandbox.envelope import API_KEY_KEY, REQUEST_ID_KEY, SandboxError, error_response
from sume_batch.sandbox.state import SandboxState

API_PREFIX = "/api/v1/"
INTROSPECTION_PREFIX = "/_sandbox/"  # not counted: tests read stats, they should not change them
NOT_CREATES = ("/api/v1/uploads/presign",)
FATE_KEY = "sume.fate"  # what became of a request that got no answer


class Gate:
    """Pure ASGI middleware in front of every route; see the module docstring."""

    def __init__(self, app: ASGIApp, state: SandboxState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = self.state.request_id()
        scope[REQUEST_ID_KEY] = request_id
        extra = [("X-Request-Id", request_id)]
        outcome = {"status": "no answer"}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                outcome["status"] = str(message["status"])
                added = [(name.lower().encode(), value.encode()) for name, value in extra]
                message = {**message, "headers": [*message.get("headers", []), *added]}
            await send(message)

        try:
            if scope["path"].startswith(API_PREFIX):
                await self._guard(scope, receive, send_with_headers, extra)
            else:
                await self.app(scope, receive, send_with_headers)
        except ClientDisconnect:  # the client went away mid-request (killed, timed out): nobody to answer
            outcome["status"] = "client_disconnected"
        finally:
            if not scope["path"].startswith(INTROSPECTION_PREFIX):
                self.state.stats.record_request(route_label(scope), scope.get(FATE_KEY, outcome["status"]))

    async def _guard(self, scope: Scope, receive: Receive, send: Send, extra: list[tuple[str, str]]) -> None:
        """Auth, rate limit, then maybe a fault; a request left unanswered says why in `scope[FATE_KEY]`."""
        state, headers = self.state, Headers(scope=scope)
        try:
            scope[API_KEY_KEY] = authenticate(headers, state.config.api_keys, state.config.no_access_keys)
            self._limit(scope, extra)
        except SandboxError as error:
            await error_response(error, scope[REQUEST_ID_KEY])(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        scripted = faults.take_scripted(state.scripted_faults, method, path)
        is_create = method == "POST" and path not in NOT_CREATES
        rng, rates = state.rng("faults"), state.config.faults
        kind = scripted["kind"] if scripted else faults.draw_fault(rng, rates, is_create=is_create)
        if kind is None:
            await self.app(scope, receive, send)
            return
        state.stats.faults[kind] += 1
        await self._misbehave(kind, scripted or {}, scope, receive, send)

    def _limit(self, scope: Scope, extra: list[tuple[str, str]]) -> None:
        bucket = "create" if scope["method"] == "POST" else "read"
        limits, now = self.state.config.rate_limits, self.state.now()
        headers, allowed = self.state.limiter.check(scope[API_KEY_KEY], bucket, limits, now)
        extra.extend(headers)
        if not allowed:
            raise rate_limited(bucket, int(dict(headers)["RateLimit-Reset"]))

    async def _misbehave(
        self, kind: str, scripted: dict[str, object], scope: Scope, receive: Receive, send: Send
    ) -> None:
        if kind == "slow":
            await self.state.sleep(self.state.config.faults.slow_seconds)
            await self.app(scope, receive, send)
        elif kind == "reset":
            scope[FATE_KEY] = "reset"
            await faults.reset_connection(scope)
        elif kind in ("server_error", "rate_limit"):
            await self._refuse(kind, scripted, scope, receive, send)
        else:
            await self._after_commit(kind, scope, receive, send)

    async def _after_commit(self, kind: str, scope: Scope, receive: Receive, send: Send) -> None:
        """Garbage or drop-after-commit: the handler runs (and commits) first, then its answer is spoiled."""
        captured = faults.CapturedResponse()
        await self.app(scope, receive, captured)
        if kind == "garbage":
            await captured.replay(send, faults.garbage(self.state.rng("faults"), captured.body))
        elif 200 <= captured.status < 300:  # committed, charged, and never answered
            scope[FATE_KEY] = "dropped after commit"
            await faults.drop_connection(scope)
        else:
            await captured.replay(send)  # a refusal committed nothing: answer it

    async def _refuse(
        self, kind: str, scripted: dict[str, object], scope: Scope, receive: Receive, send: Send
    ) -> None:
        if kind == "rate_limit":
            bucket = "create" if scope["method"] == "POST" else "read"
            error = rate_limited(bucket, 30, faults.rate_headers(1, 0, 30))
            await error_response(error, scope[REQUEST_ID_KEY])(scope, receive, send)
            return
        wanted = scripted.get("status")
        status, body, media_type = faults.server_error(
            self.state.rng("faults"), scope[REQUEST_ID_KEY], wanted if isinstance(wanted, int) else None
        )
        headers = [(b"content-type", media_type.encode()), (b"content-length", str(len(body)).encode())]
        if status == 503:
            headers.append((b"retry-after", b"1"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})


def authenticate(headers: Headers, valid: tuple[str, ...], no_access: tuple[str, ...]) -> str:
    """The API key of a request (Bearer, else legacy X-Api-Key); 401 or 403 as the docs describe."""
    authorization, legacy = headers.get("authorization"), headers.get("x-api-key")
    challenge = {"WWW-Authenticate": 'Bearer realm="sume"'}
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise SandboxError(
                401, "unauthorized", "Malformed Authorization header: use 'Bearer <key>'.", headers=challenge
            )
        key = token.strip()
    elif legacy:
        key = legacy.strip()
    else:
        raise SandboxError(401, "unauthorized", "Missing API key.", headers=challenge)
    if key in valid:
        return key
    if key in no_access:
        raise SandboxError(403, "forbidden", "This API key's workspace lacks access to the Public API.")
    raise SandboxError(401, "unauthorized", "Invalid API key.", headers=challenge)


def rate_limited(bucket: str, retry_after: int, headers: Sequence[tuple[str, str]] = ()) -> SandboxError:
    """The 429 for a bucket with `Retry-After` (and, for scripted ones, their own RateLimit headers)."""
    return SandboxError(
        429,
        "rate_limit_exceeded",
        "Too many requests; retry later.",
        {"bucket": bucket, "retry_after_seconds": retry_after},
        headers={"Retry-After": str(retry_after), **dict(headers)},
    )


def route_label(scope: Scope) -> str:
    """`METHOD /route/{template}` for counting, so ids do not make every request its own row."""
    route = scope.get("route")
    if route is None:
        app = scope.get("app")
        route = next((r for r in getattr(app, "routes", []) if r.matches(scope)[0] == Match.FULL), None)
    return f"{scope['method']} {getattr(route, 'path', '(no route)')}"
