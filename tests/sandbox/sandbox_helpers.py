"""Helpers shared by the sandbox tests: a hand-driven clock, an in-process sandbox, answer readers."""

from __future__ import annotations

from typing import Any

import httpx

from sume_batch.sandbox import SandboxConfig, create_app
from sume_batch.sandbox.state import SandboxState

KEY = "sume_test_sandbox_key"
AUTH = {"Authorization": f"Bearer {KEY}"}
EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z


class FakeClock:
    """A monotonic clock that only moves when a test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeSleep:
    """Records the slow-response delays instead of waiting them out."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


class Sandbox:
    """One in-process sandbox: its app, its clock, and a way to open clients on it."""

    def __init__(self, config: SandboxConfig) -> None:
        self.clock = FakeClock()
        self.sleep = FakeSleep()
        self.app = create_app(config, clock=self.clock, sleep=self.sleep, epoch=EPOCH)

    @property
    def state(self) -> SandboxState:
        state: SandboxState = self.app.state.sandbox
        return state

    def client(self, *, auth: bool = True, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
        """An async client on the app; `auth=False` sends no key (for storage and introspection)."""
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://sandbox.test/api/v1",
            headers={**(AUTH if auth else {}), **(headers or {})},
        )


def job_id_of(body: dict[str, Any]) -> str:
    """The job id in a create answer, whichever documented shape it came in."""
    job = body.get("job")
    return str(job["id"] if isinstance(job, dict) else body["job_id"])


def stats_of(sandbox: Sandbox) -> dict[str, Any]:
    """The in-process sandbox's counters."""
    return sandbox.state.stats_json()
