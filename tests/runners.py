"""Several `sume-batch run` processes on one campaign and one PostgreSQL store, killed at random:
the harness of tests/test_shared.py and tests/perf/bench_runners.py."""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from sume_batch.sandbox import SandboxConfig
from sume_batch.states import TO_SUBMIT

TO_BUY = TO_SUBMIT | {"skipped"}


def campaign(jobs: int, *, cap: float | None = None) -> str:
    """`jobs` images; with a `cap`, priced at half what the sandbox charges (2 where it charges 4),
    so the plan passes the cap and the runners must hold it while the API's prices come in."""
    budget = f"{{max_jobs: 1000, max_credits: {cap:g}}}" if cap is not None else "{max_jobs: 1000}"
    pricing = "pricing: {image: {per_image: 2}}\n" if cap is not None else ""
    numbers = ", ".join(str(n) for n in range(jobs))
    return f"""\
version: 1
name: chaos
{pricing}budget: {budget}
execution:
  concurrency: 6
  poll_interval: {{image: 0.1}}
jobs:
  - id: "img-{{{{ n }}}}"
    type: image
    prompt: "Bottle {{{{ n }}}} on a counter"
    matrix: {{n: [{numbers}]}}
"""


def chaos(seed: int, *, capacity: int, idempotency: str = "ignore") -> SandboxConfig:
    return SandboxConfig.from_profile(
        "chaos", seed=seed, idempotency=idempotency, capacity=capacity,
        rate_limits={"reads_per_minute": 100_000, "creates_per_minute": 100_000},
    )  # fmt: skip


def start(
    folder: Path, server: Any, url: str, *, lease: float, capture: bool = False, extra: tuple[str, ...] = ()
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SUME_API_KEY": server.api_key, "SUME_API_BASE_URL": server.base_url}
    command = [sys.executable, "-m", "sume_batch", "run", "campaign.yaml", "--yes", "--quiet", "--state", url,
               "--lease", str(lease), "--lost-create-grace", "1", *extra]  # fmt: skip
    stderr = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=stderr)


@dataclass
class Outcome:
    kills: int = 0
    seconds: float = 0.0
    finishing_codes: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def kill_and_finish(folder: Path, server: Any, url: str, *, runners: int, kills: int, lease: float,
                    seed: int, extra: tuple[str, ...] = ()) -> Outcome:  # fmt: skip
    """`runners` processes at once, each killed at a random moment and started again, until `kills`
    kills in all; then every runner runs to its end (and again while one stops early on an outage)."""
    rng, outcome, began = random.Random(seed), Outcome(), time.perf_counter()
    going = [start(folder, server, url, lease=lease, extra=extra) for _ in range(runners)]
    deadlines = [time.monotonic() + rng.uniform(0.3, 2.0) for _ in going]
    while outcome.kills < kills:
        time.sleep(0.05)
        for slot, process in enumerate(going):
            if time.monotonic() >= deadlines[slot] and outcome.kills < kills:
                process.send_signal(signal.SIGKILL)
                process.wait()
                outcome.kills += 1
                going[slot] = start(folder, server, url, lease=lease, extra=extra)
                deadlines[slot] = time.monotonic() + rng.uniform(0.3, 2.0)
            elif process.poll() is not None:  # finished before its kill: start another
                going[slot] = start(folder, server, url, lease=lease, extra=extra)
    for process in going:
        process.send_signal(signal.SIGKILL)
        process.wait()
    outcome.kills += len(going)
    for _ in range(3):
        finishing = [
            start(folder, server, url, lease=lease, capture=True, extra=extra) for _ in range(runners)
        ]
        codes = []
        for process in finishing:
            _, err = process.communicate(timeout=240)
            codes.append(process.returncode)
            if b"Traceback" in err or process.returncode not in (0, 1, 3):
                outcome.errors.append(err.decode())
        outcome.finishing_codes = codes
        if all(code == 0 for code in codes):
            break
    outcome.seconds = time.perf_counter() - began
    return outcome


def stored(url: str) -> list[tuple[str, str, list[str], list[str], str | None, float]]:
    """Every job of the campaign's one store in that database: id, state, ids, candidates, reason, reserved."""
    with psycopg.connect(url) as db:
        (schema,) = db.execute("SELECT schema FROM sume_batch.stores WHERE campaign = 'chaos'").fetchone()
        rows = db.execute(
            f'SELECT id, state, sume_ids, candidates, error_message, reserved FROM "{schema}".jobs'
        ).fetchall()
    return [(i, s, json.loads(ids), json.loads(c), why, float(r)) for i, s, ids, c, why, r in rows]


def check(url: str, stats: dict[str, Any], *, jobs: int, capacity: int, cap: float | None) -> dict[str, Any]:
    """What must hold, asserted, and the figures."""
    per_key = collections.Counter(stats["creates_by_idempotency_key"].values())
    assert set(per_key) == {1}, f"duplicate creates: {per_key}"
    rows = stored(url)
    known = {one for _, _, ids, candidates, _, _ in rows for one in ids + candidates}
    missing = set(stats["job_ids"]) - known
    assert not missing, f"job ids the sandbox issued but the store lost: {sorted(missing)}"
    # Each finished, or says why not; under a cap, a later run is refused (the rest would cross it)
    # and leaves what it did not buy as it was: skipped, planned, or reserved by a runner killed then.
    for job_id, state, _, _, reason, _ in rows:
        assert state == "downloaded" or reason or (cap is not None and state in TO_BUY), (
            job_id, state,
        )  # fmt: skip
    assert len(rows) == jobs
    assert stats["peak_unfinished"] <= capacity, stats["peak_unfinished"]
    spent = stats["credits"]["spent"] + stats["credits"]["reserved"]
    if cap is not None:
        assert spent <= cap + 1e-9, (spent, cap)
    return {
        "creates_per_key": dict(per_key), "ids_issued": len(stats["job_ids"]), "ids_lost": len(missing),
        "peak_unfinished": stats["peak_unfinished"], "capacity": capacity, "credits_spent": spent, "cap": cap,
        "states": dict(collections.Counter(state for _, state, *_ in rows)),
    }  # fmt: skip


def owners(url: str) -> set[int]:
    """The runners that hold some job of the campaign's store now."""
    with psycopg.connect(url) as db:
        found = db.execute("SELECT to_regclass('sume_batch.stores')").fetchone()
        rows = db.execute("SELECT schema FROM sume_batch.stores").fetchall() if found and found[0] else []
        if not rows:
            return set()
        query = f'SELECT DISTINCT owner FROM "{rows[0][0]}".jobs WHERE owner IS NOT NULL'
        return {owner for (owner,) in db.execute(query).fetchall()}


def _wait_for(probe: Any, *, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := probe():
            return found
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s")


def takeover(folder: Path, server: Any, url: str, *, lease: float) -> tuple[float, int, str]:
    """Start a runner, SIGKILL it once it holds jobs, start another at once: the seconds from the
    kill until the second holds jobs the first held, and the second's exit code and stderr."""
    first = start(folder, server, url, lease=lease)
    held = _wait_for(lambda: owners(url), timeout=30)
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed = time.monotonic()
    second = start(folder, server, url, lease=lease, capture=True)
    _wait_for(lambda: owners(url) - held, timeout=30)
    took = time.monotonic() - killed
    _, err = second.communicate(timeout=120)
    return took, second.returncode, err.decode()
