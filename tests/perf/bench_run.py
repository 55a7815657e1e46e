"""Benchmark `sume-batch run` against the sandbox, server and client in separate processes and cores.

    .venv/bin/python tests/perf/bench_run.py throughput   # (a) 1,000 image jobs, instant profile
    .venv/bin/python tests/perf/bench_run.py makespan     # (b) 200 jobs of 20 s, capacity 20, rate limits

(a) reports jobs/s, API requests per job, client CPU ms per job and peak RSS; (b) reports the
makespan over the ideal (10 waves x 20 s), requests per job and the share of 429s. Only loopback
traffic, bounded in count and time. Aims: <= 3.5 requests/job, <= 5 ms CPU/job, makespan <= 1.1 x
ideal, < 1% 429s.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

SERVER = """
import sys
from sume_batch.sandbox import SandboxConfig, serve
config = SandboxConfig.from_profile("instant", **__import__("json").loads(sys.argv[1]))
serve(config, "127.0.0.1", int(sys.argv[2]), echo=lambda line: print(line, flush=True))
"""

MANIFEST = """\
version: 1
name: bench
budget: {{max_jobs: 100000}}
execution:
  concurrency: {concurrency}
  poll_interval: {{image: {poll}}}
output: {{downloads: out, reports: reports}}
jobs:
  - id: "img-{{{{ n }}}}"
    type: image
    prompt: "Bottle {{{{ n }}}} on a counter"
    matrix: {{n: {numbers}}}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def pinned(cpu: int) -> Any:
    return lambda: os.sched_setaffinity(0, {cpu % os.cpu_count()})  # type: ignore[operator]


def stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_sandbox/stats", timeout=10) as response:
        data: dict[str, Any] = json.load(response)
        return data


def bench(jobs: int, *, concurrency: int, poll: float, sandbox: dict[str, Any]) -> dict[str, Any]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, json.dumps(sandbox), str(port)], stdout=subprocess.PIPE, text=True,
        preexec_fn=pinned(0),  # noqa: PLW1509
    )  # fmt: skip
    try:
        assert server.stdout is not None and "test key" in server.stdout.readline()
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, "bench.yaml").write_text(
                MANIFEST.format(concurrency=concurrency, poll=poll, numbers=list(range(jobs)))
            )
            env = {**os.environ, "SUME_API_KEY": "sume_test_sandbox_key",
                   "SUME_API_BASE_URL": f"http://127.0.0.1:{port}/api/v1"}  # fmt: skip
            started = time.perf_counter()
            client = subprocess.Popen(
                [sys.executable, "-m", "sume_batch", "run", "bench.yaml", "--yes", "--quiet"], cwd=folder, env=env,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=pinned(1),  # noqa: PLW1509
            )  # fmt: skip
            _, status, usage = os.wait4(client.pid, 0)
            elapsed = time.perf_counter() - started
            output = client.stdout.read().decode() if client.stdout else ""
            if os.waitstatus_to_exitcode(status) != 0:
                sys.exit(f"run failed:\n{output}\n{client.stderr.read().decode() if client.stderr else ''}")
            counts = stats(port)["requests"]
    finally:
        server.terminate()
        server.wait()
    api = {route: by_status for route, by_status in counts.items() if " /api/v1/" in route}
    total = sum(sum(by_status.values()) for by_status in api.values())
    limited = sum(by_status.get("429", 0) for by_status in api.values())
    return {
        "jobs": jobs,
        "elapsed_s": round(elapsed, 2),
        "jobs_per_s": round(jobs / elapsed, 1),
        "api_requests_per_job": round(total / jobs, 2),
        "share_429": round(limited / total, 4),
        "client_cpu_ms_per_job": round((usage.ru_utime + usage.ru_stime) * 1000 / jobs, 2),
        "client_peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "requests": {route: dict(by_status) for route, by_status in sorted(api.items())},
    }


def main(scenario: str) -> None:
    if scenario == "throughput":
        result = bench(1000, concurrency=64, poll=0.05, sandbox={"capacity": 64})
    elif scenario == "makespan":
        limits = {"reads_per_minute": 600, "creates_per_minute": 60}
        sandbox = {"capacity": 20, "durations": {"image_generation": 20.0}, "rate_limits": limits}
        result = bench(200, concurrency=20, poll=2.0, sandbox=sandbox)
        result["ideal_s"] = 200.0
        result["makespan_over_ideal"] = round(result["elapsed_s"] / 200.0, 3)
    else:
        sys.exit(__doc__)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "")
