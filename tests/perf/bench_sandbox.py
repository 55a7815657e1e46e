"""Benchmark: requests per second the `instant` sandbox serves on one CPU over loopback.

Run: .venv/bin/python tests/perf/bench_sandbox.py [--requests N] [--seconds S] [--connections C]
The server (uvicorn, as `sume-batch sandbox` runs it) is a subprocess pinned to one CPU; the load
comes from another process pinned to another CPU, over keep-alive connections to 127.0.0.1 only,
bounded by a request count and a time limit per scenario. Excluded from the default test run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

KEY = "sume_test_sandbox_key"
HOST = "127.0.0.1"
SCENARIOS = (
    ("GET /me", "GET", "/api/v1/me", None),
    ("GET /credits", "GET", "/api/v1/credits", None),
    ("GET /jobs/{id}", "GET", "/api/v1/jobs/{job_id}", None),
    ("GET /jobs?limit=20", "GET", "/api/v1/jobs?limit=20", None),
    ("POST /images/generations", "POST", "/api/v1/images/generations", {"prompt": "A jar on marble"}),
)


def request_bytes(method: str, path: str, body: dict[str, str] | None) -> bytes:
    """One keep-alive HTTP/1.1 request, built once and sent many times."""
    payload = json.dumps(body).encode() if body is not None else b""
    head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {KEY}\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
    return (head + "\r\n").encode() + payload


async def one_connection(
    port: int,
    request: bytes,
    deadline: float,
    budget: list[int],
    latencies: list[float],
    statuses: dict[str, int],
) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        while budget[0] > 0 and time.monotonic() < deadline:
            budget[0] -= 1
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            status = head.split(b" ", 2)[1].decode()
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()
        await writer.wait_closed()


async def load(port: int, request: bytes, count: int, seconds: float, connections: int) -> dict[str, object]:
    """Send `request` up to `count` times within `seconds` over `connections` keep-alive connections."""
    budget, latencies, statuses = [count], list[float](), dict[str, int]()
    started = time.perf_counter()
    deadline = time.monotonic() + seconds
    await asyncio.gather(
        *(one_connection(port, request, deadline, budget, latencies, statuses) for _ in range(connections))
    )
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "statuses": statuses,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
    }


def serve_pinned(port: int, cpu: int) -> None:
    os.sched_setaffinity(0, {cpu})
    from sume_batch.sandbox import SandboxConfig, serve

    config = SandboxConfig.from_profile("instant", create_shape="job", create_status="200", credits=10**9)
    serve(config, HOST, port)


def load_pinned(port: int, cpu: int, spec: str) -> None:
    os.sched_setaffinity(0, {cpu})
    method, path, body, count, seconds, connections = json.loads(spec)
    result = asyncio.run(load(port, request_bytes(method, path, body), count, seconds, connections))
    print(json.dumps(result), flush=True)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def first_job_id(port: int) -> str:
    import httpx

    answer = httpx.post(
        f"http://{HOST}:{port}/api/v1/images/generations",
        json={"prompt": "x"},
        headers={"Authorization": f"Bearer {KEY}"},
    ).json()
    return str(answer["job"]["id"])


def bench(count: int, seconds: float, connections: int) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = cpus[0], cpus[-1]
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), str(server_cpu)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        print(server.stdout.readline().strip())
        job_id = first_job_id(port)
        print(
            f"server on CPU {server_cpu}, load on CPU {client_cpu} ({len(cpus)} CPUs); "
            f"{connections} connections; at most {count} requests or {seconds:g} s per scenario"
        )
        print(
            f"{'scenario':28} {'requests':>8} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'server CPU':>10}  statuses"
        )
        for name, method, path, body in SCENARIOS:
            spec = json.dumps([method, path.format(job_id=job_id), body, count, seconds, connections])
            cpu_before = cpu_seconds(server.pid)
            out = subprocess.run(
                [sys.executable, __file__, "--load", str(port), str(client_cpu), spec],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            result = json.loads(out)
            busy = (cpu_seconds(server.pid) - cpu_before) / result["seconds"]
            rate = result["requests"] / result["seconds"]
            print(
                f"{name:28} {result['requests']:>8} {rate:>8.0f} {result['p50_ms']:>7.2f} "
                f"{result['p99_ms']:>7.2f} {busy:>9.0%}  {result['statuses']}"
            )
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=10)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve_pinned(int(sys.argv[2]), int(sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        load_pinned(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="per scenario (default 20000)")
    parser.add_argument("--seconds", type=float, default=8.0, help="per scenario (default 8)")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections (default 8)")
    args = parser.parse_args()
    bench(args.requests, args.seconds, args.connections)


if __name__ == "__main__":
    main()
