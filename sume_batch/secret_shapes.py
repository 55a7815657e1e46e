"""What a secret looks like in text and data, whoever's it is (sume-api.md §12, issue 6).

Markers, the fields secret by nature, and the patterns that find keys, tokens, signed URLs,
emails, object keys and ids by their shape. `redact` adds what it knows by value and is the gate.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final, TypeAlias

_Repl: TypeAlias = "str | Callable[[re.Match[str]], str]"

MARK: Final = "<redacted>"
MARKER = re.compile(r"<redacted(?::[a-z-]+)?>")
MARKER_CHARS: Final = frozenset("<>:-abcdefghijklmnopqrstuvwxyz")  # all a marker is made of

# Fields whose value is secret by nature: the key is kept, the value replaced by MARK (sume-api.md §7, §12).
MASKED_FIELDS: Final = frozenset({
    "upload_url", "required_headers", "object_key", "api_key", "apikey", "x_api_key", "authorization",
    "proxy_authorization", "cookie", "set_cookie", "email", "owner_email", "workspace_id", "user_id",
    "owner_id", "api_key_id", "key_id", "user", "workspace", "owner", "password", "secret", "client_secret",
    "token", "access_token", "refresh_token", "id_token", "signature", "user_code", "device_code",
    "login_url", "verification_uri", "verification_uri_complete", "verification_url",
})  # fmt: skip
# Raw provider payloads and debug dumps: dropped with their key (`error.details` must never be printed).
DROPPED_FIELDS: Final = frozenset({
    "details", "raw", "raw_response", "provider", "provider_payload", "provider_response", "provider_error",
    "provider_request", "debug", "trace", "traceback", "stack", "stack_trace", "stacktrace",
})  # fmt: skip

_URL = re.compile(
    r"(?<![A-Za-z0-9+.-])(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)"
    r"(?:(?P<userinfo>[^\s/?#@\"'<>\\]*)@)?(?P<rest>[^\s\"'<>\\]*)"
)
_SUME_KEY = re.compile(r"sume_(?:live|test)_[A-Za-z0-9_-]+")
_FIELD = re.compile(
    r"(?<![A-Za-z0-9])(?P<name>authorization|api[_-]?key[_-]id|api[_-]?key|access[_-]token|refresh[_-]token"
    r"|id[_-]token|client[_-]secret|workspace[_-]id|user[_-]id|object[_-]key|upload[_-]url)"
    r"(?P<sep>[\"']?\s*[:=]\s*[\"']?)(?P<scheme>(?:bearer|basic|digest|token)\s+)?+"
    r"(?P<value>(?:[^\s\"'<>,;&]|<redacted(?::[a-z-]+)?>)+)",
    re.IGNORECASE,
)
_HEADERS = re.compile(
    r"(?<![A-Za-z0-9])(?P<name>required[_-]headers)(?P<sep>[\"']?\s*[:=]\s*)"
    r"(?:<redacted>|\{[^{}]*\}|\[[^\[\]]*\]|[\"']?[^\s\"',;{}\[\]]*[\"']?)",
    re.IGNORECASE,
)
# "Bearer" then the token, apart by blanks, a colon or equals sign, or these written escaped: `%20` in a
# URL, `+` in a form, `\n` in a repr or JSON string (a message quoting a prompt), and maybe a quote.
_BEARER = re.compile(
    r"(?:(?<![A-Za-z0-9])|(?<=%[0-9A-Fa-f]{2})|(?<=\\[ntr]))(?P<scheme>(?i:bearer))"
    r"(?P<sep>(?:[\s:=+]|%(?:20|09|0[AaDd]|3[AaDd])|\\[ntr])+\\?[\"']?)(?P<token>[A-Za-z0-9._~+/-]+=*)"
)
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}(?![A-Za-z0-9-])"
)
_OBJECT_KEY = re.compile(r"(?<![A-Za-z0-9_.-])uploads/[^\s\"'<>?#,;]+")
_ID = re.compile(
    r"(?<![A-Za-z0-9_])(?:ws|wsp|workspace|user|usr|key|apikey|api_key)_(?P<body>[A-Za-z0-9][A-Za-z0-9_-]*)"
)
_REQUEST_ID = re.compile(r"(?<![A-Za-z0-9_])req_[A-Za-z0-9_-]+")

_BLANKS: Final = " \n\t\r"
_SHORT_TEXT: Final = 1000  # below this, one regex scan is cheaper than finding words
_FIELD_HINTS: Final = ("authorization", "key", "token", "secret", "_id", "-id", "upload")
_FIELD_KINDS: Final = {"workspace_id": "id", "user_id": "id", "api_key_id": "id", "apikey_id": "id",
                       "object_key": "object-key", "upload_url": "url"}  # fmt: skip


def mark(kind: str) -> str:
    """The marker that replaces a secret of this kind: `<redacted:key>`, `<redacted:email>`, ..."""
    return f"<redacted:{kind}>"


def redact_urls(s: str) -> str:
    """Every URL with its userinfo, query and fragment replaced (signatures live there).

    It runs first: markers inside a query would cut the URL short."""
    return _sub_words(_URL, _redact_url, s, "://") if "://" in s else s


def redact_shapes(s: str, *, ids: bool, request_ids: bool) -> str:
    """Every secret known by its shape but URLs replaced by its marker; ordinary prose passes unchanged.

    `ids` and `request_ids` say whether workspace/user/key ids (a guess) and `req_` ids go too."""
    if "sume_" in s:
        s = _SUME_KEY.sub(mark("key"), s)
    low = s.lower()  # cheap substring checks skip the costly scans on ordinary prose
    if ":" in s or "=" in s:
        if "headers" in low:
            s = _HEADERS.sub(lambda m: f"{m['name']}{m['sep']}{MARK}", s)
        if any(hint in low for hint in _FIELD_HINTS):
            s = _FIELD.sub(_redact_field, s)
    if "earer" in low:
        s = _BEARER.sub(_redact_bearer, s)
    if "@" in s:
        s = _sub_words(_EMAIL, mark("email"), s, "@")
    if "uploads/" in s:
        s = _sub_words(_OBJECT_KEY, _redact_object_key, s, "uploads/")
    if "_" not in s:
        return s
    if ids:
        s = _sub_words(_ID, _redact_id, s, "_")
    if request_ids:
        s = _sub_words(_REQUEST_ID, mark("request-id"), s, "req_")
    return s


def _sub_words(pattern: re.Pattern[str], repl: _Repl, s: str, anchor: str) -> str:
    """`pattern.sub(repl, s)` for a pattern that never matches a blank, run only on words holding `anchor`.

    A regex scan costs ~15 ns a character and a long prompt rarely holds a URL; `str.find` is far cheaper.
    The result is the same: no match crosses a blank and no lookaround of these patterns accepts one.
    """
    if len(s) <= _SHORT_TEXT:
        return pattern.sub(repl, s)
    out: list[str] = []
    done = 0
    at = s.find(anchor)
    while at != -1:
        start = max(done, *(s.rfind(blank, done, at) + 1 for blank in _BLANKS))
        end = min((e for blank in _BLANKS if (e := s.find(blank, at)) != -1), default=len(s))
        out += (s[done:start], pattern.sub(repl, s[start:end]))
        done = end
        at = s.find(anchor, end)
    out.append(s[done:])
    return "".join(out)


def _redact_url(match: re.Match[str]) -> str:
    """Keep scheme, host and path; replace userinfo, query and fragment."""
    rest = match["rest"]
    body = rest.rstrip(".,;:!?)]}")
    tail = rest[len(body) :]
    body, hash_, fragment = body.partition("#")
    path, question, query = body.partition("?")
    userinfo = f"{MARK}@" if match["userinfo"] else ("@" if match["userinfo"] is not None else "")
    query_mark = MARK if query else ""
    fragment_mark = MARK if fragment else ""
    return f"{match['scheme']}{userinfo}{path}{question}{query_mark}{hash_}{fragment_mark}{tail}"


def _redact_field(match: re.Match[str]) -> str:
    value = match["value"]
    if MARKER.fullmatch(value):
        return match[0]
    kind = _FIELD_KINDS.get(match["name"].lower().replace("-", "_"), "token")
    return f"{match['name']}{match['sep']}{match['scheme'] or ''}{mark(kind)}"


def _redact_bearer(match: re.Match[str]) -> str:
    token = match["token"]
    # A word after "bearer" ("bearer of gifts") is prose; a token is 8+ characters with a digit or a
    # symbol of token68 other than "-" (JWTs have dots), or is too long to be a word.
    symbol = any(c.isdigit() or c in "._~+/=" for c in token)
    looks_like_token = len(token) >= 8 and (symbol or len(token) >= 20)
    return f"{match['scheme']}{match['sep']}{mark('token')}" if looks_like_token else match[0]


def _redact_object_key(match: re.Match[str]) -> str:
    rest = match[0][len("uploads/") :]
    # "uploads/ws_1/a.mp4" is a storage key; "uploads/presign" or "my uploads/downloads" is not.
    return mark("object-key") if any(c.isdigit() or c == "." for c in rest) else match[0]


def _redact_id(match: re.Match[str]) -> str:
    body = match["body"]
    # Ids are random: a digit, or a long mixed-case body. `user_id`, `key_prefix`, `ws_client` stay.
    mixed = len(body) >= 8 and any(c.islower() for c in body) and any(c.isupper() for c in body)
    return mark("id") if mixed or any(c.isdigit() for c in body) else match[0]
