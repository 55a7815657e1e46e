"""Never pay twice, never lose a job: a chaos campaign killed with SIGKILL again and again.

The runner is killed at random moments (five times), then run to the end. The sandbox's own
counters must show one create per job key, and every job id it issued must be in the store.
tests/perf/bench_kills.py runs the same at 200 jobs (120 here) with 50 kills.
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

import pytest
from helpers import write

from sume_batch.sandbox import SandboxConfig, running_sandbox


def campaign(jobs: int) -> str:
    """`jobs` images of the chaos campaign."""
    return """\
version: 1
name: chaos
budget: {max_jobs: 1000}
execution:
  concurrency: 12
  poll_interval: {image: 0.1}
jobs:
  - id: "img-{{ n }}"
    type: image
    prompt: "Bottle {{ n }} on a counter"
    matrix: {n: [NUMBERS]}
""".replace("NUMBERS", ", ".join(str(n) for n in range(jobs)))


CAMPAIGN = campaign(200)  # tests/perf/bench_kills.py's; the suite runs SUITE_JOBS of it
SUITE_JOBS = 120


def chaos(seed: int, idempotency: str) -> SandboxConfig:
    return SandboxConfig.from_profile(
        "chaos", seed=seed, idempotency=idempotency, capacity=16,
        rate_limits={"reads_per_minute": 100_000, "creates_per_minute": 100_000},
    )  # fmt: skip


def start(
    folder: Path, server: Any, *, capture: bool, flags: tuple[str, ...] = ()
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SUME_API_KEY": server.api_key, "SUME_API_BASE_URL": server.base_url}
    # The sandbox makes a job the moment it takes a create, so a lost create that made nothing is
    # proven so 1 s after its answer was lost (the product waits 30 s: a real API may be slower).
    command = [
        sys.executable,
        "-m",
        "sume_batch",
        "run",
        "campaign.yaml",
        "--yes",
        "--quiet",
        "--lost-create-grace",
        "1",
        *flags,
    ]
    stderr = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=stderr)


def kill_and_finish(
    folder: Path, server: Any, *, kills: int, seed: int, flags: tuple[str, ...] = ()
) -> list[int]:
    """Kill the runner `kills` times at random moments, then let runs finish; return exit codes."""
    rng, codes = random.Random(seed), []
    for _ in range(kills):
        process = start(folder, server, capture=False, flags=flags)
        time.sleep(rng.uniform(0.4, 1.5))
        process.send_signal(signal.SIGKILL)
        process.wait()
    for _ in range(3):  # a finishing run may stop early on an outage of the chaos profile; go again
        process = start(folder, server, capture=True, flags=flags)
        _, err = process.communicate(timeout=120)
        codes.append(process.returncode)
        assert b"Traceback" not in err, err.decode()
        if process.returncode == 0:
            break
    return codes


def check(folder: Path, stats: dict[str, Any], jobs: int | None = 200) -> None:
    assert stats["creates_by_idempotency_key"] and all(
        n == 1 for n in stats["creates_by_idempotency_key"].values()
    )
    with sqlite3.connect(folder / ".sume-batch/chaos.rehearsal.sqlite") as db:
        rows = db.execute("SELECT id, state, sume_ids, candidates, error_message FROM jobs").fetchall()
    stored = {
        sume_id for _, _, ids, candidates, _ in rows for sume_id in json.loads(ids) + json.loads(candidates)
    }
    missing = set(stats["job_ids"]) - stored
    assert not missing, f"job ids the sandbox issued but the store lost: {sorted(missing)}"
    for job_id, state, _, _, reason in rows:  # each finished, or says why not
        assert state == "downloaded" or reason, (job_id, state)
    assert jobs is None or len(rows) == jobs


@pytest.mark.parametrize("idempotency", ["honour", "ignore"])
def test_sigkill_at_random_moments_never_pays_twice_or_loses_a_job(tmp_path: Path, idempotency: str) -> None:
    write(tmp_path, campaign(SUITE_JOBS))
    with running_sandbox(chaos(seed=11, idempotency=idempotency)) as server:
        codes = kill_and_finish(tmp_path, server, kills=5, seed=5)
        stats = server.stats()
    assert codes[-1] in (0, 1)
    check(tmp_path, stats, jobs=SUITE_JOBS)


DATA_AND_WORKSPACE = """\
version: 1
name: chaos
budget: {max_jobs: 1000}
execution:
  concurrency: 12
  poll_interval: {image: 0.1}
matrix:
  product: {from: products.csv, key: sku}
  look: {workspace: brand}
jobs:
  - id: "img-{{ product.sku }}-{{ look.id }}"
    type: image
    prompt: "{{ product.name }} in the brand's look"
    reference_image_urls: ["{{ look.reference_url }}"]
"""


def test_sigkill_a_campaign_of_data_and_workspace_axes_never_pays_twice(tmp_path: Path) -> None:
    """Each run reads the workspace afresh (issue 14): a killed run's jobs keep their keys."""
    rows = "".join(f"{n:04d},Flasche Nr. {n}\n" for n in range(20))
    (tmp_path / "products.csv").write_text("sku,name\n" + rows)
    write(tmp_path, DATA_AND_WORKSPACE)
    with running_sandbox(chaos(seed=12, idempotency="ignore")) as server:
        codes = kill_and_finish(tmp_path, server, kills=2, seed=9)
        stats = server.stats()
    assert codes[-1] in (0, 1)
    check(tmp_path, stats, jobs=60)  # 20 products × the current Brand DNA's 3 images


CHAIN = """\
version: 1
name: chaos
execution:
  concurrency: 12
  poll_interval: {reference_analysis: 0.1, image: 0.1}
jobs:
  - id: "ref-{{ n }}"
    stage: research
    type: reference_analysis
    url: "https://www.tiktok.com/@glow/video/{{ n }}"
    matrix: {n: [1, 2, 3, 4, 5, 6]}
  - id: "hero-{{ upstream.id }}"
    stage: hero
    needs: research
    type: image
    prompt: "{{ upstream.result.analysis.hook.text }} for {{ upstream.id }}"
  - id: "board-{{ look }}"
    needs: hero
    fan: join
    type: image
    prompt: "A mood board, {{ look }}"
    reference_image_urls: "{{ (upstream | map(attribute='url') | list)[:4] }}"
    matrix: {look: [warm, cool]}
"""


def test_sigkill_mid_chain_then_resume_never_pays_twice_across_stages(tmp_path: Path) -> None:
    """A chain killed at random moments, in any stage (issue 15): one create per job key, no id lost."""
    write(tmp_path, CHAIN)
    with running_sandbox(chaos(seed=13, idempotency="ignore")) as server:
        codes = kill_and_finish(tmp_path, server, kills=2, seed=21)
        stats = server.stats()
    assert codes[-1] in (0, 1)
    check(tmp_path, stats, jobs=None)
    with sqlite3.connect(tmp_path / ".sume-batch/chaos.rehearsal.sqlite") as db:
        kinds = dict(db.execute("SELECT id, state FROM jobs").fetchall())
    assert sum(1 for name in kinds if name.startswith("ref-")) == 6
    assert any(
        name.startswith("board-") or name.startswith("blocked-2-") for name in kinds
    )  # it got downstream
