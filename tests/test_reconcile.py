"""reconcile: which listed job an uncertain create made — adopt only an exact, unshared match, and
prove a create made nothing only from a complete, past listing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from sume_batch.reconcile import decide, gather
from sume_batch.store import StoredJob

T = 1_800_000_000.0  # the intent time of job "a"


def job(
    key: str, *, kind: str = "image", intent: float = T, settled: float | None = T + 1, avatars: int = 0
) -> StoredJob:
    request: dict[str, Any] = {"avatar_ids": [f"av{n}" for n in range(avatars)]} if avatars else {}
    return StoredJob(key, key, kind, request, {}, "uncertain", None, 0, None, 1, (), None, None, None, None, None,
                     intent, settled, ())  # fmt: skip


def listed(sume_id: str, at: float, type_: str = "image_generation") -> dict[str, Any]:
    stamp = datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")
    return {"id": sume_id, "type": type_, "created_at": stamp, "status": "queued"}


@pytest.mark.parametrize(
    ("jobs", "items", "known", "adopted", "ambiguous"),
    [
        ([job("a")], [listed("j1", T + 0.5)], set(), {"a": ["j1"]}, {}),
        ([job("a")], [listed("j1", T + 0.5)], {"j1"}, {}, {"a": []}),  # recorded by another job
        ([job("a")], [listed("j1", T + 0.5, "video_generation")], set(), {}, {"a": []}),  # another type
        ([job("a")], [listed("j1", T - 60)], set(), {}, {"a": []}),  # before the intent
        ([job("a")], [listed("j1", T + 0.5), listed("j2", T + 0.7)], set(), {}, {"a": ["j1", "j2"]}),
        (
            [job("a"), job("b", intent=T + 0.2)],
            [listed("j1", T + 0.5)],
            set(),
            {},
            {"a": ["j1"], "b": ["j1"]},
        ),
        (
            [job("a", kind="face_swap", avatars=2)],
            [listed("j1", T + 0.5, "face_swap"), listed("j2", T + 0.5, "face_swap")],
            set(),
            {"a": ["j1", "j2"]},
            {},
        ),  # one create, one job per avatar
        (
            [job("a", settled=None)],
            [listed("j1", T + 30)],
            set(),
            {"a": ["j1"]},
            {},
        ),  # a crash: up to 60 s later
        (
            [job("a")],
            [{"id": "j1", "type": "image_generation"}],
            set(),
            {},
            {"a": ["j1"]},
        ),  # no created_at: never adopted, but it may be this create's, so it is named (and blocks a proof)
    ],
    ids=["one", "known", "other-type", "too-early", "two", "shared", "face-swap", "crash-window", "no-time"],
)
def test_decide(jobs: list[StoredJob], items: list[dict[str, Any]], known: set[str], adopted: dict[str, list[str]],
                ambiguous: dict[str, list[str]]) -> None:  # fmt: skip
    decisions = decide(
        jobs, gather(jobs, items, known, grace=0), provable=dict.fromkeys(adopted | ambiguous, False)
    )
    assert {key: ids for key, (verdict, ids) in decisions.items() if verdict.startswith("adopted")} == adopted
    assert {key: ids for key, (verdict, ids) in decisions.items() if verdict == "uncertain"} == ambiguous


def echoed(sume_id: str, at: float, prompt: str) -> dict[str, Any]:
    return {**listed(sume_id, at), "input": {"prompt": prompt, "aspect_ratio": "1:1"}}


@pytest.mark.parametrize(
    ("items", "provable", "verdict", "ids"),
    [
        ([echoed("j1", T + 0.5, "mine"), echoed("j2", T + 0.6, "theirs")], False, "adopted-content", ["j1"]),
        (
            [echoed("j2", T + 0.6, "theirs")],
            False,
            "uncertain",
            ["j2"],
        ),  # echoes another request: never adopted
        ([listed("j1", T + 0.5)], False, "adopted-time", ["j1"]),
        ([], True, "never-made", []),  # nothing at all, listed and past the grace: made nothing
        ([], False, "uncertain", []),  # nothing yet, but the grace has not passed (or the listing was cut)
        ([listed("j9", T + 20)], True, "uncertain", ["j9"]),  # a job after the window, within the grace
        ([echoed("j2", T + 0.6, "theirs")], True, "uncertain", ["j2"]),  # someone else's job: no proof either
        ([{"id": "j7", "type": "image_generation", "created_at": "soon"}], True, "uncertain", ["j7"]),
        (
            [{"id": "j6", "type": "image_generation", "created_at": (T + 0.5) * 1000}],
            True,
            "adopted-time",
            ["j6"],
        ),
        ([{"id": "j8", "created_at": "2027-01-15T08:00:00Z"}], True, "uncertain", ["j8"]),  # no type
    ],
    ids=[
        "echo-match",
        "echo-other",
        "time",
        "never-made",
        "not-yet",
        "late",
        "other-blocks-proof",
        "garbage-time-blocks-proof",
        "epoch-milliseconds",
        "no-type-blocks-proof",
    ],
)
def test_decide_with_echoes_and_absence(
    items: list[dict[str, Any]], provable: bool, verdict: str, ids: list[str]
) -> None:
    jobs = [job("a")]
    found = gather(jobs, items, set(), grace=30, requests={"a": {"prompt": "mine", "aspect_ratio": "1:1"}})
    assert decide(jobs, found, provable={"a": provable}) == {"a": (verdict, ids)}


def test_two_identical_requests_never_adopt_one_echo() -> None:
    jobs = [job("a"), job("b", intent=T + 0.1)]
    request = {"prompt": "same", "aspect_ratio": "1:1"}
    found = gather(
        jobs, [echoed("j1", T + 0.5, "same")], set(), grace=0, requests={"a": request, "b": request}
    )
    assert decide(jobs, found, provable={"a": False, "b": False}) == {
        "a": ("uncertain", ["j1"]), "b": ("uncertain", ["j1"]),
    }  # fmt: skip
