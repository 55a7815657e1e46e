"""reviews: decisions kept in git by job key and output sha256, made from the terminal, stale once
an output is made again, and driving what is paid for next (issue 16)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import invoke, read_report, write

from sume_batch.errors import ManifestError
from sume_batch.reviews import load
from sume_batch.sandbox import SandboxConfig, running_sandbox

TAKES = """\
version: 1
name: takes
execution: {poll_interval: {image: 0.05}}
jobs:
  - id: "take-{{ n }}"
    stage: takes
    type: image
    prompt: "Lumen serum, take {{ n }}"
    matrix: {n: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]}
  - id: "ad-{{ upstream.id }}"
    needs: takes
    picked: true
    type: image
    prompt: "An ad around {{ upstream.id }}"
    reference_image_urls: ["{{ upstream.url }}"]
"""


def env_of(server: Any) -> dict[str, str]:
    return {"SUME_API_KEY": server.api_key, "SUME_API_BASE_URL": server.base_url}


def test_picks_made_in_review_are_exactly_what_the_next_stage_buys(tmp_path: Path) -> None:
    path = str(write(tmp_path, TAKES))
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        env = env_of(server)
        first = invoke("run", path, "--yes", "--quiet", env=env)
        assert first.code == 0, first.out
        assert "reads only what review picked: nothing of takes is picked yet" in first.out
        assert len(server.stats()["creates_by_idempotency_key"]) == 12
        picked = invoke(
            "review", path, "--pick", "take-1", "--pick", "take-1[12]", "--reject", "take-5", env=env
        )
        assert picked.code == 0, picked.err
        assert "picked      take-11" in picked.out and "rejected    take-5" in picked.out
        only = invoke("plan", path, "--only", "picked", "--json", env=env)
        assert sorted(job["id"] for job in __import__("json").loads(only.out)["jobs"]) == [
            "take-1",
            "take-11",
            "take-12",
        ]
        again = invoke("run", path, "--yes", "--quiet", env=env)
        assert again.code == 0, again.out
        creates = server.stats()["creates_by_idempotency_key"]
    assert len(creates) == 12 + 3 and set(creates.values()) == {1}  # exactly the three picked, once
    report = {job["id"]: job for job in read_report(tmp_path, "takes")["jobs"]}
    assert report["take-1"]["review"] == {"state": "picked", "rating": None, "comment": None}
    assert report["take-5"]["review"]["state"] == "rejected"
    saved = yaml.safe_load((tmp_path / "reviews/takes.yaml").read_text())
    assert saved["version"] == 1 and len(saved["decisions"]) == 4
    for entry in saved["decisions"].values():
        (sha,) = entry["outputs"]
        assert len(sha) == 64 and entry["outputs"][sha]["decision"] in ("pick", "reject")


def test_retry_rejected_buys_the_rejected_again_and_their_old_decision_goes_stale(tmp_path: Path) -> None:
    path = str(write(tmp_path, TAKES.split('  - id: "ad-', maxsplit=1)[0]))
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        env = env_of(server)
        assert invoke("run", path, "--yes", "--quiet", env=env).code == 0
        assert invoke("review", path, "--reject", "take-[23]", "--rate", "take-4=2", env=env).code == 0
        priced = invoke("plan", path, "--retry-rejected", env=env)
        assert "Campaign takes" in priced.out and ": 2 jobs" in priced.out.splitlines()[0]
        assert invoke("run", path, "--yes", "--quiet", "--retry-rejected", env=env).code == 0
        creates = server.stats()["creates_by_idempotency_key"]
        listed = invoke("review", path, env=env).out
    assert len(creates) == 14  # 12, then take-2 and take-3 once more
    assert "stale       take-2" in listed and "stale       take-3" in listed
    assert "unreviewed  take-4  1 output(s)  ★2" in listed  # a rating alone decides nothing


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--pick", "nothing-*", "'nothing-*' names no job with outputs to review"),
        ("--rate", "take-1=9", "--rate 'take-1=9': a rating is a whole number from 1 to 5"),
        ("--comment", "take-1", "--comment 'take-1': write GLOB=VALUE"),
    ],
)
def test_a_review_flag_that_cannot_apply_is_refused_and_nothing_is_written(
    tmp_path: Path, flag: str, value: str, message: str
) -> None:
    path = str(write(tmp_path, TAKES.split('  - id: "ad-', maxsplit=1)[0]))
    assert invoke("run", path, "--sandbox", "--yes", "--quiet").code == 0
    result = invoke("review", path, "--sandbox", flag, value)
    assert result.code == 2 and message in result.err
    assert not (tmp_path / "reviews").exists()


def test_a_damaged_decisions_file_is_a_located_error(tmp_path: Path) -> None:
    path = tmp_path / "reviews.yaml"
    path.write_text("version: 1\ndecisions:\n  abc:\n    outputs:\n      f00d: {decision: maybe}\n")
    with pytest.raises(ManifestError) as raised:
        load(path)
    (problem,) = raised.value.problems
    assert (problem.line, problem.path, problem.message) == (
        5,
        "decisions.abc.outputs.f00d",
        "decision must be one of pick, reject",
    )
    assert load(tmp_path / "none.yaml") == {}
