"""List pagination as sume-api.md §2 describes it: `limit` + `cursor` in, the list envelope out.

Cursors are opaque strings: an offset for searches, the last seen job's sequence number for `/jobs`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from sume_batch.sandbox.envelope import invalid

DEFAULT_LIMIT = 20
MAX_LIMIT = 100

T = TypeVar("T")


def parse_limit(params: Mapping[str, str]) -> int:
    """The page size asked for: an integer 1..100, 20 when absent."""
    raw = params.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise invalid({"limit": f"must be an integer from 1 to {MAX_LIMIT}"}, "Invalid query parameter.")
    return int(raw)


def encode_cursor(kind: str, position: int) -> str:
    """An opaque cursor for `position` in a list of `kind`."""
    return "cur_" + base64.urlsafe_b64encode(f"{kind}:{position}".encode()).decode().rstrip("=")


def decode_cursor(params: Mapping[str, str], kind: str) -> int | None:
    """The position a `cursor` parameter points at, None when absent; 400 when it was not ours."""
    raw = params.get("cursor")
    if not raw:
        return None
    try:
        text = base64.urlsafe_b64decode(raw.removeprefix("cur_") + "==").decode()
        found_kind, position = text.split(":")
        if found_kind == kind:
            return int(position)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise invalid({"cursor": "is not a cursor this list returned"}, "Invalid query parameter.")


def page_by_offset(items: Sequence[T], params: Mapping[str, str], kind: str) -> tuple[list[T], str | None]:
    """One page of an ordered list, and the cursor of the next page (None on the last)."""
    limit = parse_limit(params)
    start = decode_cursor(params, kind) or 0
    page = list(items[start : start + limit])
    more = start + limit < len(items)
    return page, encode_cursor(kind, start + limit) if more else None


def list_body(data: list[Any], next_cursor: str | None) -> dict[str, Any]:
    """The documented list envelope."""
    return {"object": "list", "data": data, "has_more": next_cursor is not None, "next_cursor": next_cursor}
