"""What an HTTP answer of the API means, in one place: the error envelope and the status as our
exceptions (`errors`), a body as a JSON object, a network failure in words. The client (`api`) and
the storage transfers read every answer through here, so no httpx type reaches the stages.
"""

from __future__ import annotations

from typing import Any

import httpx

from sume_batch.bounds import retry_after
from sume_batch.errors import ApiError, AuthError, InsufficientCreditsError, TransportError

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
        error.retry_after = retry_after(response.headers)
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
