import io
import logging

import httpx
import pytest

from sume_batch.errors import ApiError, InsufficientCreditsError
from sume_batch.redact import (
    MAX_MESSAGE_LENGTH,
    Failure,
    RedactingFilter,
    Redactor,
    attach_redaction,
)

KEY = "sk-Custom/Key+99xyz"  # a configured key without the sume_ prefix, with characters URLs encode
REDACTOR = Redactor(api_key=KEY)

# Ordinary text that must come out exactly as it went in.
UNCHANGED = [
    "Clean product photo on a white bathroom counter",
    "Follow @lumen and @sume.so for more; 50% off @ noon",
    "Email: a newsletter header with a hero image",
    "a bearer of gifts, the bearer token of trust",
    "the bearer: Mastercard; bearer=yes, bearer+friends, Bearer%20of news",
    "user_id is required; api_key_id, key_prefix, ws_client and workspace_name are field names",
    "See https://www.sume.so/api/v1/jobs/job_7Hq2 for details",
    "https://media.sume.so/scenes/kitchen-01.mp4",
    "POST https://www.sume.so/api/v1/uploads/presign and my uploads/downloads folder",
    "request req_8xYz1 failed with insufficient_credits",
    "The key prefix looks like sume_live_... in the docs",
    "job_123 asset_9 req_1",
    "",
]

# (input, exact output) for REDACTOR.
CASES = [
    # the configured key, wherever it appears, raw or URL-encoded
    (f"key is {KEY}!", "key is <redacted:key>!"),
    ("encoded sk-Custom%2FKey%2B99xyz here", "encoded <redacted:key> here"),
    (f"https://cdn.example.com/{KEY}/a.png", "https://cdn.example.com/<redacted:key>/a.png"),
    (f"https://cdn.example.com/a.png?key={KEY}&w=1", "https://cdn.example.com/a.png?<redacted>"),
    # any Sume key
    ("sume_live_AbC123xyz", "<redacted:key>"),
    ("SUME_API_KEY=sume_test_0000aaaa sume-batch run", "SUME_API_KEY=<redacted:key> sume-batch run"),
    ("prefix-sume_live_q1w2e3-suffix", "prefix-<redacted:key>"),
    # auth headers and credential fields
    ("Authorization: Bearer sume_live_abc123", "Authorization: Bearer <redacted:key>"),
    (
        "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.ZRrHA1JJJW8",
        "Authorization: Bearer <redacted:token>",
    ),
    ("authorization=Basic dXNlcjpwYXNz", "authorization=Basic <redacted:token>"),
    (
        "curl -H 'Authorization: Bearer abc.def.ghi' url",
        "curl -H 'Authorization: Bearer <redacted:token>' url",
    ),
    ("sent bearer abc123def456 upstream", "sent bearer <redacted:token> upstream"),
    ("Bearer aVeryLongOpaqueTokenWithoutDigits", "Bearer <redacted:token>"),
    # tokens with an underscore (token68), and "Bearer" apart from its token by more than a space
    ("Bearer tok_PLANTED9 sent", "Bearer <redacted:token> sent"),
    ("bearer pat_planted_under", "bearer <redacted:token>"),
    ("BeArEr tok_PLANTED9", "BeArEr <redacted:token>"),
    ("quoted 'Bearer\\ntok_PLANTED9' in a repr", "quoted 'Bearer\\n<redacted:token>' in a repr"),
    ('{"m": "x\\nBearer\\ttok_PLANTED9"}', '{"m": "x\\nBearer\\t<redacted:token>"}'),
    ("bearer: tok_PLANTED9, bearer=tok_PLANTED9", "bearer: <redacted:token>, bearer=<redacted:token>"),
    (
        'Bearer "tok_PLANTED9" and Bearer \\"tok_x_12\\"',
        'Bearer "<redacted:token>" and Bearer \\"<redacted:token>\\"',
    ),
    (
        "/a/Bearer%20tok_PLANTED9 Authorization%3A%20Bearer%20tok_PLANTED9",
        "/a/Bearer%20<redacted:token> Authorization%3A%20Bearer%20<redacted:token>",
    ),
    ("form: auth=Bearer+tok_PLANTED9&x=1", "form: auth=Bearer+<redacted:token>&x=1"),
    ("X-Api-Key: abc123", "X-Api-Key: <redacted:token>"),
    ("x-api-key=abc&limit=5", "x-api-key=<redacted:token>&limit=5"),
    ('{"x-api-key": "v"}', '{"x-api-key": "<redacted:token>"}'),
    ("X-Api-Key: sume_test_k3y", "X-Api-Key: <redacted:key>"),
    (
        "{'authorization': 'Bearer tok_123456', 'accept': '*/*'}",
        "{'authorization': 'Bearer <redacted:token>', 'accept': '*/*'}",
    ),
    (
        "access_token=ya29.a0AfH6 refresh_token: 1//0g",
        "access_token=<redacted:token> refresh_token: <redacted:token>",
    ),
    # emails
    ("mail bob.smith+ads@example.co.uk today", "mail <redacted:email> today"),
    ("<ops@sume.so>", "<<redacted:email>>"),
    ("mailto:Ana_B@Brand-Name.COM.", "mailto:<redacted:email>."),
    # URLs: origin and path kept, query, fragment and userinfo replaced
    (
        "https://bucket.s3.amazonaws.com/media/a.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F20260101"
        "&X-Amz-Signature=9f8e7d",
        "https://bucket.s3.amazonaws.com/media/a.mp4?<redacted>",
    ),
    (
        "https://storage.googleapis.com/b/o.png?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Signature=abc",
        "https://storage.googleapis.com/b/o.png?<redacted>",
    ),
    (
        "https://acct.blob.core.windows.net/c/v.mp4?sv=2022-11-02&se=2026-01-01&sr=b&sp=r&sig=abc%3D",
        "https://acct.blob.core.windows.net/c/v.mp4?<redacted>",
    ),
    (
        "https://d111.cloudfront.net/v.mp4?Expires=1767225600&Signature=abc~def&Key-Pair-Id=K2JCJMDEHXQW5F",
        "https://d111.cloudfront.net/v.mp4?<redacted>",
    ),
    ("https://media.sume.so/a.png?w=800", "https://media.sume.so/a.png?<redacted>"),
    ("https://user:pa55@example.com/p", "https://<redacted>@example.com/p"),
    ("https://example.com/cb#access_token=abc", "https://example.com/cb#<redacted>"),
    ("(see https://example.com/a?token=t1).", "(see https://example.com/a?<redacted>)."),
    ('"url": "https://x.io/p?sig=1", "n": 2', '"url": "https://x.io/p?<redacted>", "n": 2'),
    ("https://example.com/search?", "https://example.com/search?"),
    ("s3://bucket/key.mp4?versionId=3", "s3://bucket/key.mp4?<redacted>"),
    ("https://example.com/u/ana@example.com/x", "https://example.com/u/<redacted:email>/x"),
    # presign fields as text
    (
        '{"upload_url": "https://s3.example.com/p/q.mp4?X-Amz-Signature=1",'
        ' "object_key": "uploads/ws_1/f.mp4",'
        ' "required_headers": {"Content-Type": "video/mp4"}, "expires_at": "2026-01-01T00:00:00Z"}',
        '{"upload_url": "<redacted:url>",'
        ' "object_key": "<redacted:object-key>",'
        ' "required_headers": <redacted>, "expires_at": "2026-01-01T00:00:00Z"}',
    ),
    ("object_key=abc/def.mp4 title=Demo", "object_key=<redacted:object-key> title=Demo"),
    ("finalized uploads/2026/01/clip.mov", "finalized <redacted:object-key>"),
    (
        "PUT https://up.example.com/uploads/ws_9/a.mp4?X-Amz-Date=1",
        "PUT https://up.example.com/<redacted:object-key>?<redacted>",
    ),
    # workspace, user and API-key ids
    ("user_id=user_8f3k workspace ws_9A", "user_id=<redacted:id> workspace <redacted:id>"),
    ("api_key_id: key_77 and apikey_0a1b", "api_key_id: <redacted:id> and <redacted:id>"),
    ("owner usr_Qx7 in wsp_AbCdEfGhIj", "owner <redacted:id> in <redacted:id>"),
    ('{"workspace_id": "ws_demo"}', '{"workspace_id": "<redacted:id>"}'),
    # everything at once, as an error message from a provider might carry it
    (
        f"upstream 403 for ana@brand.com (ws_12) key={KEY} at https://p.example/v1?api_key={KEY}",
        "upstream 403 for <redacted:email> (<redacted:id>) key=<redacted:key> at https://p.example/v1?<redacted>",
    ),
]


@pytest.mark.parametrize("text", UNCHANGED)
def test_ordinary_text_is_unchanged(text: str) -> None:
    assert REDACTOR.text(text) == text


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_text(text: str, expected: str) -> None:
    assert REDACTOR.text(text) == expected


@pytest.mark.parametrize("text", [text for text, _ in CASES] + UNCHANGED)
def test_redacting_twice_is_redacting_once(text: str) -> None:
    once = REDACTOR.text(text)
    assert REDACTOR.text(once) == once


PAD = "Clean product photo on a white bathroom counter, soft light. " * 20  # > 1000 chars: the long-text path


@pytest.mark.parametrize(("text", "expected"), CASES + [(text, text) for text in UNCHANGED])
@pytest.mark.parametrize("blank", [" ", "\n", "\t"])
def test_long_text_is_redacted_the_same(text: str, expected: str, blank: str) -> None:
    assert REDACTOR.text(PAD + blank + text + blank + PAD) == PAD + blank + expected + blank + PAD
    assert REDACTOR.text(text + blank + PAD + text) == expected + blank + PAD + expected


@pytest.mark.parametrize("key", ["", "   ", "abc", "sume"])
def test_an_empty_or_short_key_redacts_nothing_ordinary(key: str) -> None:
    redactor = Redactor(api_key=key)
    for text in UNCHANGED:
        assert redactor.text(text) == text
    assert redactor.text("a b c sume abc") == "a b c sume abc"


def test_other_secrets_and_from_env() -> None:
    redactor = Redactor(api_key="plainkey123", secrets=("login-code-ABCD-1234",))
    assert redactor.text("plainkey123 / login-code-ABCD-1234") == "<redacted:key> / <redacted:secret>"
    assert Redactor.from_env({"SUME_API_KEY": " plainkey123 \n"}).text("x plainkey123") == "x <redacted:key>"
    assert Redactor.from_env({}).text("plainkey123") == "plainkey123"


def test_repr_never_shows_the_key() -> None:
    assert KEY not in repr(REDACTOR)
    assert repr(REDACTOR) == "Redactor(keep_request_ids=True)"


def test_request_ids_are_kept_unless_asked() -> None:
    sharing = Redactor(api_key=KEY, keep_request_ids=False)
    assert sharing.text("request req_8xYz1 (job_1)") == "request <redacted:request-id> (job_1)"
    assert REDACTOR.text("request req_8xYz1 (job_1)") == "request req_8xYz1 (job_1)"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://media.sume.so/r/job_1/out.mp4", "https://media.sume.so/r/job_1/out.mp4"),
        (
            "  https://media.sume.so/r/out.mp4?X-Amz-Signature=f00\n",
            "https://media.sume.so/r/out.mp4?<redacted>",
        ),
        ("http://127.0.0.1:8765/files/a.png?token=t", "http://127.0.0.1:8765/files/a.png?<redacted>"),
        (f"https://x.io/{KEY}?sig=1#t=3", "https://x.io/<redacted:key>?<redacted>#<redacted>"),
    ],
)
def test_url(url: str, expected: str) -> None:
    assert REDACTOR.text(url.strip()) == expected


def test_value_masks_drops_and_redacts_deeply() -> None:
    presign = {
        "upload_url": "https://s3.example.com/uploads/x.mp4?X-Amz-Signature=1",
        "required_headers": {"Content-Type": "video/mp4"},
        "object_key": "uploads/ws_1/x.mp4",
        "media_url": "https://media.sume.so/u/x.mp4?Expires=1&Signature=2",
        "expires_at": None,
    }
    job = {
        "id": "job_1",
        "status": "failed",
        "error": {"code": "provider_error", "message": f"bad key {KEY}", "details": {"raw": KEY}},
        "result": {
            "images": [{"url": "https://media.sume.so/a.png", "width": 1024}],
            "seed": 7,
            "nsfw": False,
        },
        "provider_payload": {"prompt": "x"},
        "Debug": "trace",
        "owner": {"email": "a@b.co"},
        "email": None,
        "X-Api-Key": "k",
        "notes": ("contact ana@brand.com", 1.5),
        "ana@brand.com": "map key",
        "prompt": "Clean product photo on a white bathroom counter",
    }
    assert REDACTOR.value({"presign": presign, "jobs": [job]}) == {
        "presign": {
            "upload_url": "<redacted>",
            "required_headers": "<redacted>",
            "object_key": "<redacted>",
            "media_url": "https://media.sume.so/u/x.mp4?<redacted>",
            "expires_at": None,
        },
        "jobs": [
            {
                "id": "job_1",
                "status": "failed",
                "error": {"code": "provider_error", "message": "bad key <redacted:key>"},
                "result": {
                    "images": [{"url": "https://media.sume.so/a.png", "width": 1024}],
                    "seed": 7,
                    "nsfw": False,
                },
                "owner": "<redacted>",
                "email": None,
                "X-Api-Key": "<redacted>",
                "notes": ["contact <redacted:email>", 1.5],
                "<redacted:email>": "map key",
                "prompt": "Clean product photo on a white bathroom counter",
            }
        ],
    }


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ("sume_live_x1", "<redacted:key>"),
        (None, None),
        (3, 3),
        (True, True),
        ([], []),
        ({"me": {"user": {"id": "user_1"}, "workspace": {"id": "ws_1"}, "api_key": {"prefix": "sume_live_"}}},
         {"me": {"user": "<redacted>", "workspace": "<redacted>", "api_key": "<redacted>"}}),
        ({"headers": {"Authorization": "Bearer t", "Accept": "a"}},
         {"headers": {"Authorization": "<redacted>", "Accept": "a"}}),
        ({"details": 1, "raw": 2, "provider": 3, "trace": 4, "stack_trace": 5, "kept": 6}, {"kept": 6}),
        (httpx.URL("https://x.io/a?sig=1"), "https://x.io/a?<redacted>"),
    ],
)  # fmt: skip
def test_value(obj: object, expected: object) -> None:
    assert REDACTOR.value(obj) == expected


def test_value_is_a_copy() -> None:
    original = {"a": [{"b": "c"}]}
    copy = REDACTOR.value(original)
    assert copy == original
    assert copy is not original
    assert isinstance(copy, dict)
    assert copy["a"] is not original["a"]


# A provider's message as a failed job carries it: the key, an email and a signed URL in it.
FAILURE_MESSAGE = f"Upstream said: key {KEY} invalid for ana@brand.com, see https://p.example/x?sig=1"


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (
            {"job_id": "job_42", "status": "failed", "code": "provider_error", "message": FAILURE_MESSAGE,
             "request_id": "req_9"},
            Failure(
                job_id="job_42",
                status="failed",
                code="provider_error",
                message="Upstream said: key <redacted:key> invalid for <redacted:email>, see https://p.example/x?<redacted>",
                request_id="req_9",
            ),
        ),
        (
            {"job_id": "job_1", "status": "expired", "code": None, "message": None, "request_id": None},
            Failure(job_id="job_1", status="expired", code=None, message=None, request_id=None),
        ),
        (
            {"job_id": "job_2", "status": "failed", "code": None, "message": "provider timeout", "request_id": "req_3"},
            Failure("job_2", "failed", None, "provider timeout", "req_3"),
        ),
        (
            {"job_id": "job_3", "status": "failed", "code": "x", "message": "", "request_id": "req_i"},
            Failure(job_id="job_3", status="failed", code="x", message=None, request_id="req_i"),
        ),
    ],
)  # fmt: skip
def test_failure(parts: dict[str, object], expected: Failure) -> None:
    assert REDACTOR.failure(**parts) == expected


def test_failure_as_dict_and_str() -> None:
    failure = REDACTOR.failure(
        job_id="job_42", status="failed", code="provider_error", message=FAILURE_MESSAGE, request_id="req_9"
    )
    assert failure.as_dict() == {
        "job_id": "job_42",
        "status": "failed",
        "code": "provider_error",
        "message": "Upstream said: key <redacted:key> invalid for <redacted:email>, see https://p.example/x?<redacted>",
        "request_id": "req_9",
    }
    assert str(failure) == (
        "job job_42 failed: provider_error: Upstream said: key <redacted:key> invalid for <redacted:email>,"
        " see https://p.example/x?<redacted> (request id req_9)"
    )
    assert str(Failure(None, None, None, None, None)) == "failed"
    assert str(Failure(None, "HTTP 402", "insufficient_credits", "Not enough credits.", None)) == (
        "HTTP 402: insufficient_credits: Not enough credits."
    )


def test_failure_of_an_api_error_never_shows_details() -> None:
    error = InsufficientCreditsError(
        f"Not enough credits for {KEY}", status=402, code="insufficient_credits", request_id="req_1",
        details={"required": 10, "key": KEY},
    )  # fmt: skip
    # What the store keeps of an ApiError (execute.py) and a report makes of it: never its details.
    failure = REDACTOR.failure(
        job_id="job_5", status="HTTP 402", code=error.code, message=error.args[0], request_id=error.request_id
    )
    assert failure == Failure(
        job_id="job_5",
        status="HTTP 402",
        code="insufficient_credits",
        message="Not enough credits for <redacted:key>",
        request_id="req_1",
    )
    boom = ApiError("boom")
    assert REDACTOR.failure(
        job_id=None, status="rejected", code=boom.code, message=boom.args[0], request_id=boom.request_id
    ) == Failure(None, "rejected", None, "boom", None)


def test_failure_of_an_envelope() -> None:
    envelope = {
        "error": {
            "code": "insufficient_credits",
            "message": "Not enough credits.",
            "details": {"email": "a@b.co"},
        },
        "request_id": "req_abc",
    }
    error = envelope["error"]  # the client keeps its code, message and request id (`details` never)
    assert REDACTOR.failure(
        job_id=None,
        status=None,
        code=error["code"],
        message=error["message"],
        request_id=envelope["request_id"],
    ) == Failure(None, None, "insufficient_credits", "Not enough credits.", "req_abc")
    assert REDACTOR.failure(
        job_id="job_1", status="failed", code=None, message="bad", request_id=None
    ) == Failure("job_1", "failed", None, "bad", None)


def test_failure_message_is_cut_and_request_id_hidden_when_sharing() -> None:
    sharing = Redactor(api_key=KEY, keep_request_ids=False)
    failure = sharing.failure(
        job_id="job_1", status="failed", code="c", message="x" * 2000, request_id="req_1"
    )
    assert failure.message == "x" * (MAX_MESSAGE_LENGTH - 1) + "…"
    assert failure.request_id == "<redacted:request-id>"


def capture(redactor: Redactor) -> tuple[logging.Logger, io.StringIO]:
    """A fresh logger whose one handler writes to a string and is gated by the redactor."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    logger = logging.Logger("httpx")  # not registered: no global logging state is touched
    logger.addHandler(handler)
    attach_redaction(redactor, handlers=[handler])
    return logger, stream


def test_log_filter_redacts_an_httpx_request_line() -> None:
    logger, stream = capture(REDACTOR)
    url = httpx.URL(f"https://bucket.s3.amazonaws.com/uploads/ws_1/a.mp4?X-Amz-Signature=abc&k={KEY}")
    # exactly how httpx logs a request (httpx/_client.py), with a URL object as argument
    logger.info('HTTP Request: %s %s "%s %d %s"', "PUT", url, "HTTP/1.1", 200, "OK")
    assert stream.getvalue() == (
        "INFO httpx HTTP Request: PUT https://bucket.s3.amazonaws.com/<redacted:object-key>?<redacted>"
        ' "HTTP/1.1 200 OK"\n'
    )


def test_log_filter_redacts_tracebacks_and_bad_format_strings() -> None:
    logger, stream = capture(REDACTOR)
    try:
        raise RuntimeError(f"Authorization: Bearer {KEY}")
    except RuntimeError:
        logger.exception("failed for %s", "ana@brand.com")
    logger.warning("two %s %s", "sume_live_abc1")  # noqa: PLE1206 (a bad call must not leak either)
    output = stream.getvalue()
    assert KEY not in output
    assert "sume_live_abc1" not in output
    assert "ana@brand.com" not in output
    assert output.startswith("ERROR httpx failed for <redacted:email>\nTraceback (most recent call last):\n")
    assert "RuntimeError: Authorization: Bearer <redacted:key>\n" in output
    assert output.endswith("WARNING httpx two %s %s ('<redacted:key>',)\n")


def test_log_filter_on_a_logger_and_never_drops_records() -> None:
    stream = io.StringIO()
    logger = logging.Logger("sume_batch.execute")
    logger.addHandler(logging.StreamHandler(stream))
    gate = attach_redaction(REDACTOR, loggers=[logger])
    assert isinstance(gate, RedactingFilter)
    assert logger.filters == [gate]
    logger.info("plain line")
    logger.info("key %s", KEY)
    assert stream.getvalue() == "plain line\nkey <redacted:key>\n"


def test_filtering_a_record_twice_changes_nothing_more() -> None:
    record = logging.LogRecord("httpx", logging.INFO, __file__, 1, "to %s (%d%%)", ("a@b.co", 5), None)
    gate = attach_redaction(REDACTOR)
    assert gate.filter(record) is True
    assert (record.getMessage(), record.args) == ("to <redacted:email> (5%)", None)
    assert gate.filter(record) is True
    assert record.getMessage() == "to <redacted:email> (5%)"


# What `GET /me` says about an account (sume-api.md §1), ids without a digit as a workspace may have.
ME = {
    "object": "account",
    "user": {"id": "usr_janedoe", "object": "user", "name": "Jane Doe", "email": "jane.doe@acme-prod.example"},
    "workspace": {"id": "ws_acmeprod", "object": "workspace", "name": "Acme", "plan": "sandbox"},
    "api_key": {"id": "key_prodkey", "name": "CI key", "prefix": "sume_live_Ab3d", "mode": "live", "scopes": ["read"]},
}  # fmt: skip
ACCOUNT = REDACTOR.with_account(ME)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("for ws_acmeprod by usr_janedoe", "for <redacted:id> by <redacted:id>"),
        ("key key_prodkey of jane.doe@acme-prod.example", "key <redacted:id> of <redacted:email>"),
        ("JANE.DOE@acme-prod.example wrote", "<redacted:email> wrote"),  # the pattern still sees emails
        ("(ws_acmeprod/usr_janedoe)", "(<redacted:id>/<redacted:id>)"),
        ("in ws_acmeprod_eu-2, xws_acmeprod", "in <redacted:id>, x<redacted:id>"),  # a value and its tail
        ("sume_live_Ab3dEfGh and sume_live_Ab3d", "<redacted:key> and <redacted:key>"),
        ("https://x.io/w/ws_acmeprod/a.png?sig=1", "https://x.io/w/<redacted:id>/a.png?<redacted>"),
        ("q=jane.doe%40acme-prod.example in a path /jane.doe%40acme-prod.example/", "q=<redacted:email> in a path /<redacted:email>/"),
        ('{"workspace": "ws_acmeprod", "owner": "usr_janedoe"}', '{"workspace": "<redacted:id>", "owner": "<redacted:id>"}'),
        ("Jane Doe of Acme on the sandbox plan, read scope", "Jane Doe of Acme on the sandbox plan, read scope"),
        ("<redacted:email> <redacted:id> <redacted:key>", "<redacted:email> <redacted:id> <redacted:key>"),
        (f"and still {KEY} and ws_client", "and still <redacted:key> and ws_client"),
    ],
)  # fmt: skip
def test_with_account_hides_the_account_by_value(text: str, expected: str) -> None:
    assert ACCOUNT.text(text) == expected
    assert ACCOUNT.name(text) == expected  # names too: the value is no guess
    assert ACCOUNT.text(expected) == expected
    assert ACCOUNT.text(PAD + " " + text) == PAD + " " + expected
    assert ACCOUNT.value({"prompt": text, "n": [text]}) == {"prompt": expected, "n": [expected]}


def test_with_account_reads_the_payload_tolerantly() -> None:
    assert ACCOUNT.account == (
        ("usr_janedoe", "id"), ("jane.doe@acme-prod.example", "email"), ("ws_acmeprod", "id"),
        ("key_prodkey", "id"), ("sume_live_Ab3d", "key"),
    )  # fmt: skip
    flat = {"user_id": " usr_flat ", "workspace_id": "ws_flat", "api_key_id": "key_flat", "email": "f@x.io"}
    assert Redactor().with_account(flat).account == (
        ("usr_flat", "id"), ("f@x.io", "email"), ("ws_flat", "id"), ("key_flat", "id"),
    )  # fmt: skip
    wrong = {"user": {"id": 12345678, "email": ["a@b.co"]}, "workspace": "ws_acmeprod", "api_key": None}
    for me in (wrong, {}, [], None, "ws_acmeprod", {"user": {"id": "ws_"}, "workspace": {"id": "<redacted"}}):
        assert Redactor().with_account(me) == Redactor()
    for public in ("sume_live_", "sume_test_", "sume_", " sume_test_ "):  # the prefix tells nothing
        assert Redactor().with_account({"api_key": {"prefix": public}}).account == ()


def test_with_account_keeps_the_rest_of_the_redactor() -> None:
    sharing = Redactor(api_key=KEY, secrets=("login-code-ABCD-1234",), keep_request_ids=False)
    both = sharing.with_account(ME).with_account({"user": {"id": "usr_second"}})
    assert both.text(f"{KEY} login-code-ABCD-1234 req_8xYz1 usr_janedoe usr_second") == (
        "<redacted:key> <redacted:secret> <redacted:request-id> <redacted:id> <redacted:id>"
    )
    assert sharing.text("usr_janedoe") == "usr_janedoe"  # a copy: the original is unchanged
    assert "janedoe" not in repr(both) and repr(both) == "Redactor(keep_request_ids=False)"


def test_an_account_value_never_cuts_into_a_marker() -> None:
    # Values that occur inside markers (`mail` in `<redacted:email>`, `acted`) hide only themselves.
    redactor = Redactor(api_key="sume_live_redacted").with_account({"user": {"id": "acted", "email": "mail"}})
    assert (
        redactor.text("a@b.co sume_live_redacted acted mail")
        == "<redacted:email> <redacted:key> <redacted:id> <redacted:email>"
    )
