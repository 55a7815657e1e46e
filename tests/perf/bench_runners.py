"""Several runners on one PostgreSQL store (issue 18), at length:

    .venv/bin/python tests/perf/bench_runners.py [KILLS] [JOBS]

1. The chaos test: JOBS (200) images, 4 runner processes on one shared store against the chaos
   sandbox (idempotency ignored, capacity 8), SIGKILLed at random KILLS (24) times in all, then run
   to the end: once without a cap (every job is bought), once with a cap that binds (the manifest
   prices images at half what the sandbox charges). Prints creates per job key, ids lost, the most
   jobs unfinished at once against the capacity, credits spent against the cap, final states.
2. How long a SIGKILLed runner's jobs wait for the next runner (three times, lease 2 s).
3. The makespan of the same campaign without kills and without a cap, 1 runner against 4: with
   idempotency ignored (creates go one at a time for the whole account) and honoured.

Uses SUME_BATCH_TEST_PG when set, else a throwaway cluster of its own (see tests/pgserver.py).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pgserver
import runners
from helpers import write

from sume_batch.sandbox import SandboxConfig, running_sandbox

CAPACITY, LEASE = 8, 2.0
peaks: list[int] = []  # the most jobs unfinished at once in each makespan run


def chaos(server_url: str, kills: int, jobs: int, *, capped: bool) -> dict[str, object]:
    # Capped: 4 credits charged where 2 are estimated, so the cap binds at 5/8 of the jobs, and a
    # runner started after the price is learned is refused (exit 3: the rest would cross it),
    # collecting what was paid.
    url, cap = pgserver.fresh_database(server_url), jobs * 2.5 if capped else None
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        write(folder, runners.campaign(jobs, cap=cap))
        with running_sandbox(runners.chaos(seed=kills, capacity=CAPACITY)) as server:
            outcome = runners.kill_and_finish(
                folder, server, url, runners=4, kills=kills, lease=LEASE, seed=kills
            )
            stats = server.stats()
    figures = runners.check(url, stats, jobs=jobs, capacity=CAPACITY, cap=cap)
    return {"test": "chaos", "jobs": jobs, "runners": 4, "kills": outcome.kills, "lease_s": LEASE,
            "seconds": round(outcome.seconds, 1), "finishing_exit_codes": outcome.finishing_codes,
            "tracebacks": [error[-1500:] for error in outcome.errors], **figures}  # fmt: skip


def takeovers(server_url: str, times: int) -> list[float]:
    """Seconds from a runner's SIGKILL until the next runner holds its jobs (lease 2 s)."""
    found = []
    for _ in range(times):
        url = pgserver.fresh_database(server_url)
        with tempfile.TemporaryDirectory() as name:
            folder = Path(name)
            write(folder, runners.campaign(6))
            slow = SandboxConfig.from_profile(
                "instant", idempotency="ignore", durations={"image_generation": 4.0}
            )
            with running_sandbox(slow) as server:
                took, _, _ = runners.takeover(folder, server, url, lease=LEASE)
        found.append(round(took, 2))
    return found


def makespan(server_url: str, jobs: int, count: int, idempotency: str) -> float:
    url = pgserver.fresh_database(server_url)
    extra = ("--idempotency-honoured",) if idempotency == "honour" else ()
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        write(folder, runners.campaign(jobs))
        with running_sandbox(runners.chaos(seed=1, capacity=CAPACITY, idempotency=idempotency)) as server:
            began = time.perf_counter()
            going = [
                runners.start(folder, server, url, lease=LEASE, capture=True, extra=extra)
                for _ in range(count)
            ]
            ended = [(process.communicate(timeout=600)[1], process.returncode) for process in going]
            took = time.perf_counter() - began
            stats = server.stats()
    try:
        runners.check(url, stats, jobs=jobs, capacity=jobs, cap=None)  # the capacity: reported, not asserted
    except AssertionError as error:
        raise AssertionError(f"{error}; runners ended {[(code, err[-600:].decode()) for err, code in ended]}")
    peaks.append(stats["peak_unfinished"])
    return took


def main(kills: int, jobs: int) -> None:
    with pgserver.cluster() as server_url:
        print(json.dumps(chaos(server_url, kills, jobs, capped=False)))
        print(json.dumps(chaos(server_url, kills, jobs, capped=True)))
        print(json.dumps({"test": "takeover", "lease_s": LEASE, "seconds": takeovers(server_url, 3)}))
        for idempotency in ("ignore", "honour"):
            one, four = (min(makespan(server_url, jobs, n, idempotency) for _ in range(2)) for n in (1, 4))
            print(json.dumps({"test": "makespan", "idempotency": idempotency, "jobs": jobs,
                              "one_runner_s": round(one, 1), "four_runners_s": round(four, 1),
                              "ratio": round(four / one, 2), "peak_unfinished": peaks[-4:]}))  # fmt: skip


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 24, int(sys.argv[2]) if len(sys.argv) > 2 else 200)
