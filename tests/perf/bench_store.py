"""The run store's cost to a run (issue 13): client CPU per job, store transactions and fsyncs per job,
and a 100,000-job store resumed with 10 new jobs, end to end with a breakdown.

    .venv/bin/python tests/perf/bench_store.py cpu [JOBS] [REPEATS]      # 10,000 instant jobs, 3 times
    .venv/bin/python tests/perf/bench_store.py count [JOBS]              # transactions and fsyncs per job
    .venv/bin/python tests/perf/bench_store.py storecpu [JOBS]           # CPU time inside the store, per job
    .venv/bin/python tests/perf/bench_store.py resume [JOBS] [REPEATS]   # 100,000 jobs in the store, 3 times

`cpu`: the sandbox serves from a process of its own on one core, `sume-batch run` runs on the other;
the client's CPU time (user + system) comes from `wait4`. Medians are printed with every figure.
`count`: the same run once, the store's connection traced: commits, and those made with
`synchronous=FULL` (each fsyncs the WAL); the fsync and fdatasync calls of the whole client are
counted too when strace is there. `resume`: the store holds JOBS downloaded jobs and 10 planned ones;
the run reuses the first and submits the rest. Reported: the time to the first API request and to
the first create, each phase of the run (the manifest planned, the store read, opened, the plan
recorded, the executor, the reports), and the whole (it replaces bench_resume.py, which timed only the
first request and the end). Aims: <= 3 ms CPU per job; <= 10 s end to end.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

SERVER = """
import json, sys
from sume_batch.sandbox import SandboxConfig, serve
config = SandboxConfig.from_profile("instant", **json.loads(sys.argv[1]))
serve(config, "127.0.0.1", int(sys.argv[2]), echo=lambda line: print(line, flush=True))
"""

# The client, wrapped: `sume-batch run` as the console script runs it, with phase timers (and, for
# `count`, a trace of the store's statements) written to a JSON file at exit.
DRIVER = """
import atexit, json, sys, time
options = json.loads(sys.argv[1])
marks, began = {"started": time.time()}, time.perf_counter()
def mark(name, start, end):
    spans = marks.setdefault("spans", {})
    spans[name] = round(spans.get(name, 0.0) + end - start, 4)
    marks.setdefault("first", {}).setdefault(name, round(start - began, 4))
def timed(owner, name, label):
    original = getattr(owner, name)
    if getattr(original, "__func__", None) is not None and isinstance(owner.__dict__.get(name), classmethod):
        function = original.__func__
        def wrapper(cls, *args, **kwargs):
            start = time.perf_counter()
            try:
                return function(cls, *args, **kwargs)
            finally:
                mark(label, start, time.perf_counter())
        setattr(owner, name, classmethod(wrapper))
    elif hasattr(original, "__code__") and original.__code__.co_flags & 0x80:  # a coroutine function
        async def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                mark(label, start, time.perf_counter())
        setattr(owner, name, wrapper)
    else:
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                mark(label, start, time.perf_counter())
        setattr(owner, name, wrapper)
if options.get("phases"):
    from sume_batch import api
    from sume_batch.commands import run
    from sume_batch.execute import Executor
    from sume_batch.records import StoreReader
    from sume_batch.store import RunStore
    for owner, name, label in (
        (run, "prepare", "manifest: load and expand"), (run, "make_plan", "manifest: plan"),
        (run, "diff_plan", "manifest: diff against the store"),
        (run, "read_campaign", "store: read states and budget"), (RunStore, "open", "store: open"),
        (run, "prepare_store", "store: prepare"), (run, "begin", "run: record the plan (rows made by run.py)"),
        (RunStore, "add_planned", "store: add_planned"),
        (Executor, "run", "executor"), (Executor, "take_rescued", "executor: take_rescued"),
        (Executor, "settle_in_flight", "executor: settle_in_flight"), (Executor, "reconcile", "executor: reconcile"),
        (StoreReader, "jobs", "store: jobs() read whole (callers: run.py's progress)"),
        (StoreReader, "plan_of", "store: plan_of() read whole (run.py's counts, the report)"),
        (run, "build_report", "reports: build"), (run, "publish", "reports: write"),
    ):
        timed(owner, name, label)
    request = api.SumeClient._request
    async def first_request(self, method, path, bucket, **kwargs):
        marks.setdefault("first_request", round(time.perf_counter() - began, 4))
        if method == "POST" and bucket == "create":
            marks.setdefault("first_create", round(time.perf_counter() - began, 4))
        return await request(self, method, path, bucket, **kwargs)
    api.SumeClient._request = first_request
if options.get("count"):
    from sume_batch.store import RunStore
    counts = marks.setdefault("statements", {"commits": 0, "fsynced_commits": 0, "selects": 0})
    opened = RunStore.open.__func__
    def traced(cls, *args, **kwargs):
        store = opened(cls, *args, **kwargs)
        mode = ["FULL"]  # SQLite's default
        def trace(sql):
            words = sql.strip().upper()
            if words.startswith("PRAGMA SYNCHRONOUS="):
                mode[0] = words.split("=", 1)[1].strip()
            elif words == "COMMIT":
                counts["commits"] += 1
                counts["fsynced_commits"] += mode[0] in ("FULL", "2", "EXTRA", "3")
            elif words.startswith("SELECT"):
                counts["selects"] += 1
        (getattr(store, "connection", None) or store.db).set_trace_callback(trace)
        return store
    RunStore.open = classmethod(traced)
if options.get("store_cpu"):  # CPU time (not wall time: fsyncs wait) spent in the store's writes and reads
    from sume_batch.records import StoreReader
    from sume_batch.store import RunStore
    spent, depth = marks.setdefault("store_cpu_s", {"total": 0.0}), [0]
    def charged(owner, name):
        original = owner.__dict__[name]
        def wrapper(*args, **kwargs):
            depth[0] += 1
            start = time.process_time() if depth[0] == 1 else None
            try:
                return original(*args, **kwargs)
            finally:
                depth[0] -= 1
                if start is not None:
                    spent["total"] += time.process_time() - start
        setattr(owner, name, wrapper)
    names = ("reserve", "skip", "intend", "created", "adopt", "lose", "suspect", "refuse", "reopen", "resume",
             "time_out", "finish", "fetched", "downloaded", "price", "annotate", "restart", "add_file",
             "forget_files", "flush", "job", "jobs", "jobs_in", "keys_in", "committed", "end_run")
    for owner in (StoreReader, RunStore):
        for name in names:
            if name in owner.__dict__:
                charged(owner, name)
def write():
    marks["total"] = round(time.perf_counter() - began, 4)
    with open(options["out"], "w") as file:
        json.dump(marks, file)
atexit.register(write)
sys.argv = ["sume-batch", *options["argv"]]
from sume_batch.entry import main
main()
"""

MANIFEST = """\
version: 1
name: bench
budget: {{max_jobs: 1000000}}
execution:
  concurrency: {concurrency}
  poll_interval: {{image: {poll}}}
output: {{downloads: out, reports: reports}}
jobs:
  - id: "img-{{{{ n }}}}"
    type: image
    prompt: "Bottle {{{{ n }}}} on a counter"
    matrix: {{n: [{numbers}]}}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def pinned(cpu: int) -> Any:
    return lambda: os.sched_setaffinity(0, {cpu % (os.cpu_count() or 1)})


def stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_sandbox/stats", timeout=30) as response:
        data: dict[str, Any] = json.load(response)
        return data


class Server:
    """The sandbox in a process of its own, pinned to the first core."""

    def __init__(self, **config: Any) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER, json.dumps(config), str(self.port)], stdout=subprocess.PIPE,
            text=True, preexec_fn=pinned(0),  # noqa: PLW1509
        )  # fmt: skip
        assert self.process.stdout is not None and "test key" in self.process.stdout.readline()
        self.env = {**os.environ, "SUME_API_KEY": "sume_test_sandbox_key",
                    "SUME_API_BASE_URL": f"http://127.0.0.1:{self.port}/api/v1"}  # fmt: skip

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *_: object) -> None:
        self.process.terminate()
        self.process.wait()


def client(folder: Path, server: Server, options: dict[str, Any], *, wrap: list[str] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    """Run the client once, pinned to the second core; its marks, CPU seconds, wall seconds and RSS."""
    out = folder / "marks.json"
    options = {**options, "out": str(out), "argv": ["run", "bench.yaml", "--yes", "--quiet"]}
    started = time.perf_counter()
    process = subprocess.Popen(
        [*wrap, sys.executable, "-c", DRIVER, json.dumps(options)], cwd=folder, env=server.env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=pinned(1),  # noqa: PLW1509
    )  # fmt: skip
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    output = process.stdout.read().decode() if process.stdout else ""
    errors = process.stderr.read().decode() if process.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"run failed ({os.waitstatus_to_exitcode(status)}):\n{output[-3000:]}\n{errors[-3000:]}")
    marks: dict[str, Any] = json.loads(out.read_text())
    marks.update(cpu_s=usage.ru_utime + usage.ru_stime, wall_s=elapsed, rss_mb=usage.ru_maxrss / 1024)
    return marks


def campaign(folder: Path, jobs: int, *, concurrency: int = 64) -> None:
    text = MANIFEST.format(concurrency=concurrency, poll=0.05, numbers=", ".join(map(str, range(jobs))))
    (folder / "bench.yaml").write_text(text)


def median(values: list[float], digits: int = 2) -> dict[str, Any]:
    return {"median": round(statistics.median(values), digits), "runs": [round(v, digits) for v in values]}


def bench_cpu(jobs: int, repeats: int) -> dict[str, Any]:
    cpu, wall = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as name, Server(capacity=64, credits=10_000_000) as server:
            campaign(Path(name), jobs)
            marks = client(Path(name), server, {})
            cpu.append(marks["cpu_s"] * 1000 / jobs)
            wall.append(marks["wall_s"])
    return {"jobs": jobs, "client_cpu_ms_per_job": median(cpu), "wall_s": median(wall, 1)}


def bench_count(jobs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as name, Server(capacity=64, credits=10_000_000) as server:
        campaign(Path(name), jobs)
        statements = client(Path(name), server, {"count": True})["statements"]
    found = {
        "jobs": jobs,
        "transactions_per_job": round(statements["commits"] / jobs, 2),
        "fsynced_transactions_per_job": round(statements["fsynced_commits"] / jobs, 2),
        "selects_per_job": round(statements["selects"] / jobs, 2),
    }
    if shutil.which("strace"):
        with tempfile.TemporaryDirectory() as name, Server(capacity=64, credits=10_000_000) as server:
            campaign(Path(name), jobs)
            log = Path(name) / "strace.txt"
            wrap = ["strace", "-f", "-qq", "-c", "-e", "trace=fsync,fdatasync", "-o", str(log)]
            client(Path(name), server, {}, wrap=wrap)
            calls = sum(int(line.split()[3]) for line in log.read_text().splitlines()
                        if line.split()[-1:] in (["fsync"], ["fdatasync"]))  # fmt: skip
        found["fsync_calls_per_job (client, registry included)"] = round(calls / jobs, 2)
    return found


def bench_store_cpu(jobs: int) -> dict[str, Any]:
    """The client's CPU time inside the store (its writes and the reads the run makes), per job."""
    with tempfile.TemporaryDirectory() as name, Server(capacity=64, credits=10_000_000) as server:
        campaign(Path(name), jobs)
        marks = client(Path(name), server, {"store_cpu": True})
    total = marks["store_cpu_s"]["total"]
    return {"jobs": jobs, "store_cpu_ms_per_job": round(total * 1000 / jobs, 3),
            "client_cpu_ms_per_job": round(marks["cpu_s"] * 1000 / jobs, 2)}  # fmt: skip


def build_store(folder: Path, jobs: int) -> None:
    """A store of `jobs` jobs, all downloaded but the last 10 (planned, never sent)."""
    from sume_batch.commands.common import prepare
    from sume_batch.plan import make_plan
    from sume_batch.store import RunStore

    campaign(folder, jobs)
    manifest, specs = prepare(folder / "bench.yaml")
    store = RunStore.open(folder / ".sume-batch/bench.rehearsal.sqlite")
    store.add_planned(
        (s.key, s.id, s.kind.name, s.request, s.matrix, p.credits) for s, p in make_plan(manifest, specs).jobs
    )
    with store.transaction() as db:
        db.execute("UPDATE jobs SET state = 'downloaded', sume_ids = '[\"job_done\"]', reserved = 4")
        db.execute("UPDATE jobs SET state = 'planned', sume_ids = '[]', reserved = 0 WHERE id IN "
                   f"({', '.join(repr(f'img-{n}') for n in range(jobs - 10, jobs))})")  # fmt: skip
    store.close()


def bench_resume(jobs: int, repeats: int) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as name:
        pristine = Path(name) / "pristine"
        pristine.mkdir()
        build_store(pristine, jobs)
        for n in range(repeats):
            folder = Path(name) / f"run{n}"
            shutil.copytree(pristine, folder)
            with Server(capacity=64, credits=10_000_000) as server:
                marks = client(folder, server, {"phases": True})
                creates = len(stats(server.port)["creates_by_idempotency_key"])
            assert creates == 10, creates
            runs.append(marks)
            shutil.rmtree(folder)
    phases = sorted({phase for marks in runs for phase in marks["spans"]}, key=lambda p: runs[0]["first"][p])
    return {
        "jobs_in_store": jobs,
        "end_to_end_s": median([marks["wall_s"] for marks in runs]),
        "first_request_s": median([marks["first_request"] for marks in runs]),
        "first_create_s": median([marks["first_create"] for marks in runs]),
        "phases_s": {phase: median([marks["spans"].get(phase, 0.0) for marks in runs]) for phase in phases},
        "client_cpu_s": median([marks["cpu_s"] for marks in runs]),
        "client_peak_rss_mb": median([marks["rss_mb"] for marks in runs], 0),
    }


def main(argv: list[str]) -> None:
    scenario = argv[0] if argv else ""
    numbers = [int(arg) for arg in argv[1:]]
    if scenario == "cpu":
        result = bench_cpu(*(numbers or [10_000]), *([] if len(numbers) > 1 else [3]))
    elif scenario == "count":
        result = bench_count(*(numbers or [10_000]))
    elif scenario == "storecpu":
        result = bench_store_cpu(*(numbers or [10_000]))
    elif scenario == "resume":
        result = bench_resume(*(numbers or [100_000]), *([] if len(numbers) > 1 else [3]))
    else:
        sys.exit(__doc__)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
