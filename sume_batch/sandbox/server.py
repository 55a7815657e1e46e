"""Serving the sandbox over real HTTP with uvicorn: `serve` in the foreground, `running_sandbox` in a thread.

Both hand uvicorn a thin wrapper that exposes the connection's transport to the fault layer, so
resets and dropped answers happen on the real socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
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
        cycle = getattr(send, "__self__", None)  # uvicorn's RequestResponseCycle
        transport = getattr(cycle, "transport", None)
        if transport is not None:
            scope[TRANSPORT_KEY] = transport
        await self.app(scope, receive, send)


def _server(config: SandboxConfig, *, access_log: bool) -> uvicorn.Server:
    app = ExposeTransport(create_app(config))
    settings = uvicorn.Config(
        app,
        http="h11",
        loop="asyncio",
        lifespan="off",
        access_log=access_log,
        log_level="warning",
        timeout_graceful_shutdown=2,
    )
    return uvicorn.Server(settings)


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on `host:port`, bound here so a busy port is an `OSError` for the caller."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP proto: asyncio sets NODELAY
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def serve(
    config: SandboxConfig,
    host: str = "127.0.0.1",
    port: int = 8787,
    *,
    echo: Callable[[str], None] | None = None,
    access_log: bool = False,
) -> None:
    """Serve in the foreground until Ctrl-C; once listening, `echo` one line with the base URL and test key.

    `echo` defaults to a flushed `print`. A port that cannot be bound raises `OSError` before anything runs.
    """
    server, sock = _server(config, access_log=access_log), _bind(host, port)
    say = echo or (lambda line: print(line, flush=True))

    async def run() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started:
            url = f"http://{host}:{sock.getsockname()[1]}/api/v1"
            say(f"Sume sandbox ({config.profile}, seed {config.seed}) at {url} - test key: {config.api_key}")
        await task

    with sock, contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises Ctrl-C after shutting down
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
    """Serve `config` on `host:port` (0 = any free port) in a thread until the block ends.

    A port that cannot be bound raises `OSError`; a server that does not come up raises `RuntimeError`.
    """
    server, sock = _server(config, access_log=False), _bind(host, port)
    with sock:
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="sume-sandbox", daemon=True
        )
        thread.start()
        try:
            _wait_until_started(server, thread)
            handle = RunningSandbox(f"http://{host}:{sock.getsockname()[1]}", config.api_key)
            try:
                yield handle
            finally:
                handle.close()
        finally:
            server.should_exit = True
            thread.join(STARTUP_TIMEOUT)


def _wait_until_started(server: uvicorn.Server, thread: threading.Thread) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the sandbox server did not start")
        time.sleep(0.005)
