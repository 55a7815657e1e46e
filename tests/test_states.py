"""states: every state is classified exactly once, and every move a real run makes is an arrow of the table."""

from __future__ import annotations

import sqlite3
from itertools import pairwise
from pathlib import Path

import pytest
from helpers import invoke, write

from sume_batch import states
from sume_batch.errors import StoreError
from sume_batch.sandbox import SandboxConfig, running_sandbox
from sume_batch.states import MEANINGS, TRANSITIONS, IllegalTransition, JobState, NextRun
from sume_batch.store import RunStore


def test_every_state_has_one_meaning_and_one_row_of_arrows() -> None:
    assert set(MEANINGS) == set(TRANSITIONS) == set(JobState)
    assert list(states.ORDER) == list(MEANINGS)  # one display order, the table's


@pytest.mark.parametrize(
    "partition",
    [
        # what a report says of a job: done, failed, or unfinished
        (states.OK, states.FAILURES, set(JobState) - states.OK - states.FAILURES),
        # what the next run does with it
        tuple(frozenset(s for s in JobState if MEANINGS[s].next_run is step) for step in NextRun),
        # whether this run can take it further
        (states.RESTING, set(JobState) - states.RESTING),
    ],
    ids=["outcome", "next-run", "resting"],
)
def test_each_classification_puts_every_state_in_exactly_one_class(
    partition: tuple[frozenset[str], ...],
) -> None:
    for state in JobState:
        assert sum(state in part for part in partition) == 1, state


def test_the_derived_sets_say_what_the_commands_rely_on() -> None:
    assert {"planned", "reserved", "skipped"} == states.TO_SUBMIT
    assert {
        "uncertain",
        "failed",
        "canceled",
        "expired",
        "rejected",
        "timed_out",
        "skipped",
        "blocked",
    } == states.ATTENTION
    assert (
        states.again(retry_failed=True)
        == states.FAILED_BEFORE
        == {"failed", "canceled", "expired", "rejected"}
    )
    assert states.again(resubmit_uncertain=True) == {"uncertain"}
    assert states.again(regenerate=True) >= states.FAILED_BEFORE | {"uncertain", "downloaded", "timed_out"}
    assert states.again() == frozenset()
    # a reservation that may have been charged stays counted; a job refused before sending costs nothing
    assert states.charged("uncertain") and states.charged("submitting") and not states.charged("rejected")
    assert states.charged("failed", has_files=True) and not states.charged("failed")
    assert all(target in JobState for arrows in TRANSITIONS.values() for target in arrows)


def test_the_store_refuses_a_move_the_table_does_not_have(tmp_path: Path) -> None:
    store = RunStore.open(tmp_path / "s.sqlite")
    store.add_planned([("k1", "img-1", "image", {}, {}, 4.0)])
    with pytest.raises(IllegalTransition, match="planned → downloaded"):
        store.downloaded("k1")
    assert store.job("k1").state == "planned"  # nothing was written
    assert not issubclass(IllegalTransition, StoreError)  # a bug of ours (exit 70), not a user's store
    store.reserve("k1", 4.0)
    store.restart(store.job("k1"), note="--regenerate")  # a flag may restart from anywhere
    assert store.job("k1").state == "planned"
    store.close()


CAMPAIGN = """\
version: 1
name: arrows
jobs:
  - id: "img-{{ n }}"
    type: image
    prompt: "A product shot {{ n }}"
    matrix: {n: [1, 2, 3, 4, 5, 6, 7, 8, 9]}
execution: {poll_interval: {image: 0.1}}
"""


def test_every_move_of_real_runs_is_an_arrow_of_the_table(workdir: Path) -> None:
    """Runs against a sandbox whose jobs fail, expire and are canceled and whose creates lose their
    answers: the journal's every move is in the table (or a restart to `planned`, or a note that
    keeps the state)."""
    write(workdir, CAMPAIGN)
    faults = {"drop_after_commit": 0.3, "job_failed": 0.3, "job_expired": 0.15, "job_canceled": 0.15}
    config = SandboxConfig.from_profile("instant", seed=3, faults=faults, idempotency="ignore")
    with running_sandbox(config) as server:
        env = {"SUME_API_BASE_URL": server.base_url, "SUME_API_KEY": server.api_key}
        for flags in ((), ("--retry-failed", "--resubmit-uncertain")):
            result = invoke("run", "campaign.yaml", "--yes", "--lost-create-grace", "0", *flags, env=env)
            assert result.code in (0, 1, 69), result.err
    (store,) = (workdir / ".sume-batch").glob("arrows.*.sqlite")
    with sqlite3.connect(store) as db:
        events = db.execute("SELECT key, state FROM events ORDER BY seq").fetchall()
    journeys: dict[str, list[str]] = {}
    for key, state in events:
        journeys.setdefault(key, ["planned"]).append(state)
    moves = {(a, b) for journey in journeys.values() for a, b in pairwise(journey)}
    assert len(journeys) == 9 and {("submitting", "uncertain"), ("submitted", "failed")} <= moves
    strange = {(a, b) for a, b in moves if not (states.may_move(a, JobState(b)) or a == b or b == "planned")}
    assert not strange
