"""Benchmark `sume-batch run` against the sandbox, server and client in separate processes and cores.

    .venv/bin/python tests/perf/bench_run.py demo         # the README demo: spring-launch, instant, capacity 4
    .venv/bin/python tests/perf/bench_run.py waves        # 30 jobs of 5 s at capacity 10
    .venv/bin/python tests/perf/bench_run.py many         # 1,000 jobs of 0.2 s at capacity 50, --idempotency-honoured
    .venv/bin/python tests/perf/bench_run.py many-serial  # the same without it: creates one at a time
    .venv/bin/python tests/perf/bench_run.py catalog      # 222 images, the manifest's defaults, instant, capacity 4
    .venv/bin/python tests/perf/bench_run.py throughput   # 1,000 image jobs, instant profile, concurrency 64
    .venv/bin/python tests/perf/bench_run.py makespan     # 200 jobs of 20 s, capacity 20, rate limits
    .venv/bin/python tests/perf/bench_run.py all          # demo, waves and many

Each scenario runs 3 times and reports the medians. `demo` runs the README's command itself
(`run manifests/spring-launch.yaml --sandbox --yes`, in a temporary copy) for its "Done in" time,
and the same manifest against a sandbox process to count requests. `waves` and `many` also run the peer
client (tests/perf/peer.py: asyncio + httpx, capacity in flight, each job polled every 1 s) against
a fresh sandbox the same way, side by side. The makespan ratios divide the
run's own "Done in" time by the ideal (waves of jobs at the account's capacity, no overhead);
requests count every `/api/v1/` request the sandbox served. Loopback only, bounded in count and
time. Aims (issue 13): demo <= 3 s; catalog <= 10 s; waves <= 1.10 x; many <= 5.0 x; <= 2.8 requests/job everywhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RUNS = 3

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
{execution}
output: {{downloads: out, reports: reports}}
jobs:
  - id: "img-{{{{ n }}}}"
    type: image
    prompt: "Bottle {{{{ n }}}} on a counter"
    matrix: {{n: {numbers}}}
"""

DONE = re.compile(r"Done in ([0-9.]+) s")


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


def bench(jobs: int, *, concurrency: int | None, poll: float | None, sandbox: dict[str, Any],
          flags: tuple[str, ...] = ()) -> dict[str, Any]:  # fmt: skip
    """`jobs` image jobs; `concurrency` and `poll` None leave the manifest's defaults."""

    def setup(folder: Path) -> None:
        settings = [f"concurrency: {concurrency}"] if concurrency is not None else []
        settings += [f"poll_interval: {{image: {poll}}}"] if poll is not None else []
        execution = "execution: {" + ", ".join(settings) + "}" if settings else ""
        Path(folder, "bench.yaml").write_text(MANIFEST.format(execution=execution, numbers=list(range(jobs))))

    return against_sandbox(sandbox, setup, ["bench.yaml", *flags], jobs)


@contextlib.contextmanager
def served(sandbox: dict[str, Any]) -> Iterator[int]:
    """A sandbox process (pinned to CPU 0) with these settings; its port."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, json.dumps(sandbox), str(port)], stdout=subprocess.PIPE, text=True,
        preexec_fn=pinned(0),  # noqa: PLW1509
    )  # fmt: skip
    try:
        assert server.stdout is not None and "test key" in server.stdout.readline()
        yield port
    finally:
        server.terminate()
        server.wait()


def timed(
    argv: list[str], *, cwd: str | None = None, env: dict[str, str] | None = None
) -> tuple[float, str, Any]:
    """Run a client (pinned to CPU 1) to its end: its wall time, output and resource usage."""
    started = time.perf_counter()
    process = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=pinned(1),  # noqa: PLW1509
    )  # fmt: skip
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    output = process.stdout.read().decode() if process.stdout else ""
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{argv[1]} failed:\n{output}\n{process.stderr.read().decode() if process.stderr else ''}")
    return elapsed, output, usage


def against_sandbox(sandbox: dict[str, Any], setup: Any, args: list[str], jobs: int) -> dict[str, Any]:
    """`sume-batch run ARGS --yes --quiet` against a sandbox process."""
    with served(sandbox) as port, tempfile.TemporaryDirectory() as folder:
        setup(Path(folder))
        env = {**os.environ, "SUME_API_KEY": "sume_test_sandbox_key",
               "SUME_API_BASE_URL": f"http://127.0.0.1:{port}/api/v1"}  # fmt: skip
        argv = [sys.executable, "-m", "sume_batch", "run", *args, "--yes", "--quiet"]
        elapsed, output, usage = timed(argv, cwd=folder, env=env)
        counts = stats(port)["requests"]
    return measured(jobs, counts, elapsed, output, usage)


def peer(jobs: int, *, capacity: int, sandbox: dict[str, Any]) -> dict[str, Any]:
    """The peer client (tests/perf/peer.py) against a fresh sandbox process, the same way."""
    with served(sandbox) as port:
        base_url = f"http://127.0.0.1:{port}/api/v1"
        elapsed, output, usage = timed(
            [sys.executable, str(ROOT / "tests/perf/peer.py"), base_url, str(jobs), str(capacity)]
        )
        counts = stats(port)["requests"]
    return measured(jobs, counts, elapsed, output, usage)


def measured(jobs: int, counts: dict[str, dict[str, int]], elapsed: float, output: str,
             usage: Any) -> dict[str, Any]:  # fmt: skip
    api = {route: by_status for route, by_status in counts.items() if " /api/v1/" in route}
    total = sum(sum(by_status.values()) for by_status in api.values())
    limited = sum(by_status.get("429", 0) for by_status in api.values())
    done = DONE.search(output)
    return {
        "jobs": jobs,
        "elapsed_s": round(elapsed, 2),
        "done_in_s": float(done.group(1)) if done else None,
        "jobs_per_s": round(jobs / elapsed, 1),
        "api_requests_per_job": round(total / jobs, 2),
        "share_429": round(limited / total, 4) if total else 0.0,
        "client_cpu_ms_per_job": round((usage.ru_utime + usage.ru_stime) * 1000 / jobs, 2),
        "client_peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "requests": {route: dict(by_status) for route, by_status in sorted(api.items())},
    }


def demo_command() -> dict[str, Any]:
    """The README's own command, embedded sandbox and all, in a temporary copy of manifests/."""
    with tempfile.TemporaryDirectory() as folder:
        shutil.copytree(ROOT / "manifests", Path(folder, "manifests"))
        started = time.perf_counter()
        ran = subprocess.run(
            [sys.executable, "-m", "sume_batch", "run", "manifests/spring-launch.yaml", "--sandbox", "--yes"],
            cwd=folder, capture_output=True, text=True, check=False, timeout=300,
        )  # fmt: skip
        elapsed = time.perf_counter() - started
    if ran.returncode != 0:
        sys.exit(f"demo failed:\n{ran.stdout}\n{ran.stderr}")
    done = DONE.search(ran.stdout)
    return {"command_wall_s": round(elapsed, 2), "command_done_in_s": float(done.group(1)) if done else None}


def demo_requests() -> dict[str, Any]:
    """The demo's manifest against a sandbox process (instant, capacity 4): its requests per job."""

    def setup(folder: Path) -> None:
        shutil.copytree(ROOT / "manifests", folder / "manifests")

    return against_sandbox({}, setup, ["manifests/spring-launch.yaml"], 14)


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the numeric figures of several runs (the first run's other fields)."""
    result = dict(runs[0])
    for name, value in runs[0].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            result[name] = round(statistics.median(run[name] for run in runs), 3)
    result["runs"] = [{k: v for k, v in run.items() if k != "requests"} for run in runs]
    return result


def scenario(name: str) -> dict[str, Any]:
    if name == "demo":
        command = median_of([demo_command() for _ in range(RUNS)])
        counted = median_of([demo_requests() for _ in range(RUNS)])
        return {"command": command, "against_a_sandbox_process": counted}
    if name == "waves":
        sandbox = {"capacity": 10, "durations": {"image_generation": 5.0}}
        result = ratio(
            median_of([bench(30, concurrency=10, poll=None, sandbox=sandbox) for _ in range(RUNS)]), 15.0
        )
        result["peer"] = ratio(median_of([peer(30, capacity=10, sandbox=sandbox) for _ in range(RUNS)]), 15.0)
        return result
    if name in ("many", "many-serial"):
        flags = ("--idempotency-honoured",) if name == "many" else ()
        sandbox = {"capacity": 50, "durations": {"image_generation": 0.2}}
        runs = [bench(1000, concurrency=50, poll=None, sandbox=sandbox, flags=flags) for _ in range(RUNS)]
        result = ratio(median_of(runs), 20 * 0.2)
        result["creates_per_s"] = round(1000 / result["done_in_s"], 1)
        if name == "many":
            peers = [peer(1000, capacity=50, sandbox=sandbox) for _ in range(RUNS)]
            result["peer"] = ratio(median_of(peers), 20 * 0.2)
        return result
    if name == "catalog":
        return median_of([bench(222, concurrency=None, poll=None, sandbox={}) for _ in range(RUNS)])
    if name == "throughput":
        return median_of(
            [bench(1000, concurrency=64, poll=0.05, sandbox={"capacity": 64}) for _ in range(RUNS)]
        )
    if name == "makespan":
        limits = {"reads_per_minute": 600, "creates_per_minute": 60}
        sandbox = {"capacity": 20, "durations": {"image_generation": 20.0}, "rate_limits": limits}
        return ratio(
            median_of([bench(200, concurrency=20, poll=2.0, sandbox=sandbox) for _ in range(RUNS)]), 200.0
        )
    sys.exit(__doc__)


def ratio(result: dict[str, Any], ideal: float) -> dict[str, Any]:
    """The makespan over the ideal, from the run's own "Done in" time (startup and preflight excluded)."""
    result["ideal_s"] = ideal
    result["makespan_over_ideal"] = round(result["done_in_s"] / ideal, 3)
    result["runs_over_ideal"] = [round(run["done_in_s"] / ideal, 3) for run in result["runs"]]
    return result


def main(name: str) -> None:
    names = ("demo", "waves", "many") if name == "all" else (name,)
    print(json.dumps({one: scenario(one) for one in names}, indent=2))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "")
