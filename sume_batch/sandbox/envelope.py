"""The error envelope every failing sandbox response uses (sume-api.md §2), and JSON responses.

`{"error": {"code", "message", "details"}, "request_id": "req_..."}`; the request id is also sent as
the `X-Request-Id` header on every response.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

REQUEST_ID_KEY = "sume.request_id"
API_KEY_KEY = "sume.api_key"


class SandboxError(Exception):
    """An API-level refusal: turned into the error envelope by the app's exception handler."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = dict(details or {})
        self.headers = dict(headers or {})


def invalid(details: Mapping[str, Any], message: str = "The request body is not valid.") -> SandboxError:
    """A 400 whose `details` map each bad field to what is wrong with it."""
    return SandboxError(400, "bad_request", message, details)


def not_found(what: str, ident: str) -> SandboxError:
    """A 404 for an id this workspace cannot see."""
    return SandboxError(404, "not_found", f"No such {what}.", {"id": ident})


def json_response(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """A compact JSON response."""
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(body, status_code=status, headers=dict(headers or {}), media_type="application/json")


def envelope(error: SandboxError, request_id: str) -> dict[str, Any]:
    """The documented error body."""
    return {
        "error": {"code": error.code, "message": error.message, "details": error.details},
        "request_id": request_id,
    }


def error_response(error: SandboxError, request_id: str) -> Response:
    """The envelope as a response, with the error's own headers."""
    return json_response(envelope(error, request_id), error.status, error.headers)


def request_id_of(request: Request) -> str:
    """The id the gate gave this request."""
    return str(request.scope.get(REQUEST_ID_KEY, "req_unknown"))


async def handle_sandbox_error(request: Request, exc: Exception) -> Response:
    """Starlette exception handler: a `SandboxError` becomes the envelope."""
    assert isinstance(exc, SandboxError)
    return error_response(exc, request_id_of(request))


async def handle_http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 / 405 as envelopes, so every error has one shape."""
    status = int(getattr(exc, "status_code", 500))
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, "bad_request")
    message = {404: "No such route.", 405: "Method not allowed on this route."}.get(status, str(exc))
    headers = getattr(exc, "headers", None) or {}
    return error_response(SandboxError(status, code, message, headers=headers), request_id_of(request))
