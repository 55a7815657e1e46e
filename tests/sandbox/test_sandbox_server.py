"""Config profiles, `running_sandbox` and its helpers, the `/_sandbox` routes, and `serve` in a real process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from sandbox_helpers import AUTH

from sume_batch.sandbox import SandboxConfig, running_sandbox


def test_profiles() -> None:
    instant, realistic, chaos = (
        SandboxConfig.from_profile(name, seed=3) for name in ("instant", "realistic", "chaos")
    )
    assert instant.job_seconds("video_generation") == 0 and instant.faults.reset == 0
    assert 1 < realistic.job_seconds("image_generation") < 10 < 60 < realistic.job_seconds("video_generation")
    assert realistic.faults.job_failed > 0 and realistic.faults.reset == 0
    assert chaos.rate_limits.creates_per_minute and all(
        getattr(chaos.faults, kind) > 0
        for kind in ("server_error", "slow", "reset", "garbage", "drop_after_commit")
    )
    assert chaos.seed == 3 and chaos.api_key == "sume_test_sandbox_key"


def test_overrides_merge_into_nested_knobs() -> None:
    config = SandboxConfig.from_profile(
        "realistic", speed_factor=10, faults={"reset": 0.5}, prices={"image": 9}
    )
    assert config.job_seconds("image_generation") == pytest.approx(0.6)
    assert (config.faults.reset, config.faults.job_failed, config.prices.image) == (0.5, 0.05, 9)
    assert config.prices.video_per_second["720p"] == 4


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("turbo", {}, "unknown sandbox profile 'turbo' (choose from instant, realistic, chaos)"),
        ("instant", {"colour": 1}, "unknown sandbox setting(s): colour"),
        (
            "instant",
            {"capacity": 0, "idempotency": "maybe"},
            "capacity must be at least 1; idempotency must be one of honour, ignore",
        ),
        ("instant", {"faults": {"reset": 2}}, "faults.reset must be between 0 and 1"),
    ],
)
def test_bad_configs_say_what_is_wrong(name: str, overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as error:
        SandboxConfig.from_profile(name, **overrides)
    assert str(error.value) == message


def test_running_sandbox_helpers_and_introspection_routes() -> None:
    config = SandboxConfig.from_profile("instant", durations={"image_generation": 50.0})
    with running_sandbox(config) as live, httpx.Client(base_url=live.base_url, headers=AUTH) as client:
        assert live.base_url.startswith("http://127.0.0.1:") and live.base_url.endswith("/api/v1")
        job = client.post("/images/generations", json={"prompt": "x"}).json()
        job_id = job.get("job_id") or job["job"]["id"]
        live.advance(50)
        assert client.get(f"/jobs/{job_id}").json()["status"] == "completed"
        assert live.configure(capacity=9)["capacity"] == 9
        bad = httpx.patch(f"{live.root_url}/_sandbox/config", json={"capacity": "nine"})
        assert bad.status_code == 400 and "capacity" in bad.json()["error"]["details"]["config"]
        stats = live.stats()
        assert stats["job_ids"] == [job_id] and stats["credits"]["spent"] == 4
        assert stats["requests"]["POST /api/v1/images/generations"] in ({"200": 1}, {"202": 1})
        live.reset()
        after = live.stats()
        assert after["job_ids"] == [] and after["requests"] == {} and after["credits"]["spent"] == 0
        assert client.get(f"/jobs/{job_id}").status_code == 404


def test_running_sandbox_refuses_a_busy_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with (
            pytest.raises(OSError, match="in use"),
            running_sandbox(SandboxConfig(), port=taken.getsockname()[1]),
        ):
            pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_serve_starts_fast_and_answers_a_plain_request() -> None:
    port = free_port()
    code = f"from sume_batch.sandbox import SandboxConfig, serve; serve(SandboxConfig(), port={port})"
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = process.stdout.readline() if process.stdout else ""
        elapsed = time.monotonic() - started
        assert line.strip() == (
            f"Sume sandbox (instant, seed 0) at http://127.0.0.1:{port}/api/v1 - test key: sume_test_sandbox_key"
        )
        assert elapsed < 2.0
        me = httpx.get(f"http://127.0.0.1:{port}/api/v1/me", headers=AUTH)
        assert me.status_code == 200 and me.json()["workspace"]["id"]
    finally:
        os.kill(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=10)
    assert process.returncode == 0 and err == ""
