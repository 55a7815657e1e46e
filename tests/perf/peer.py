"""A peer client for the benchmarks: what a competent engineer writes in an afternoon with asyncio + httpx.

    .venv/bin/python tests/perf/peer.py BASE_URL JOBS CAPACITY

It creates JOBS image jobs with `capacity` in flight at once, polls each job by id every 1 s until
it ends, fetches its result and downloads its media, and prints `Done in X s` (from the first create
to the last download) and the requests it sent. No budget, no store, no reconciliation: it pays for
none of sume-batch's guarantees, which is what makes it the yardstick for speed and requests.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import httpx

POLL_S = 1.0
KEY = "sume_test_sandbox_key"


async def one(http: httpx.AsyncClient, slots: asyncio.Semaphore, n: int, sent: list[int]) -> None:
    async with slots:
        created = await http.post(
            "/images/generations",
            json={"prompt": f"Bottle {n} on a counter"},
            headers={"Idempotency-Key": f"peer-{n}"},
        )
        sent[0] += 1
        body: dict[str, Any] = created.json()
        job_id = str((body.get("job") or {}).get("id") or body.get("job_id"))
        while True:
            await asyncio.sleep(POLL_S)
            status = (await http.get(f"/jobs/{job_id}")).json()
            sent[0] += 1
            state = str((status.get("job") or status).get("status", "")).lower()
            if state in ("completed", "failed", "canceled", "cancelled", "expired"):
                break
        if state != "completed":
            return
        result = (await http.get(f"/jobs/{job_id}/result")).json()
        sent[0] += 1
        for url in media(result):
            await http.get(url)


def media(value: Any) -> list[str]:
    """Every https/http URL in a result payload (the peer does not tell thumbnails apart)."""
    if isinstance(value, dict):
        return [url for item in value.values() for url in media(item)]
    if isinstance(value, list):
        return [url for item in value for url in media(item)]
    return [value] if isinstance(value, str) and value.startswith(("http://", "https://")) else []


async def main(base_url: str, jobs: int, capacity: int) -> None:
    limits = httpx.Limits(max_connections=capacity + 4, max_keepalive_connections=capacity + 4)
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=60) as http:
        slots, sent = asyncio.Semaphore(capacity), [0]
        started = time.perf_counter()
        await asyncio.gather(*(one(http, slots, n, sent) for n in range(jobs)))
        print(f"Done in {time.perf_counter() - started:.2f} s: {jobs} jobs, {sent[0]} API requests")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
