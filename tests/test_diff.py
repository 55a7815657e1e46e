"""diff: what a manifest change would buy, between two git revisions or two files, with no store —
new, changed (which fields), removed, credits, thresholds, the noise floor, Markdown (issue 17)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import REPO, invoke

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="no git here")


def git(folder: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@example.test", "-c", "user.name=t", *args], cwd=folder,
                   check=True, capture_output=True)  # fmt: skip


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    shutil.copytree(
        REPO / "manifests", tmp_path / "manifests", ignore=shutil.ignore_patterns("outputs", "reports")
    )
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "base")
    return tmp_path / "manifests" / "catalog.yaml"


def diffed(path: Path, *flags: str) -> dict:
    result = invoke("diff", str(path), "--base", "HEAD", "--format", "json", *flags)
    assert result.code == 0, result.err
    return json.loads(result.out)


def test_rows_added_and_removed_in_the_data_file_are_new_and_removed_jobs(repo: Path) -> None:
    data = repo.parent / "data" / "catalog.csv"
    lines = data.read_text().splitlines()
    kept = [line for line in lines if not line.startswith("0001,")]
    data.write_text("\n".join([*kept, '0999,"Neue Creme","New cream",cream,9.9,yes']) + "\n")
    found = diffed(repo)
    assert sorted({job["id"].split("-")[0] for job in found["new"]}) == ["0999"] and len(found["new"]) == 6
    assert len(found["removed"]) == 6 and found["changed"] == []
    assert found["bought_credits"] == 24 and found["delta_credits"] == 0


def test_a_prompt_tweak_changes_every_job_and_is_called_out(repo: Path) -> None:
    repo.write_text(repo.read_text().replace("soft daylight", "soft morning daylight"))
    found = diffed(repo)
    assert len(found["changed"]) == 240 and {tuple(job["fields"]) for job in found["changed"]} == {
        ("prompt",)
    }
    shown = invoke("diff", str(repo), "--base", "HEAD")
    assert "every one of the 240 jobs is bought again: did a shared prompt or setting change?" in shown.out


def test_thresholds_warn_fail_and_keep_quiet_under_the_noise_floor(repo: Path) -> None:
    repo.write_text(repo.read_text().replace("square, portrait, story", "square, portrait, story, wide")
                    .replace('story: "9:16"}', 'story: "9:16", wide: "1:1"}'))  # fmt: skip
    over = invoke("diff", str(repo), "--base", "HEAD", "--format", "markdown", "--fail-over", "10%")
    assert over.code == 5 and over.out.startswith("### ❌ sume-batch credit diff")
    assert "| image | 320 | 0 | 0 |" in over.out  # 80 new jobs × 4 credits
    warned = invoke(
        "diff",
        str(repo),
        "--base",
        "HEAD",
        "--format",
        "markdown",
        "--warn-over",
        "100",
        "--fail-over",
        "1000",
    )
    assert warned.code == 0 and warned.out.startswith("### ⚠️") and "look before you merge" in warned.out
    calm = invoke("diff", str(repo), "--base", "HEAD", "--quiet-under", "500")
    assert (calm.code, calm.out) == (0, "")  # below the noise floor: nothing to say


def test_two_files_compare_without_git_and_a_bad_revision_is_a_clear_error(
    repo: Path, tmp_path: Path
) -> None:
    other = tmp_path / "manifests" / "edited.yaml"
    other.write_text(repo.read_text().replace("format: [square, portrait, story]", "format: [square]"))
    result = invoke("diff", str(repo), str(other), "--format", "json")
    found = json.loads(result.out)
    assert result.code == 0 and len(found["removed"]) == 160 and found["delta_credits"] == -640
    bad = invoke("diff", str(repo), "--base", "no-such-rev")
    assert bad.code == 2 and "cannot read" in bad.err and "no-such-rev" in bad.err
    neither = invoke("diff", str(repo))
    assert neither.code == 2 and "give either --base REV" in neither.err


def test_plan_detailed_exitcode_tells_nothing_to_buy_from_something_and_from_over_budget(
    tmp_path: Path,
) -> None:
    path = tmp_path / "campaign.yaml"
    text = "version: 1\nname: codes\nbudget: {max_credits: 20}\njobs:\n  - {id: 'i-{{ n }}', type: image, prompt: 'p {{ n }}', matrix: {n: [1, 2]}}\n"
    path.write_text(text)
    assert invoke("plan", str(path), "--sandbox", "--detailed-exitcode").code == 10  # nothing bought yet
    assert invoke("run", str(path), "--sandbox", "--yes", "--quiet").code == 0
    assert invoke("plan", str(path), "--sandbox", "--detailed-exitcode").code == 0  # all paid for
    path.write_text(text.replace("[1, 2]", "[1, 2, 3]"))
    assert invoke("plan", str(path), "--sandbox", "--detailed-exitcode", "--json").code == 10
    path.write_text(text.replace("[1, 2]", "[1, 2, 3, 4, 5, 6]"))
    assert invoke("plan", str(path), "--sandbox", "--detailed-exitcode").code == 3  # 8 spent + 16 > 20
    assert invoke("plan", str(path), "--sandbox").code == 0  # without the flag, plan only reports
