"""`GET /assets` search: parse the §8 query parameters, filter, score, sort.

The score is the share of query words found in a scene's text; a `search` block is added only
when `q` was given, as the docs describe.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from sume_batch.sandbox.assets import Asset
from sume_batch.sandbox.envelope import invalid

SEARCH_MODES = ("auto", "text")
SORTS = ("relevance", "created_at_desc", "created_at_asc", "duration_desc")
_TEXT_FILTERS = ("source_type", "segment_type", "brand", "product", "tag", "keyword")


def parse_query(params: Mapping[str, str]) -> dict[str, Any]:
    """The search parameters as typed values; one 400 listing every bad parameter."""
    problems: dict[str, str] = {}
    query: dict[str, Any] = {name: params.get(name) or None for name in ("q", *_TEXT_FILTERS)}
    query["search_mode"] = _choice(params, "search_mode", SEARCH_MODES, "auto", problems)
    query["sort"] = _choice(params, "sort", SORTS, "relevance" if query["q"] else "created_at_desc", problems)
    query["cta_present"] = _parse(params, "cta_present", _boolean, "true or false", problems)
    for name in ("min_duration_seconds", "max_duration_seconds"):
        query[name] = _parse(params, name, _seconds, "a number of seconds", problems)
    for name in ("created_after", "created_before"):
        query[name] = _parse(params, name, _timestamp, "an ISO 8601 timestamp", problems)
    if problems:
        raise invalid(problems, "Invalid query parameter.")
    return query


def run_search(assets: list[Asset], query: Mapping[str, Any]) -> list[tuple[Asset, float | None]]:
    """Searchable assets that pass the filters (and match `q`, if given), in the asked order."""
    words = tokens(query["q"] or "")
    found = [
        (a, score(a, words) if words else None) for a in assets if a.status == "ready" and matches(a, query)
    ]
    if words:
        found = [(asset, value) for asset, value in found if value]
    order: dict[str, Callable[[tuple[Asset, float | None]], Any]] = {
        "relevance": lambda pair: (-(pair[1] or 0.0), -pair[0].created_at),
        "created_at_desc": lambda pair: -pair[0].created_at,
        "created_at_asc": lambda pair: pair[0].created_at,
        "duration_desc": lambda pair: -pair[0].duration,
    }
    return sorted(found, key=order[query["sort"]])


def tokens(text: str) -> list[str]:
    """Lower-case word tokens of a query."""
    return re.findall(r"[a-z0-9]+", text.lower())


def score(asset: Asset, words: list[str]) -> float:
    """Share of the query's words found in the asset's text (0 when none)."""
    hay = set(tokens(asset.haystack()))
    return round(sum(1 for word in words if word in hay) / len(words), 2)


def matches(asset: Asset, filters: Mapping[str, Any]) -> bool:
    """Whether an asset passes every non-text filter of a parsed query."""
    meta = asset.metadata
    checks: tuple[tuple[str, Callable[[Any], bool]], ...] = (
        ("source_type", lambda v: asset.source_type == v),
        ("segment_type", lambda v: asset.segment_type == v),
        ("brand", lambda v: v.lower() in (b.lower() for b in meta.get("brands", []))),
        ("product", lambda v: v.lower() in (p.lower() for p in meta.get("products", []))),
        ("tag", lambda v: v.lower() in meta.get("tags", [])),
        ("keyword", lambda v: v.lower() in meta.get("keywords", [])),
        ("cta_present", lambda v: bool(meta.get("cta_present")) is v),
        ("min_duration_seconds", lambda v: asset.duration >= v),
        ("max_duration_seconds", lambda v: asset.duration <= v),
        ("created_after", lambda v: asset.created_at > v),
        ("created_before", lambda v: asset.created_at < v),
    )
    return all(check(filters[name]) for name, check in checks if filters.get(name) is not None)


def _choice(
    params: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str, problems: dict[str, str]
) -> str:
    value = params.get(name) or default
    if value not in allowed:
        problems[name] = f"must be one of {', '.join(allowed)}"
    return value


def _parse(
    params: Mapping[str, str],
    name: str,
    convert: Callable[[str], Any],
    expected: str,
    problems: dict[str, str],
) -> Any:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return convert(raw)
    except ValueError:
        problems[name] = f"must be {expected}"
        return None


def _boolean(raw: str) -> bool:
    if raw.lower() not in ("true", "false"):
        raise ValueError(raw)
    return raw.lower() == "true"


def _seconds(raw: str) -> float:
    value = float(raw)
    if not value >= 0:  # also refuses NaN
        raise ValueError(raw)
    return value


def _timestamp(raw: str) -> float:
    parsed = datetime.fromisoformat(raw)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()  # naive means UTC
