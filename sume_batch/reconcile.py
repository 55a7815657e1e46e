"""Reconciling uncertain creates: finding the job a create made when its answer was lost, or proving
it made none.

The docs promise no idempotency on v1, so the evidence is `GET /jobs`. A candidate is a job of the
right type whose id no store on this machine holds (this campaign's, or another's at the same
target: see `registry`), created inside the create's time window on the API's clock. Creates go
out one at a time (`Executor`), so a window holds no other create of ours; every create that was
answered is in the store, so what is left is either the lost create's job or someone else's.

- Adopted by content: the job object echoes the request (`input`), and it matches ours.
- Adopted by time: exactly as many candidates as the create makes (one, or one per Face Swap
  avatar), none echoing another request, none wanted by another uncertain job: reported as
  "adopted by time", which is what it is.
- Never made: no unknown job of its type at all from the create's intent until `grace` seconds
  after its answer was lost, with that whole span listed and past, in a listing that does show
  jobs this machine knows (an API whose listing shows nothing proves nothing): the create made
  nothing, so it is submitted again (a fresh Idempotency-Key) — nothing can be paid twice.
- Otherwise it stays `uncertain`, with the ids it may have made; re-created only on request.

Where the API honours Idempotency-Key (`--idempotency-honoured`) creates overlap, and a lost create
that can be re-sent is settled by sending it again under its key (`Submitting.resend`), never by
time: here it is only a rival for the jobs in its window (`resent`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sume_batch.api import SumeClient
from sume_batch.kinds import KINDS
from sume_batch.records import StoredJob
from sume_batch.states import JobState
from sume_batch.store import RunStore

MARGIN_S = 5.0  # skew between our clock and the API's `created_at`, until measured
SLACK_S = 0.05  # beyond the measured bounds of the skew (the API's timestamps have milliseconds)
CRASH_WINDOW_S = 150.0  # a crashed create was made at most this long after its intent (> request deadline)
LOST_CREATE_GRACE_S = (
    30.0  # how long after a lost answer the API may still make the job (--lost-create-grace)
)
PAGE, MAX_PAGES = 100, 50
ECHO_FIELDS = ("input", "request", "params")  # where a job object may echo what it was asked

Offsets = tuple[float, float]  # bounds of the API clock's skew against ours, slack included
# A lost create whose re-send under its key the API refused (a changed body: workspace media signed
# afresh since; or in progress): its key cannot settle it, so it is reconciled by time after all.
RESEND_REFUSED = "resend_refused"


class Answered(Protocol):
    """What `measure` reads of a job: a `StoredJob`, or a `records.Answer`."""

    @property
    def sume_ids(self) -> tuple[str, ...]: ...
    @property
    def intent_at(self) -> float | None: ...
    @property
    def submitted_at(self) -> float | None: ...


@dataclass(frozen=True)
class Listing:
    """What `GET /jobs` showed of one job type, and whether it reached back far enough."""

    items: list[Mapping[str, Any]]
    complete: bool


@dataclass(frozen=True)
class Evidence:
    """What the listing says about one uncertain create."""

    short: list[str]  # unknown ids inside its window
    echoed: list[str]  # of those, the ones echoing this very request
    other: list[str]  # of those, the ones echoing another request: not ours
    late: list[str]  # unknown ids up to `grace` after the window: the create may have made one of them


def resendable(job: StoredJob) -> bool:
    """Whether a lost create can be settled by sending it again under its key, where the API honours
    it (`Submitting.resend`): its kind's body can be (`Kind.resendable`), and the API has not refused it."""
    return KINDS[job.kind].resendable and job.error_code != RESEND_REFUSED


def window(job: StoredJob, offsets: Offsets = (-MARGIN_S, MARGIN_S)) -> tuple[float, float]:
    """When the job's create can have been made, on the API's clock."""
    return (job.intent_at or 0.0) + offsets[0], lost_at(job) + offsets[1]


def lost_at(job: StoredJob) -> float:
    """When the create's answer was lost (or, after a crash, the latest it can have been sent)."""
    intent = job.intent_at or 0.0
    return job.settled_at if job.settled_at is not None else intent + CRASH_WINDOW_S


def measure(jobs: Iterable[Answered], listed: Iterable[Mapping[str, Any]]) -> Offsets:
    """The skew of the API's clock against ours, bounded on both sides by the creates whose answers
    did arrive: a job is made after its request left and before its answer came back, so
    `created_at - answered_at <= skew <= created_at - intent_at`. The window of a lost create is
    then its own span, shifted by that skew, with no latency added: one create's window does not
    reach into the next one's. A listing whose times are whole seconds widens it by a second."""
    made = {str(item.get("id")): created_at(item) for item in listed}
    low, high, whole = [], [], True
    for job in jobs:
        when = made.get(job.sume_ids[0]) if job.sume_ids else None
        if when is None or not job.intent_at or not job.submitted_at or job.submitted_at <= job.intent_at:
            continue  # adopted jobs (answered_at unknown) say nothing of the skew
        low.append(when - job.submitted_at)
        high.append(when - job.intent_at)
        whole = whole and float(when).is_integer()
    if not low:
        return -MARGIN_S, MARGIN_S
    slack = SLACK_S + (1.0 if whole else 0.0)
    skew_low, skew_high = max(low), min(high)
    if skew_low > skew_high:  # clocks that moved, or times out of order: fall back to the spread seen
        skew_low, skew_high = min(low), max(high)
    return skew_low - slack, skew_high + slack


def expected(job: StoredJob) -> int:
    """How many Sume jobs one create of this job makes: one per avatar for Face Swap."""
    avatars = job.request.get("avatar_ids")
    return len(avatars) if job.kind == "face_swap" and isinstance(avatars, list) else 1


def created_at(item: Mapping[str, Any]) -> float | None:
    """When the API made a job: an ISO 8601 time, or Unix seconds (or milliseconds); None if neither."""
    value = item.get("created_at")
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value / 1000 if value > 1e11 else value
        return float(seconds) if 1e9 < seconds < 1e11 else None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except (ValueError, TypeError, OverflowError):
        return None


def echoes(item: Mapping[str, Any], request: Mapping[str, Any] | None) -> bool | None:
    """Whether a job object echoes `request`: True or False where it echoes fields we sent, None
    where it echoes nothing comparable (most APIs: v1 documents no echo)."""
    if request is None:
        return None
    echo = next((item[name] for name in ECHO_FIELDS if isinstance(item.get(name), Mapping)), None)
    if echo is None:
        return None
    common = [name for name in request if name in echo]
    return all(echo[name] == request[name] for name in common) if common else None


def gather(
    jobs: Sequence[StoredJob],
    listed: Iterable[Mapping[str, Any]],
    known: set[str],
    *,
    offsets: Offsets = (-MARGIN_S, MARGIN_S),
    grace: float = LOST_CREATE_GRACE_S,
    requests: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Evidence]:
    """Job key → what the listing says about its create."""
    found: dict[str, Evidence] = {job.key: Evidence([], [], [], []) for job in jobs}
    for item in listed:
        when, sume_id = created_at(item), str(item.get("id") or "")
        if not sume_id or sume_id in known:
            continue
        for job in jobs:
            if when is None or item.get("type") is None:  # unreadable: may be this create's, so no proof
                found[job.key].late.append(sume_id)
                continue
            start, end = window(job, offsets)
            if item.get("type") != KINDS[job.kind].api_type or not start <= when <= end + grace:
                continue
            evidence = found[job.key]
            if when > end:
                evidence.late.append(sume_id)
                continue
            evidence.short.append(sume_id)
            echo = echoes(item, (requests or {}).get(job.key))
            (evidence.echoed if echo else evidence.other if echo is False else []).append(sume_id)
    return found


# ("adopted-content" | "adopted-time" | "never-made" | JobState.UNCERTAIN: it stays so, ids)
Decision = tuple[str, list[str]]


def decide(
    jobs: Sequence[StoredJob], found: Mapping[str, Evidence], *, provable: Mapping[str, bool]
) -> dict[str, Decision]:
    """What to do with each uncertain create; `provable` says whose window is listed and past."""
    claims = Counter(sume_id for evidence in found.values() for sume_id in evidence.short)
    echo_claims = Counter(sume_id for evidence in found.values() for sume_id in evidence.echoed)
    decisions: dict[str, Decision] = {}
    for job in jobs:
        evidence, want = found[job.key], expected(job)
        unshared = all(claims[sume_id] == 1 for sume_id in evidence.short)
        mine = all(echo_claims[sume_id] == 1 for sume_id in evidence.echoed)
        if len(evidence.echoed) == want and len(evidence.short) - len(evidence.other) == want and mine:
            decisions[job.key] = ("adopted-content", evidence.echoed)
        elif len(evidence.short) == want and not evidence.other and unshared:
            decisions[job.key] = ("adopted-time", evidence.short)
        elif not evidence.short and not evidence.late and provable[job.key]:
            decisions[job.key] = ("never-made", [])
        else:
            decisions[job.key] = (JobState.UNCERTAIN, evidence.short or evidence.late)
    return decisions


async def list_since(client: SumeClient, api_type: str, since: float) -> Listing:
    """`GET /jobs?type=...`, newest first, until the page reaches jobs older than `since`."""
    items: list[Mapping[str, Any]] = []
    cursor = None
    for _ in range(MAX_PAGES):
        page = await client.jobs(type=api_type, limit=PAGE, cursor=cursor)
        data = page.get("data")
        data = [item for item in data if isinstance(item, Mapping)] if isinstance(data, list) else []
        items += data
        cursor = page.get("next_cursor")
        oldest = min((when for item in data if (when := created_at(item)) is not None), default=None)
        if oldest is not None and oldest < since:
            return Listing(items, complete=True)  # reached back past the oldest window
        if page.get("has_more") is False:
            return Listing(items, complete=True)  # only an explicit end is one
        if not cursor:
            return Listing(items, complete=False)
    return Listing(items, complete=False)


@dataclass(frozen=True)
class Outcome:
    """What one reconciliation settled, and when the next uncertain create could be proven never made."""

    settled: dict[str, str]  # job key → its new state: `submitted` (adopted) or `planned` (never made)
    next_proof: float | None = None  # on our clock; None when no create waits only for time to pass
    looked: frozenset[str] = frozenset()  # the uncertain creates the listing was searched for


NOTES = {
    "adopted-content": "adopted: found in GET /jobs, its job object echoing this request",
    "adopted-time": (
        "adopted by time: the only job of its type that no store knows, made while this create was in"
        " flight (no request echo to confirm it)"
    ),
    "never-made": "the create made no job (none in GET /jobs from its intent until {grace:g} s after"
    " its answer was lost): it is submitted again",
}


async def reconcile(
    client: SumeClient,
    store: RunStore,
    *,
    foreign: Iterable[str] = (),
    requests: Mapping[str, Mapping[str, Any]] | None = None,
    now: float,
    grace: float = LOST_CREATE_GRACE_S,
    resent: bool = False,
) -> Outcome:
    """Settle what can be settled among the store's uncertain creates (see `Outcome`). Only they are
    read whole; of every other job, its ids and its create's times. With `resent`, those whose
    create can be re-sent (`resendable`) are left as they are, rivals for the others' jobs."""
    uncertain = [job for job in store.jobs_in({JobState.UNCERTAIN}) if not job.sume_ids and job.intent_at]
    if not uncertain or (resent and all(resendable(job) for job in uncertain)):
        return Outcome({})
    answered = store.answered()
    known = {sume_id for job in answered for sume_id in job.sume_ids} | set(foreign)
    listed: list[Mapping[str, Any]] = []
    complete: dict[str, bool] = {}
    for api_type in sorted({KINDS[job.kind].api_type for job in uncertain}):
        since = min(window(job)[0] for job in uncertain if KINDS[job.kind].api_type == api_type)
        listing = await list_since(client, api_type, since)
        listed += listing.items
        # A listing proves an absence only if it is complete and shows jobs we know it should show.
        complete[api_type] = listing.complete and any(str(item.get("id")) in known for item in listing.items)
    offsets = measure(answered, listed)
    found = gather(uncertain, listed, known, offsets=offsets, grace=grace, requests=requests)
    proof = {job.key: window(job, offsets)[1] + grace + SLACK_S for job in uncertain}
    provable = {job.key: complete[KINDS[job.kind].api_type] and now >= proof[job.key] for job in uncertain}
    decisions = decide(uncertain, found, provable=provable)
    if resent:  # those are re-sent under their keys instead (see the module's docstring)
        uncertain = [job for job in uncertain if not resendable(job)]
        decisions = {job.key: decisions[job.key] for job in uncertain}
    stays = JobState.UNCERTAIN
    waiting = [proof[key] for key, (verdict, ids) in decisions.items() if verdict == stays and not ids]
    settled = apply(store, uncertain, decisions, grace)
    return Outcome(settled, min(waiting) if waiting else None, frozenset(job.key for job in uncertain))


def apply(
    store: RunStore, jobs: Sequence[StoredJob], decisions: Mapping[str, Decision], grace: float
) -> dict[str, str]:
    settled: dict[str, str] = {}
    for job in jobs:
        if not store.claim(job.key) or store.job(job.key).state != JobState.UNCERTAIN:
            continue  # another runner's (a shared store), or settled by one meanwhile
        verdict, ids = decisions[job.key]
        if verdict.startswith("adopted"):
            store.adopt(job.key, ids, at=job.intent_at, note=NOTES[verdict])
            settled[job.key] = JobState.SUBMITTED
        elif verdict == "never-made":
            store.reopen(job.key, note=NOTES[verdict].format(grace=grace))
            settled[job.key] = JobState.PLANNED
        else:
            reason = (
                f"the create's answer was lost; it may have made {', '.join(ids)}"
                if ids
                else "the create's answer was lost and no unrecorded job of its type was found in its time"
                " window yet"
            )
            store.suspect(job.key, ids, why=reason)
    return settled
