"""Serving the sandbox over real HTTP with uvicorn: `serve` in the foreground, `running_sandbox` in a thread.

Both hand uvicorn a thin wrapper that exposes the connection's transport to the fault layer, so
resets and dropped answers happen on the real socket.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from sume_batch.sandbox.app import create_app
from sume_batch.sandbox.config import SandboxConfig
from sume_batch.sandbox.faults import TRANSPORT_KEY

STARTUP_TIMEOUT = 10.0


class ExposeTransport:
    """ASGI wrapper: puts uvicorn's connection transport in the scope for `faults`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transport = getattr(
            getattr(send, "__self__", None), "transport", None
        )  # uvicorn's RequestResponseCycle
        if transport is not None:
            scope[TRANSPORT_KEY] = transport
        await self.app(scope, receive, send)


def _server(config: SandboxConfig, host: str, port: int, *, access_log: bool) -> uvicorn.Server:
    app = ExposeTransport(create_app(config))
    settings = uvicorn.Config(
        app,
        host=host,
        port=port,
        http="h11",
        loop="asyncio",
        lifespan="off",
        access_log=access_log,
        log_level="warning",
        timeout_graceful_shutdown=2,
    )
    return uvicorn.Server(settings)


def _bound_port(server: uvicorn.Server) -> int:
    return int(server.servers[0].sockets[0].getsockname()[1])


def serve(
    config: SandboxConfig,
    host: str = "127.0.0.1",
    port: int = 8787,
    *,
    echo: Callable[[str], None] = print,
    access_log: bool = False,
) -> None:
    """Serve in the foreground until interrupted; prints one line with the base URL and the test key."""
    server = _server(config, host, port, access_log=access_log)

    async def run() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started:
            echo(
                f"Sume sandbox ({config.profile}, seed {config.seed}) at http://{host}:{_bound_port(server)}"
                f"/api/v1 - test key: {config.api_key}"
            )
        await task

    asyncio.run(run())


class RunningSandbox:
    """A sandbox serving on loopback in a background thread; made by `running_sandbox`."""

    def __init__(self, root_url: str, api_key: str) -> None:
        self.root_url = root_url
        self.base_url = f"{root_url}/api/v1"
        self.api_key = api_key
        self._client = httpx.Client(base_url=root_url, timeout=10.0)

    def stats(self) -> dict[str, Any]:
        """`GET /_sandbox/stats`."""
        return self._call("GET", "/_sandbox/stats")

    def reset(self) -> None:
        """`POST /_sandbox/reset`."""
        self._call("POST", "/_sandbox/reset")

    def configure(self, **overrides: Any) -> dict[str, Any]:
        """`PATCH /_sandbox/config`: change knobs now, e.g. `configure(idempotency="ignore")`."""
        return self._call("PATCH", "/_sandbox/config", overrides)

    def advance(self, seconds: float) -> None:
        """Move sandbox time forward without sleeping."""
        self._call("POST", "/_sandbox/clock/advance", {"seconds": seconds})

    def add_fault(self, kind: str, *, path: str = "/api/v1/", method: str = "*", times: int = 1) -> None:
        """Queue a one-shot fault for the next matching request(s)."""
        self._call("POST", "/_sandbox/faults", {"kind": kind, "path": path, "method": method, "times": times})

    def close(self) -> None:
        """Close the introspection client."""
        self._client.close()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self._client.request(method, path, json=body)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result


@contextmanager
def running_sandbox(
    config: SandboxConfig, host: str = "127.0.0.1", port: int = 0
) -> Iterator[RunningSandbox]:
    """Serve `config` on `host:port` (0 = any free port) in a thread until the block ends."""
    server = _server(config, host, port, access_log=False)
    thread = threading.Thread(target=server.run, name="sume-sandbox", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(STARTUP_TIMEOUT)
            raise RuntimeError(f"the sandbox could not start on {host}:{port}")
        time.sleep(0.005)
    handle = RunningSandbox(f"http://{host}:{_bound_port(server)}", config.api_key)
    try:
        yield handle
    finally:
        handle.close()
        server.should_exit = True
        thread.join(STARTUP_TIMEOUT)
