"""Workspace axes: a matrix axis whose values are read from the Sume workspace (issue 14).

    matrix:
      scene:  {workspace: assets, q: "woman camera hook", segment_type: hook, limit: 6}
      avatar: {workspace: avatars, capability: ugc_ad}
      look:   {workspace: brand}

`assets` searches the Asset Library (`GET /assets` with the documented query and filters) and keeps
scenes that have scene-level media (`media_url`, or `clip_url`); a scene without any is left out
unless the axis says `fallback: source`, which gives the source video with its timecodes instead.
No v1 job type trims a video, so that fallback is for templates that pass the timecodes on (a
Reference Analysis prompt, a script), never a silent substitute. Each row: `id`, `title`,
`media_url` (the scene's media, or the source video in a fallback), `scene_media` (true when it is
the scene's own), `source_media_url`, `start_time_seconds`, `end_time_seconds`, `duration_seconds`,
`thumbnail_url`, `segment_type` and `metadata`.

`avatars` lists `GET /avatars` and keeps those with the capability asked for (`talking_head`,
`ugc_ad`, `face_swap`; the docs name no list filter, so it is applied here); rows: `id`, `name`,
`capabilities` and the avatar's other fields. `brand` gives the images of the current Brand DNA
profile (`GET /brand/current`): `id`, `reference_url`, `description`.

A row is shown and matched (`--only`, `exclude`) by its `id`. Its URLs are kept as every stored
value is, with userinfo, query and fragment replaced (`<redacted>`: signatures live there), so a
snapshot holds no signed URL and a job's key does not change when the API signs its media afresh;
the run sends each job with the URLs it has just read (`live_request`), and withholds a job whose
URL the workspace no longer offers. `run` reads the workspace afresh
before it plans, and `plan --refresh` does without running; both record what they read in a
snapshot beside the run store (`.sume-batch/<campaign>.<target>.workspace.json`), which plain
`validate` and `plan` read, offline, saying how old it is. Reads are bounded: at most `limit`
rows per axis (default 50, at most `MAX_ROWS`), in pages of 100.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sume_batch.confine import read_regular
from sume_batch.data import MAX_DATA_BYTES, DataRow
from sume_batch.errors import ApiError
from sume_batch.secret_shapes import MARK, redact_urls
from sume_batch.target import normalize_url

if TYPE_CHECKING:
    from sume_batch.api import SumeClient
    from sume_batch.target import Target

SOURCES = ("assets", "avatars", "brand")
ASSET_FILTERS = (
    "q", "search_mode", "source_type", "segment_type", "brand", "product", "tag", "keyword", "cta_present",
    "min_duration_seconds", "max_duration_seconds", "created_after", "created_before", "sort",
)  # fmt: skip
CAPABILITIES = ("talking_head", "ugc_ad", "face_swap")
DEFAULT_ROWS = 50
MAX_ROWS = 1000
PAGE = 100
SCENE_MEDIA = ("media_url", "clip_url")  # the docs use both names for a scene's own media (§8)
SNAPSHOT_VERSION = 1
AMBIGUOUS = ""  # in `live`: a stored URL that stands for several URLs as read


@dataclass(frozen=True)
class WorkspaceAxis:
    """An axis the workspace fills: where it stands in the manifest and what it asks for."""

    path: str  # e.g. `matrix.scene` or `jobs[0].matrix.avatar`
    spec: Mapping[str, Any]

    @property
    def limit(self) -> int:
        return int(self.spec.get("limit", DEFAULT_ROWS))


@dataclass(frozen=True)
class Snapshot:
    """What the last reading of the workspace found: rows per axis, when, and at which target."""

    resolved_at: float
    target: Mapping[str, Any]
    axes: Mapping[str, Mapping[str, Any]]  # axis path → {"spec": …, "rows": […], "left_out": n}
    live: Mapping[str, str] = field(default_factory=dict)  # a stored URL → as just read (never written)
    campaign: str = ""

    def rows(self, axis: WorkspaceAxis) -> tuple[DataRow, ...] | None:
        """The rows read for this axis, or None when it was not read with this very spec."""
        found = self.axes.get(axis.path)
        if found is None or found.get("spec") != dict(axis.spec):
            return None
        return tuple(DataRow(row, str(row.get("id")), 0) for row in found.get("rows", ()))

    def summary(self) -> dict[str, Any]:
        """What a run's report says it used: when it was read, and each axis's row ids."""
        axes = {
            path: {
                "rows": [str(row.get("id")) for row in axis.get("rows", ())],
                "left_out": axis.get("left_out", 0),
            }
            for path, axis in self.axes.items()
        }
        return {"resolved_at": self.resolved_at, "axes": axes}

    def text(self) -> str:
        """What `validate`, `plan` and `run` say about it."""
        where = "a sandbox" if self.target.get("rehearsal") else str(self.target.get("base_url", "the API"))
        rows = ", ".join(f"{path} {len(axis.get('rows', ())):,} rows" for path, axis in self.axes.items())
        left = sum(int(axis.get("left_out", 0)) for axis in self.axes.values())
        aside = f"; {left:,} left out (no scene media, or lacking the capability)" if left else ""
        return f"workspace: {self.age_text()} from {where}: {rows}{aside}"

    def age_text(self, now: float | None = None) -> str:
        seconds = max(0.0, (time.time() if now is None else now) - self.resolved_at)
        when = datetime.fromtimestamp(self.resolved_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
        for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
            if seconds >= size:
                return f"read {seconds / size:.0f} {unit} ago ({when})"
        return f"read {seconds:.0f} s ago ({when})"

    def to_json(self) -> dict[str, Any]:
        axes = {path: dict(axis) for path, axis in self.axes.items()}
        return {"version": SNAPSHOT_VERSION, "campaign": self.campaign, "resolved_at": self.resolved_at,
                "target": dict(self.target), "axes": axes}  # fmt: skip


def snapshot_path(folder: Path, campaign: str, target: Target) -> Path:
    """Beside the campaign's store at this target (see `target.store_path`)."""
    return folder / f"{campaign}.{target.label}.workspace.json"


def find_snapshot(
    folder: Path, campaign: str, *, base_url: str | None, rehearsal: bool | None
) -> Snapshot | None:
    """The newest snapshot of this campaign as `target.find_store` finds a store: any sandbox's for
    a rehearsal, else the one read at `base_url` (a sandbox serving there too); any at all when
    `rehearsal` is None, as `validate` reads. None when there is none."""
    url, found = normalize_url(base_url) if base_url else None, []
    for path in folder.glob(f"{glob_escape(campaign)}.*.workspace.json"):
        snapshot = read_snapshot(path)
        if snapshot is None or snapshot.campaign != campaign:  # `shop` is not `shop.v2`
            continue
        recorded = snapshot.target
        if rehearsal is None or (recorded.get("rehearsal") if rehearsal else recorded.get("base_url") == url):
            found.append(snapshot)
    return max(found, key=lambda one: one.resolved_at, default=None)


def glob_escape(text: str) -> str:
    return "".join(f"[{char}]" if char in "*?[" else char for char in text)


def read_snapshot(path: Path) -> Snapshot | None:
    """A snapshot as `write_snapshot` wrote it; None for anything else (not a regular file, over
    `MAX_DATA_BYTES`, not JSON, another shape): a hand-edited or hostile file is no snapshot."""
    try:
        text = read_regular(path, limit=MAX_DATA_BYTES)
        data = json.loads(text) if len(text) <= MAX_DATA_BYTES else None
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("version") != SNAPSHOT_VERSION:
        return None
    when, target, axes = data.get("resolved_at"), data.get("target"), data.get("axes")
    if not (isinstance(when, int | float) and not isinstance(when, bool) and 0 <= when < 4e9):
        return None
    if not isinstance(target, dict) or not isinstance(axes, dict) or not all(map(_axis_shape, axes.values())):
        return None
    return Snapshot(float(when), target, axes, campaign=str(data.get("campaign", "")))


def _axis_shape(axis: Any) -> bool:
    rows = axis.get("rows") if isinstance(axis, dict) else None
    left = axis.get("left_out", 0) if isinstance(axis, dict) else None
    return (
        isinstance(axis, dict) and isinstance(axis.get("spec"), dict) and isinstance(rows, list)
        and all(isinstance(row, dict) and isinstance(row.get("id"), str) for row in rows)
        and isinstance(left, int) and not isinstance(left, bool) and left >= 0
    )  # fmt: skip


def write_snapshot(path: Path, snapshot: Snapshot) -> None:
    """Written to a temporary name and renamed, so a reader never sees half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(snapshot.to_json(), indent=1, ensure_ascii=False) + "\n", "utf-8")
    os.replace(partial, path)


async def resolve(
    client: SumeClient, axes: Sequence[WorkspaceAxis], target: Target, *, campaign: str
) -> Snapshot:
    """Read every workspace axis now (GET requests only)."""
    read: dict[str, dict[str, Any]] = {}
    live: dict[str, str] = {}
    for axis in axes:
        rows, left_out = await READERS[axis.spec["workspace"]](client, axis)
        kept = [stored_form(row, live) for row in rows]
        read[axis.path] = {"spec": dict(axis.spec), "rows": kept, "left_out": left_out}
    return Snapshot(time.time(), target.to_json(), read, live, campaign=campaign)


def stored_form(value: Any, live: dict[str, str]) -> Any:
    """A value as a snapshot keeps it: every URL redacted, the URL as read remembered in `live`."""

    def kept(text: str) -> str:
        stored = redact_urls(text)
        if stored != text and "://" in text and stored.count("://") == 1 == text.count("://"):
            # Two URLs that differ only where signatures live would be stored alike: neither can be
            # sent for the other (`live_request` withholds the jobs that name it).
            live[stored] = text if live.get(stored, text) == text else AMBIGUOUS
        return stored

    return _texts(value, kept)


def _texts(value: Any, change: Callable[[str], str]) -> Any:
    """A JSON-like value with `change` applied to each of its strings."""
    if isinstance(value, str):
        return change(value)
    if isinstance(value, Mapping):
        return {key: _texts(item, change) for key, item in value.items()}
    if isinstance(value, list):
        return [_texts(item, change) for item in value]
    return value


class MissingMedia(Exception):
    """A job names a workspace URL this run did not read (the workspace no longer offers it)."""


def live_request(request: Mapping[str, Any], live: Mapping[str, str]) -> Mapping[str, Any]:
    """The request with every stored workspace URL replaced by the URL just read; MissingMedia
    when one is left that this run could not read afresh."""

    def read(value: str) -> str:
        if MARK not in value:
            return value
        swapped = live.get(value)
        if swapped is None:
            for stored, found in live.items():
                if stored in value and found == AMBIGUOUS:
                    raise MissingMedia(f"{stored} stands for several URLs the workspace gave: not sent")
                value = value.replace(stored, found)
            swapped = value
        if swapped == AMBIGUOUS:
            raise MissingMedia(f"{value} stands for several URLs the workspace gave (in their queries)")
        if f"?{MARK}" in swapped or f"#{MARK}" in swapped:
            raise MissingMedia(f"the workspace did not offer {swapped} to this run: read it again later")
        return swapped

    return {name: _texts(value, read) for name, value in request.items()}


async def pages(
    client: SumeClient, path: str, params: Mapping[str, Any], wanted: int
) -> list[Mapping[str, Any]]:
    """Items of a cursor-paged list (sume-api.md §2) until `wanted` are kept or the pages end."""
    items: list[Mapping[str, Any]] = []
    cursor = None
    for _ in range(MAX_ROWS // PAGE + 1):
        page = await client.get(path, **params, limit=min(PAGE, wanted), cursor=cursor)
        items += [item for item in page.get("data") or () if isinstance(item, Mapping)]
        cursor = page.get("next_cursor")
        if len(items) >= wanted or not page.get("has_more") or not isinstance(cursor, str) or not cursor:
            break
    return items


async def _assets(client: SumeClient, axis: WorkspaceAxis) -> tuple[list[dict[str, Any]], int]:
    params = {name: axis.spec[name] for name in ASSET_FILTERS if name in axis.spec}
    fallback = axis.spec.get("fallback") == "source"
    rows: list[dict[str, Any]] = []
    left_out = 0
    for item in await pages(client, "/assets", params, MAX_ROWS):
        row = scene_row(item, fallback=fallback)
        if row is None:
            left_out += 1
        elif len(rows) < axis.limit:
            rows.append(row)
        if len(rows) >= axis.limit:
            break
    return rows, left_out


def scene_row(item: Mapping[str, Any], *, fallback: bool) -> dict[str, Any] | None:
    """A scene as a row: its own media first (`media_url`, `clip_url`), else, with `fallback`, its
    source video and timecodes; None when neither may be used."""
    if not isinstance(item.get("id"), str) or item.get("status", "ready") != "ready":
        return None
    found = item.get("source_video")
    source: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    source_url = _url(item.get("source_media_url")) or _url(source.get("media_url"))
    own = next((url for name in SCENE_MEDIA if (url := _url(item.get(name)))), None)
    if own is None and not (fallback and source_url):
        return None
    start, end = _seconds(item.get("start_time_seconds")), _seconds(item.get("end_time_seconds"))
    duration = _seconds(item.get("duration_seconds"))
    if duration is None and start is not None and end is not None:
        duration = round(end - start, 3)
    return {
        "id": item["id"],
        "title": str(item.get("title") or ""),
        "media_url": own or source_url,
        "scene_media": own is not None,
        "source_media_url": source_url,
        "start_time_seconds": start,
        "end_time_seconds": end,
        "duration_seconds": duration,
        "thumbnail_url": _url(item.get("thumbnail_url")),
        "segment_type": str(item.get("segment_type") or ""),
        "metadata": dict(item["metadata"]) if isinstance(item.get("metadata"), Mapping) else {},
    }


async def _avatars(client: SumeClient, axis: WorkspaceAxis) -> tuple[list[dict[str, Any]], int]:
    wanted = axis.spec.get("capability")
    rows, left_out = [], 0
    for item in await pages(client, "/avatars", {}, MAX_ROWS):
        if not isinstance(item.get("id"), str):
            continue
        abilities = capabilities_of(item)
        if (wanted is not None and wanted not in abilities) or item.get("status", "ready") != "ready":
            left_out += 1
            continue
        rows.append({**_plain(item), "id": item["id"], "name": str(item.get("name") or ""),
                     "capabilities": sorted(abilities)})  # fmt: skip
        if len(rows) >= axis.limit:
            break
    return rows, left_out


async def _brand(client: SumeClient, axis: WorkspaceAxis) -> tuple[list[dict[str, Any]], int]:
    try:
        brand = await client.brand_current()
    except ApiError as error:
        if error.status == 404:  # no current profile: no rows (the plan says 0 rows)
            return [], 0
        raise
    images = [image for image in brand.get("images") or () if isinstance(image, Mapping)]
    rows = [
        {
            "id": str(image.get("id") or f"image-{n}"),
            "reference_url": url,
            "description": str(image.get("description") or ""),
        }
        for n, image in enumerate(images, start=1)
        if (url := _url(image.get("reference_url")))
    ]
    return rows[: axis.limit], max(0, len(images) - len(rows))


READERS = {"assets": _assets, "avatars": _avatars, "brand": _brand}


def capabilities_of(avatar: Mapping[str, Any]) -> set[str]:
    """What an avatar can be used for, in the spellings an API may use (the docs name none, §9):
    a list of names, a mapping of name → true, or `supports_<name>: true` flags."""
    found: set[str] = set()
    for name in ("capabilities", "supported_uses", "use_cases"):
        value = avatar.get(name)
        if isinstance(value, list):
            found |= {str(one) for one in value if isinstance(one, str)}
        elif isinstance(value, Mapping):
            found |= {str(key) for key, on in value.items() if on is True}
    found |= {name for name in CAPABILITIES if avatar.get(f"supports_{name}") is True}
    return found


def _url(value: Any) -> str | None:
    return value if isinstance(value, str) and value.startswith(("https://", "http://")) else None


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        return None
    return float(value)


def _plain(item: Mapping[str, Any]) -> dict[str, Any]:
    """An API object's JSON-safe scalar and list fields (what a template may read)."""
    return {
        str(key): value for key, value in item.items() if isinstance(value, str | int | float | bool | list)
    }
