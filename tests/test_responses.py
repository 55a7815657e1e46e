"""responses: every spelling of an API answer that the docs leave open is read, and a field of the
wrong type is read as unknown, never as a wrong value."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from sume_batch.responses import (
    DETAIL_LIMIT,
    balance_of,
    capacity_of,
    created_job_ids,
    find_media,
    normalize_status,
    parse_job,
    stated_credits,
    url_path,
    validation_detail,
)


@pytest.mark.parametrize(
    ("status", "normal"),
    [
        ("completed", "completed"),
        (" COMPLETED ", "completed"),
        ("cancelled", "canceled"),  # the docs spell it both ways
        ("Canceled", "canceled"),
        ("failed", "failed"),
        ("expired", "expired"),
        ("queued", "queued"),
        ("processing", "processing"),
        ("succeeded", "running"),  # unknown: still running, so it is polled again and never taken as done
        ("", "running"),
        (None, "running"),
        (3, "running"),
    ],
)
def test_a_status_has_one_spelling_and_an_unknown_one_is_still_running(status: object, normal: str) -> None:
    assert normalize_status(status) == normal


@pytest.mark.parametrize(
    ("status", "done"),
    [("completed", True), ("failed", True), ("canceled", True), ("expired", True), ("queued", False),
     ("running", False), ("processing", False)],
)  # fmt: skip
def test_a_job_is_done_once_completed_or_failed(status: str, done: bool) -> None:
    assert parse_job({"id": "job_1", "status": status}).done is done


@pytest.mark.parametrize(
    ("payload", "job"),
    [
        ({"id": "job_1", "status": "completed", "type": "image_generation"},
         ("job_1", "completed", "image_generation", None, None)),
        ({"job": {"id": "job_2", "status": "cancelled"}, "result": {"images": []}},  # a result wrapping its job
         ("job_2", "canceled", None, None, None)),
        ({"job_id": "job_3", "status": "queued"}, ("job_3", "queued", None, None, None)),
        ({"job": "job_4", "id": "job_5"}, ("job_5", "running", None, None, None)),  # `job` is not an object
        ({"status": "failed"}, ("", "failed", None, None, None)),
        ({"id": "job_6", "status": "failed",
          "error": {"code": "generation_failed", "message": "m", "details": {"raw": "provider payload"}}},
         ("job_6", "failed", None, "generation_failed", "m")),
        ({"id": "job_7", "status": "failed", "error": "boom"}, ("job_7", "failed", None, None, None)),
    ],
)  # fmt: skip
def test_a_job_is_read_flat_or_wrapped_and_its_error_details_are_never_kept(
    payload: dict[str, Any], job: tuple[str | None, ...]
) -> None:
    read = parse_job(payload)
    assert (read.id, read.status, read.type, read.error_code, read.error_message) == job
    assert "provider payload" not in repr(read)


@pytest.mark.parametrize(
    ("answer", "ids"),
    [
        ({"job": {"id": "job_a"}}, ("job_a",)),
        ({"job_id": "job_a"}, ("job_a",)),
        ({"job_ids": ["job_a", "job_b"]}, ("job_a", "job_b")),
        ({"data": [{"id": "job_a"}, {"id": "job_b"}]}, ("job_a", "job_b")),
        ({"jobs": [{"id": "job_a"}]}, ("job_a",)),
        ({"job": {"id": "job_a"}, "job_ids": 12345}, ("job_a",)),
        ({"job": {"id": "job_a"}, "job_ids": "job_b"}, ("job_a", "job_b")),
        ({"job_id": "job_a", "data": "none", "jobs": [None, 3, {"id": "job_c"}]}, ("job_a", "job_c")),
        ({"job": "job_a", "job_id": ["x"], "data": [{"id": 5}, {"id": "job_d"}]}, ("job_a", "job_d")),
        (
            {"job": {"id": "job_a"}, "job_id": "job_a", "job_ids": ["job_a", None, {"id": "job_e"}]},
            ("job_a",),
        ),
        ({"job_id": "  job_a\n", "job_ids": ["job_a"]}, ("job_a",)),  # one id, however it is padded
        ({"job_id": "   ", "job_ids": [""]}, ()),
        ({"job_id": "j" * 201, "job_ids": ["j" * 200]}, ("j" * 200,)),  # no id is longer than 200
        ({"job_id": 42, "data": {"id": "job_f"}}, ("job_f",)),  # a number is no id; a lone object is read
        ({}, ()),
    ],
)
def test_every_id_in_a_malformed_create_answer_is_read(answer: dict[str, Any], ids: tuple[str, ...]) -> None:
    assert created_job_ids(answer) == ids


@pytest.mark.parametrize(
    ("answer", "credits"),
    [({"required_credits": 5}, 5.0), ({"required_credits": "7.5"}, 7.5), ({"required_credits": True}, None),
     ({"required_credits": -1}, None), ({"job": {"required_credits": 40}}, 40.0), ({"required_credits": [1]}, None),
     ({"required_credits": 0}, 0.0), ({"required_credits": "-2"}, None), ({"required_credits": "many"}, None),
     ({"required_credits": float("nan")}, None), ({"required_credits": "inf"}, None), ({"required_credits": 1e12}, None),
     ({"required_credits": "x", "job": {"required_credits": 3}}, 3.0), ({"job": "job_1"}, None), ({}, None)],
)  # fmt: skip
def test_a_stated_price_is_read_only_when_it_is_a_price(
    answer: dict[str, Any], credits: float | None
) -> None:
    assert stated_credits(answer) == credits


@pytest.mark.parametrize(
    ("payload", "balance"),
    [
        ({"remaining_credits": 5}, 5.0),
        ({"available_credits": 6}, 6.0),
        ({"balance": 7.5}, 7.5),
        ({"credits": 8}, 8.0),
        ({"remaining": 9}, 9.0),
        ({"credits": {"remaining": 3}}, 3.0),
        ({"credits": {"available": 2}}, 2.0),
        ({"remaining_credits": 1, "balance": 2}, 1.0),  # the first spelling found wins
        ({"remaining_credits": "5", "balance": 3}, 3.0),  # text is no balance: the next spelling is read
        ({"balance": 0}, 0.0),
        ({"balance": True}, None),
        ({"credits": {"remaining": None}}, None),
        ({"plan": "pro"}, None),
        ({"balance": float("nan")}, None),  # json.loads (and so httpx) reads a bare `NaN` in an answer
        ({"balance": float("inf")}, None),
    ],
)
def test_a_balance_is_unknown_rather_than_wrong(payload: dict[str, Any], balance: float | None) -> None:
    assert balance_of(payload) == balance


@pytest.mark.parametrize(
    ("payload", "capacity"),
    [
        ({"active_generation_capacity": {"limit": 4}}, 4),
        ({"active_generation_capacity": {"max": 3}}, 3),
        ({"generation_capacity": 6}, 6),
        ({"capacity": 2}, 2),
        ({"concurrency": 10_000}, 10_000),
        ({"active_generation_capacity": -3}, None),
        ({"active_generation_capacity": 0, "capacity": 4}, None),  # the first spelling found decides
        ({"active_generation_capacity": True}, None),
        ({"active_generation_capacity": True, "capacity": 5}, 5),
        ({"active_generation_capacity": {"limit": "many"}}, None),
        ({"concurrency": 10_001}, None),
        ({"concurrency": 10**12}, None),
        ({}, None),
    ],
)
def test_capacity_is_read_from_every_spelling_and_only_when_it_is_a_capacity(
    payload: dict[str, object], capacity: int | None
) -> None:
    assert capacity_of(payload) == capacity


@pytest.mark.parametrize(
    ("details", "text"),
    [
        ({"avatar_id": "lacks the 'ugc_ad' capability"}, "avatar_id: lacks the 'ugc_ad' capability"),
        ({"errors": [{"field": "script", "message": "too long"}]}, "script: too long"),
        ({"fields": {"duration": "must be 5 or 10"}}, "duration: must be 5 or 10"),
        ([{"loc": "prompt", "detail": "empty"}, {"path": "n", "reason": "odd"}], "prompt: empty; n: odd"),
        ([{"param": "url", "message": "unreachable"}, {"message": "bad request"}], "url: unreachable; request: bad request"),
        ([{"field": "a"}, "text", 3], ""),  # no reason, no entry
        ({"prompt": "empty", "provider_response": "raw upstream text", "raw": "x", "Debug_Info": "y"}, "prompt: empty"),
        ({"count": 3, "prompt": ["a"]}, ""),  # only text reasons are kept
        ("a sentence", ""),
        (None, ""),
    ],
)  # fmt: skip
def test_validation_details_are_one_line_of_field_reasons_without_provider_payloads(
    details: object, text: str
) -> None:
    assert validation_detail(details) == text


def test_validation_details_are_cut_to_their_limit() -> None:
    long = validation_detail({"prompt": "x" * 1000})
    assert (len(long), long[:10], long[-1]) == (DETAIL_LIMIT, "prompt: xx", "…")
    many = validation_detail([{"field": f"f{n}", "message": "m"} for n in range(30)])
    assert many.count(": m") == 20  # the first twenty entries only


@pytest.mark.parametrize(
    ("result", "found"),
    [
        ({"url": "https://m.test/a.png"}, [("https://m.test/a.png", "image/png", "url")]),
        ({"url": "https://m.test/A.JPEG?X-Amz-Signature=s"}, [("https://m.test/A.JPEG?X-Amz-Signature=s", "image/jpeg", "url")]),
        ({"images": ["http://m.test/1.webp", "http://m.test/2.gif"]},
         [("http://m.test/1.webp", "image/webp", "images"), ("http://m.test/2.gif", "image/gif", "images")]),
        ({"video": {"clip_url": "https://m.test/v.mov", "audio": "https://m.test/s.m4a"}},
         [("https://m.test/v.mov", "video/quicktime", "clip_url"), ("https://m.test/s.m4a", "audio/mp4", "audio")]),
        ({"url": "https://m.test/a.png.zip"}, []),  # the extension decides, and this one is not media
        ({"url": "https://m.test/dir.png/file"}, []),  # a dot in a folder name is no extension
        ({"url": "https://m.test/a.mp4?name=b.png"}, [("https://m.test/a.mp4?name=b.png", "video/mp4", "url")]),
        ({"url": "ftp://m.test/a.png", "path": "/tmp/a.png", "n": 3}, []),
        ([{"u": "https://m.test/a.wav"}], [("https://m.test/a.wav", "audio/wav", "u")]),
        ("https://m.test/a.mp3", [("https://m.test/a.mp3", "audio/mpeg", "")]),
    ],
)  # fmt: skip
def test_media_are_found_anywhere_in_a_result_and_typed_by_extension(
    result: object, found: list[tuple[str, str, str]]
) -> None:
    assert [(media.url, media.content_type, media.role) for media in find_media(result)] == found


# Moved from test_api.py (they test this module alone).
@pytest.mark.parametrize(
    ("payload", "ids"),
    [
        ({"object": "image_generation", "job": {"id": "job_1", "status": "queued"}}, ("job_1",)),
        ({"object": "video_generation", "job_id": "job_2"}, ("job_2",)),
        ({"job": {"id": "job_3"}, "job_id": "job_3"}, ("job_3",)),
        (
            {"object": "list", "data": [{"id": "job_4"}, {"id": "job_5"}], "job_ids": ["job_4", "job_5"]},
            ("job_4", "job_5"),
        ),
        ({"object": "reference_analysis", "job_id": "job_6", "required_credits": 5}, ("job_6",)),
        ({"object": "asset"}, ()),
    ],
)
def test_created_job_ids(payload: dict[str, Any], ids: tuple[str, ...]) -> None:
    assert created_job_ids(payload) == ids


@pytest.mark.parametrize(
    ("status", "normal"),
    [("queued", "queued"), ("Running", "running"), ("processing", "processing"), ("completed", "completed"),
     ("failed", "failed"), ("canceled", "canceled"), ("cancelled", "canceled"), ("expired", "expired"),
     ("rendering", "running"), (None, "running")],
)  # fmt: skip
def test_statuses(status: str | None, normal: str) -> None:
    assert normalize_status(status) == normal


def test_parse_job_drops_error_details() -> None:
    job = parse_job(
        {"id": "job_1", "status": "failed", "error": {"code": "x", "message": "m", "details": {"raw": 1}}}
    )
    assert job == parse_job(
        {"job": {"id": "job_1", "status": "failed", "error": {"code": "x", "message": "m"}}}
    )
    assert (job.error_code, job.error_message, job.done) == ("x", "m", True)


def test_find_media_types_urls_by_extension_wherever_they_are() -> None:
    result = {
        "result": {
            "images": [{"url": "https://m.test/a.png?X-Amz-Signature=s"}],
            "video": {"clip_url": "https://m.test/v/b.MP4", "thumbnail_url": "https://m.test/t.jpg"},
            "page": "https://example.test/about",
        }
    }
    assert [(m.content_type, m.role) for m in find_media(result)] == [
        ("image/png", "url"), ("video/mp4", "clip_url"), ("image/jpeg", "thumbnail_url"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("payload", "balance"),
    [({"remaining_credits": 5}, 5.0), ({"balance": 7.5}, 7.5), ({"credits": {"remaining": 3}}, 3.0),
     ({"plan": "pro"}, None), ({"balance": True}, None)],
)  # fmt: skip
def test_balance_is_unknown_rather_than_wrong(payload: dict[str, Any], balance: float | None) -> None:
    assert balance_of(payload) == balance


@pytest.mark.parametrize(
    "url",
    [
        "https://cdn.example.test/out/a.png",
        "https://cdn.example.test/out/a.PNG?X-Amz-Signature=abc/def.mp4#frag",
        "http://cdn.example.test:8080/a%20b/c%2Ejpg",
        "https://cdn.example.test?next=/x.png",
        "https://cdn.example.test#/x.png",
        "https://user:pw@cdn.example.test/v.mp4",
        "http://[::1]:9/clip.webm",
        "https://cdn.example.test",
        "https://cdn.example.test/",
    ],
)
def test_a_urls_path_is_read_as_httpx_reads_it(url: str) -> None:
    assert (url_path(url) or "/") == httpx.URL(url).path  # httpx says "/" for no path at all
