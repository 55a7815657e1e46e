"""The chaos kill test at length: a 200-job campaign SIGKILLed 50 times, then run to the end.

    .venv/bin/python tests/perf/bench_kills.py [KILLS]

Prints, for idempotency honoured (`honour`), honoured and known to be (`known`: run with
--idempotency-honoured, lost creates re-sent under their keys) and ignored: creates per job key,
job ids the sandbox issued that the store lost (must be none), final states, adopted and
still-uncertain jobs.
"""

from __future__ import annotations

import collections
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import test_chaos
from helpers import write


def main(kills: int, modes: tuple[str, ...] = ("honour", "known", "ignore")) -> None:
    for mode in modes:
        idempotency = "honour" if mode == "known" else mode
        flags = ("--idempotency-honoured",) if mode == "known" else ()
        with tempfile.TemporaryDirectory() as name:
            folder = Path(name)
            write(folder, test_chaos.CAMPAIGN)
            started = time.perf_counter()
            with test_chaos.running_sandbox(test_chaos.chaos(seed=23, idempotency=idempotency)) as server:
                codes = test_chaos.kill_and_finish(folder, server, kills=kills, seed=kills, flags=flags)
                stats = server.stats()
            test_chaos.check(folder, stats)  # one create per key, no lost id, every job finished or says why
            with sqlite3.connect(folder / ".sume-batch/chaos.rehearsal.sqlite") as db:
                states = collections.Counter(state for (state,) in db.execute("SELECT state FROM jobs"))
                adopted = db.execute("SELECT COUNT(*) FROM events WHERE note LIKE 'adopted%'").fetchone()[0]
                never_made = db.execute(
                    "SELECT COUNT(*) FROM events WHERE note LIKE 'the create made no job%'"
                ).fetchone()[0]
                why = collections.Counter(
                    (message or "")[:70]
                    for (message,) in db.execute("SELECT error_message FROM jobs WHERE state = 'uncertain'")
                )
            per_key = collections.Counter(stats["creates_by_idempotency_key"].values())
            print(json.dumps({
                "idempotency": mode, "kills": kills, "seconds": round(time.perf_counter() - started, 1),
                "finishing_exit_codes": codes, "creates_per_key": dict(per_key), "ids_issued": len(stats["job_ids"]),
                "ids_lost": 0, "states": dict(states), "adopted_by_reconciliation": adopted,
                "proven_never_made": never_made, "uncertain_why": dict(why),
            }))  # fmt: skip


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50, tuple(sys.argv[2:]) or ("honour", "known", "ignore"))
