"""Batched store writes keep every money guarantee: a run SIGKILLed right after a create's answer
came, with the moves of other jobs still queued (not yet written), pays for no job twice, loses no
job id, and the next run finishes every job.

Creates are slowed down (each answer comes after 0.3 s) while generation, polling and downloads are
instant: while a create is in flight the jobs before it complete and are downloaded, and those moves
wait in the queue for the next durable write (the create's ids). The kill comes as the sandbox
answers a create: before the client has recorded its ids (the create is then uncertain, and found
by reconciliation) or just after. Files saved on disk whose `downloaded` the store does not have
show that queued moves were lost, as they may be: the next run downloads them again, for free.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import write

from sume_batch.sandbox import SandboxConfig, running_sandbox

JOBS = 24
CAMPAIGN = f"""\
version: 1
name: kills
execution:
  concurrency: 8
  poll_interval: {{image: 0.05}}
output: {{downloads: out}}
jobs:
  - id: "img-{{{{ n }}}}"
    type: image
    prompt: "Bottle {{{{ n }}}} on a counter"
    matrix: {{n: [{", ".join(map(str, range(JOBS)))}]}}
"""
STORE = ".sume-batch/kills.rehearsal.sqlite"


def start(folder: Path, server: Any, *flags: str, capture: bool = False) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SUME_API_KEY": server.api_key, "SUME_API_BASE_URL": server.base_url}
    command = [sys.executable, "-m", "sume_batch", "run", "campaign.yaml", "--yes", "--quiet",
               "--lost-create-grace", "1", *flags]  # fmt: skip
    output = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen(command, cwd=folder, env=env, stdout=output, stderr=output)


def answered(folder: Path, seen: set[Path]) -> int:
    """Creates this run has had answered, by its run log (httpx logs a request as its answer comes,
    before the client has read the body, let alone recorded its ids); 0 until its log is there."""
    logs = (
        set((folder / "reports/kills").glob("*/run.log")) - seen if (folder / "reports").exists() else set()
    )
    if not logs:
        return 0
    (log,) = logs
    return log.read_text().count("POST http") if log.exists() else 0


def recorded(folder: Path) -> tuple[set[str], set[str], dict[str, str]]:
    """The store as a kill left it: job ids, output files recorded, job id → state."""
    if not (folder / STORE).exists():
        return set(), set(), {}
    with sqlite3.connect(f"file:{folder / STORE}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT id, state, sume_ids, candidates FROM jobs").fetchall()
        files = {path for (path,) in db.execute("SELECT path FROM files")}
    ids = {one for _, _, made, maybe in rows for one in json.loads(made) + json.loads(maybe)}
    return ids, files, {job_id: state for job_id, state, _, _ in rows}


def kill_after_answers(
    folder: Path, server: Any, flags: tuple[str, ...], *, kills: range, until: tuple[str, ...] = ()
) -> dict[str, int]:
    """Kill the runner as a create's answer comes (at once, or a few ms later), after its first
    create or two, at least `kills.start` times and at most `kills.stop`, until a kill has left each
    of `until` unrecorded: how many kills left queued moves unrecorded, and answers (job ids)."""
    rng, lost = random.Random(13), {"queued moves": 0, "answers": 0}
    for kill in kills:
        if kill >= kills.start and all(lost[what] for what in until):
            break
        logs = set((folder / "reports/kills").glob("*/run.log")) if (folder / "reports").exists() else set()
        process = start(folder, server, *flags)
        deadline = time.monotonic() + 30
        while answered(folder, logs) < 2 + kill % 2:
            assert process.poll() is None and time.monotonic() < deadline, "the run ended before the kill"
            time.sleep(0.0002)
        time.sleep(rng.uniform(0.002, 0.02) if kill % 3 == 2 else 0.0)
        process.send_signal(signal.SIGKILL)
        process.wait()
        ids, files, _ = recorded(folder)
        saved = {path.name for path in (folder / "out").glob("*.png")} if (folder / "out").exists() else set()
        lost["queued moves"] += bool(saved - files)  # downloads done, their record still queued
        lost["answers"] += bool(set(server.stats()["job_ids"]) - ids)  # ids answered, not yet recorded
    return lost


@pytest.mark.slow
@pytest.mark.parametrize(
    ("idempotency", "flags", "until"),
    [("ignore", (), ("queued moves", "answers")), ("honour", ("--idempotency-honoured",), ("answers",))],
    ids=["ignore", "honour"],
)
def test_a_kill_right_after_a_create_answer_with_moves_queued_pays_once_and_loses_no_id(
    tmp_path: Path, idempotency: str, flags: tuple[str, ...], until: tuple[str, ...]
) -> None:
    """With keys not honoured creates go one at a time, so a kill as one is answered finds other
    jobs' moves queued; with keys honoured creates overlap, and a kill finds answers unrecorded."""
    write(tmp_path, CAMPAIGN)
    config = SandboxConfig.from_profile("instant", capacity=16, idempotency=idempotency,
                                        faults={"slow_seconds": 0.3})  # fmt: skip
    with running_sandbox(config) as server:
        server.add_fault("slow", path="/api/v1/", method="POST", times=100_000)  # every create
        lost = kill_after_answers(tmp_path, server, flags, kills=range(4, 16), until=until)
        final = start(tmp_path, server, *flags, capture=True)
        out, err = final.communicate(timeout=120)
        stats = server.stats()
    assert final.returncode == 0, (out + err).decode()
    # Each job was created once: one create per request body, and one job id per job.
    assert sorted(stats["creates_by_body_hash"].values()) == [1] * JOBS
    assert all(n == 1 for n in stats["creates_by_idempotency_key"].values())
    assert len(stats["job_ids"]) == JOBS
    ids, files, states = recorded(tmp_path)
    assert set(stats["job_ids"]) <= ids  # no id the sandbox issued is missing from the store
    assert set(states.values()) == {"downloaded"} and len(states) == JOBS
    assert files == {f"img-{n}.png" for n in range(JOBS)}
    # The kills did land where they were meant to (and what they lost was done again).
    assert all(lost[what] for what in until), lost


def test_a_run_killed_while_it_resends_a_lost_create_sends_the_same_key_again_never_a_new_one(
    tmp_path: Path,
) -> None:
    """With --idempotency-honoured a lost create is sent again under its own key until answered.
    Killed at any moment of that — as a resend's answer is lost, or in the wait before the next —
    the next run sends that same key again: a new key would buy a second job where the first create
    made one, and leave the first job's id nowhere."""
    write(tmp_path, CAMPAIGN.replace(", ".join(map(str, range(JOBS))), "0"))
    rng = random.Random(7)
    with running_sandbox(SandboxConfig.from_profile("instant", idempotency="honour")) as server:
        server.add_fault("drop_after_commit", path="/api/v1/images/generations", method="POST", times=10_000)
        for kill in range(4):
            dropped = server.stats()["faults"].get("drop_after_commit", 0)
            process = start(tmp_path, server, "--idempotency-honoured")
            deadline = time.monotonic() + 30
            while server.stats()["faults"].get("drop_after_commit", 0) < dropped + 1 + kill % 3:
                assert process.poll() is None and time.monotonic() < deadline, "the run ended before the kill"
                time.sleep(0.001)
            time.sleep(0.0 if kill % 2 == 0 else rng.uniform(0.01, 0.3))
            process.send_signal(signal.SIGKILL)
            process.wait()
        httpx.delete(f"{server.root_url}/_sandbox/faults").raise_for_status()
        final = start(tmp_path, server, "--idempotency-honoured", capture=True)
        out, err = final.communicate(timeout=60)
        stats = server.stats()
    assert final.returncode == 0, (out + err).decode()
    assert stats["faults"]["drop_after_commit"] >= 1 + 2 + 3 + 1  # each run re-sent and lost before its kill
    assert list(stats["creates_by_idempotency_key"].values()) == [1]  # one key, ever: one job
    ids, _, states = recorded(tmp_path)
    assert set(stats["job_ids"]) == ids and len(ids) == 1
    assert states == {"img-0": "downloaded"}
