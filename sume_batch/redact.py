"""The redaction gate (sume-api.md §12, issue 6): every sink (terminal, logs, reports, store exports,
crash output) passes text and data through a `Redactor`, and logging through `attach_redaction`.

`secret_shapes` knows what a secret looks like; a `Redactor` also hides, by value, the configured key and
secrets and what `GET /me` said about the account, and makes the `Failure` that may be shown of an error.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias
from urllib.parse import quote, quote_plus

from sume_batch.secret_shapes import (
    DROPPED_FIELDS,
    MARK,
    MARKER,
    MARKER_CHARS,
    MASKED_FIELDS,
    mark,
    redact_shapes,
    redact_urls,
)

Json: TypeAlias = "bool | int | float | str | list[Json] | dict[str, Json] | None"

# A configured secret shorter than this is ignored: hiding "abc" would shred prose; real keys are long.
MIN_SECRET_LENGTH: Final = 8
# The same for a value `GET /me` named (ids are short and chosen by the API, not by prose).
MIN_ACCOUNT_LENGTH: Final = 4
MAX_MESSAGE_LENGTH: Final = 500
MAX_KEPT_KEYS: Final = 4096

# Where `GET /me` names the account (sume-api.md §1): user, workspace and key, or the same flat.
# Names (user, workspace, key names) are words people chose, like a brand in a prompt: not hidden.
_ACCOUNT_FIELDS: Final = (
    (("user", "id"), "id"), (("user", "email"), "email"), (("workspace", "id"), "id"),
    (("api_key", "id"), "id"), (("api_key", "prefix"), "key"), (("user_id",), "id"), (("email",), "email"),
    (("workspace_id",), "id"), (("api_key_id",), "id"),
)  # fmt: skip
_PUBLIC_KEY_PREFIXES: Final = ("sume_live_", "sume_test_")  # every key starts so: no secret in them

_PLAIN: Final = frozenset({bool, int, float})
_KEEP, _MASK, _DROP = object(), object(), object()  # what `value` does with a mapping key's value


@dataclass(frozen=True)
class Failure:
    """What may be shown about a failed job or request (sume-api.md §12), and nothing else."""

    job_id: str | None
    status: str | None
    code: str | None
    message: str | None
    request_id: str | None

    def as_dict(self) -> dict[str, str | None]:
        """The failure as report JSON: always the same five keys."""
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        head = " ".join(part for part in (f"job {self.job_id}" if self.job_id else None, self.status) if part)
        reason = ": ".join(part for part in (self.code, self.message) if part)
        text = ": ".join(part for part in (head, reason) if part) or "failed"
        return f"{text} (request id {self.request_id})" if self.request_id else text


@dataclass(frozen=True)
class Redactor:
    """Removes secrets from text and JSON-like data; built once per run from the secrets known then.

    Markers: `<redacted:key>` a Sume key (the configured one or any `sume_live_`/`sume_test_` key),
    `<redacted:secret>` another configured secret, `<redacted:token>` a bearer token or credential value,
    `<redacted:email>`, `<redacted:id>` a workspace/user/API-key id (`ws_`, `wsp_`, `workspace_`, `user_`,
    `usr_`, `key_`, `apikey_`, `api_key_` followed by a body with a digit or 8+ mixed-case characters),
    `<redacted:object-key>` a storage key (`uploads/...` with a digit or a dot), `<redacted:url>` an
    `upload_url` value, `<redacted:request-id>` a `req_` id when `keep_request_ids` is off, and a bare
    `<redacted>` for a URL's userinfo, query string and fragment (every one: the docs forbid full URLs with
    query strings) and for the value of a masked field. Markers never match again: redacting is idempotent.

    `account` holds what `GET /me` said about this account (see `with_account`): each value is hidden
    wherever it appears, whatever its shape, as `<redacted:id>`, `<redacted:email>` or `<redacted:key>`.
    """

    api_key: str = field(default="", repr=False)
    secrets: tuple[str, ...] = field(default=(), repr=False)
    keep_request_ids: bool = True
    account: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # (value, marker kind)
    _literals: re.Pattern[str] | None = field(init=False, repr=False, compare=False, default=None)
    _markers: dict[str, str] = field(init=False, repr=False, compare=False, default_factory=dict)
    _keys: dict[str, tuple[str, object]] = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        markers: dict[str, str] = {}
        for raw, kind in [(s, "secret") for s in self.secrets] + [(self.api_key, "key")]:
            secret = raw.strip()
            if len(secret) >= MIN_SECRET_LENGTH:
                for form in (secret, quote(secret, safe=""), quote_plus(secret, safe="")):
                    markers[form] = mark(kind)
        values: dict[str, str] = {}
        for value, kind in self.account:
            for form in _forms(value):
                values.setdefault(form, mark(kind))
        object.__setattr__(self, "_markers", {**values, **markers})
        object.__setattr__(self, "_literals", _literal_pattern(markers, values))

    def with_account(self, me: object) -> Redactor:
        """This redactor, also hiding every value by which `GET /me` (`me`, its JSON) named the account:
        user id and email, workspace id, API key id and the key's prefix beyond `sume_live_`/`sume_test_`.

        Ids need not look like ids (`ws_acmeprod` has no digit), so they are hidden by value, not by
        shape; a value of the wrong type or shorter than MIN_ACCOUNT_LENGTH is ignored."""
        found = _account_values(me)
        return dataclasses.replace(self, account=self.account + found) if found else self

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, keep_request_ids: bool = True) -> Redactor:
        """A redactor for the key in `SUME_API_KEY` of the given environment (possibly unset)."""
        return cls(api_key=env.get("SUME_API_KEY", ""), keep_request_ids=keep_request_ids)

    def text(self, s: str, *, ids: bool = True) -> str:
        """The text with every secret replaced by its marker; ordinary prose and plain URLs pass unchanged.

        `ids=False` leaves out the workspace/user/key-id guess (see `name`)."""
        s = redact_urls(s)
        if self._literals is not None and any(needle in s for needle in self._markers):
            s = self._literals.sub(self._literal, s)  # `in` is far cheaper than a scan that finds nothing
        return redact_shapes(s, ids=ids, request_ids=not self.keep_request_ids)

    def _literal(self, match: re.Match[str]) -> str:
        group = match.lastgroup  # "secret", "account", or None for a marker, which is kept whole
        return self._markers[match[group]] if group else match[0]

    def name(self, s: str) -> str:
        """A name people chose (a job id, a matrix axis or value, a file or folder): every secret but
        the id guess, which would take `key_visual_01` or `user_content_2024` for an API-key or user id."""
        return self.text(s, ids=False)

    def value(self, obj: object) -> Json:
        """A redacted deep copy of JSON-like data: secret fields masked, payloads dropped, text redacted."""
        if isinstance(obj, str):
            return self.text(obj)
        if obj is None or isinstance(obj, bool | int | float):
            return obj
        if isinstance(obj, Mapping):
            copy: dict[str, Json] = {}
            for key, item in obj.items():
                name, rule = self._key(str(key))
                if rule is _DROP:
                    continue
                if rule is _MASK and item is not None:
                    copy[name] = MARK
                elif item is None or type(item) in _PLAIN:  # most values: no call needed (exact types only)
                    copy[name] = item
                else:
                    copy[name] = self.value(item)
            return copy
        if isinstance(obj, list | tuple):
            return [self.value(item) for item in obj]
        return self.text(str(obj))

    def _key(self, name: str) -> tuple[str, object]:
        """A mapping key redacted, and what to do with its value (keep, mask, drop). The same few keys
        recur in every record, so the answers are kept."""
        known = self._keys.get(name)
        if known is None:
            norm = name.strip().lower().replace("-", "_")
            rule = _DROP if norm in DROPPED_FIELDS else _MASK if norm in MASKED_FIELDS else _KEEP
            known = (self.text(name), rule)
            if len(self._keys) < MAX_KEPT_KEYS:
                self._keys[name] = known
        return known

    def failure(
        self, *, job_id: object, status: object, code: object, message: object, request_id: object
    ) -> Failure:
        """A `Failure` from its five parts, each redacted; the message is cut to MAX_MESSAGE_LENGTH."""
        text = self._scalar(message)
        if text is not None and len(text) > MAX_MESSAGE_LENGTH:
            text = text[: MAX_MESSAGE_LENGTH - 1] + "…"
        rid = self._scalar(request_id)
        if rid is not None and not self.keep_request_ids:
            rid = mark("request-id")
        return Failure(self._scalar(job_id), self._scalar(status), self._scalar(code), text, rid)

    def _scalar(self, value: object) -> str | None:
        if value is None or value == "" or isinstance(value, Mapping | list):
            return None
        return self.text(str(value))


def _account_values(me: object) -> tuple[tuple[str, str], ...]:
    """(value, marker kind) for each value in a `GET /me` payload that names the account."""
    found: list[tuple[str, str]] = []
    for path, kind in _ACCOUNT_FIELDS:
        value = me
        for name in path:
            value = value.get(name) if isinstance(value, Mapping) else None
        if not isinstance(value, str):
            continue
        value = value.strip()
        if kind == "key" and any(public.startswith(value) for public in _PUBLIC_KEY_PREFIXES):
            continue  # a prefix no longer than the public marker tells nothing
        if (
            len(value) >= MIN_ACCOUNT_LENGTH
            and not any(c in value for c in "<>")
            and (value, kind) not in found
        ):
            found.append((value, kind))  # "<" or ">" could cut into a marker
    return tuple(found)


def _forms(value: str) -> set[str]:
    """A value as text may hold it: as is, URL-encoded, and escaped in a JSON string."""
    return {value, quote(value, safe=""), quote_plus(value, safe=""), json.dumps(value)[1:-1],
            json.dumps(value, ensure_ascii=False)[1:-1]}  # fmt: skip


def _literal_pattern(secrets: Mapping[str, str], values: Mapping[str, str]) -> re.Pattern[str] | None:
    """One scan for the configured secrets and the account's values, longest first.

    An account value takes the id characters that follow it: `ws_acme` hides `ws_acme_eu` entirely,
    and a key prefix the whole key. If a value could occur inside a marker (`mail` in
    `<redacted:email>`), markers are matched too, whole, and kept: the scan is slower then."""
    if not secrets and not values:
        return None

    def alternatives(forms: Iterable[str]) -> str:
        return "|".join(re.escape(form) for form in sorted(forms, key=len, reverse=True))

    branches = [f"(?P<secret>{alternatives(secrets)})"] if secrets else []
    branches += [f"(?P<account>{alternatives(values)})[A-Za-z0-9_-]*"] if values else []
    if any(set(form) <= MARKER_CHARS for form in [*secrets, *values]):
        branches.append(MARKER.pattern)
    return re.compile("|".join(branches))


class RedactingFilter(logging.Filter):
    """A logging filter that redacts every record (message, arguments, traceback); it never drops one.

    The message is formatted first, so `%s` arguments such as httpx's request URL are redacted too.
    """

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad format string: keep everything, still redacted
            message = f"{record.msg} {record.args!r}"
        record.msg, record.args = self.redactor.text(message), None
        if record.exc_info:
            record.exc_text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            record.exc_info = None  # handlers that render exc_info themselves would bypass the redaction
        if record.exc_text:
            record.exc_text = self.redactor.text(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor.text(record.stack_info)
        return True


def attach_redaction(
    redactor: Redactor,
    *,
    loggers: Iterable[logging.Logger] = (),
    handlers: Iterable[logging.Handler] = (),
) -> RedactingFilter:
    """Add one `RedactingFilter` to the given loggers and handlers and return it.

    A logger's filter sees only records logged on that very logger, not its children's (httpcore logs on
    `httpcore.http11`, ...); a handler's filter sees everything it emits, so handlers are the sure gate.
    """
    gate = RedactingFilter(redactor)
    for logger in loggers:
        logger.addFilter(gate)
    for handler in handlers:
        handler.addFilter(gate)
    return gate


KEPT_AS_SENT = ("avatar_id", "avatar_ids")  # API ids the store reads back (Face Swap file names)


def stored_variant(
    request: Mapping[str, Any], matrix: Mapping[str, Any], redactor: Redactor
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The request and matrix values as the store keeps them: a prompt or a matrix value holding a
    key or an email must not land on disk. Only reports read them back (job keys are hashed from
    the originals, and creates are sent from the manifest), so nothing is lost."""
    stored = redactor.value({name: value for name, value in request.items() if name not in KEPT_AS_SENT})
    kept = {name: request[name] for name in KEPT_AS_SENT if name in request}
    values = {
        axis: redactor.name(value) if isinstance(value, str) else redactor.value(value)
        for axis, value in matrix.items()
    }
    return {**(stored if isinstance(stored, dict) else {}), **kept}, values
