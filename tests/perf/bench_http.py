"""The HTTP stack's own CPU cost per request, the floor under a run's CPU per job (issue 13).

    .venv/bin/python tests/perf/bench_http.py [REQUESTS]

`GET /me` against a sandbox process (pinned to one core), from a bare httpx.AsyncClient (pinned to
the other), 16 in flight, each answer decoded: the client's CPU milliseconds per request. A run
makes about 3.2 requests per job (create, result, download, a share of a list poll).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_store import Server


async def measure(port: int, requests: int) -> float:
    base = f"http://127.0.0.1:{port}/api/v1"
    headers = {"Authorization": "Bearer sume_test_sandbox_key"}
    async with httpx.AsyncClient(base_url=base, headers=headers) as client:
        (await client.get("/me")).json()
        slots = asyncio.Semaphore(16)

        async def one() -> None:
            async with slots:
                (await client.get("/me")).json()

        started = time.process_time()
        await asyncio.gather(*(one() for _ in range(requests)))
        return (time.process_time() - started) * 1000 / requests


def main(requests: int) -> None:
    runs = []
    with Server(capacity=64) as server:
        os.sched_setaffinity(0, {1 % (os.cpu_count() or 1)})
        runs = [round(asyncio.run(measure(server.port, requests)), 3) for _ in range(3)]
    print(json.dumps({"requests": requests, "httpx_cpu_ms_per_request": sorted(runs)[1], "runs": runs}))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3000)
