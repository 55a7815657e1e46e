"""wire: what an HTTP answer means — the error envelope, a body that is no JSON object, a redirect."""

from __future__ import annotations

import httpx
import pytest

from sume_batch.errors import ApiError, AuthError, InsufficientCreditsError, TransportError
from sume_batch.wire import decode, error_from


def test_a_non_envelope_error_body_is_a_transport_error() -> None:
    error = error_from(httpx.Response(404, text="<html>not found</html>"))
    assert isinstance(error, TransportError) and error.status == 404


@pytest.mark.parametrize(
    ("status", "body", "kind", "code"),
    [
        (401, {"error": {"code": "unauthorized", "message": "bad key"}}, AuthError, "unauthorized"),
        (403, {"error": {"code": "forbidden", "message": "no"}}, AuthError, "forbidden"),
        (402, {"error": {"code": "payment_required", "message": "m"}}, InsufficientCreditsError, "payment_required"),
        (400, {"error": {"code": "insufficient_credits", "message": "m"}}, InsufficientCreditsError, None),
        (422, {"error": {"code": "bad_request", "message": "m", "details": {"x": 1}}}, ApiError, "bad_request"),
        (503, {"error": {"code": "unavailable", "message": "m"}}, ApiError, "unavailable"),
        (500, "<html>oops</html>", ApiError, None),
    ],
)  # fmt: skip
def test_the_envelope_becomes_one_of_our_errors(
    status: int, body: object, kind: type, code: str | None
) -> None:
    response = (
        httpx.Response(status, json=body) if isinstance(body, dict) else httpx.Response(status, text=body)
    )
    error = error_from(response, "GET /jobs")
    assert type(error) is kind and error.status == status
    if code is not None:
        assert error.code == code


def test_an_error_keeps_its_retry_after_and_request_id() -> None:
    response = httpx.Response(429, headers={"retry-after": "7", "x-request-id": "req_9"}, json={"error": {}})
    with pytest.raises(ApiError) as caught:
        decode(response, "GET /credits")
    assert (caught.value.retry_after, caught.value.request_id, caught.value.status) == (7, "req_9", 429)


def test_a_redirect_is_refused_and_never_followed() -> None:
    with pytest.raises(TransportError, match="follows none"):
        decode(httpx.Response(302, headers={"location": "https://elsewhere.test/"}), "GET /me")


@pytest.mark.parametrize("body", ["[1, 2]", "not json", '"text"'])
def test_a_body_that_is_not_a_json_object_is_a_transport_error(body: str) -> None:
    with pytest.raises(TransportError, match="not a JSON object"):
        decode(httpx.Response(200, text=body), "GET /me")


def test_the_request_id_of_the_header_is_kept_in_the_body() -> None:
    body = decode(httpx.Response(200, headers={"x-request-id": "req_1"}, json={"ok": True}), "GET /me")
    assert body == {"ok": True, "request_id": "req_1"}
