"""budget: what a campaign may reserve against its cap, priced at the worst ratio the API has shown
for each kind, and the balance watch that stops a run the API charges more than it says."""

from __future__ import annotations

import dataclasses

import pytest

from sume_batch.budget import BALANCE_EVERY, BALANCE_TOLERANCE, BalanceWatch, Budget, campaign_line
from sume_batch.store import StoredJob

JOB = StoredJob(
    key="k", id="a", kind="image", request={}, matrix={}, state="submitted", estimate=4.0, reserved=4.0,
    required=None, attempts=1, sume_ids=("job_1",), sume_status=None, error_code=None, error_message=None,
    request_id=None, submitted_at=None, intent_at=None, settled_at=None, candidates=(),
)  # fmt: skip


@pytest.mark.parametrize(
    ("cap", "committed", "cost", "admitted"),
    [(None, 1e9, 1e9, True), (100, 0, 100, True), (100, 96, 4, True), (100, 96.5, 4, False), (100, 0, 100.5, False),
     (0.3, 0.1, 0.2, True),  # 0.1 + 0.2 is 0.30000000000000004: still within a cap of 0.3
     (0, 0, 0, True)],
)  # fmt: skip
def test_a_cost_is_admitted_while_the_campaign_stays_within_its_cap(
    cap: float | None, committed: float, cost: float, admitted: bool
) -> None:
    assert Budget(cap=cap, committed=committed).admits(cost) is admitted


def test_a_job_of_unknown_price_reserves_the_assumed_bound_never_zero() -> None:
    assert Budget(cap=10).cost("video", None) is None  # no bound stated: it cannot be reserved
    assert Budget(cap=10, assumed=7.5).cost("video", None) == 7.5
    assert Budget(cap=10, assumed=7.5).cost("video", 2.0) == 2.0


def test_a_refused_create_frees_its_reservation() -> None:
    budget = Budget(cap=10)
    budget.reserve(4)
    budget.reserve(4)
    assert (budget.committed, budget.admits(4)) == (8, False)
    budget.release(4)
    assert (budget.committed, budget.admits(4)) == (4, True)


def test_a_stated_price_settles_its_job_and_prices_every_later_job_of_its_kind() -> None:
    budget = Budget(cap=100)
    budget.reserve(4)
    budget.settle("image", 4, 4, 10)  # the API said 10 where we estimated 4
    assert (budget.committed, budget.confirmed) == (10, {"image"})
    assert (budget.cost("image", 4), budget.cost("image", 2), budget.cost("video", 4)) == (10, 5, 4)
    assert budget.differences() == {"image": 2.5}


def test_a_stated_price_never_lowers_what_later_jobs_reserve() -> None:
    budget = Budget(cap=100)
    budget.reserve(4)
    budget.settle("image", 4, 4, 0)  # a free job
    assert (budget.committed, budget.cost("image", 4), budget.confirmed) == (0, 4, {"image"})
    budget.settle("image", 4, 4, 40)
    budget.settle("image", 4, 4, 8)  # a cheaper one later: the highest ratio stays
    assert budget.cost("image", 4) == 40 and budget.cost("video", 10) == 10


def test_a_kind_without_an_estimate_is_confirmed_but_gets_no_ratio() -> None:
    budget = Budget(cap=None, assumed=5)
    budget.settle("reference_analysis", None, 5, 12)
    budget.learn("asset_upload", 0.0, 3)
    assert (budget.confirmed, budget.ratios, budget.committed) == (
        {"reference_analysis", "asset_upload"},
        {},
        7,
    )


def test_what_earlier_runs_learned_is_picked_up_from_the_store() -> None:
    jobs = [
        dataclasses.replace(JOB, key="a", required=10.0),  # 2.5 × its estimate
        dataclasses.replace(JOB, key="b", required=6.0),  # a lower ratio: the higher one stands
        dataclasses.replace(JOB, key="c", kind="video", estimate=20.0, required=None),  # never stated
        dataclasses.replace(JOB, key="d", kind="reference_analysis", estimate=None, required=5.0),
    ]
    budget = Budget.from_store(jobs, 21.0, cap=50, assumed=3)
    assert (budget.committed, budget.cap, budget.assumed) == (21.0, 50, 3)
    assert (budget.ratios, budget.confirmed) == ({"image": 2.5}, {"image", "reference_analysis"})


@pytest.mark.parametrize(
    ("ratios", "note"),
    [
        ({}, None),
        ({"image": 1.0}, None),
        (
            {"image": 2.5},
            "prices: image: the API charged 2.5× our estimate, so its jobs are priced at that rate",
        ),
        (
            {"video": 1.23456, "image": 10.0, "ad_video": 1.0},
            "prices: image: the API charged 10× our estimate, so its jobs are priced at that rate;"
            " video: the API charged 1.23× our estimate, so its jobs are priced at that rate",
        ),
    ],
)
def test_the_price_note_names_each_kind_the_api_prices_otherwise(
    ratios: dict[str, float], note: str | None
) -> None:
    assert Budget(cap=None, ratios=ratios).price_note() == note


@pytest.mark.parametrize(
    ("budget", "to_submit", "line"),
    [
        (Budget(cap=None, committed=12), 30, "campaign credits: 12 spent or held + 30 to submit = 42 (no budget.max_credits)"),
        (Budget(cap=50, committed=12), 30, "campaign credits: 12 spent or held + 30 to submit = 42: within budget (50 max)"),
        (Budget(cap=40, committed=12.5), 30, "campaign credits: 12.50 spent or held + 30 to submit = 42.50: OVER BUDGET (40 max)"),
        (Budget(cap=1000, committed=0), 1234, "campaign credits: 0 spent or held + 1,234 to submit = 1,234: OVER BUDGET (1,000 max)"),
    ],
)  # fmt: skip
def test_the_campaign_line_weighs_the_whole_campaign_against_its_cap(
    budget: Budget, to_submit: float, line: str
) -> None:
    assert campaign_line(budget, to_submit) == line


def test_the_balance_is_checked_every_so_many_creates_when_it_is_known() -> None:
    watch = BalanceWatch(start=100)
    due = []
    for _ in range(2 * BALANCE_EVERY):
        watch.creates += 1
        due.append(watch.due())
    assert [n + 1 for n, now in enumerate(due) if now] == [BALANCE_EVERY, 2 * BALANCE_EVERY]
    assert not BalanceWatch(start=None, creates=BALANCE_EVERY).due()
    assert not BalanceWatch(start=100, creates=0).due()


@pytest.mark.parametrize(
    ("start", "sent", "balance", "excess"),
    [
        (100, 20, 80, 0.0),  # the run's reservations explain the fall
        (100, 20, 80 - BALANCE_TOLERANCE, 0.0),  # within the rounding tolerance
        (100, 20, 70, 10.0),  # something else spent 10
        (100, 20, 90, 0.0),  # the API charged less than reserved
        (100, 20, None, 0.0),  # unreadable: no verdict
        (None, 20, 10, 0.0),  # no starting balance: nothing to compare
    ],
)
def test_a_balance_fall_the_run_cannot_explain_is_its_excess(
    start: float | None, sent: float, balance: float | None, excess: float
) -> None:
    assert BalanceWatch(start=start, sent=sent).excess(balance) == excess
