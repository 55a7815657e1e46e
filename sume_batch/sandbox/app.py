"""`create_app`: the sandbox as one Starlette app, the same whether served by uvicorn or used in-process.

Routes live in `routes_read`, `routes_create`, `storage` and `introspect`; `gate` stands in front.
"""

from __future__ import annotations

import asyncio
import time

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from sume_batch.sandbox import introspect, routes_create, routes_read, storage
from sume_batch.sandbox.config import SandboxConfig
from sume_batch.sandbox.envelope import SandboxError, handle_http_error, handle_sandbox_error
from sume_batch.sandbox.gate import Gate
from sume_batch.sandbox.state import Clock, SandboxState, Sleep


def create_app(
    config: SandboxConfig,
    *,
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
    epoch: float | None = None,
) -> Starlette:
    """The ASGI app for `config`. `clock` drives job progress and URL expiry (seconds, monotonic);
    `sleep` serves slow-response faults; `epoch` is the wall time shown for clock zero (default: now).
    """
    state = SandboxState(config, clock=clock, sleep=sleep, epoch=time.time() if epoch is None else epoch)
    app = Starlette(
        routes=[*routes_read.ROUTES, *routes_create.ROUTES, *storage.ROUTES, *introspect.ROUTES],
        middleware=[Middleware(Gate, state=state)],
        exception_handlers={SandboxError: handle_sandbox_error, HTTPException: handle_http_error},
    )
    app.state.sandbox = state
    return app
