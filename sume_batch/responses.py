"""What the Sume API answers, read tolerantly — in ONE place.

The public docs leave result shapes and several field names unknown and disagree on others
(sume-api.md §3.4, §4, §5, §13): job ids come as `job.id` or `job_id`, cancellation is spelled
both ways, `/credits` names no balance field. Every such reading is here, so the day the live
schema is known it is corrected in one file.
"""

from __future__ import annotations

import math
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sume_batch.states import API_RUNNING, API_SPELLINGS, ApiStatus

MEDIA_TYPES = {
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
    ".gif": "image/gif", ".mp4": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm",
    ".mp3": "audio/mpeg", ".wav": "audio/wav", ".m4a": "audio/mp4",
}  # fmt: skip


@dataclass(frozen=True)
class Job:
    """A job as the API reports it, in our words: status normalised, error sanitised."""

    id: str
    status: ApiStatus
    type: str | None = None
    error_code: str | None = None
    error_message: str | None = None

    @property
    def done(self) -> bool:
        return self.status not in API_RUNNING


@dataclass(frozen=True)
class Created:
    """What a create call told us: the job id(s) it made and, if stated, the credits required."""

    job_ids: tuple[str, ...]
    required_credits: float | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class Media:
    """One downloadable output found in a result payload."""

    url: str
    content_type: str
    role: str  # the key it was found under, e.g. "url", "thumbnail_url"


def normalize_status(status: object) -> ApiStatus:
    """Documented statuses as one spelling; anything unknown counts as still running."""
    text = str(status or "").strip().lower()
    try:
        return API_SPELLINGS.get(text) or ApiStatus(text)
    except ValueError:
        return ApiStatus.RUNNING


def parse_job(payload: Mapping[str, Any]) -> Job:
    """A job object (or a result wrapping one) → Job; `error.details` is never kept."""
    inner = payload.get("job")
    job: Mapping[str, Any] = inner if isinstance(inner, Mapping) else payload
    found = job.get("error")
    error: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    return Job(
        id=str(job.get("id") or payload.get("job_id") or ""),
        status=normalize_status(job.get("status")),
        type=job.get("type"),
        error_code=error.get("code"),
        error_message=error.get("message"),
    )


def created_job_ids(payload: Mapping[str, Any]) -> tuple[str, ...]:
    """Job ids from any documented create response: `job.id`, `job_id`, `job_ids`, `data[].id`.

    Each place is read on its own, and a field of an unexpected type yields what it can (a lone
    id where a list was expected) or nothing: an id the API returned is paid for, so one malformed
    field must never cost the ids beside it. A number is no id (it would be polled forever)."""
    ids = [*_ids(payload.get("job"), nested=True), *_ids(payload.get("job_id"))]
    listed = payload.get("job_ids")
    ids += [one for item in (listed if isinstance(listed, list) else [listed]) for one in _ids(item)]
    for name in ("data", "jobs"):  # lists of job objects
        value = payload.get(name)
        for item in value if isinstance(value, list) else [value]:
            ids += _ids(item, nested=True) if isinstance(item, Mapping) else []
    return tuple(dict.fromkeys(ids))


def _ids(value: object, *, nested: bool = False) -> list[str]:
    """An id (a non-empty string: Sume ids are `job_…`), or a job object's `id` when `nested`;
    anything else (a number, a list where a string belongs) is no id at all."""
    if nested and isinstance(value, Mapping):
        return _ids(value.get("id"))
    if isinstance(value, str) and value.strip() and len(value) <= 200:
        return [value.strip()]
    return []


def stated_credits(payload: Mapping[str, Any]) -> float | None:
    """The credits a create's answer says it requires (`required_credits`, documented for Reference
    Analysis), at the top or on its job; None when absent or not a number."""
    job = payload.get("job")
    for value in (
        payload.get("required_credits"),
        job.get("required_credits") if isinstance(job, Mapping) else None,
    ):
        if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1e12:
            return float(value)
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                continue
            if 0 <= number < 1e12:
                return number
    return None


PROVIDER_KEYS = ("provider", "raw", "payload", "upstream", "debug", "trace", "stack", "response")
DETAIL_LIMIT = 300  # characters of validation detail kept per refusal


def validation_detail(details: object) -> str:
    """The field-level reasons of a refusal (`{"avatar_id": "lacks the 'ugc_ad' capability"}`,
    or a list of `{field, message}`), as one line; raw provider payloads are never read."""
    parts = [f"{name}: {reason}" for name, reason in _field_reasons(details)]
    text = "; ".join(parts)
    return text if len(text) <= DETAIL_LIMIT else text[: DETAIL_LIMIT - 1] + "…"


def _field_reasons(details: object) -> list[tuple[str, str]]:
    if isinstance(details, Mapping):
        inner = details.get("errors") or details.get("fields")
        if isinstance(inner, list | Mapping):
            return _field_reasons(inner)
        return [
            (str(name), reason)
            for name, reason in details.items()
            if isinstance(reason, str) and not any(word in str(name).lower() for word in PROVIDER_KEYS)
        ]
    if isinstance(details, list):
        found = []
        for item in details[:20]:
            if isinstance(item, Mapping):
                name = item.get("field") or item.get("path") or item.get("param") or item.get("loc")
                reason = item.get("message") or item.get("reason") or item.get("detail")
                if isinstance(reason, str):
                    found.append((str(name or "request"), reason))
        return found
    return []


def find_media(result: object, role: str = "") -> Iterator[Media]:
    """Every http(s) URL in a result payload that names a media file, typed by its extension."""
    if isinstance(result, Mapping):
        for key, value in result.items():
            yield from find_media(value, str(key))
    elif isinstance(result, list):
        for item in result:
            yield from find_media(item, role)
    elif isinstance(result, str) and result.startswith(("https://", "http://")):
        path = url_path(result).lower()
        suffix = path[path.rfind(".") :] if "." in path.rsplit("/", 1)[-1] else ""
        if suffix in MEDIA_TYPES:
            yield Media(result, MEDIA_TYPES[suffix], role)


def url_path(url: str) -> str:
    """An http(s) URL's path, percent-decoded, as `httpx.URL(url).path` gives it but at a tenth of
    the cost and never raising: the authority ends at the first `/`, `?` or `#`."""
    rest = url.partition("://")[2].split("#", 1)[0].split("?", 1)[0]
    slash = rest.find("/")
    return urllib.parse.unquote(rest[slash:]) if slash >= 0 else ""


BALANCE_FIELDS = ("remaining_credits", "available_credits", "balance", "credits", "remaining")


def balance_of(payload: Mapping[str, Any]) -> float | None:
    """The credit balance from `GET /credits`, whose field names are undocumented; None if unknown."""
    for name in BALANCE_FIELDS:
        value = payload.get(name)
        if isinstance(value, Mapping):
            value = value.get("remaining", value.get("available"))
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)  # NaN or Infinity (JSON parsers accept both) is no balance: unknown
    return None


CAPACITY_FIELDS = ("active_generation_capacity", "generation_capacity", "capacity", "concurrency")
MAX_CAPACITY = 10_000  # more than this is no capacity a client can use: read as unknown


def capacity_of(payload: Mapping[str, Any]) -> int | None:
    """How many generations may run at once, if `GET /credits` says so in any spelling; a value
    that is not a whole number from 1 to MAX_CAPACITY is unknown (a negative one broke the run)."""
    for name in CAPACITY_FIELDS:
        capacity = payload.get(name)
        if isinstance(capacity, Mapping):
            capacity = capacity.get("limit", capacity.get("max"))
        if isinstance(capacity, int) and not isinstance(capacity, bool):
            return capacity if 1 <= capacity <= MAX_CAPACITY else None
    return None
