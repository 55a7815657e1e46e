"""run: whole campaigns over real loopback HTTP against the sandbox, as a user runs them."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from helpers import REPO, execute_plan, invoke, read_report, write

from sume_batch import submit
from sume_batch.budget import Budget
from sume_batch.commands.common import prepare
from sume_batch.commands.run import Options, make_executor
from sume_batch.poll import FLOOR_S, REHEARSAL_FLOOR_S
from sume_batch.redact import Redactor
from sume_batch.sandbox import SandboxConfig, running_sandbox
from sume_batch.target import Target

EVERY_KIND = """\
version: 1
name: every-kind
budget:
  max_credits: {budget}
execution:
  concurrency: 6
  poll_interval: {{image: 0.05, video: 0.05, ad_video: 0.05, face_swap: 0.05, reference_analysis: 0.05, asset_upload: 0.05}}
defaults:
  video: {{duration: 4, resolution: 480p}}
jobs:
  - id: "img-{{{{ n }}}}"
    type: image
    prompt: "Bottle number {{{{ n }}}} on a counter"
    matrix: {{n: [1, 2, 3, 4]}}
  - id: brand-img
    type: image
    prompt: On-brand lifestyle photo
    brand_reference_images: 2
  - {{id: clip, type: video, prompt: A slow pan}}
  - {{id: ad, type: ad_video, avatar_id: avatar_maya01, script: "One drop, done."}}
  - {{id: swap, type: face_swap, source_video: clip.mp4, avatar_ids: [avatar_maya01, avatar_sofia03]}}
  - {{id: ref, type: reference_analysis, url: "https://www.tiktok.com/@glow/video/7301234567890123456"}}
  - {{id: ingest, type: asset_upload, file: clip.mp4, title: Founder clip}}
"""
JOBS = 10


def campaign(folder: Path, budget: int = 1000) -> Path:
    shutil.copy(REPO / "tests/data/clip.mp4", folder / "clip.mp4")
    return write(folder, EVERY_KIND.format(budget=budget))


def run_against(config: SandboxConfig, *args: str) -> tuple[Any, dict[str, Any]]:
    with running_sandbox(config) as server:
        env = {"SUME_API_KEY": server.api_key, "SUME_API_BASE_URL": server.base_url}
        result = invoke("run", "campaign.yaml", *args, env=env)
        return result, server.stats()


def summary(folder: Path) -> dict[str, Any]:
    return read_report(folder, "every-kind")


def test_every_kind_end_to_end(workdir: Path) -> None:
    campaign(workdir)
    result, stats = run_against(SandboxConfig.from_profile("instant"), "--yes")
    assert (result.code, result.err) == (0, ""), result.out
    report = summary(workdir)
    assert report["counts"] == {"downloaded": JOBS}
    outputs = sorted(path.name for path in (workdir / "outputs/every-kind").iterdir())
    assert outputs == [
        "ad.mp4", "brand-img.png", "clip.mp4", "img-1.png", "img-2.png", "img-3.png", "img-4.png", "ingest.json",
        "ref-1.mp4", "ref-2.mp4", "ref-3.mp4", "ref.json", "swap-avatar_maya01.mp4", "swap-avatar_sofia03.mp4",
    ]  # fmt: skip
    files = {job["id"]: job["files"] for job in report["jobs"]}
    assert all(len(item["sha256"]) == 64 for job_files in files.values() for item in job_files)
    assert stats["storage_requests_with_credentials"] == 0
    assert sorted(stats["creates_by_idempotency_key"].values()) == [1] * JOBS
    ref = next(job for job in report["jobs"] if job["id"] == "ref")
    assert ref["credits"]["stated_by_api"] > 0  # Reference Analysis states its price


@pytest.mark.parametrize("idempotency", ["honour", "ignore"])
@pytest.mark.parametrize("profile", ["realistic", "chaos"])
def test_misbehaving_api_costs_one_create_per_job_and_never_leaks_the_key(
    workdir: Path, profile: str, idempotency: str
) -> None:
    campaign(workdir, budget=400)
    config = SandboxConfig.from_profile(profile, seed=3, idempotency=idempotency, speed_factor=40.0)
    result, stats = run_against(config, "--yes", "--lost-create-grace", "1")  # the sandbox commits at once
    report = summary(workdir)
    assert result.code in (0, 1), result.err
    for job in report["jobs"]:  # every job finished, or says why not
        assert job["status"] == "downloaded" or job["failure"] or job["status"] in ("uncertain", "skipped"), (
            job
        )
    assert all(count == 1 for count in stats["creates_by_idempotency_key"].values())
    assert stats["storage_requests_with_credentials"] == 0
    assert report["credits"]["reserved"] <= 400
    assert "sume_test_sandbox_key" not in result.out + result.err + json.dumps(report)


def test_refused_over_budget_before_anything_is_sent(workdir: Path) -> None:
    campaign(workdir, budget=10)
    result, stats = run_against(SandboxConfig.from_profile("instant"), "--yes")
    assert result.code == 3
    assert "refused before spending: the estimate (138 credits) is over budget.max_credits (10)" in result.err
    assert stats["creates_by_idempotency_key"] == {}


def test_refused_over_balance(workdir: Path) -> None:
    campaign(workdir)
    result, stats = run_against(SandboxConfig.from_profile("instant", credits=50), "--yes")
    assert result.code == 3
    assert "is more than the balance (50)" in result.err
    assert stats["creates_by_idempotency_key"] == {}


def test_without_a_terminal_it_needs_yes(workdir: Path) -> None:
    campaign(workdir)
    result, stats = run_against(SandboxConfig.from_profile("instant"))
    assert result.code == 4  # not over budget (3): nobody confirmed
    assert "not confirmed: not a terminal, so pass --yes" in result.err
    assert stats["creates_by_idempotency_key"] == {}


def test_dry_run_shows_balance_and_capacity_and_sends_nothing(workdir: Path) -> None:
    campaign(workdir)
    result, stats = run_against(SandboxConfig.from_profile("instant"), "--dry-run")
    assert result.code == 0
    assert (
        "balance: 10,000 credits; plan: sandbox; generation capacity: 4\nDry run: nothing was sent.\n"
        in result.out
    )
    assert stats["creates_by_idempotency_key"] == {}


def test_a_missing_key_points_at_the_sandbox(workdir: Path) -> None:
    campaign(workdir)
    result = invoke("run", "campaign.yaml", "--yes", env={"SUME_API_KEY": ""})
    assert (result.code, result.err) == (
        2,
        "error: SUME_API_KEY is not set. Set it to your Sume API key, or add --sandbox to rehearse for free.\n",
    )


def test_a_second_run_reuses_everything(workdir: Path) -> None:
    campaign(workdir)
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        env = {"SUME_API_KEY": server.api_key, "SUME_API_BASE_URL": server.base_url}
        assert invoke("run", "campaign.yaml", "--yes", env=env).code == 0
        first = summary(workdir)["jobs"]
        again = invoke("run", "campaign.yaml", "--yes", env=env)
        stats = server.stats()
    assert again.code == 0
    assert sorted(stats["creates_by_idempotency_key"].values()) == [1] * JOBS
    assert {job["provenance"]["reused"] for job in first} == {False}
    reused = summary(workdir)["jobs"]
    assert {job["provenance"]["reused"] for job in reused} == {True}  # provenance: made by the first run
    assert [job["provenance"]["downloaded_at"] for job in reused] == [
        job["provenance"]["downloaded_at"] for job in first
    ]


def test_run_with_the_embedded_sandbox(workdir: Path) -> None:
    campaign(workdir)
    result = invoke("run", "campaign.yaml", "--sandbox", "--yes", env={"SUME_API_KEY": ""})
    assert result.code == 0, result.out + result.err
    assert summary(workdir)["counts"] == {"downloaded": JOBS}


def test_a_create_left_in_flight_by_a_crash_is_found_and_adopted_not_resent(workdir: Path) -> None:
    import sqlite3

    campaign(workdir)
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        env = {"SUME_API_KEY": server.api_key, "SUME_API_BASE_URL": server.base_url}
        assert invoke("run", "campaign.yaml", "--yes", env=env).code == 0
        with sqlite3.connect(
            workdir / ".sume-batch/every-kind.rehearsal.sqlite"
        ) as db:  # killed with its answer unrecorded
            db.execute(
                "UPDATE jobs SET state = 'submitting', sume_ids = '[]', request_id = NULL WHERE id = 'img-1'"
            )
            db.execute("DELETE FROM files WHERE key = (SELECT key FROM jobs WHERE id = 'img-1')")
        again = invoke("run", "campaign.yaml", "--yes", env=env)
        creates = server.stats()["creates_by_idempotency_key"]
    assert again.code == 0, again.out
    assert sorted(creates.values()) == [1] * JOBS  # found in GET /jobs, never created again
    job = next(job for job in summary(workdir)["jobs"] if job["id"] == "img-1")
    assert (job["status"], len(job["sume_job_ids"]), len(job["files"])) == ("downloaded", 1, 1)


def test_a_create_that_made_nothing_is_proven_so_and_submitted_again(workdir: Path) -> None:
    import sqlite3

    campaign(workdir)
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        env = {"SUME_API_KEY": server.api_key, "SUME_API_BASE_URL": server.base_url}
        assert invoke("run", "campaign.yaml", "--yes", env=env).code == 0
        time.sleep(0.3)  # nothing is created from here on: img-1's lost create below made nothing
        lost = time.time()
        with sqlite3.connect(workdir / ".sume-batch/every-kind.rehearsal.sqlite") as db:
            db.execute(
                "UPDATE jobs SET state = 'uncertain', sume_ids = '[]', request_id = NULL, intent_at = ?,"
                " settled_at = ? WHERE id = 'img-1'",
                (lost, lost + 0.05),
            )
            db.execute("DELETE FROM files WHERE key = (SELECT key FROM jobs WHERE id = 'img-1')")
        again = invoke("run", "campaign.yaml", "--yes", "--lost-create-grace", "0.5", env=env)
        creates = server.stats()["creates_by_idempotency_key"]
    assert again.code == 0, again.out
    assert sorted(creates.values()) == [1] * (JOBS + 1)  # img-1 once more, under a new Idempotency-Key
    with sqlite3.connect(workdir / ".sume-batch/every-kind.rehearsal.sqlite") as db:
        notes = [
            note
            for (note,) in db.execute("SELECT note FROM events WHERE note LIKE 'the create made no job%'")
        ]
    assert notes == [
        "the create made no job (none in GET /jobs from its intent until 0.5 s after its answer was lost):"
        " it is submitted again"
    ]


def test_a_resend_in_flight_at_a_crash_has_its_window_end_when_it_is_found_not_at_its_first_intent(
    workdir: Path,
) -> None:
    """A re-send under its key (--idempotency-honoured) keeps its first create's intent, and may go
    out any time after: a crash with one in flight leaves a window ending when the next run finds
    it. Ended at the first intent's crash bound, the job the re-send made would fall outside it,
    and a run without the flag would prove it never made and buy it again under a new key."""
    import sqlite3

    campaign(workdir)
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        env = {"SUME_API_KEY": server.api_key, "SUME_API_BASE_URL": server.base_url}
        assert invoke("run", "campaign.yaml", "--yes", env=env).code == 0
        now = time.time()  # img-1's job, made a moment ago, plays the in-flight re-send's
        with sqlite3.connect(workdir / ".sume-batch/every-kind.rehearsal.sqlite") as db:
            db.execute(
                "UPDATE jobs SET state = 'submitting', sume_ids = '[]', request_id = NULL, intent_at = ?,"
                " settled_at = ? WHERE id = 'img-1'",
                (now - 1000, now - 500),  # first sent 1000 s ago, its answer lost 500 s ago
            )
            db.execute("DELETE FROM files WHERE key = (SELECT key FROM jobs WHERE id = 'img-1')")
        again = invoke("run", "campaign.yaml", "--yes", "--lost-create-grace", "0.5", env=env)
        creates = server.stats()["creates_by_idempotency_key"]
    assert again.code == 0, again.out + again.err
    assert sorted(creates.values()) == [1] * JOBS  # nothing bought again
    job = next(job for job in summary(workdir)["jobs"] if job["id"] == "img-1")
    assert (job["status"], len(job["sume_job_ids"])) == ("downloaded", 1)


def test_an_edited_prompt_is_the_only_job_bought_again(workdir: Path) -> None:
    path = campaign(workdir)
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        env = {"SUME_API_KEY": server.api_key, "SUME_API_BASE_URL": server.base_url}
        assert invoke("run", "campaign.yaml", "--yes", env=env).code == 0
        assert invoke("plan", "campaign.yaml", env=env).out.endswith(
            "since the last run: 0 new, 10 unchanged (already paid), 0 removed; to submit now: 0 credits\n"
        )
        path.write_text(path.read_text().replace("A slow pan", "A slow pan at dawn"))
        assert invoke("plan", "campaign.yaml", env=env).out.endswith(
            "since the last run: 0 new, 1 changed (request edited: bought again), 9 unchanged (already paid),"
            " 0 removed; to submit now: 12 credits\n"
        )
        again = invoke("run", "campaign.yaml", "--yes", env=env)
        creates = server.stats()["creates_by_idempotency_key"]
    assert again.code == 0
    assert sorted(creates.values()) == [1] * (JOBS + 1)  # one more create: the edited video


def test_a_finished_campaign_reruns_on_a_balance_below_its_total(workdir: Path) -> None:
    campaign(workdir)
    with running_sandbox(SandboxConfig.from_profile("instant", credits=150)) as server:
        env = {"SUME_API_KEY": server.api_key, "SUME_API_BASE_URL": server.base_url}
        assert invoke("run", "campaign.yaml", "--yes", env=env).code == 0
        total, before = summary(workdir)["credits"]["estimated"], server.stats()
        again = invoke("run", "campaign.yaml", "--yes", env=env)
        after = server.stats()
    assert 0 < before["credits"]["remaining"] < total  # 12 left of 150: less than the campaign's 138
    assert (again.code, again.err) == (0, "")  # nothing new to buy, so the balance is enough
    assert after["creates_by_idempotency_key"] == before["creates_by_idempotency_key"]
    assert after["credits"] == before["credits"]  # nothing spent, nothing reserved


def test_status_reads_the_store_and_says_what_the_next_run_does(workdir: Path) -> None:
    import sqlite3

    campaign(workdir)
    missing = invoke("status", "campaign.yaml")
    assert (missing.code, missing.err) == (
        2,
        "error: no run store in .sume-batch for https://www.sume.so/api/v1: this campaign has not been run"
        " there yet (--sandbox reads the rehearsal store)\n",
    )
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        env = {"SUME_API_KEY": server.api_key, "SUME_API_BASE_URL": server.base_url}
        assert invoke("run", "campaign.yaml", "--yes", env=env).code == 0
    with sqlite3.connect(workdir / ".sume-batch/every-kind.rehearsal.sqlite") as db:
        db.execute(
            "UPDATE jobs SET state = 'failed', error_code = 'generation_failed', error_message = 'm' WHERE id = 'ad'"
        )
    text = invoke("status", "campaign.yaml", "--sandbox")
    assert (text.code, text.err) == (0, "")
    assert (
        text.out.splitlines()[0] == ".sume-batch/every-kind.rehearsal.sqlite: 10 jobs: 9 downloaded, 1 failed"
    )
    assert "next run: leave (retry only on request) 1, reuse 9\n" in text.out
    last = text.out.splitlines()[-1]
    assert re.fullmatch(r"  failed: ad \[job_\w+\]: generation_failed: m \(request id req_\w+\)", last), last
    data = json.loads(invoke("status", ".sume-batch/every-kind.rehearsal.sqlite", "--json").out)
    assert (data["object"], data["counts"], data["attention"][0]["id"]) == (
        "status",
        {"downloaded": 9, "failed": 1},
        "ad",
    )


def test_a_job_refused_for_credits_is_submitted_by_the_next_run(workdir: Path) -> None:
    # Estimated at 1 credit an image the campaign is 123 credits; the sandbox charges 4, so 134 in all:
    # a balance of 125 passes the check and runs out mid-run.
    write(workdir, EVERY_KIND.format(budget=1000) + "pricing:\n  image: {per_image: 1}\n")
    with running_sandbox(SandboxConfig.from_profile("instant", credits=125)) as server:
        env = {"SUME_API_KEY": server.api_key, "SUME_API_BASE_URL": server.base_url}
        shutil.copy(REPO / "tests/data/clip.mp4", workdir / "clip.mp4")
        first = invoke("run", "campaign.yaml", "--yes", "--concurrency", "1", env=env)
        refused = [job for job in summary(workdir)["jobs"] if job["status"] == "planned"]
        server.configure(credits=10_000)
        second = invoke("run", "campaign.yaml", "--yes", env=env)
        creates = server.stats()["creates_by_idempotency_key"]
    assert first.code == 1
    assert "Stopped early: the API refused new jobs: HTTP 402: insufficient_credits" in first.out
    assert refused and refused[0]["failure"]["code"] == "insufficient_credits"
    assert second.code == 0, second.out
    assert summary(workdir)["counts"] == {"downloaded": JOBS}
    assert all(count == 1 for count in creates.values())


def test_an_interrupt_withholds_every_create_not_yet_sent() -> None:
    import tempfile

    from sume_batch.commands.common import prepare
    from sume_batch.store import RunStore

    folder = Path(tempfile.mkdtemp())
    write(
        folder,
        "version: 1\nname: five\njobs:\n  - {id: 'img-{{ n }}', type: image, prompt: p, matrix: {n: [1, 2, 3, 4, 5]}}\n",
    )
    _, specs = prepare(folder / "campaign.yaml")
    store = RunStore.open(folder / "store.sqlite")
    store.add_planned((spec.key, spec.id, spec.kind.name, spec.request, spec.matrix, 4.0) for spec in specs)
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:

        def interrupt_at_the_first_job(executor: Any) -> None:
            def on_change(job_id: str, state: str, why: str | None) -> None:
                if state == "submitted":
                    executor.interrupt("interrupted by SIGINT")

            executor.on_change = on_change

        execute_plan(
            server, folder, store, concurrency=5, configure=interrupt_at_the_first_job, max_in_flight=1
        )
        creates = len(server.stats()["creates_by_idempotency_key"])
    states = [job.state for job in store.jobs().values()]
    assert "submitting" not in states and "uncertain" not in states
    assert states.count("submitted") == creates == 1
    assert states.count("planned") == len(states) - 1


def test_a_job_the_api_no_longer_knows_fails_alone_and_never_blocks_the_run(workdir: Path) -> None:
    import sqlite3

    campaign(workdir)
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        env = {"SUME_API_KEY": server.api_key, "SUME_API_BASE_URL": server.base_url}
        assert invoke("run", "campaign.yaml", "--yes", env=env).code == 0
        with sqlite3.connect(workdir / ".sume-batch/every-kind.rehearsal.sqlite") as db:
            db.execute(
                "UPDATE jobs SET state = 'timed_out', sume_ids = '[\"job_purged00000000000\"]' WHERE id = 'img-1'"
            )
        path = workdir / "campaign.yaml"
        path.write_text(path.read_text().replace("n: [1, 2, 3, 4]", "n: [1, 2, 3, 4, 5, 6, 7]"))
        again = invoke("run", "campaign.yaml", "--yes", env=env)
    assert again.code == 1
    counts = summary(workdir)["counts"]
    assert counts == {"downloaded": JOBS + 2, "failed": 1}
    assert "  failed: img-1 [job_purged00000000000]: not_found: the API does not know this job" in again.out


def test_an_in_flight_create_of_a_removed_variant_still_counts_against_the_budget(workdir: Path) -> None:
    import sqlite3

    write(workdir, "version: 1\nname: b\nbudget: {max_credits: 12}\nexecution: {poll_interval: {image: 0.05}}\n"
                   "jobs:\n  - {id: 'img-{{ n }}', type: image, prompt: 'p{{ n }}', matrix: {n: [1, 2, 3]}}\n")  # fmt: skip
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        env = {"SUME_API_KEY": server.api_key, "SUME_API_BASE_URL": server.base_url}
        assert invoke("run", "campaign.yaml", "--yes", env=env).code == 0
        with sqlite3.connect(
            workdir / ".sume-batch/b.rehearsal.sqlite"
        ) as db:  # img-3's create was in flight at a crash
            db.execute("UPDATE jobs SET state = 'submitting', sume_ids = '[]' WHERE id = 'img-3'")
        (workdir / "campaign.yaml").write_text(
            (workdir / "campaign.yaml").read_text().replace("[1, 2, 3]", "[1, 2, 4]")
        )
        again = invoke("run", "campaign.yaml", "--yes", env=env)
        creates = server.stats()["creates_by_idempotency_key"]
    assert len(creates) == 3  # img-4 would take the campaign to 16 credits: refused, not bought
    assert (again.code, again.err) == (
        3,
        "error: refused before spending: the campaign would reach 16 credits (12 spent or held, 4 to submit),"
        " over budget.max_credits (12)\n",
    )


def test_a_face_swap_with_one_failed_avatar_keeps_the_others(workdir: Path) -> None:
    shutil.copy(REPO / "tests/data/clip.mp4", workdir / "clip.mp4")
    write(workdir, "version: 1\nname: fs\nexecution: {poll_interval: {face_swap: 0.05}}\njobs:\n"
                   "  - {id: swap, type: face_swap, source_video: clip.mp4, avatar_ids: [avatar_maya01, avatar_sofia03]}\n")  # fmt: skip
    for seed in range(40):  # find a seed where exactly one of the two jobs fails
        config = SandboxConfig.from_profile("instant", seed=seed, faults={"job_failed": 0.5})
        with running_sandbox(config) as server:
            env = {"SUME_API_KEY": server.api_key, "SUME_API_BASE_URL": server.base_url}
            result = invoke("run", "campaign.yaml", "--yes", "--state-dir", f"state{seed}", env=env)
        job = read_report(workdir, "fs")["jobs"][0]
        if job["status"] == "failed" and job["files"]:
            break
    else:
        pytest.fail("no seed gave one failed and one completed avatar")
    assert result.code == 1
    assert len(job["files"]) == 1 and Path(job["files"][0]["path"]).name.startswith("swap-avatar_")
    assert job["failure"]["message"].startswith("1 of 2 jobs failed: ")
    assert job["failure"]["job_id"] in job["sume_job_ids"]  # the avatar's job that failed, not the other
    assert job["failure"]["job_id"] != job["files"][0]["sume_job_id"]
    assert (
        read_report(workdir, "fs")["credits"]["reserved"] == 40
    )  # the paid avatar counts against the budget


def test_retry_failed_is_priced_by_plan_and_buys_only_the_failed_job_again(workdir: Path) -> None:
    import sqlite3

    campaign(workdir)
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        env = {"SUME_API_KEY": server.api_key, "SUME_API_BASE_URL": server.base_url}
        assert invoke("run", "campaign.yaml", "--yes", env=env).code == 0
        with sqlite3.connect(workdir / ".sume-batch/every-kind.rehearsal.sqlite") as db:
            db.execute("UPDATE jobs SET state = 'failed', error_code = 'generation_failed' WHERE id = 'clip'")
            (old_id,) = json.loads(db.execute("SELECT sume_ids FROM jobs WHERE id = 'clip'").fetchone()[0])
        assert invoke("plan", "campaign.yaml", "--sandbox").out.endswith(
            "0 new, 9 unchanged (already paid), 1 failed before (not retried; --retry-failed), 0 removed;"
            " to submit now: 0 credits\n"
        )
        assert invoke("plan", "campaign.yaml", "--sandbox", "--retry-failed").out.endswith(
            "since the last run: 1 new, 9 unchanged (already paid), 0 removed; to submit now: 12 credits\n"
        )
        again = invoke("run", "campaign.yaml", "--yes", "--retry-failed", env=env)
        creates = server.stats()["creates_by_idempotency_key"]
    assert again.code == 0
    assert len(creates) == JOBS + 1  # the failed video, once more
    with sqlite3.connect(workdir / ".sume-batch/every-kind.rehearsal.sqlite") as db:
        notes = [note for (note,) in db.execute("SELECT note FROM events WHERE note LIKE '--retry-failed%'")]
    assert notes == [f"--retry-failed / --resubmit-uncertain: was failed as {old_id}"]  # the old id is kept


@pytest.mark.parametrize(("only", "ids"), [("img-*", 4), ("n=2", 1), ("swap", 1)])  # nothing*: exit 2, below
def test_only_selects_by_id_glob_or_matrix_value(workdir: Path, only: str, ids: int) -> None:
    campaign(workdir)
    plan = json.loads(invoke("plan", "campaign.yaml", "--only", only, "--json").out)
    assert len(plan["jobs"]) == ids


def test_regenerate_buys_everything_again(workdir: Path) -> None:
    campaign(workdir)
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        env = {"SUME_API_KEY": server.api_key, "SUME_API_BASE_URL": server.base_url}
        assert invoke("run", "campaign.yaml", "--yes", env=env).code == 0
        again = invoke("run", "campaign.yaml", "--yes", "--regenerate", "--only", "img-*", env=env)
        creates = server.stats()["creates_by_idempotency_key"]
    assert again.code == 0
    assert len(creates) == JOBS + 4


def test_where_idempotency_is_honoured_a_lost_create_is_sent_again_with_its_key(workdir: Path) -> None:
    write(workdir, "version: 1\nname: idem\nexecution: {concurrency: 4, poll_interval: {image: 0.05}}\n"
                   "jobs:\n  - {id: 'img-{{ n }}', type: image, prompt: 'p{{ n }}', matrix: {n: [1, 2, 3, 4, 5, 6]}}\n")  # fmt: skip
    config = SandboxConfig.from_profile("instant", idempotency="honour", faults={"drop_after_commit": 1.0})
    with running_sandbox(config) as server:
        env = {"SUME_API_KEY": server.api_key, "SUME_API_BASE_URL": server.base_url}
        lost = invoke("run", "campaign.yaml", "--yes", env=env)
        server.configure(faults={"drop_after_commit": 0.0})
        again = invoke("run", "campaign.yaml", "--yes", "--idempotency-honoured", env=env)
        stats = server.stats()
    assert lost.code == 1  # every answer was dropped: uncertain (or adopted, where unambiguous)
    assert again.code == 0, again.out
    assert sorted(stats["creates_by_idempotency_key"].values()) == [1] * 6  # the replays made nothing new
    assert read_report(workdir, "idem")["counts"] == {"downloaded": 6}


def test_a_lost_create_whose_resend_is_refused_is_reconciled_by_time_never_resent_for_ever(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its key cannot settle it: an API that honours keys refuses a re-send whose body changed since
    (workspace media signed afresh) with 409, every time. Re-sending it until the timeout would find
    nothing, and leave the job its first create made in no store: it is reconciled by time instead."""
    write(workdir, "version: 1\nname: idem\nexecution: {poll_interval: {image: 0.05}}\n"
                   "jobs:\n  - {id: img, type: image, prompt: p}\n")  # fmt: skip
    bodies, built = [], submit.request_body

    def signed_afresh(*args: Any, **kwargs: Any) -> dict[str, Any]:
        body = {**built(*args, **kwargs), **({"signature": len(bodies)} if bodies else {})}
        bodies.append(body)
        return body

    monkeypatch.setattr("sume_batch.submit.request_body", signed_afresh)
    with running_sandbox(SandboxConfig.from_profile("instant", idempotency="honour")) as server:
        env = {"SUME_API_KEY": server.api_key, "SUME_API_BASE_URL": server.base_url}
        server.add_fault("drop_after_commit", path="/api/v1/images/generations", method="POST")
        began = time.monotonic()
        result = invoke(
            "run", "campaign.yaml", "--yes", "--idempotency-honoured", "--lost-create-grace", "1", env=env
        )
        stats = server.stats()
    assert result.code == 0, result.out + result.err
    assert len(bodies) == 2 and time.monotonic() - began < 30  # one re-send, refused: not the timeout's worth
    assert list(stats["creates_by_idempotency_key"].values()) == [1]
    report = read_report(workdir, "idem")
    assert report["counts"] == {"downloaded": 1}
    assert report["jobs"][0]["sume_job_ids"] == stats["job_ids"]


def test_a_rehearsal_can_be_as_large_as_the_real_campaign(workdir: Path) -> None:
    """`run --sandbox` sets the embedded sandbox's capacity, credits, speed and seed; the resume hint
    repeats them; without --sandbox they are a usage error and nothing runs."""
    write(
        workdir,
        "version: 1\nname: big\njobs:\n  - {id: 'img-{{ n }}', type: image, prompt: p, matrix: {n: [1, 2, 3]}}\n",
    )
    knobs = (
        "--sandbox-capacity",
        "2",
        "--sandbox-credits",
        "30",
        "--sandbox-seed",
        "5",
        "--sandbox-speed",
        "10",
    )
    result = invoke("run", "campaign.yaml", "--sandbox", "--yes", *knobs)
    assert result.code == 0, result.err
    assert "balance: 30 credits; plan: sandbox; generation capacity: 2" in result.out
    refused = invoke("run", "campaign.yaml", "--sandbox", "--yes", "--sandbox-credits", "5")
    assert refused.code == 3 and "more than the balance (5)" in refused.err
    alone = invoke("run", "campaign.yaml", "--yes", "--sandbox-capacity", "50")
    assert alone.code == 2 and "--sandbox-capacity sets the embedded sandbox: add --sandbox" in alone.err


@pytest.mark.parametrize(("rehearsal", "floor"), [(True, REHEARSAL_FLOOR_S), (False, FLOOR_S)])
def test_a_rehearsal_polls_on_its_own_floor_and_a_real_api_on_the_one_that_spares_its_quota(
    tmp_path: Path, rehearsal: bool, floor: float
) -> None:
    manifest, _ = prepare(
        write(tmp_path, "version: 1\nname: floors\njobs: [{id: a, type: image, prompt: p}]\n")
    )
    options = Options(yes=True, dry_run=False, concurrency=None, state_dir=None, interactive=False)
    call = SimpleNamespace(manifest=manifest, options=options, redactor=Redactor())
    target = Target("https://api.example.test/api/v1", workspace="w", rehearsal=rehearsal)
    live = SimpleNamespace(client=SimpleNamespace(), storage=None, store=SimpleNamespace(runner=None),
                           target=target, registry=None,
                           balance=None, capacity=None, budget=Budget(cap=None), refused=None)  # fmt: skip
    assert make_executor(cast(Any, call), cast(Any, live), lambda *_: None).settings.poll_floor == floor


def test_only_that_selects_no_job_is_an_error_and_moves_nothing(workdir: Path) -> None:
    campaign(workdir)
    for command in (("plan", "campaign.yaml"), ("run", "campaign.yaml", "--sandbox", "--yes")):
        result = invoke(*command, "--only", "no-such-*")
        assert result.code == 2 and "--only no-such-* selects no job of" in result.err
    assert not (workdir / "reports").exists() and not (workdir / ".sume-batch").exists()


def test_detach_submits_records_and_exits_then_a_run_downloads_with_no_create_twice(workdir: Path) -> None:
    write(workdir, "version: 1\nname: detached\nexecution: {poll_interval: {image: 0.05}}\n"
                   "jobs:\n  - {id: 'img-{{ n }}', type: image, prompt: 'p {{ n }}', matrix: {n: [1, 2, 3, 4]}}\n")  # fmt: skip
    slow = SandboxConfig.from_profile("instant", durations={"image_generation": 30.0})
    with running_sandbox(slow) as server:
        env = {"SUME_API_KEY": server.api_key, "SUME_API_BASE_URL": server.base_url}
        started = time.monotonic()
        detached = invoke("run", "campaign.yaml", "--yes", "--detach", env=env)
        assert detached.code == 0, detached.out
        assert time.monotonic() - started < 15  # it did not wait 30 s for the jobs
        assert (
            "Detached: 4 job(s) generating, their ids recorded. Poll and download them with:" in detached.out
        )
        made = dict(server.stats()["creates_by_idempotency_key"])
        server.advance(31)
        finished = invoke("run", "campaign.yaml", "--yes", env=env)
        after = server.stats()["creates_by_idempotency_key"]
    assert finished.code == 0 and "4 downloaded" in finished.out
    assert len(made) == 4 and after == made  # the second run polled and downloaded: no create at all


def test_run_json_prints_one_object_and_the_rest_on_stderr(workdir: Path) -> None:
    write(workdir, "version: 1\nname: quiet\njobs:\n  - {id: a, type: image, prompt: p}\n")
    result = invoke("run", "campaign.yaml", "--sandbox", "--yes", "--json")
    outcome = json.loads(result.out)
    assert result.code == 0 == outcome["exit_code"] and outcome["object"] == "run"
    assert outcome["counts"] == {"downloaded": 1} and outcome["reports"]["html"].endswith("report.html")
    assert "Done in" in result.err and "Done in" not in result.out
