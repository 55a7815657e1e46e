"""The API a run talks to: the embedded sandbox (`run --sandbox`), or SUME_API_BASE_URL with SUME_API_KEY."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from sume_batch.errors import UsageError
from sume_batch.target import DEFAULT_BASE_URL


@dataclass(frozen=True)
class Rehearsal:
    """`run --sandbox`: the embedded simulator's profile, and what the run sets on it to rehearse a
    campaign as large as the real one (the profile's own values where a knob is None)."""

    profile: str = "instant"
    seed: int | None = None
    capacity: int | None = None  # generations at once (the profiles: 4)
    credits: int | None = None  # the monthly balance (the profiles: 10,000)
    speed: float | None = None  # 10: every job ten times faster than the profile

    def overrides(self) -> dict[str, object]:
        """The sandbox settings (`SandboxConfig`) this rehearsal changes."""
        names = {"capacity": "capacity", "credits": "credits", "speed": "speed_factor"}
        return {names[name]: value for name, value in self._set().items() if name in names}

    def flags(self) -> list[str]:
        """The command-line flags that choose this rehearsal again (for the resume hint)."""
        words = ["--sandbox-profile", self.profile]
        for name, value in self._set().items():
            words += [f"--sandbox-{name}", f"{value:g}" if isinstance(value, float) else str(value)]
        return words

    def _set(self) -> dict[str, object]:
        chosen = dataclasses.asdict(self)
        return {
            name: chosen[name]
            for name in ("seed", "capacity", "credits", "speed")
            if chosen[name] is not None
        }


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    api_key: str
    rehearsal: Rehearsal | None = None  # when the run talks to the embedded sandbox

    @property
    def sandbox(self) -> str | None:
        """The simulator's profile, when this is a rehearsal."""
        return self.rehearsal.profile if self.rehearsal else None

    def describe(self) -> str:
        return f"the sandbox ({self.sandbox} profile)" if self.sandbox else f"the Sume API at {self.base_url}"


@contextlib.contextmanager
def endpoint(*, sandbox: Rehearsal | None, env: Mapping[str, str]) -> Iterator[Endpoint]:
    """A sandbox on an ephemeral loopback port, or SUME_API_BASE_URL with SUME_API_KEY."""
    if sandbox is not None:
        from sume_batch.sandbox import SandboxConfig, running_sandbox  # noqa: PLC0415 - only for --sandbox

        config = SandboxConfig.from_profile(sandbox.profile, seed=sandbox.seed or 0, **sandbox.overrides())
        with running_sandbox(config) as server:
            yield Endpoint(server.base_url, server.api_key, rehearsal=sandbox)
        return
    key = env.get("SUME_API_KEY", "").strip()
    if not key:
        raise UsageError(
            "SUME_API_KEY is not set. Set it to your Sume API key, or add --sandbox to rehearse for free."
        )
    yield Endpoint(env.get("SUME_API_BASE_URL", DEFAULT_BASE_URL), key)
