"""A job's life: the one home of every job state, the transitions between them, and what each means.

The store records every arrow before it is taken and refuses one that is not in `MEANINGS` (a bug
of ours, never a user's mistake). Every other module asks this one what a state means (whether the
next run submits it, whether it may have cost credits, whether a report counts it as failed) and
defines no set of states of its own.

```
planned ─▶ reserved ─▶ submitting ─▶ submitted ─▶ completed ─▶ fetched ─▶ downloaded
  ▲  │         │  │          │  │        │  ▲          │                 │
  │  │         │  │          │  │        │  └─ timed_out (we stopped waiting; the next run polls again)
  │  │         │  │          │  │        └──▶ failed | canceled | expired   (from the API; a Face Swap
  │  │         │  │          │  │                                          partly made: after fetched)
  │  │         │  │          │  ├──▶ uncertain (sent, outcome unknown) ──▶ submitted (adopted)
  │  │         │  │          │  ◀──────┘                    └──────────▶ planned (proven never made)
  │  │         │  │          │   (re-sent under its own Idempotency-Key, where the API honours it)
  │  │         │  │          └──▶ rejected (a validation refusal: nothing was charged)
  │  │         │  └──▶ planned (not created for a reason that can pass: credits, auth, rate limits)
  │  └─────────┴──▶ skipped (budget) ──▶ reserved (a later run, when the budget allows; a run
  │                                               killed before its create reserves again)
  ├──▶ blocked (a downstream job whose upstream failed: never sent; see `stages`)
  └── any state, by --regenerate, --retry-failed, --resubmit-uncertain (`restart`)
```

The API has a vocabulary of its own for its jobs (`ApiStatus`); four of its words end a job, and
three of those name the state the job ends in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class JobState(StrEnum):
    """Where one job of a campaign stands, as its store records it."""

    PLANNED = "planned"
    RESERVED = "reserved"
    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    COMPLETED = "completed"
    FETCHED = "fetched"
    DOWNLOADED = "downloaded"
    FAILED = "failed"
    CANCELED = "canceled"
    EXPIRED = "expired"
    TIMED_OUT = "timed_out"
    REJECTED = "rejected"
    UNCERTAIN = "uncertain"
    SKIPPED = "skipped"
    BLOCKED = "blocked"


class NextRun(StrEnum):
    """What the next `run` does with a job, by its state (`status` says it in these words)."""

    SUBMIT = "submit"
    POLL = "poll"
    DOWNLOAD = "download"
    REUSE = "reuse"
    SETTLE = "report uncertain"  # a create a crashed run left in flight
    LEAVE = "leave (retry only on request)"
    LEAVE_UNCERTAIN = "leave (resubmit only on request)"
    WAIT = "wait for its upstream"


class Again(StrEnum):
    """The narrowest flag that creates a finished job anew; `--regenerate` covers all of them."""

    RETRY_FAILED = "--retry-failed"
    RESUBMIT_UNCERTAIN = "--resubmit-uncertain"
    REGENERATE = "--regenerate"


@dataclass(frozen=True)
class Meaning:
    """Everything the code needs to know about one state."""

    then: frozenset[JobState]  # the states a job may move to from here (`TRANSITIONS`)
    next_run: NextRun
    charged: bool  # the job may have cost credits (a reservation that must stay counted)
    failure: bool  # reports list it as failed (a JUnit failure); else it is done or unfinished
    rests: bool  # this run can take it no further (the progress line counts it done)
    again: Again | None  # the flag that buys it again, if any
    words: str  # the state for people, where its name alone says too little


S, N, A = JobState, NextRun, Again
# The arrows of the diagram above: where a job may go from each state (besides `restart`).
TRANSITIONS: dict[str, frozenset[JobState]] = {
    S.PLANNED: frozenset({S.RESERVED, S.SKIPPED, S.BLOCKED}),
    S.BLOCKED: frozenset(),  # a later run whose upstream succeeds plans other jobs (other keys)
    S.SKIPPED: frozenset({S.RESERVED, S.SKIPPED}),
    S.RESERVED: frozenset({S.SUBMITTING, S.SKIPPED, S.PLANNED, S.RESERVED}),  # again: a killed run's
    S.SUBMITTING: frozenset({S.SUBMITTED, S.UNCERTAIN, S.REJECTED, S.PLANNED}),
    S.UNCERTAIN: frozenset({S.SUBMITTED, S.PLANNED, S.UNCERTAIN, S.SUBMITTING}),  # submitting: re-sent
    S.SUBMITTED: frozenset({S.COMPLETED, S.FAILED, S.CANCELED, S.EXPIRED, S.TIMED_OUT}),
    S.TIMED_OUT: frozenset({S.SUBMITTED}),
    S.COMPLETED: frozenset({S.FETCHED}),
    S.FETCHED: frozenset({S.DOWNLOADED, S.FAILED, S.CANCELED, S.EXPIRED}),
    S.DOWNLOADED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELED: frozenset(),
    S.EXPIRED: frozenset(),
    S.REJECTED: frozenset(),
}
# What each state means, one row each, in display order: problems first, then what is unfinished,
# then what is done. charged: may have cost credits; failure: a report's failure; rests: this run
# takes it no further.
#   state          next run           charged failure rests  again                 words
_ROWS = (
    (S.FAILED,     N.LEAVE,           0, 1, 1, A.RETRY_FAILED,       "failed"),
    (S.UNCERTAIN,  N.LEAVE_UNCERTAIN, 1, 1, 1, A.RESUBMIT_UNCERTAIN, "uncertain"),
    (S.TIMED_OUT,  N.POLL,            1, 1, 1, A.REGENERATE,         "timed_out"),
    (S.REJECTED,   N.LEAVE,           0, 1, 1, A.RETRY_FAILED,       "rejected"),
    (S.EXPIRED,    N.LEAVE,           0, 1, 1, A.RETRY_FAILED,       "expired"),
    (S.CANCELED,   N.LEAVE,           0, 1, 1, A.RETRY_FAILED,       "canceled"),
    (S.SKIPPED,    N.SUBMIT,          0, 0, 1, None,                 "skipped (budget)"),
    (S.BLOCKED,    N.WAIT,            0, 0, 1, None,                 "blocked (its upstream failed)"),
    (S.PLANNED,    N.SUBMIT,          0, 0, 0, None,                 "not submitted"),
    (S.RESERVED,   N.SUBMIT,          0, 0, 0, None,                 "not submitted"),
    (S.SUBMITTING, N.SETTLE,          1, 0, 0, None,                 "being submitted"),
    (S.SUBMITTED,  N.POLL,            1, 0, 0, None,                 "generating"),
    (S.COMPLETED,  N.DOWNLOAD,        1, 0, 0, A.REGENERATE,         "not downloaded yet"),
    (S.FETCHED,    N.DOWNLOAD,        1, 0, 0, A.REGENERATE,         "not downloaded yet"),
    (S.DOWNLOADED, N.REUSE,           1, 0, 1, A.REGENERATE,         "downloaded"),
)  # fmt: skip
MEANINGS: dict[str, Meaning] = {
    state: Meaning(TRANSITIONS[state], next_run, bool(charged), bool(failure), bool(rests), again, words)
    for state, next_run, charged, failure, rests, again, words in _ROWS
}


def _where(test: Callable[[Meaning], bool]) -> frozenset[JobState]:
    return frozenset(JobState(state) for state, meaning in MEANINGS.items() if test(meaning))


ORDER: tuple[JobState, ...] = tuple(JobState(state) for state in MEANINGS)
TO_SUBMIT = _where(lambda m: m.next_run is NextRun.SUBMIT)
TO_POLL = _where(lambda m: m.next_run is NextRun.POLL)
TO_DOWNLOAD = _where(lambda m: m.next_run is NextRun.DOWNLOAD)
CHARGED = _where(lambda m: m.charged)
FAILURES = _where(lambda m: m.failure)
OK = frozenset({S.DOWNLOADED})  # the one state in which a job is done
RESTING = _where(lambda m: m.rests)
ATTENTION = RESTING - OK  # a person should look at these
FAILED_BEFORE = _where(lambda m: m.again is Again.RETRY_FAILED)  # not created again unless asked
IN_FLIGHT_CREATE = frozenset({S.SUBMITTING, S.UNCERTAIN})  # a create that may have made a job
# Generating at the API, or its create on the wire: it holds one of the account's capacity permits (a
# shared store's, see `shared`). A lost create (`uncertain`) holds its permit while it may be
# generating: until it is settled, or shown to have made nothing still unfinished (`execute.settle_lost`).
HOLDS_PERMIT = frozenset({S.SUBMITTING}) | TO_POLL
# A job that failed after some of its Sume jobs made files (a Face Swap, one avatar failing) was paid
# for: `charged` says so with its files in mind.
PAID_WHEN_FILES = frozenset({S.FAILED})


def charged(state: str, *, has_files: bool = False) -> bool:
    """Whether a job in `state` may have cost credits (its reservation stays counted)."""
    return state in CHARGED or (has_files and state in PAID_WHEN_FILES)


def again(
    *, retry_failed: bool = False, resubmit_uncertain: bool = False, regenerate: bool = False
) -> frozenset[JobState]:
    """The stored states whose jobs the flags create anew (their old ids stay in the journal)."""
    chosen = {Again.RETRY_FAILED: retry_failed, Again.RESUBMIT_UNCERTAIN: resubmit_uncertain}
    if regenerate:
        return _where(lambda m: m.again is not None)
    return _where(lambda m: m.again is not None and chosen.get(m.again, False))


def words(state: str) -> str:
    """A state as people read it (`not downloaded yet`); an unknown name as it is."""
    meaning = MEANINGS.get(state)
    return meaning.words if meaning else state


def next_run_of(state: str) -> NextRun:
    """What the next `run` does with a job in `state` (an unknown name: it polls, to find out)."""
    meaning = MEANINGS.get(state)
    return meaning.next_run if meaning else NextRun.POLL


def may_move(source: str, target: JobState) -> bool:
    """Whether the state machine has the arrow `source → target` (see the diagram above)."""
    meaning = MEANINGS.get(source)
    return meaning is not None and target in meaning.then


class IllegalTransition(Exception):
    """A move the state machine does not have: a bug of ours (exit 70), never a quiet job failure."""


class ApiStatus(StrEnum):
    """A Sume job's status as the API reports it (sume-api.md §3.4), in one spelling."""

    QUEUED = "queued"
    RUNNING = "running"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"
    EXPIRED = "expired"


API_RUNNING = frozenset({ApiStatus.QUEUED, ApiStatus.RUNNING, ApiStatus.PROCESSING})
API_FAILED = frozenset({ApiStatus.FAILED, ApiStatus.CANCELED, ApiStatus.EXPIRED})
API_SPELLINGS = {"cancelled": ApiStatus.CANCELED}  # the docs spell it both ways


def ended_in(status: ApiStatus) -> JobState:
    """The job state a Sume job's final status leaves our job in."""
    return JobState(status.value)
