"""Resume a store of 100,000 jobs: time from `run` starting to its first API request, and to the end.

    .venv/bin/python tests/perf/bench_resume.py [JOBS]

The store holds JOBS jobs, all downloaded but the last 10; the run must reuse them and submit 10.
Aim: the first request within 5 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sume_batch.commands.common import prepare
from sume_batch.plan import make_plan
from sume_batch.sandbox import SandboxConfig, running_sandbox
from sume_batch.store import RunStore

MANIFEST = """\
version: 1
name: resume
budget: {max_jobs: 1000000}
execution: {poll_interval: {image: 0.05}}
jobs:
  - id: "img-{{ n }}"
    type: image
    prompt: "Bottle {{ n }} on a counter"
    matrix: {n: [NUMBERS]}
"""


def build(folder: Path, jobs: int) -> None:
    (folder / "resume.yaml").write_text(MANIFEST.replace("NUMBERS", ", ".join(map(str, range(jobs)))))
    manifest, specs = prepare(folder / "resume.yaml")
    store = RunStore.open(folder / ".sume-batch/resume.rehearsal.sqlite")
    store.add_planned(
        (s.key, s.id, s.kind.name, s.request, s.matrix, p.credits) for s, p in make_plan(manifest, specs).jobs
    )
    with store.transaction() as db:
        db.execute("UPDATE jobs SET state = 'downloaded', sume_ids = '[\"job_done\"]', reserved = 4")
        db.execute("UPDATE jobs SET state = 'planned', sume_ids = '[]', reserved = 0 WHERE id IN "
                   f"({', '.join(repr(f'img-{n}') for n in range(jobs - 10, jobs))})")  # fmt: skip
    store.close()


def main(jobs: int) -> None:
    with (
        tempfile.TemporaryDirectory() as name,
        running_sandbox(SandboxConfig.from_profile("instant")) as server,
    ):
        folder = Path(name)
        build(folder, jobs)
        env = {**os.environ, "SUME_API_KEY": server.api_key, "SUME_API_BASE_URL": server.base_url}
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "sume_batch", "run", "resume.yaml", "--yes", "--quiet"],
                                   cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        first = None
        while process.poll() is None:
            if first is None and server.stats()["requests_total"]:
                first = time.perf_counter() - started
            time.sleep(0.005)
        total = time.perf_counter() - started
        out, err = process.communicate()
        creates = len(server.stats()["creates_by_idempotency_key"])
    print(f"{jobs:,} jobs in the store: first request after {first:.2f} s, run finished after {total:.2f} s,"
          f" exit {process.returncode}, {creates} creates")  # fmt: skip
    if process.returncode != 0:
        print(out.decode()[-2000:], err.decode()[-2000:])


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
