"""bounds: sizes and times from the environment, read strictly; answers and downloads cut off at
their bound; the waits servers ask for, in delta-seconds, Unix times and HTTP dates."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from sume_batch.bounds import (
    DOWNLOAD_BYTES,
    DOWNLOAD_SECONDS,
    Bounds,
    GiB,
    KiB,
    MiB,
    Pacer,
    bounded_request,
    describe_size,
    parse_seconds,
    parse_size,
    retry_after,
    seconds_until,
)
from sume_batch.errors import ApiError, BoundError, UsageError

Handler = Callable[[httpx.Request], httpx.Response]


@pytest.mark.parametrize(
    ("text", "size"),
    [("1000000", 1_000_000), ("16MiB", 16 * MiB), ("64 MB", 64_000_000), ("1.5 KiB", 1536), (" 2gb ", 2 * 1000**3),
     ("1 TiB", 1024**4), ("1kb", 1000), ("7b", 7), ("3 GIB", 3 * GiB)],
)  # fmt: skip
def test_a_size_is_bytes_with_decimal_or_binary_units(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "message"),
    [("16XB", "not a size (like 16MiB, 500MB or 1000000)"), ("1e6", "not a size (like 16MiB, 500MB or 1000000)"),
     ("-1", "not a size (like 16MiB, 500MB or 1000000)"), ("", "not a size (like 16MiB, 500MB or 1000000)"),
     ("MiB", "not a size (like 16MiB, 500MB or 1000000)"), ("0", "must be more than 0 bytes"),
     ("0.0001B", "must be more than 0 bytes")],
)  # fmt: skip
def test_a_size_that_is_not_one_says_so(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_size(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(("text", "seconds"), [("1", 1.0), ("0.5", 0.5), ("1e3", 1000.0), (" 2 ", 2.0)])
def test_seconds_are_a_number(text: str, seconds: float) -> None:
    assert parse_seconds(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [("soon", "not a number of seconds"), ("0", "must be a number of seconds above 0"),
     ("-1", "must be a number of seconds above 0"), ("inf", "must be a number of seconds above 0"),
     ("nan", "must be a number of seconds above 0")],
)  # fmt: skip
def test_seconds_that_are_not_a_bound_say_so(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_seconds(text)
    assert str(caught.value) == message


def test_no_variable_set_means_the_defaults() -> None:
    bounds = Bounds.from_env({"SUME_BATCH_MAX_BODY": "  ", "SUME_BATCH_MAX_DOWNLOAD": ""})
    assert bounds == Bounds()
    assert (bounds.body_bytes, bounds.request_seconds, bounds.wait_seconds) == (16 * MiB, 120.0, 120.0)
    assert (bounds.download_limit("video"), bounds.download_limit("image")) == (2 * GiB, 64 * MiB)
    assert (bounds.download_deadline("face_swap"), bounds.download_deadline("reference_analysis")) == (
        3600,
        600,
    )


@pytest.mark.parametrize(
    ("env", "read"),
    [
        ({"SUME_BATCH_MAX_BODY": "1 MB"}, lambda b: b.body_bytes == 1_000_000),
        ({"SUME_BATCH_REQUEST_DEADLINE": "30"}, lambda b: b.request_seconds == 30),
        ({"SUME_BATCH_MAX_WAIT": "0.5"}, lambda b: b.wait_seconds == 0.5),
        ({"SUME_BATCH_MAX_DOWNLOAD": "1MiB"}, lambda b: b.download_bytes == dict.fromkeys(DOWNLOAD_BYTES, MiB)),
        (  # the kinds named, the others keep their default
            {"SUME_BATCH_MAX_DOWNLOAD": "image = 1 KiB , video=2KiB,"},
            lambda b: b.download_bytes == {**DOWNLOAD_BYTES, "image": KiB, "video": 2 * KiB},
        ),
        (  # later items win: every kind, then one of them
            {"SUME_BATCH_MAX_DOWNLOAD": "1MiB,image=2MiB"},
            lambda b: b.download_bytes == {**dict.fromkeys(DOWNLOAD_BYTES, MiB), "image": 2 * MiB},
        ),
        (
            {"SUME_BATCH_DOWNLOAD_DEADLINE": "ad_video=90"},
            lambda b: b.download_seconds == {**DOWNLOAD_SECONDS, "ad_video": 90.0},
        ),
    ],
)  # fmt: skip
def test_each_bound_is_read_from_its_variable(env: dict[str, str], read: Callable[[Bounds], bool]) -> None:
    assert read(Bounds.from_env(env))


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SUME_BATCH_MAX_BODY", "16XB", "SUME_BATCH_MAX_BODY='16XB': not a size (like 16MiB, 500MB or 1000000)"),
        ("SUME_BATCH_MAX_WAIT", "-1", "SUME_BATCH_MAX_WAIT='-1': must be a number of seconds above 0"),
        ("SUME_BATCH_REQUEST_DEADLINE", "nan", "SUME_BATCH_REQUEST_DEADLINE='nan': must be a number of seconds above 0"),
        ("SUME_BATCH_MAX_DOWNLOAD", "image=0", "SUME_BATCH_MAX_DOWNLOAD='image=0': 'image=0': must be more than 0 bytes"),
        ("SUME_BATCH_DOWNLOAD_DEADLINE", "video=1,image=x",
         "SUME_BATCH_DOWNLOAD_DEADLINE='video=1,image=x': 'image=x': not a number of seconds"),
        ("SUME_BATCH_MAX_DOWNLOAD", "imgae=1MiB", "SUME_BATCH_MAX_DOWNLOAD: unknown job type 'imgae' (expected one of"
         " image, video, ad_video, face_swap, reference_analysis, asset_upload)"),
        ("SUME_BATCH_MAX_DOWNLOAD", "=5", "SUME_BATCH_MAX_DOWNLOAD: unknown job type '' (expected one of"
         " image, video, ad_video, face_swap, reference_analysis, asset_upload)"),
    ],
)  # fmt: skip
def test_a_bad_bound_is_a_usage_error_naming_the_variable_and_value(
    name: str, value: str, message: str
) -> None:
    with pytest.raises(UsageError) as caught:
        Bounds.from_env({name: value})
    assert str(caught.value) == message


def test_a_kind_without_a_bound_of_its_own_gets_the_largest() -> None:
    bounds = Bounds(download_bytes={"image": 5, "video": 9}, download_seconds={"image": 1.0, "video": 2.0})
    assert (bounds.download_limit("other"), bounds.download_deadline("other")) == (9, 2.0)


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0 bytes"), (1023, "1023 bytes"), (KiB, "1 KiB"), (1536, "1.5 KiB"), (MiB, "1 MiB"), (3 * GiB // 2, "1.5 GiB"),
     (5 * GiB, "5 GiB")],
)  # fmt: skip
def test_a_size_is_described_in_the_largest_binary_unit(size: int, text: str) -> None:
    assert describe_size(size) == text


@pytest.mark.parametrize(
    ("value", "now", "seconds"),
    [("12", 1e9, 12.0), (" 7 ", 0, 7.0), ("0.5", 0, 0.5), ("-5", 0, 0.0), ("999999999", 2e9, 999_999_999.0),
     ("1700000005", 1_700_000_000, 5.0), ("1600000000", 1.7e9, 0.0), ("1000000001", 1_000_000_000.5, 0.5),
     ("nan", 0, None), ("inf", 0, None), ("soon", 0, None), ("", 0, None)],
)  # fmt: skip
def test_a_wait_is_delta_seconds_or_a_unix_time(value: str, now: float, seconds: float | None) -> None:
    assert seconds_until(value, now=now) == seconds


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("12", 12.0), ("1445412490", 20.0), ("Wed, 21 Oct 2015 07:28:00 GMT", 10.0),
     ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0), ("soon", None), ("", None), (None, None)],
)  # fmt: skip
def test_retry_after_reads_seconds_unix_times_and_http_dates(
    header: str | None, seconds: float | None
) -> None:
    headers = httpx.Headers({} if header is None else {"retry-after": header})
    assert retry_after(headers, now=1_445_412_470) == seconds  # 10 s before 2015-10-21 07:28:00 GMT


class Ticks:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_pacer_spends_what_is_left_then_waits_for_the_reset() -> None:
    ticks = Ticks()
    pacer = Pacer(clock=ticks, wall=lambda: 1_700_000_000.0)
    assert pacer.delay("read") == 0.0  # nothing known: no wait
    pacer.observe("read", httpx.Headers({"ratelimit-remaining": "2", "ratelimit-reset": "30"}))
    assert [pacer.delay("read") for _ in range(3)] == [0.0, 0.0, 30.0]  # two left, then the window's end
    ticks.now += 20
    assert (pacer.delay("read"), pacer.delay("create")) == (10.0, 0.0)  # buckets are separate
    assert (
        pacer.delay("read", cap=4.0) == 4.0 and pacer.delay("read") == 4.0
    )  # a cap holds for later requests


@pytest.mark.parametrize(
    "headers",
    [
        {"ratelimit-remaining": "0"},
        {"ratelimit-reset": "30"},
        {"ratelimit-remaining": "none", "ratelimit-reset": "30"},
        {"ratelimit-remaining": "0", "ratelimit-reset": "soon"},
    ],
)
def test_the_pacer_ignores_headers_it_cannot_read(headers: dict[str, str]) -> None:
    pacer = Pacer(clock=Ticks(), wall=lambda: 0.0)
    pacer.observe("read", httpx.Headers(headers))
    assert pacer.delay("read") == 0.0


def test_the_pacer_reads_a_unix_time_reset_against_the_wall_clock() -> None:
    pacer = Pacer(clock=lambda: 100.0, wall=lambda: 1_700_000_000.0)
    pacer.observe("read", httpx.Headers({"ratelimit-remaining": "0", "ratelimit-reset": "1700000030"}))
    assert pacer.delay("read") == 30.0
    pacer.observe("read", httpx.Headers({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "3400000000"}))
    assert pacer.delay("read", cap=120.0) == 120.0 and pacer.delay("read") == 120.0  # later requests too


def answer(content: bytes, *, status: int = 200, declared: int | None = None) -> Handler:
    """A server that answers every request with `content`, streamed in 1 KiB pieces, its
    Content-Length `declared` (the true one by default; a lie when given)."""

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(content), KiB):
            yield content[start : start + KiB]

    def handle(request: httpx.Request) -> httpx.Response:
        length = len(content) if declared is None else declared
        headers = {"content-length": str(length), "x-request-id": "req_1"}
        return httpx.Response(status, headers=headers, content=pieces())

    return handle


async def never_answers(request: httpx.Request) -> httpx.Response:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


def request(handler: Callable[..., object], *, limit: int, seconds: float = 5.0) -> httpx.Response:
    async def main() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:  # type: ignore[arg-type]
            return await bounded_request(
                http, "GET", "https://api.test/me", what="GET /me", limit=limit, seconds=seconds,
                setting="SUME_BATCH_REQUEST_DEADLINE",
            )  # fmt: skip

    return asyncio.run(main())


def test_an_answer_within_its_bounds_is_read_whole() -> None:
    content = b'{"ok": true}' * 200
    response = request(answer(content), limit=len(content))
    assert (response.status_code, response.content) == (200, content)
    assert response.headers["x-request-id"] == "req_1"


@pytest.mark.parametrize("declared", [None, 10])  # told the truth, or told a smaller size than it sends
def test_an_answer_past_its_size_is_not_read_further(declared: int | None) -> None:
    with pytest.raises(BoundError) as caught:
        request(answer(b"x" * 5000, declared=declared), limit=4096)
    assert str(caught.value) == (
        "GET /me: the answer is larger than 4 KiB, so it was not read; SUME_BATCH_MAX_BODY sets the bound"
        " (request id req_1)"
    )


def test_an_answer_that_never_comes_is_cut_off_at_its_deadline() -> None:
    with pytest.raises(BoundError) as caught:
        request(never_answers, limit=4096, seconds=0.05)
    assert str(caught.value) == (
        "GET /me timed out: no whole answer within 0.05 s (SUME_BATCH_REQUEST_DEADLINE sets the bound)"
    )


def test_a_redirect_is_an_answer_never_followed() -> None:
    def redirect(request: httpx.Request) -> httpx.Response:
        assert request.url.host == "api.test", "a redirect was followed"
        return httpx.Response(302, headers={"location": "https://elsewhere.test/me"})

    response = request(redirect, limit=4096)
    assert (response.status_code, response.headers["location"]) == (302, "https://elsewhere.test/me")


def download(handler: Callable[..., object], path: Path, bounds: Bounds) -> tuple[str, int]:
    async def main() -> tuple[str, int]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as storage:  # type: ignore[arg-type]
            return await bounds.download_to(
                storage, "https://cdn.test/a.png", path, kind="image", name="a.png"
            )

    return asyncio.run(main())


def test_a_download_is_written_with_its_digest_and_size(tmp_path: Path) -> None:
    content = bytes(range(256)) * 40
    got = download(answer(content), tmp_path / "a.png", Bounds())
    assert got == (hashlib.sha256(content).hexdigest(), len(content))
    assert (tmp_path / "a.png").read_bytes() == content


@pytest.mark.parametrize("declared", [None, 100])
def test_a_download_past_its_kinds_bound_stops(tmp_path: Path, declared: int | None) -> None:
    bounds = Bounds(download_bytes={**DOWNLOAD_BYTES, "image": 2 * KiB})
    with pytest.raises(BoundError) as caught:
        download(answer(b"x" * (3 * KiB), declared=declared), tmp_path / "a.png", bounds)
    assert str(caught.value) == (
        "download of a.png is larger than 2 KiB (SUME_BATCH_MAX_DOWNLOAD sets the bound for image jobs)"
    )
    assert caught.value.status is None  # our limit, not a wrong answer of the server's


def test_a_download_past_its_kinds_deadline_stops(tmp_path: Path) -> None:
    bounds = Bounds(download_seconds={**DOWNLOAD_SECONDS, "image": 0.05})
    with pytest.raises(BoundError) as caught:
        download(never_answers, tmp_path / "a.png", bounds)
    assert str(caught.value) == (
        "download of a.png took longer than 0.05 s (SUME_BATCH_DOWNLOAD_DEADLINE sets the bound for image jobs)"
    )


def test_a_refused_download_is_an_api_error_with_its_status(tmp_path: Path) -> None:
    with pytest.raises(ApiError) as caught:
        download(answer(b"<Error>AccessDenied</Error>", status=403), tmp_path / "a.png", Bounds())
    assert (str(caught.value), caught.value.status) == ("HTTP 403: download of a.png failed", 403)
    assert not isinstance(caught.value, BoundError) and not (tmp_path / "a.png").exists()


# Moved from test_api.py (they test this module alone).
def test_retry_after_in_both_forms() -> None:
    assert retry_after(httpx.Headers({"retry-after": "12"})) == 12
    assert retry_after(httpx.Headers({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}), now=1445412470) == 10
    assert retry_after(httpx.Headers({"retry-after": "soon"})) is None


def test_retry_after_and_resets_read_delta_seconds_and_unix_times() -> None:
    assert retry_after(httpx.Headers({"retry-after": "1700000030"}), now=1_700_000_000) == 30
    assert retry_after(httpx.Headers({"retry-after": "inf"})) is None
    assert seconds_until("12", now=1e9) == 12 and seconds_until("999999999", now=2e9) == 999999999
    assert seconds_until("1700000005", now=1_700_000_000) == 5 and seconds_until("1600000000", now=1.7e9) == 0
    assert seconds_until("nan", now=0) is None and seconds_until("soon", now=0) is None


def test_bounds_from_the_environment() -> None:
    bounds = Bounds.from_env(
        {"SUME_BATCH_MAX_BODY": "1 MB", "SUME_BATCH_MAX_DOWNLOAD": "video=1GiB", "SUME_BATCH_MAX_WAIT": "0.5"}
    )
    assert (bounds.body_bytes, bounds.wait_seconds, bounds.request_seconds) == (1_000_000, 0.5, 120)
    assert (bounds.download_limit("video"), bounds.download_limit("image")) == (1024**3, 64 * 1024**2)
    assert Bounds.from_env({"SUME_BATCH_DOWNLOAD_DEADLINE": "30"}).download_seconds == dict.fromkeys(
        Bounds().download_seconds, 30.0
    )
    for name, value, message in [
        (
            "SUME_BATCH_MAX_BODY",
            "16XB",
            "SUME_BATCH_MAX_BODY='16XB': not a size (like 16MiB, 500MB or 1000000)",
        ),
        ("SUME_BATCH_MAX_WAIT", "-1", "SUME_BATCH_MAX_WAIT='-1': must be a number of seconds above 0"),
        (
            "SUME_BATCH_MAX_DOWNLOAD",
            "image=0",
            "SUME_BATCH_MAX_DOWNLOAD='image=0': 'image=0': must be more than 0 bytes",
        ),
    ]:
        with pytest.raises(UsageError) as caught:
            Bounds.from_env({name: value})
        assert str(caught.value) == message
