"""`sume-batch sandbox`: serve the simulator of the Sume API in the foreground."""

from __future__ import annotations

from collections.abc import Callable

from sume_batch.errors import UsageError

Echo = Callable[[str], None]


def sandbox(
    *, host: str, port: int, profile: str, seed: int, speed: float | None, idempotency: str | None, echo: Echo
) -> int:
    """Serve the simulator in the foreground until Ctrl-C."""
    from sume_batch.sandbox import SandboxConfig, serve  # noqa: PLC0415 - load the server stack only when asked

    overrides: dict[str, object] = {}
    if speed is not None:
        overrides["speed_factor"] = speed
    if idempotency is not None:
        overrides["idempotency"] = idempotency
    config = SandboxConfig.from_profile(profile, seed=seed, **overrides)
    if host not in ("127.0.0.1", "localhost", "::1"):
        echo(f"warning: serving on {host}, not loopback: other machines may reach this sandbox")
    try:
        serve(config, host, port, echo=echo)
    except OSError as error:
        raise UsageError(f"could not serve on {host}:{port}: {error.strerror or error}") from error
    return 0
