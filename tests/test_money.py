"""Money and data (issue 10): a store per API target, a budget that holds on the API's own prices,
reconciliation that never adopts another campaign's job, ids kept whatever the answer or the disk."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import invoke, read_report, tmpfs, write

from sume_batch.sandbox import SandboxConfig, running_sandbox

FAST = "poll_interval: {image: 0.02, video: 0.02, ad_video: 0.02}"


def images(
    folder: Path, count: int, *, name: str = "spend", cap: int | None = None, prompt: str = "Bottle"
) -> Path:
    budget = f"budget: {{max_credits: {cap}}}\n" if cap is not None else ""
    return write(
        folder,
        f"version: 1\nname: {name}\n{budget}execution: {{concurrency: 8, {FAST}}}\njobs:\n"
        f"  - {{id: 'img-{{{{ n }}}}', type: image, prompt: '{prompt} {{{{ n }}}}', matrix: {{n: {list(range(count))}}}}}\n",
        f"{name}.yaml",
    )


def env_of(server: Any) -> dict[str, str]:
    return {"SUME_API_KEY": server.api_key, "SUME_API_BASE_URL": server.base_url}


def stores(folder: Path) -> list[str]:
    return sorted(path.name for path in (folder / ".sume-batch").glob("*.sqlite"))


def job_ids(store: Path) -> dict[str, list[str]]:
    with sqlite3.connect(store) as db:
        return {job: json.loads(ids) for job, ids in db.execute("SELECT id, sume_ids FROM jobs")}


# 1. A rehearsal is never counted as paid work, and one workspace's jobs never as another's.


def test_a_rehearsal_is_never_taken_for_paid_work(workdir: Path) -> None:
    images(workdir, 3)
    assert invoke("run", "spend.yaml", "--sandbox", "--yes").code == 0
    real = SandboxConfig.from_profile("instant", environment="", workspace_id="ws_acme")  # plays a real API
    with running_sandbox(real) as server:
        plan = invoke("plan", "spend.yaml", env=env_of(server))
        result = invoke("run", "spend.yaml", "--yes", env=env_of(server))
        creates = server.stats()["creates_by_idempotency_key"]
    assert "since the last run" not in plan.out  # the rehearsal's store is not this API's
    assert result.code == 0, result.out + result.err
    assert "since the last run: 3 new, 0 unchanged (already paid), 0 removed" in result.out
    assert len(creates) == 3  # every job bought for real, none taken from the rehearsal
    report = read_report(workdir, "spend")
    assert report["run"]["sandbox"] is None and report["counts"] == {"downloaded": 3}
    assert len(stores(workdir)) == 2 and "spend.rehearsal.sqlite" in stores(workdir)


def test_a_second_workspace_at_the_same_url_has_a_store_of_its_own(workdir: Path) -> None:
    images(workdir, 2)
    with running_sandbox(SandboxConfig.from_profile("instant", environment="")) as server:
        assert invoke("run", "spend.yaml", "--yes", env=env_of(server)).code == 0
        server.reset()  # a new world: the sandbox gives a fresh state a workspace id of its own
        again = invoke("run", "spend.yaml", "--yes", env=env_of(server))
        creates = server.stats()["creates_by_idempotency_key"]
    assert again.code == 0, again.out + again.err
    assert len(creates) == 2 and len(stores(workdir)) == 2


def test_a_rehearsal_resumed_against_a_fresh_sandbox_starts_over(workdir: Path) -> None:
    images(workdir, 4)
    assert invoke("run", "spend.yaml", "--sandbox", "--yes").code == 0
    store = workdir / ".sume-batch/spend.rehearsal.sqlite"
    with contextlib.closing(sqlite3.connect(store)) as db, db:  # as if interrupted: two jobs in flight
        db.execute("UPDATE jobs SET state = 'submitted' WHERE id IN ('img-0', 'img-1')")
    again = invoke("run", "spend.yaml", "--sandbox", "--yes")
    assert again.code == 0, again.out + again.err
    assert "the sandbox of the last rehearsal is gone" in again.out
    ids = [one for many in job_ids(store).values() for one in many]
    assert len(ids) == len(set(ids)) == 4  # no two jobs claim one Sume job id
    assert (workdir / ".sume-batch/spend.rehearsal.previous.sqlite").exists()


def test_a_store_from_before_targets_is_taken_over_without_losing_paid_jobs(workdir: Path) -> None:
    images(workdir, 3)
    with running_sandbox(SandboxConfig.from_profile("instant", environment="")) as server:
        assert invoke("run", "spend.yaml", "--yes", env=env_of(server)).code == 0
        (store,) = (workdir / ".sume-batch").glob("spend.*.sqlite")
        with sqlite3.connect(store) as db:  # back to version 3: no target, the file name of then
            db.execute("DELETE FROM meta WHERE name = 'target'")
            db.execute("UPDATE meta SET value = '3' WHERE name = 'schema_version'")
            db.execute("ALTER TABLE jobs DROP COLUMN retired")
            db.execute("ALTER TABLE jobs DROP COLUMN owner")
            # img-2 was made by a rehearsal: its run was a sandbox run
            db.execute("""UPDATE runs SET info = json_set(info, '$.sandbox', 'instant')""")
            db.execute("INSERT INTO runs (started_at, ended_at, info) VALUES (0, 1, '{\"sandbox\": null}')")
            db.commit()
            db.execute("PRAGMA journal_mode=DELETE")  # one file, to rename
        store.rename(workdir / ".sume-batch/spend.sqlite")
        again = invoke("run", "spend.yaml", "--yes", env=env_of(server))
        creates = server.stats()["creates_by_idempotency_key"]
    assert again.code == 0, again.out + again.err
    assert "is from before stores belonged to an API target: it is now" in again.out
    assert "3 job(s) a rehearsal made are planned again" in again.out
    assert len(creates) == 6 and stores(workdir) == [store.name]


# 2. The budget holds on what the API charges.


@pytest.mark.parametrize("stated", [True, False], ids=["stated-price", "balance-only"])
def test_a_price_ten_times_the_estimate_spends_at_most_the_cap_plus_one_job(
    workdir: Path, stated: bool
) -> None:
    images(workdir, 50, cap=200)  # estimated 4 each: 200, within the cap
    config = SandboxConfig.from_profile("instant", prices={"image": 40}, stated_prices=stated)
    with running_sandbox(config) as server:
        result = invoke("run", "spend.yaml", "--yes", env=env_of(server))
        spent = server.stats()["credits"]
        plan = invoke("plan", "spend.yaml", env=env_of(server))
    charged = spent["spent"] + spent["reserved"]
    assert charged <= 200 + 40, charged  # the cap plus one job of the kind
    assert charged >= 160  # and the budget was used, not abandoned after one job
    assert result.code == 1  # the rest are skipped: over budget
    assert "image: the API charged 10× our estimate, so its jobs are priced at that rate" in result.out
    assert "image: the API charged 10× our estimate" in plan.out
    assert "OVER BUDGET" in plan.out  # what is left would cross the cap at the API's price


def test_unknown_prices_reserve_the_assumed_bound_never_zero(workdir: Path) -> None:
    write(
        workdir,
        f"version: 1\nname: clips\nbudget: {{max_credits: 30}}\nexecution: {{concurrency: 8, {FAST}}}\n"
        "jobs:\n  - {id: 'clip-{{ n }}', type: video, prompt: 'Pan {{ n }}', resolution: 480p,"
        " matrix: {n: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}}\n",
        "clips.yaml",
    )  # no duration: the price is unknown
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        refused = invoke("run", "clips.yaml", "--yes", env=env_of(server))
        old_flag = invoke("run", "clips.yaml", "--yes", "--allow-unknown-prices", env=env_of(server))
        result = invoke("run", "clips.yaml", "--yes", "--assume-price", "12", env=env_of(server))
        creates = server.stats()["creates_by_idempotency_key"]
    assert refused.code == 3 and "10 job(s) have an unknown price" in refused.err
    assert old_flag.code == 2 and "--allow-unknown-prices needs --assume-price CREDITS" in old_flag.err
    assert result.code == 3  # 10 × 12 assumed is over the cap of 30: refused before spending
    assert creates == {}


def test_the_cap_covers_the_whole_campaign_across_regenerate(workdir: Path) -> None:
    images(workdir, 5, cap=20)
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        assert invoke("run", "spend.yaml", "--yes", env=env_of(server)).code == 0
        plan = invoke("plan", "spend.yaml", "--regenerate", env=env_of(server))
        again = invoke("run", "spend.yaml", "--yes", "--regenerate", env=env_of(server))
        creates = server.stats()["creates_by_idempotency_key"]
    assert "campaign credits: 20 spent or held + 20 to submit = 40: OVER BUDGET (20 max)" in plan.out
    assert (
        again.code == 3
        and "the campaign would reach 40 credits (20 spent or held, 20 to submit)" in again.err
    )
    assert len(creates) == 5


# 3. Reconciliation never adopts another campaign's job.


def test_reconciliation_never_adopts_a_job_another_campaign_holds(workdir: Path) -> None:
    images(workdir, 1, name="alpha", prompt="Alpha")
    images(workdir, 1, name="beta", prompt="Beta")
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        env = env_of(server)
        server.add_fault("reset", path="/api/v1/images/generations", method="POST")  # made nothing
        lost = invoke("run", "alpha.yaml", "--yes", "--lost-create-grace", "600", env=env)  # too long to wait
        assert invoke("run", "beta.yaml", "--yes", env=env).code == 0  # beta makes one image
        beta_ids = job_ids(workdir / ".sume-batch/beta.rehearsal.sqlite")["img-0"]
        with sqlite3.connect(workdir / ".sume-batch/alpha.rehearsal.sqlite") as db:  # alpha's window holds it
            db.execute("UPDATE jobs SET intent_at = ?, settled_at = ? WHERE id = 'img-0'",
                       (time.time() - 2, time.time()))  # fmt: skip
        again = invoke("run", "alpha.yaml", "--yes", "--lost-create-grace", "0.2", env=env)
        creates = server.stats()["creates_by_idempotency_key"]
    assert lost.code == 1 and "  uncertain: img-0" in lost.out
    assert again.code == 0, again.out + again.err
    alpha_ids = job_ids(workdir / ".sume-batch/alpha.rehearsal.sqlite")["img-0"]
    assert alpha_ids and set(alpha_ids).isdisjoint(beta_ids)  # alpha made its own, never took beta's
    assert len(creates) == 2


# 4. A lost answer is recovered: creates go out one at a time, so a window holds one create of ours.


def test_lost_answers_at_concurrency_are_adopted_without_a_single_resubmission(workdir: Path) -> None:
    images(workdir, 24)
    config = SandboxConfig.from_profile("instant", idempotency="ignore", faults={"drop_after_commit": 0.3})
    with running_sandbox(config) as server:
        result = invoke("run", "spend.yaml", "--yes", env=env_of(server))
        stats = server.stats()
    assert result.code == 0, result.out + result.err
    assert sorted(stats["creates_by_body_hash"].values()) == [1] * 24  # one create per job, none repeated
    assert stats["faults"].get("drop_after_commit", 0) >= 3  # answers were lost, and every job was found
    assert read_report(workdir, "spend")["counts"] == {"downloaded": 24}


# 5. A full disk under the store loses no paid id.


def test_a_full_disk_under_the_store_loses_no_paid_job_id(workdir: Path) -> None:
    import os
    import subprocess
    import sys

    with tmpfs(workdir / "state", "size=16m") as state:
        images(workdir, 40)
        with running_sandbox(
            SandboxConfig.from_profile("instant", durations={"image_generation": 0.5})
        ) as server:
            env = {**os.environ, **env_of(server)}
            command = [
                sys.executable,
                "-m",
                "sume_batch",
                "run",
                "spend.yaml",
                "--yes",
                "--state-dir",
                str(state),
            ]
            process = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True)  # fmt: skip
            deadline = time.monotonic() + 20
            while len(server.stats()["job_ids"]) < 5:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            filler = state / "filler"
            with filler.open("wb", buffering=0) as handle, contextlib.suppress(OSError):  # the disk fills up
                while True:
                    handle.write(b"\0" * 4096)
            _, err = process.communicate(timeout=60)
            made = set(server.stats()["job_ids"])
            assert process.returncode in (74, 0), err
            filler.unlink()  # space freed
            again = invoke("run", "spend.yaml", "--yes", "--state-dir", str(state), env=env_of(server))
            stats = server.stats()
        (store,) = state.glob("spend.*.sqlite")
        recorded = {one for many in job_ids(store).values() for one in many}
    assert again.code == 0, again.out + again.err
    assert made <= recorded  # every id the API issued before the disk filled is in the store
    assert sorted(stats["creates_by_body_hash"].values()) == [1] * 40  # and nothing was bought twice
    if process.returncode == 74:
        assert "could not be written" in err and "so no further job was created" in err


# 6. A wrong-typed field never costs the ids beside it.


def test_a_create_answer_with_wrong_typed_fields_keeps_its_ids(workdir: Path) -> None:
    images(workdir, 4)
    extras = {"job_ids": 12345, "required_credits": "lots", "data": "none", "request_id": 7}
    with running_sandbox(
        SandboxConfig.from_profile("instant", create_shape="job", create_extras=extras)
    ) as server:
        result = invoke("run", "spend.yaml", "--yes", env=env_of(server))
        stats = server.stats()
    assert result.code == 0, result.out + result.err
    assert len(stats["creates_by_idempotency_key"]) == 4
    assert read_report(workdir, "spend")["counts"] == {"downloaded": 4}
    ids = job_ids(workdir / ".sume-batch/spend.rehearsal.sqlite")
    assert all(set(stats["job_ids"]) & set(many) for many in ids.values())  # the real id, wherever 12345 is


# 8. The API's reason for a refusal reaches the person.


def test_a_refusal_keeps_the_apis_field_level_reason(workdir: Path) -> None:
    # Four images in one create is the sandbox's limit, not the manifest's (the docs give none).
    # An avatar lacking a capability, the reason this test first checked, the preflight now
    # refuses before any create (tests/test_workspace.py).
    write(
        workdir,
        f"version: 1\nname: ads\nexecution: {{{FAST}}}\n"
        "jobs:\n  - {id: ugc, type: image, prompt: p, image_count: 5}\n",
        "ads.yaml",
    )
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        result = invoke("run", "ads.yaml", "--yes", env=env_of(server))
    status = invoke("status", "ads.yaml", "--sandbox")
    reason = "image_count: must be an integer from 1 to 4"
    assert result.code == 1
    assert reason in result.out and reason in status.out
    report = read_report(workdir, "ads")
    assert reason in report["jobs"][0]["failure"]["message"]
    assert reason in (workdir / "reports/ads/latest/junit.xml").read_text()


def test_one_workspace_under_another_spelling_of_the_url_is_refused_not_bought_again(workdir: Path) -> None:
    images(workdir, 2)
    with running_sandbox(SandboxConfig.from_profile("instant", environment="")) as server:
        assert invoke("run", "spend.yaml", "--yes", env=env_of(server)).code == 0
        other = {**env_of(server), "SUME_API_BASE_URL": server.base_url.replace("127.0.0.1", "localhost")}
        again = invoke("run", "spend.yaml", "--yes", env=other)
        creates = server.stats()["creates_by_idempotency_key"]
    assert again.code == 2 and "holds this campaign's jobs in this very workspace" in again.err
    assert len(creates) == 2


def test_creates_in_flight_during_a_balance_check_do_not_stop_the_run(workdir: Path) -> None:
    """The balance is re-read every 20 creates while other creates are on the wire: what those may
    already have cost is no unexplained fall, so the run must not stop itself."""
    jobs = "version: 1\nname: wide\nexecution: {concurrency: 40}\njobs:\n  - {id: 'img-{{ n }}', type: image, prompt: 'p {{ n }}', matrix: {n: %s}}\n"
    write(workdir, jobs % list(range(120)))
    flags = ("--sandbox", "--yes", "--idempotency-honoured", "--sandbox-capacity", "40")
    result = invoke("run", "campaign.yaml", *flags)
    assert "balance fell" not in result.out + result.err
    assert result.code == 0, result.out[-2000:] + result.err


def test_a_run_refused_over_the_budget_still_collects_what_was_paid_for(workdir: Path) -> None:
    """Otherwise every later run is refused too, and paid jobs are never downloaded."""
    images(workdir, 4)
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        detached = invoke("run", "spend.yaml", "--yes", "--detach", env=env_of(server))
        images(workdir, 8, cap=20)  # 4 more images, under a cap the 16 spent leave no room under
        refused = invoke("run", "spend.yaml", "--yes", env=env_of(server))
        creates = server.stats()["creates_by_idempotency_key"]
    assert detached.code == 0, detached.err
    assert refused.code == 3, refused.out + refused.err
    assert "refused before spending" in refused.out and "4 job(s) already paid for are polled" in refused.out
    assert len(creates) == 4  # nothing new bought
    assert len(list((workdir / "outputs").rglob("*.png"))) == 4  # what was paid for is downloaded
