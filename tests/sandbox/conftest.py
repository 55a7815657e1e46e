"""Sandbox test fixtures: an app on a hand-driven clock, clients for it in-process and over loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from sandbox_helpers import Sandbox

from sume_batch.sandbox import RunningSandbox, SandboxConfig, running_sandbox


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def make_sandbox() -> Callable[..., Sandbox]:
    """Build an in-process sandbox: `make_sandbox("chaos", seed=3, capacity=1)`."""

    def make(profile: str = "instant", *, seed: int = 0, **overrides: Any) -> Sandbox:
        return Sandbox(SandboxConfig.from_profile(profile, seed=seed, **overrides))

    return make


@pytest.fixture
def sandbox(make_sandbox: Callable[..., Sandbox]) -> Sandbox:
    """The instant profile, with the answer shape and status pinned for simple assertions."""
    return make_sandbox(create_shape="both", create_status="200")


@pytest.fixture
async def api(sandbox: Sandbox) -> AsyncIterator[httpx.AsyncClient]:
    """An authenticated in-process client on `sandbox`."""
    async with sandbox.client() as client:
        yield client


@pytest.fixture
async def raw(sandbox: Sandbox) -> AsyncIterator[httpx.AsyncClient]:
    """An unauthenticated in-process client on `sandbox` (storage, `/_sandbox`)."""
    async with sandbox.client(auth=False) as client:
        yield client


@pytest.fixture(scope="module")
def loopback() -> Iterator[RunningSandbox]:
    """One real uvicorn server per test module (reset before each test that uses `live`)."""
    config = SandboxConfig.from_profile("instant", create_shape="both", create_status="200")
    with running_sandbox(config) as running:
        yield running


@pytest.fixture
def live(loopback: RunningSandbox) -> RunningSandbox:
    """The module's loopback server, reset to a clean state and the default knobs."""
    loopback.reset()
    loopback.configure(
        idempotency="honour", faults={}, rate_limits={"reads_per_minute": None, "creates_per_minute": None}
    )
    return loopback
