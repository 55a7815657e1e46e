"""A shared run store on PostgreSQL (`pg`, `shared`): a team's checkouts see one campaign, several
runners work it at once and are killed at random, and no runner that died or lost its lease can
pay twice, cross a budget or block the others for longer than its lease."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import time
from datetime import datetime
from pathlib import Path

import httpx
import psycopg
import pytest
import runners
from helpers import invoke, write

from sume_batch import pg, shared
from sume_batch.errors import OverBudgetError
from sume_batch.plan import in_shard, parse_shard
from sume_batch.sandbox import SandboxConfig, running_sandbox
from sume_batch.states import IllegalTransition
from sume_batch.store import RunStore
from sume_batch.target import Target

TARGET = Target("http://127.0.0.1:9/api/v1", "w" * 64)
IMAGES = """\
version: 1
name: shared
jobs:
  - id: "img-{{ n }}"
    type: image
    prompt: "Bottle {{ n }}"
    matrix: {n: [1, 2, 3, 4]}
"""


def env_of(server: object, url: str) -> dict[str, str]:
    return {"SUME_API_KEY": server.api_key, "SUME_API_BASE_URL": server.base_url,  # type: ignore[attr-defined]
            "SUME_BATCH_STATE": url}  # fmt: skip


def test_a_second_checkout_sees_the_same_campaign_state(tmp_path: Path, pg_url: str) -> None:
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    for folder in (mine, theirs):
        folder.mkdir()
        write(folder, IMAGES)
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        os.chdir(mine)
        assert invoke("run", "campaign.yaml", "--yes", "--state", pg_url, env=env_of(server, "")).code == 0
        os.chdir(theirs)  # another checkout, with no .sume-batch of its own
        status = invoke("status", "campaign.yaml", "--json", env=env_of(server, pg_url))
        plan = invoke("plan", "campaign.yaml", env=env_of(server, pg_url))
        again = invoke("run", "campaign.yaml", "--yes", env=env_of(server, pg_url))
        creates = server.stats()["creates_by_idempotency_key"]
    assert status.code == 0, status.err
    assert '"downloaded": 4' in status.out and pg.shown(pg_url).split("@")[1] in status.out
    assert "0 new, 4 unchanged (already paid)" in plan.out, plan.out
    assert again.code == 0 and len(creates) == 4  # nothing bought twice from the other checkout
    assert not (theirs / ".sume-batch").exists() or not list((theirs / ".sume-batch").glob("*.sqlite"))


def test_runners_killed_at_random_never_pay_twice_cross_the_cap_or_lose_a_job(
    tmp_path: Path, pg_url: str
) -> None:
    """The chaos test of issue 18 at a size the suite can afford; tests/perf/bench_runners.py runs
    200 jobs, 4 runners and 20 kills and more."""
    jobs, capacity, cap = 30, 4, 80.0  # priced at 2, charged 4: the cap binds at 20 jobs
    write(tmp_path, runners.campaign(jobs, cap=cap))
    with running_sandbox(runners.chaos(seed=8, capacity=capacity)) as server:
        outcome = runners.kill_and_finish(tmp_path, server, pg_url, runners=2, kills=4, lease=1.0, seed=4)
        stats = server.stats()
    assert not outcome.errors, outcome.errors[0]
    assert set(outcome.finishing_codes) <= {0, 1, 3}, (
        outcome.finishing_codes
    )  # 3: the rest would cross the cap
    figures = runners.check(pg_url, stats, jobs=jobs, capacity=capacity, cap=cap)
    assert figures["states"].get("skipped") or 3 in outcome.finishing_codes, figures  # the cap held


def test_runners_killed_at_random_with_idempotency_honoured_never_pay_twice_or_lose_a_job(
    tmp_path: Path, pg_url: str
) -> None:
    """Where the API honours Idempotency-Key, a lost create is sent again with its key (not
    reconciled by time): killed at any moment, between a resend and its answer too, no key buys two
    jobs and every job the API made is in the store."""
    jobs, capacity = 20, 4
    write(tmp_path, runners.campaign(jobs))
    with running_sandbox(runners.chaos(seed=9, capacity=capacity, idempotency="honour")) as server:
        server.add_fault("drop_after_commit", path="/api/v1/images/generations", method="POST", times=6)
        outcome = runners.kill_and_finish(
            tmp_path, server, pg_url, runners=2, kills=4, lease=1.0, seed=6, extra=("--idempotency-honoured",)
        )
        stats = server.stats()
    assert not outcome.errors, outcome.errors[0]
    assert set(outcome.finishing_codes) <= {0, 1}, outcome.finishing_codes
    runners.check(pg_url, stats, jobs=jobs, capacity=capacity, cap=None)
    assert stats["faults"]["drop_after_commit"] >= 6  # answers were lost: the first six, and the chaos's


def test_a_dead_runner_holds_its_jobs_no_longer_than_its_lease(tmp_path: Path, pg_url: str) -> None:
    write(tmp_path, runners.campaign(6))
    lease = 1.0
    slow = SandboxConfig.from_profile("instant", idempotency="ignore", durations={"image_generation": 2.0})
    with running_sandbox(slow) as server:
        took, code, err = runners.takeover(tmp_path, server, pg_url, lease=lease)
        creates = server.stats()["creates_by_idempotency_key"]
    assert took <= lease + 1.5, took  # the lease, and the next claim's poll
    assert code in (0, 1), err
    assert set(creates.values()) == {1}


# --- leases, fencing, claims and admission, on the store itself ---------------------------------------


def _runner_store(url: str, *, lease: float = 30.0, cap: float | None = None,
                  monthly: float | None = None, campaign: str = "demo") -> tuple[RunStore, shared.Runner]:  # fmt: skip
    address = pg.Address(url, campaign, TARGET)
    store = RunStore.open(address, target=TARGET, campaign=campaign)
    runner = shared.Runner.join(address, TARGET.id, lease=lease, env={"GITHUB_RUN_ID": "42"})
    store.share(runner, cap=cap, monthly=monthly)
    return store, runner


def _plan(store: RunStore, jobs: int = 3) -> None:
    store.add_planned((f"k{n}", f"img-{n}", "image", {"prompt": str(n)}, {}, 4.0) for n in range(jobs))


def test_a_job_is_worked_by_one_runner_until_its_lease_ends(pg_url: str) -> None:
    first, mine = _runner_store(pg_url, lease=1.0)
    second, theirs = _runner_store(pg_url)
    try:
        _plan(first)
        assert first.claim("k0") and not second.claim("k0")
        first.reserve("k0", 4.0)
        first.intend("k0", attempt=1, at=1.0)
        mine.stop.set()  # the first runner stops renewing, as a killed one would
        time.sleep(1.3)
        assert second.claim("k0")
        assert second.job("k0").state == "submitting"  # as the first left it, read afresh
        with pytest.raises(sqlite3.OperationalError, match=r"lease .* ended"):
            first.created("k0", ["job_1"], reserved=4.0, required=None, request_id=None, at=2.0)
        assert second.job("k0").sume_ids == ()  # the fenced runner wrote nothing
    finally:
        first.close()
        second.close()
        mine.close()
        theirs.close()


def test_a_job_another_runner_moved_and_let_go_is_read_afresh_and_never_moved_from_memory(
    pg_url: str,
) -> None:
    """A runner that ends lets its jobs go (no owner): the next to claim one reads it afresh, never
    from what it remembered before (a planned job it would create again, under the same key)."""
    first, mine = _runner_store(pg_url)
    second, theirs = _runner_store(pg_url)
    try:
        _plan(first)
        assert second.job("k0").state == "planned" and second.job("k1").state == "planned"  # remembered
        for key in ("k0", "k1"):
            assert first.claim(key)
            first.reserve(key, 4.0)
            first.intend(key, attempt=1, at=1.0)
            first.created(key, [f"job_{key}"], reserved=4.0, required=None, request_id=None, at=2.0)
        mine.close()  # the first runner ends: its jobs are no one's
        assert second.claim("k0")
        assert second.job("k0").state == "submitted" and second.job("k0").attempts == 1
        with pytest.raises(IllegalTransition, match="moved on from planned"):
            second.reserve("k1", 4.0)  # a move from a stale memory, unclaimed: refused, never written
        schema = pg.Address(pg_url, "demo", TARGET).schema
        with psycopg.connect(pg_url) as db:
            row = db.execute(f'SELECT state FROM "{schema}".jobs WHERE key = %s', ("k1",)).fetchone()
        assert row == ("submitted",)
    finally:
        first.close()
        second.close()
        theirs.close()


def test_of_runners_done_at_once_exactly_one_is_the_last_and_records_the_runs_end(pg_url: str) -> None:
    first, one = _runner_store(pg_url)
    second, two = _runner_store(pg_url)
    try:
        one.work_for(7)
        two.work_for(7)
        assert one.leave(7) == 1  # the second still works the run
        assert two.leave(7) == 0  # the first, live but done, is not counted: this one is the last
    finally:
        for closing in (first, second, one, two):
            closing.close()


def test_jobs_a_runner_let_go_undone_are_free_for_the_others_to_take(pg_url: str) -> None:
    """A runner whose creates stopped (a failed reconciliation, say) ends with planned jobs it had
    claimed: the others, done with what they could see, take them rather than end without them."""
    first, one = _runner_store(pg_url)
    second, two = _runner_store(pg_url)
    try:
        _plan(first)
        assert first.claim("k0") and first.claim("k1")
        keys, states = {"k0", "k1", "k2"}, frozenset({"planned"})
        with second.writes.transaction() as db:
            assert two.unfinished_elsewhere(db, keys, states) == (2, 0, 1)  # k2 was free all along
        one.close()  # it ends: k0 and k1 are no one's
        with second.writes.transaction() as db:
            assert two.unfinished_elsewhere(db, keys, states) == (0, 0, 3)
        assert second.claim("k0") and second.claim("k1")
        with second.writes.transaction() as db:
            assert two.unfinished_elsewhere(db, keys, states) == (0, 0, 1)  # its own are not counted
    finally:
        for closing in (first, second, two):
            closing.close()


def test_unlock_shows_the_holders_and_force_fences_them_out(workdir: Path, pg_url: str) -> None:
    write(workdir, IMAGES.replace("name: shared", "name: demo"))
    store, runner = _runner_store(pg_url)
    try:
        env = {"SUME_BATCH_STATE": pg_url, "SUME_API_BASE_URL": TARGET.base_url}
        _plan(store)
        store.begin_run({})
        shown = invoke("unlock", "campaign.yaml", env=env)
        assert shown.code == 75
        assert f"pid {os.getpid()} on" in shown.out and "GITHUB_RUN_ID=42" in shown.out, shown.out
        assert "--force ends them now" in shown.err
        forced = invoke("unlock", "campaign.yaml", "--force", env=env)
        assert forced.code == 0 and "ended 1 lease(s)" in forced.out
        with pytest.raises(sqlite3.OperationalError, match="unlocked by force"):
            store.claim("k1")
        assert invoke("unlock", "campaign.yaml", env=env).code == 0
    finally:
        store.close()
        runner.close()


def test_every_runners_reservations_count_against_the_campaigns_cap(pg_url: str) -> None:
    first, one = _runner_store(pg_url, cap=10.0)
    second, two = _runner_store(pg_url, cap=10.0)
    try:
        _plan(first)
        assert first.claim("k0") and second.claim("k1") and second.claim("k2")
        first.reserve("k0", 4.0)
        second.reserve("k1", 4.0)
        with pytest.raises(OverBudgetError, match="12 > 10"):
            second.reserve("k2", 4.0)
        assert second.job("k2").state == "planned"
    finally:
        for closing in (first, second, one, two):
            closing.close()


def test_the_monthly_cap_covers_every_campaign_of_the_workspace(pg_url: str) -> None:
    first, one = _runner_store(pg_url, monthly=10.0, campaign="spring")
    second, two = _runner_store(pg_url, monthly=10.0, campaign="summer")
    try:
        _plan(first)
        _plan(second)
        assert first.claim("k0") and second.claim("k0") and second.claim("k1")
        first.reserve("k0", 4.0)
        first.intend("k0", attempt=1, at=1.0)
        first.created("k0", ["job_1"], reserved=6.0, required=6.0, request_id=None, at=2.0)  # settled at 6
        with pytest.raises(OverBudgetError, match=r"budget\.monthly_credits 10 this month"):
            second.reserve("k0", 5.0)
        second.reserve("k1", 4.0)  # 6 + 4: within
    finally:
        for closing in (first, second, one, two):
            closing.close()


# --- choosing a shared store, and what it must never show ---------------------------------------------


def test_a_manifest_state_with_a_password_is_refused_and_never_repeated(workdir: Path) -> None:
    write(workdir, IMAGES + "state: postgresql://team:s3cret@db.example/campaigns\n")
    result = invoke("validate", "campaign.yaml")
    assert result.code == 2 and "state: holds a password" in result.out + result.err
    assert "s3cret" not in result.out + result.err


def test_an_unreachable_store_is_a_clear_error_that_hides_its_password(workdir: Path) -> None:
    write(workdir, IMAGES)
    url = "postgresql://team:s3cret@127.0.0.1:9/campaigns"
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        result = invoke("run", "campaign.yaml", "--yes", "--state", url, env=env_of(server, ""))
        creates = server.stats()["creates_by_idempotency_key"]
    assert (
        result.code == 2
        and "the PostgreSQL store at postgresql://<redacted>@127.0.0.1:9/campaigns" in result.err
    )
    assert "s3cret" not in result.out + result.err and not creates
    bad = invoke("status", "campaign.yaml", env={"SUME_BATCH_STATE": "/tmp/a-folder"})
    assert bad.code == 2 and "must be a postgresql:// URL; a folder is --state-dir" in bad.err


def test_shards_split_the_jobs_so_each_is_in_exactly_one() -> None:
    keys = [f"{n:032x}" for n in range(400)]
    shards = [{key for key in keys if in_shard(key, (index, 4))} for index in range(4)]
    assert sum(len(shard) for shard in shards) == 400 and set().union(*shards) == set(keys)
    assert all(60 < len(shard) < 140 for shard in shards)
    for text, message in (
        ("4/4", "must be below 4"),
        ("1", "takes i/n"),
        ("a/2", "takes i/n"),
        ("0/0", "takes"),
    ):
        with pytest.raises(Exception, match=message):
            parse_shard(text)


def test_two_shards_on_sqlite_buy_the_campaign_once_between_them(workdir: Path) -> None:
    write(workdir, IMAGES)
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        env = {"SUME_API_KEY": server.api_key, "SUME_API_BASE_URL": server.base_url}
        codes = [invoke("run", "campaign.yaml", "--yes", "--shard", f"{i}/2", env=env).code for i in range(2)]
        creates = server.stats()["creates_by_idempotency_key"]
    assert codes == [0, 0] and len(creates) == 4 and set(creates.values()) == {1}


def test_the_harness_campaign_is_what_the_chaos_tests_run() -> None:
    assert "max_credits: 9" in runners.campaign(2, cap=9) and "n: [0, 1]" in runners.campaign(2)
    assert shutil.which("runuser") or os.geteuid() != 0  # the server runs as postgres when we are root


def test_a_monthly_cap_is_never_left_unkept_on_a_store_that_cannot_see_the_workspace(workdir: Path) -> None:
    write(workdir, IMAGES.replace("jobs:", "budget: {monthly_credits: 100}\njobs:", 1))
    with running_sandbox(SandboxConfig.from_profile("instant", environment="")) as server:  # a "real" API
        env = {"SUME_API_KEY": server.api_key, "SUME_API_BASE_URL": server.base_url}
        refused = invoke("run", "campaign.yaml", "--yes", env=env)
        creates = server.stats()["creates_by_idempotency_key"]
    assert refused.code == 2 and "only a shared store sees" in refused.err and not creates
    assert invoke("run", "campaign.yaml", "--yes", "--sandbox").code == 0  # a rehearsal is free


def test_another_campaigns_jobs_in_the_database_are_never_anyones_to_adopt(pg_url: str) -> None:
    spring, one = _runner_store(pg_url, campaign="spring")
    summer, two = _runner_store(pg_url, campaign="summer")
    try:
        _plan(spring)
        assert spring.claim("k0")
        spring.reserve("k0", 4.0)
        spring.intend("k0", attempt=1, at=1.0)
        spring.created("k0", ["job_spring"], reserved=4.0, required=None, request_id=None, at=2.0)
        assert two.foreign() == {"job_spring"} and one.foreign() == set()
    finally:
        for closing in (spring, summer, one, two):
            closing.close()


def test_a_password_in_the_store_url_reaches_no_output_log_report_or_store(
    workdir: Path, pg_url: str, registry_home: Path
) -> None:
    write(workdir, IMAGES)
    secret = "s3cret-pw-81f2"
    url = pg_url.replace("postgres@", f"postgres:{secret}@")  # the test server trusts: any password works
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        ran = invoke("run", "campaign.yaml", "--yes", "--state", url, env=env_of(server, ""))
        status = invoke("status", "campaign.yaml", "--json", "--state", url, env=env_of(server, ""))
    assert ran.code == 0 and status.code == 0, ran.err + status.err
    assert "downloaded" in status.out
    written = [path for folder in (workdir, registry_home) for path in folder.rglob("*") if path.is_file()]
    assert written and not [path for path in written if secret.encode() in path.read_bytes()]
    assert secret not in ran.out + ran.err + status.out + status.err + repr(pg.Address(url, "shared"))
    with psycopg.connect(pg_url) as db:  # the whole database, as text
        schemas = [schema for (schema,) in db.execute("SELECT schema FROM sume_batch.stores")]
        dump = [str(db.execute(f'SELECT * FROM "{name}".{table}').fetchall())
                for name in schemas for table in ("jobs", "events", "runs", "meta")]  # fmt: skip
        dump.append(str(db.execute("SELECT * FROM sume_batch.runners").fetchall()))
    assert secret not in "".join(dump)


def test_the_accounts_create_rate_limit_one_runner_sees_holds_every_runner(pg_url: str) -> None:
    first, one = _runner_store(pg_url)
    second, two = _runner_store(pg_url, campaign="other")  # another campaign, the same account
    try:
        assert two.rate_wait() == 0.0
        one.rate_seen(0, 1.5)  # a create's answer: RateLimit-Remaining 0, reset in 1.5 s
        assert 1.0 < two.rate_wait() <= 1.5
        one.rate_seen(3, 60)
        assert two.rate_wait() == 0.0
    finally:
        for closing in (first, second, one, two):
            closing.close()


def test_a_store_whose_setup_was_killed_midway_is_made_afresh_never_refused(pg_url: str) -> None:
    address = pg.Address(pg_url, "demo", TARGET)
    RunStore.open(
        pg.Address(pg_url, "other", TARGET), target=TARGET, campaign="other"
    ).close()  # shared setup
    with psycopg.connect(pg_url, autocommit=True) as db:  # killed after CREATE SCHEMA, before its tables
        db.execute(f'CREATE SCHEMA "{address.schema}"')
    store = RunStore.open(address, target=TARGET, campaign="demo")
    try:
        _plan(store)
        assert store.states() == {"k0": "planned", "k1": "planned", "k2": "planned"}
    finally:
        store.close()


def _most_at_once(listed: list[dict[str, str]]) -> int:
    """The most of these jobs made and not yet finished at one moment (queued ones too)."""
    edges = sorted(
        (datetime.fromisoformat(item[field].replace("Z", "+00:00")).timestamp(), step)
        for item in listed
        for field, step in (("created_at", 1), ("updated_at", -1))
    )  # at one instant an end sorts before a start: a slot freed and taken at once holds one job
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def test_a_lost_create_that_cannot_be_told_apart_keeps_its_permit_while_its_job_may_generate(
    tmp_path: Path, pg_url: str
) -> None:
    """Another client's image, made just before our first create, falls in that create's time
    window (nothing answered yet measures the clocks' skew), and the create's answer is lost: two
    unknown jobs fit where one was made, so it stays uncertain. Its permit outlasts both jobs, its
    runner's life too (SIGKILLed then), or the account's other jobs take its place while it still
    generates; the next runner takes it over and pays for nothing twice."""
    write(tmp_path, runners.campaign(4))
    config = SandboxConfig.from_profile(
        "instant", idempotency="ignore", capacity=2, durations={"image_generation": 2.5}
    )
    with (
        running_sandbox(config) as server,
        httpx.Client(
            base_url=server.base_url, headers={"Authorization": f"Bearer {server.api_key}"}
        ) as client,
    ):
        theirs = client.post("/images/generations", json={"prompt": "theirs"}).json()
        server.add_fault("drop_after_commit", method="POST", path="/api/v1/images")
        first = runners.start(tmp_path, server, pg_url, lease=1.0)
        deadline = time.monotonic() + 30
        while not any(
            state == "uncertain" and candidates for _, state, _, candidates, _, _ in _stored(pg_url)
        ):
            assert time.monotonic() < deadline and first.poll() is None, _stored(pg_url)
            time.sleep(0.05)
        time.sleep(0.5)  # long enough for a runner that let the permit go to create two more
        first.send_signal(signal.SIGKILL)
        first.wait()
        second = runners.start(tmp_path, server, pg_url, lease=1.0, capture=True)
        try:
            _, err = second.communicate(timeout=60)  # it takes about 5 s
        except subprocess.TimeoutExpired:
            second.kill()
            pytest.fail("the next runner waited for the dead runner's permits instead of taking them over")
        listed = client.get("/jobs", params={"limit": 100}).json()["data"]
        creates = server.stats()["creates_by_idempotency_key"]
    ours = [item for item in listed if item["id"] != (theirs.get("id") or theirs.get("job_id"))]
    assert second.returncode == 0, err.decode()
    assert len(ours) == 4 and len(creates) == 5 and set(creates.values()) == {1}, creates
    assert {state for _, state, _, _, _, _ in runners.stored(pg_url)} == {"downloaded"}
    assert _most_at_once(ours) <= 2, ours


def _stored(url: str) -> list[tuple[str, str, list[str], list[str], str | None, float]]:
    try:
        return runners.stored(url)
    except (psycopg.Error, TypeError):  # not made yet
        return []


def test_a_detached_run_leaves_a_dead_runners_generating_jobs_for_later_and_ends(
    tmp_path: Path, pg_url: str
) -> None:
    """`--detach` waits for no job: a dead runner's submitted jobs are not its to take over (it
    looped, taking them up and leaving them, until interrupted)."""
    write(tmp_path, runners.campaign(3))
    config = SandboxConfig.from_profile("instant", idempotency="ignore", durations={"image_generation": 30})
    with running_sandbox(config) as server:
        first = runners.start(tmp_path, server, pg_url, lease=1.0)
        deadline = time.monotonic() + 30
        while {state for _, state, _, _, _, _ in _stored(pg_url)} != {"submitted"}:
            assert time.monotonic() < deadline and first.poll() is None, _stored(pg_url)
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait()
        time.sleep(1.2)  # its lease ends
        began = time.monotonic()
        second = runners.start(tmp_path, server, pg_url, lease=1.0, capture=True, extra=("--detach",))
        try:
            _, err = second.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            second.kill()
            pytest.fail("a detached run did not end")
        creates = server.stats()["creates_by_idempotency_key"]
    assert second.returncode == 0, err.decode()
    assert time.monotonic() - began < 10
    assert len(creates) == 3 and set(creates.values()) == {1}


def test_with_idempotency_honoured_a_lost_create_is_sent_again_with_its_key_never_adopted_by_time(
    tmp_path: Path, pg_url: str
) -> None:
    """Creates go out together where the API honours Idempotency-Key: a lost one's time window holds
    others', whose answers may not be recorded yet. Adopted by time, one job was two jobs' (and the
    run waited for it until the timeout): it is sent again with its own key instead."""
    write(tmp_path, runners.campaign(40))
    config = SandboxConfig.from_profile(
        "instant",
        idempotency="honour",
        faults={"drop_after_commit": 0.3},
        durations={"image_generation": 0.3},
    )
    with running_sandbox(config) as server:
        process = runners.start(
            tmp_path, server, pg_url, lease=2.0, capture=True, extra=("--idempotency-honoured",)
        )
        try:
            _, err = process.communicate(timeout=60)  # it takes about 5 s
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail("the run waited for a job another had adopted")
        stats = server.stats()
    rows = runners.stored(pg_url)
    ids = [one for _, _, sume_ids, _, _, _ in rows for one in sume_ids]
    assert process.returncode == 0, (err.decode(), [row for row in rows if row[1] != "downloaded"])
    assert stats["faults"]["drop_after_commit"] >= 5  # answers were lost
    assert {state for _, state, _, _, _, _ in rows} == {"downloaded"}
    assert len(ids) == len(set(ids)) == 40 and set(stats["creates_by_idempotency_key"].values()) == {1}


def test_with_idempotency_honoured_a_create_lost_again_and_again_is_sent_again_until_answered(
    tmp_path: Path, pg_url: str
) -> None:
    """A lost create's resends with its own key cannot cost: five answers lost in a row (more than a
    fixed count of resends allowed) still end with the job made once, adopted from its answer."""
    write(tmp_path, runners.campaign(1))
    with running_sandbox(SandboxConfig.from_profile("instant", idempotency="honour")) as server:
        server.add_fault("drop_after_commit", path="/api/v1/images/generations", method="POST", times=5)
        process = runners.start(
            tmp_path, server, pg_url, lease=2.0, capture=True, extra=("--idempotency-honoured",)
        )
        try:
            _, err = process.communicate(timeout=60)  # the resends wait 0.1 + 0.2 + … + 1.6 s
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail("the run did not end")
        stats = server.stats()
    rows = runners.stored(pg_url)
    assert process.returncode == 0, (err.decode(), rows)
    assert stats["faults"]["drop_after_commit"] == 5
    assert [(state, len(ids)) for _, state, ids, _, _, _ in rows] == [("downloaded", 1)]
    assert list(stats["creates_by_idempotency_key"].values()) == [1]
