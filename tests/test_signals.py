"""Signals: the first SIGINT/SIGTERM stops new creates, records everything and exits 130/143."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from helpers import read_report, write

from sume_batch.sandbox import SandboxConfig, running_sandbox
from sume_batch.sandbox.server import RunningSandbox

CAMPAIGN = """\
version: 1
name: slow
execution:
  concurrency: 2
  poll_interval: {image: 0.05}
jobs:
  - id: "img-{{ n }}"
    type: image
    prompt: "Bottle {{ n }}"
    matrix: {n: [1, 2, 3, 4, 5, 6]}
"""
STORE = ".sume-batch/slow.rehearsal.sqlite"
STOPPING = "Stopping: no new jobs will be created"


def start_run(folder: Path, base_url: str, key: str) -> subprocess.Popen[str]:
    env = {**os.environ, "SUME_API_KEY": key, "SUME_API_BASE_URL": base_url}
    command = [sys.executable, "-m", "sume_batch", "run", "campaign.yaml", "--yes"]
    return subprocess.Popen(
        command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll `condition` until it holds; the deadline only bounds a hang, nothing is timed by it."""
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.02)


def wait_for_creates(server: RunningSandbox, count: int) -> None:
    wait_until(lambda: len(server.stats()["job_ids"]) >= count, f"{count} jobs created")


def queued_faults(server: RunningSandbox) -> list[dict[str, object]]:
    """The one-shot faults the sandbox has not used yet: one is used when its request arrives."""
    queued: list[dict[str, object]] = httpx.get(f"{server.root_url}/_sandbox/faults").json()["queued"]
    return queued


def read_until(process: subprocess.Popen[str], text: str) -> str:
    """What the child has printed on stdout up to `text` (click flushes every line it echoes)."""
    assert process.stdout is not None
    seen, deadline = b"", time.monotonic() + 30
    while text.encode() not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"the run never printed {text!r}; it printed {seen!r}"
        if select.select([process.stdout], [], [], left)[0]:
            chunk = os.read(process.stdout.fileno(), 4096)  # the raw pipe: `communicate` reads the rest
            assert chunk, f"the run exited before printing {text!r}; it printed {seen!r}"
            seen += chunk
    return seen.decode()


def states(folder: Path) -> dict[str, int]:
    """Jobs per state; none while the store is still being made. Opened read-only: a test that
    looks before the run has made its store must not make an empty one in its place."""
    uri = f"file:{folder / STORE}?mode=ro"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            return dict(db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
    except sqlite3.Error:  # no file yet, or its tables not yet made
        return {}


@pytest.mark.parametrize(("number", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_first_signal_stops_new_creates_and_a_rerun_finishes(tmp_path: Path, number: int, code: int) -> None:
    write(tmp_path, CAMPAIGN)
    config = SandboxConfig.from_profile("instant", durations={"image_generation": 30.0})
    with running_sandbox(config) as server:
        process = start_run(tmp_path, server.base_url, server.api_key)
        wait_for_creates(server, 2)
        process.send_signal(number)
        out, err = process.communicate(timeout=30)
        assert process.returncode == code, err
        assert f"Resume with: SUME_API_BASE_URL={server.base_url} sume-batch run campaign.yaml\n" in out
        created = len(server.stats()["job_ids"])
        recorded = states(tmp_path)
        assert "submitting" not in recorded
        assert recorded.get("submitted", 0) == created  # every job id the API issued is in the store
        partial = read_report(tmp_path, "slow")  # the reports are written after an interrupt, marked
        assert (
            partial["run"]["partial"]
            and partial["run"]["stopped"] == f"interrupted by {signal.Signals(number).name}"
        )
        assert partial["run"]["exit_code"] == code and not partial["ok"]
        assert 'id="partial"' in (tmp_path / "reports/slow/latest/report.html").read_text()
        server.configure(durations={"image_generation": 0.0})
        server.advance(60)  # the jobs created before the signal finish too
        again = start_run(tmp_path, server.base_url, server.api_key)
        out, err = again.communicate(timeout=30)
        assert again.returncode == 0, out + err
        assert sorted(server.stats()["creates_by_idempotency_key"].values()) == [1] * 6
    assert states(tmp_path) == {"downloaded": 6}
    final = read_report(tmp_path, "slow")
    assert (final["run"]["number"], final["run"]["partial"], final["ok"]) == (2, False, True)
    assert (tmp_path / "reports/slow/latest").readlink().name == final["run"]["id"]


def test_a_second_sigint_forces_and_the_store_stays_consistent(tmp_path: Path) -> None:
    write(tmp_path, CAMPAIGN)
    # The first create's answer is held for a minute: after a first Ctrl-C the run would wait for it
    # (its job id must be kept), so only a second one can end the run while it is in flight.
    config = SandboxConfig.from_profile("instant", faults={"slow_seconds": 60.0})
    with running_sandbox(config) as server:
        server.add_fault("slow", path="/api/v1/", method="POST")
        process = start_run(tmp_path, server.base_url, server.api_key)
        wait_until(lambda: not queued_faults(server), "the first create reached the sandbox")
        process.send_signal(signal.SIGINT)
        printed = read_until(process, STOPPING)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
        issued = server.stats()["job_ids"]
    assert (process.returncode, err) == (130, ""), printed + out + err
    assert STOPPING in printed and "Resume with:" in out
    # The create was cut off unanswered: its job stays in flight in the store, so the next run takes
    # it as maybe made (uncertain) and never sends it again blind; the other jobs were never sent.
    assert (issued, states(tmp_path)) == ([], {"submitting": 1, "planned": 5})
    report = read_report(tmp_path, "slow")
    assert (report["run"]["partial"], report["run"]["exit_code"]) == (True, 130)


def test_a_second_sigint_once_the_jobs_are_done_still_exits_130(tmp_path: Path) -> None:
    write(tmp_path, CAMPAIGN)
    config = SandboxConfig.from_profile("instant", durations={"image_generation": 30.0})
    with running_sandbox(config) as server:
        process = start_run(tmp_path, server.base_url, server.api_key)
        wait_for_creates(server, 2)
        process.send_signal(signal.SIGINT)
        printed = read_until(process, STOPPING)
        process.send_signal(signal.SIGINT)  # wherever it lands: the reports, the shutdown, or after
        out, err = process.communicate(timeout=30)
        issued = set(server.stats()["job_ids"])
    assert process.returncode == 130, printed + out + err  # never killed by the signal itself (-2)
    assert "Traceback" not in err
    with contextlib.closing(sqlite3.connect(tmp_path / STORE)) as db:
        recorded = {
            job_id for (ids,) in db.execute("SELECT sume_ids FROM jobs") for job_id in json.loads(ids)
        }
    assert issued == recorded


def test_a_second_run_on_the_same_store_is_refused_at_once_naming_the_holder(tmp_path: Path) -> None:
    write(tmp_path, CAMPAIGN)
    config = SandboxConfig.from_profile("instant", durations={"image_generation": 30.0})
    with running_sandbox(config) as server:
        first = start_run(tmp_path, server.base_url, server.api_key)
        wait_for_creates(server, 1)
        second = start_run(tmp_path, server.base_url, server.api_key)
        _, err = second.communicate(timeout=30)
        holding = first.poll() is None  # its jobs take 30 s of sandbox time: it runs until killed
        first.kill()
        first.communicate()
    assert (second.returncode, holding) == (75, True)  # refused while the lock was held, not after
    assert err == (
        f"error: another sume-batch run is using .sume-batch/slow.rehearsal.sqlite (pid {first.pid} on {os.uname().nodename});"
        " wait for it or stop it\n"
    )


def test_a_lock_left_by_a_killed_run_never_blocks(tmp_path: Path) -> None:
    write(tmp_path, CAMPAIGN)
    config = SandboxConfig.from_profile("instant", durations={"image_generation": 30.0})
    with running_sandbox(config) as server:
        first = start_run(tmp_path, server.base_url, server.api_key)
        wait_for_creates(server, 2)
        wait_until(lambda: states(tmp_path).get("submitted", 0) == 2, "both ids stored")  # then killed
        first.send_signal(signal.SIGKILL)
        first.communicate()
        server.configure(durations={"image_generation": 0.0})
        server.advance(60)
        again = start_run(tmp_path, server.base_url, server.api_key)
        out, err = again.communicate(timeout=30)
        creates = server.stats()["creates_by_idempotency_key"]
    assert again.returncode == 0, out + err
    assert sorted(creates.values()) == [1] * 6  # the killed run's jobs were resumed, not re-created


def test_a_signal_while_the_run_finishes_still_leaves_its_reports(tmp_path: Path) -> None:
    write(tmp_path, CAMPAIGN)
    # Prices stated on create: no balance read confirms the first image's price, so /credits is read
    # twice, before the first create and for the report. The second is answered after 10 s, well
    # within the 15 s the run gives it: a run that waited for it would report the balance.
    config = SandboxConfig.from_profile(
        "instant", durations={"image_generation": 30.0}, faults={"slow_seconds": 10.0}, stated_prices=True
    )
    with running_sandbox(config) as server:
        process = start_run(tmp_path, server.base_url, server.api_key)
        wait_for_creates(server, 2)  # the first balance read is behind it
        server.add_fault("slow", path="/api/v1/credits", method="GET")
        server.configure(durations={"image_generation": 0.0})
        server.advance(60)
        wait_until(lambda: not queued_faults(server), "the run asked for the balance for its report")
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert states(tmp_path) == {"downloaded": 6}
    report = read_report(tmp_path, "slow")
    assert (report["ok"], report["run"]["partial"], report["credits"]["balance_after"]) == (True, False, None)
    assert "Done in" in out and "Traceback" not in err
