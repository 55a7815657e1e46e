"""Write the reports of a run of JOBS jobs: time per stage, file sizes, peak memory.

    .venv/bin/python tests/perf/bench_report.py [JOBS]

The store holds one run of JOBS image jobs over three matrix axes: 90 % downloaded with one file
each, 10 % failed with an error message. Reported: reading and building the document (the
redaction gate included), then writing each format.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

from sume_batch.redact import Redactor
from sume_batch.report import FILE_NAMES
from sume_batch.report.document import Source, build_report
from sume_batch.report.folder import write_reports
from sume_batch.store import RunStore

PROMPT = "Studio photo of the Lumen {product} bottle on a {scene} counter, soft morning light, take {n}."


def build(path: Path, jobs: int) -> RunStore:
    store = RunStore.open(path)
    run = store.begin_run({"campaign": "bench", "manifest": {"path": "bench.yaml", "sha256": "0" * 64,
                                                            "git_commit": None, "git_dirty": None}})  # fmt: skip
    rows = []
    for n in range(jobs):
        matrix = {"product": ("serum", "toner", "mist")[n % 3], "scene": ("bath", "travel")[n % 2], "n": n}
        rows.append((f"{n:032x}", f"img-{n}", "image", {"prompt": PROMPT.format(**matrix)}, matrix, 4.0))
    store.add_planned(rows, run=run.seq)
    now = time.time()
    with store.transaction() as db:
        db.execute("UPDATE jobs SET state = 'downloaded', sume_ids = '[\"job_x\"]', reserved = 4, attempts = 1,"
                   " submitted_at = ?, request_id = 'req_0123456789'", (now,))  # fmt: skip
        db.execute("UPDATE jobs SET state = 'failed', error_code = 'generation_failed', error_message ="
                   " 'The generation could not be completed.' WHERE rowid % 10 = 0")  # fmt: skip
        db.executemany(
            "INSERT INTO files VALUES (?, ?, 'job_x', ?, 1234, 'image/png')",
            ((f"{n:032x}", f"img-{n}.png", "f" * 64) for n in range(jobs) if n % 10 != 9),
        )
        db.executemany(
            "INSERT INTO events (key, state, at) VALUES (?, ?, ?)",
            ((f"{n:032x}", state, now + 5) for n in range(jobs) for state in ("completed", "downloaded")),
        )
    store.end_run(run.seq, {"stopped": None, "interrupted": False, "exit_code": 1, "balance_after": None})
    return store


def main(jobs: int) -> None:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        store = build(folder / "bench.sqlite", jobs)
        source = Source(campaign="bench", downloads=folder / "out", folder=folder / "r", run=store.runs()[-1])
        started = time.perf_counter()
        document = build_report(
            store, source, redactor=Redactor(api_key="sume_live_benchkey0123"), now=time.time()
        )
        built = time.perf_counter()
        print(f"{jobs:,} jobs: read + build + redact {built - started:.2f} s")
        for format_name in ("json", "junit", "html"):
            before = time.perf_counter()
            written = write_reports(document, folder / "r", (format_name,))
            size = written[format_name].stat().st_size
            print(f"  {FILE_NAMES[format_name]}: {time.perf_counter() - before:.2f} s, {size / 1e6:.1f} MB")
        print(
            f"  total {time.perf_counter() - started:.2f} s, peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
