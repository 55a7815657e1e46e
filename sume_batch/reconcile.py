"""Reconciling uncertain creates: finding the job a create may have made when its answer was lost.

The docs promise no idempotency on v1 and job objects echo nothing of the request, so the only
safe evidence is: a job of the right type, created inside the create's time window, whose id no
job in the store has. Every create that was answered in that window is in the store, so what is
left are the jobs nobody recorded. Exactly as many as the create makes (one, or one per Face Swap
avatar), claimed by no other uncertain job → adopted. Otherwise the job stays uncertain and the
ids it may have made are recorded and reported; it is re-created only on explicit request.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sume_batch.api import SumeClient
from sume_batch.kinds import KINDS
from sume_batch.store import RunStore, StoredJob

MARGIN_S = 5.0  # skew between our clock and the API's `created_at`, until measured
SLACK_S = 0.1  # beyond the measured spread of skew plus latency
CRASH_WINDOW_S = 60.0  # a crashed run's create was made at most this long after its intent
PAGE, MAX_PAGES = 100, 50

Offsets = tuple[float, float]  # the least and the most `created_at - intent_at` seen


def window(job: StoredJob, offsets: Offsets = (-MARGIN_S, MARGIN_S)) -> tuple[float, float]:
    """When the job's create can have been made, on the API's clock."""
    intent = job.intent_at or 0.0
    settled = job.settled_at if job.settled_at is not None else intent + CRASH_WINDOW_S
    return intent + offsets[0], settled + offsets[1]


def measure(jobs: Iterable[StoredJob], listed: Iterable[Mapping[str, Any]]) -> Offsets:
    """Skew plus latency, from the creates whose answers did arrive: `created_at - intent_at`."""
    made = {str(item.get("id")): created_at(item) for item in listed}
    samples = [
        when - job.intent_at
        for job in jobs
        if job.intent_at and job.sume_ids and (when := made.get(job.sume_ids[0])) is not None
    ]
    if not samples:
        return -MARGIN_S, MARGIN_S
    return min(samples) - SLACK_S, max(samples) + SLACK_S


def expected(job: StoredJob) -> int:
    """How many Sume jobs one create of this job makes: one per avatar for Face Swap."""
    avatars = job.request.get("avatar_ids")
    return len(avatars) if job.kind == "face_swap" and isinstance(avatars, list) else 1


def created_at(item: Mapping[str, Any]) -> float | None:
    try:
        return datetime.fromisoformat(str(item["created_at"]).replace("Z", "+00:00")).timestamp()
    except (KeyError, ValueError):
        return None


def match(
    jobs: Sequence[StoredJob],
    listed: Iterable[Mapping[str, Any]],
    known: set[str],
    offsets: Offsets = (-MARGIN_S, MARGIN_S),
) -> dict[str, list[str]]:
    """Job key → the unknown ids of its type created inside its window."""
    found: dict[str, list[str]] = {job.key: [] for job in jobs}
    for item in listed:
        when, sume_id = created_at(item), str(item.get("id") or "")
        if when is None or not sume_id or sume_id in known:
            continue
        for job in jobs:
            start, end = window(job, offsets)
            if item.get("type") == KINDS[job.kind].api_type and start <= when <= end:
                found[job.key].append(sume_id)
    return found


def decide(
    jobs: Sequence[StoredJob], found: Mapping[str, list[str]]
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(adopted, still uncertain with candidates): adopt only an unshared, exact match."""
    claims = Counter(sume_id for ids in found.values() for sume_id in ids)
    adopted, ambiguous = {}, {}
    for job in jobs:
        ids = found[job.key]
        if len(ids) == expected(job) and all(claims[sume_id] == 1 for sume_id in ids):
            adopted[job.key] = ids
        else:
            ambiguous[job.key] = ids
    return adopted, ambiguous


async def list_since(client: SumeClient, api_type: str, since: float) -> list[Mapping[str, Any]]:
    """`GET /jobs?type=...`, newest first, until the page reaches jobs older than `since`."""
    items: list[Mapping[str, Any]] = []
    cursor = None
    for _ in range(MAX_PAGES):
        page = await client.jobs(type=api_type, limit=PAGE, cursor=cursor)
        data = [item for item in page.get("data") or () if isinstance(item, Mapping)]
        items += data
        cursor = page.get("next_cursor")
        oldest = min((when for item in data if (when := created_at(item)) is not None), default=None)
        if not page.get("has_more") or not cursor or (oldest is not None and oldest < since):
            break
    return items


async def reconcile(client: SumeClient, store: RunStore) -> list[str]:
    """Settle what can be settled among the store's uncertain creates; returns the adopted keys."""
    everything = store.jobs().values()
    uncertain = [job for job in everything if job.state == "uncertain" and not job.sume_ids and job.intent_at]
    if not uncertain:
        return []
    known = {sume_id for job in everything for sume_id in (*job.sume_ids,)}
    listed: list[Mapping[str, Any]] = []
    for api_type in sorted({KINDS[job.kind].api_type for job in uncertain}):
        since = min(window(job)[0] for job in uncertain if KINDS[job.kind].api_type == api_type)
        listed += await list_since(client, api_type, since)
    offsets = measure(everything, listed)
    adopted, ambiguous = decide(uncertain, match(uncertain, listed, known, offsets))
    for key, ids in adopted.items():
        job = store.job(key)
        store.move(key, "submitted", durable=True, sume_ids=ids, submitted_at=job.intent_at, candidates=[],
                   error_message=None, note="adopted: found in GET /jobs by reconciliation")  # fmt: skip
    for key, ids in ambiguous.items():
        reason = (
            f"the create's answer was lost; it may have made {', '.join(ids)}"
            if ids
            else "the create's answer was lost and no unrecorded job of its type was found in its time window"
        )
        store.move(key, "uncertain", candidates=ids, error_message=reason)
    return list(adopted)
