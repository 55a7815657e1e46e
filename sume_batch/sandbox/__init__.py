"""The sandbox: a stateful simulator of the Sume Public API over real HTTP (issue 3).

Build a `SandboxConfig` (usually `SandboxConfig.from_profile(...)`), then `create_app` for
in-process use, `serve` for the foreground, or `running_sandbox` for a background loopback server.
"""

from __future__ import annotations

from sume_batch.sandbox.app import create_app
from sume_batch.sandbox.config import DEFAULT_KEY, NO_ACCESS_KEY, PROFILES, SandboxConfig
from sume_batch.sandbox.results import PLANTED_EMAIL, PLANTED_PROVIDER_TOKEN
from sume_batch.sandbox.server import RunningSandbox, running_sandbox, serve

__all__ = [
    "DEFAULT_KEY",
    "NO_ACCESS_KEY",
    "PLANTED_EMAIL",
    "PLANTED_PROVIDER_TOKEN",
    "PROFILES",
    "RunningSandbox",
    "SandboxConfig",
    "create_app",
    "running_sandbox",
    "serve",
]
