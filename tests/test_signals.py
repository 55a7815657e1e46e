"""Signals: the first SIGINT/SIGTERM stops new creates, records everything and exits 130/143."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import read_report, write

from sume_batch.sandbox import SandboxConfig, running_sandbox

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


def start_run(folder: Path, base_url: str, key: str) -> subprocess.Popen[str]:
    env = {**os.environ, "SUME_API_KEY": key, "SUME_API_BASE_URL": base_url}
    command = [sys.executable, "-m", "sume_batch", "run", "campaign.yaml", "--yes"]
    return subprocess.Popen(
        command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for_creates(server: object, count: int) -> None:
    deadline = time.monotonic() + 20
    while len(server.stats()["job_ids"]) < count:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "the run never created a job"
        time.sleep(0.02)


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def states(folder: Path) -> dict[str, int]:
    """Jobs per state; none while the store is still being made (its file exists before its tables)."""
    try:
        with sqlite3.connect(folder / ".sume-batch/slow.rehearsal.sqlite") as db:
            return dict(db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
    except sqlite3.OperationalError:
        return {}


@pytest.mark.parametrize(("number", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_first_signal_stops_new_creates_and_a_rerun_finishes(tmp_path: Path, number: int, code: int) -> None:
    write(tmp_path, CAMPAIGN)
    config = SandboxConfig.from_profile("instant", durations={"image_generation": 30.0})
    with running_sandbox(config) as server:
        process = start_run(tmp_path, server.base_url, server.api_key)
        wait_for_creates(server, 2)
        process.send_signal(number)
        out, err = process.communicate(timeout=20)
        assert process.returncode == code, err
        assert f"Resume with: SUME_API_BASE_URL={server.base_url} sume-batch run campaign.yaml\n" in out
        created = len(server.stats()["job_ids"])
        recorded = states(tmp_path)
        assert "submitting" not in recorded
        assert recorded.get("submitted", 0) == created  # every job id the API issued is in the store
        partial = read_report(tmp_path, "slow")  # the reports are written after an interrupt, marked
        assert partial["run"]["partial"] and partial["run"]["stopped"] == f"interrupted by {signal.Signals(number).name}"
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
    config = SandboxConfig.from_profile("instant", durations={"image_generation": 30.0})
    with running_sandbox(config) as server:
        process = start_run(tmp_path, server.base_url, server.api_key)
        wait_for_creates(server, 2)
        process.send_signal(signal.SIGINT)
        time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=20)
        assert process.returncode == 130, err
        assert "Traceback" not in err
        issued = set(server.stats()["job_ids"])
    with sqlite3.connect(tmp_path / ".sume-batch/slow.rehearsal.sqlite") as db:
        recorded = {
            job_id for (ids,) in db.execute("SELECT sume_ids FROM jobs") for job_id in json.loads(ids)
        }
    assert issued <= recorded


def test_a_second_run_on_the_same_store_is_refused_at_once_naming_the_holder(tmp_path: Path) -> None:
    write(tmp_path, CAMPAIGN)
    config = SandboxConfig.from_profile("instant", durations={"image_generation": 30.0})
    with running_sandbox(config) as server:
        first = start_run(tmp_path, server.base_url, server.api_key)
        wait_for_creates(server, 1)
        started = time.monotonic()
        second = start_run(tmp_path, server.base_url, server.api_key)
        _, err = second.communicate(timeout=10)
        refused_after = time.monotonic() - started
        first.kill()
        first.communicate()
    assert second.returncode == 3
    assert refused_after < 1.0 + 0.5  # the interpreter's start-up is most of it
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
        wait_until(lambda: states(tmp_path).get("submitted", 0) == 2)  # killed after the ids are stored
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
    # Prices stated on create: no balance read confirms the first image's price, so /credits is read twice.
    config = SandboxConfig.from_profile("instant", faults={"slow_seconds": 5.0}, stated_prices=True)
    with running_sandbox(config) as server:
        server.add_fault("slow", path="/api/v1/credits", method="GET", times=2)  # the preflight and the last
        process = start_run(tmp_path, server.base_url, server.api_key)
        wait_until(lambda: (tmp_path / ".sume-batch/slow.rehearsal.sqlite").exists() and states(tmp_path) == {"downloaded": 6})
        time.sleep(0.2)  # the run is now reading the balance for its report
        process.send_signal(signal.SIGINT)
        signalled = time.monotonic()
        out, err = process.communicate(timeout=20)
        assert process.returncode == 130, err
        assert time.monotonic() - signalled < 3  # it stopped reading the balance rather than waiting it out
    report = read_report(tmp_path, "slow")
    assert (report["ok"], report["run"]["partial"], report["credits"]["balance_after"]) == (True, False, None)
    assert "Done in" in out and "Traceback" not in err
