"""The sandbox's knobs: one frozen `SandboxConfig`, built from a named profile plus overrides.

Profiles: `instant` (no waiting, no faults), `realistic` (seconds for images, minutes for videos),
`chaos` (fast, but every fault at a modest rate and rate limits on).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

JOB_TYPES = (
    "image_generation",
    "video_generation",
    "ads_video",
    "face_swap",
    "reference_analysis",
    "asset_ingest",
)
PROFILES = ("instant", "realistic", "chaos")
DEFAULT_KEY = "sume_test_sandbox_key"
NO_ACCESS_KEY = "sume_test_noaccess"

IdempotencyMode = Literal["honour", "ignore"]
CreateShape = Literal["job", "job_id", "both", "mixed"]
CreateStatus = Literal["200", "202", "mixed"]


@dataclass(frozen=True)
class Prices:
    """Credits charged per job; the docs publish no prices, so these are the sandbox's own table."""

    image: int = 4  # per image (`image_count`)
    video_per_second: Mapping[str, int] = field(
        default_factory=lambda: MappingProxyType({"480p": 2, "720p": 4})
    )
    ads_video: int = 60
    face_swap: int = 20  # per avatar, i.e. per job
    reference_analysis: int = 5
    asset_ingest: int = 1


@dataclass(frozen=True)
class RateLimits:
    """Requests per minute per key; `None` means unlimited. Reads are GETs, creates are POSTs."""

    reads_per_minute: int | None = None
    creates_per_minute: int | None = None


@dataclass(frozen=True)
class Faults:
    """Probabilities (0..1) of each misbehaviour, drawn per request (or per job) from the seed."""

    server_error: float = 0.0  # 500 / 502 / 503 before the handler runs: nothing committed
    slow: float = 0.0  # the answer is delayed by `slow_seconds`
    slow_seconds: float = 0.5
    reset: float = 0.0  # the connection is reset before the handler runs
    garbage: float = 0.0  # the handler runs, then its body is replaced by non-JSON bytes
    drop_after_commit: float = 0.0  # creates only: committed and charged, then no answer at all
    job_failed: float = 0.0
    job_expired: float = 0.0
    job_canceled: float = 0.0
    leaky_error: float = 0.5  # share of failed jobs whose `error.details` carry a raw provider payload


@dataclass(frozen=True)
class SandboxConfig:
    """Everything that makes one sandbox behave differently from another; see `from_profile`."""

    profile: str = "instant"
    seed: int = 0
    speed_factor: float = 1.0  # durations are divided by it: 10 runs ten times faster than the profile
    durations: Mapping[str, float] = field(default_factory=lambda: _durations(0.0))
    duration_jitter: float = 0.0  # each job's duration varies by up to ± this share
    capacity: int = 4  # active generation capacity: jobs running at once
    credits: int = 10_000  # monthly credits
    bonus_credits: int = 0
    plan: str = "sandbox"
    prices: Prices = field(default_factory=Prices)
    api_keys: tuple[str, ...] = (DEFAULT_KEY,)
    no_access_keys: tuple[str, ...] = (NO_ACCESS_KEY,)
    idempotency: IdempotencyMode = "honour"
    create_shape: CreateShape = "mixed"
    create_status: CreateStatus = "mixed"
    rate_limits: RateLimits = field(default_factory=RateLimits)
    faults: Faults = field(default_factory=Faults)
    signed_media_rate: float = 0.5  # share of jobs whose media URLs carry a signed query string
    media_url_ttl: int = 3600  # seconds a signed media URL stays valid
    upload_url_ttl: int = 900
    strict_unknown_fields: bool = False  # unknown body fields: ignored and counted, or refused with 400
    # Job objects echo their request (`input`) and failure messages and details quote it, as some APIs
    # do (v1 documents neither): whatever a prompt holds comes back in every place a client reads.
    echo_input: bool = False
    # The account `GET /me` describes. An empty workspace id gives every fresh state (a start or a
    # reset) an id of its own: a new sandbox is a new world, and a client must not take it for the
    # workspace its store remembers.
    workspace_id: str = ""
    stated_prices: bool = False  # every create's answer states its price (`required_credits`)
    environment: str = "sandbox"  # what GET /me says; "" plays a real API (for tests of targets)
    # Fields laid over every create's answer, wrong types included (`{"job_ids": 12345}`): for tests
    # that a client keeps every id a malformed answer holds.
    create_extras: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    user_id: str = "user_sandbox01"
    user_email: str = "sandbox.owner@example.com"

    def __post_init__(self) -> None:
        problems = config_problems(self)
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def api_key(self) -> str:
        """The key a client should use: the first valid test key."""
        return self.api_keys[0]

    @classmethod
    def from_profile(cls, name: str = "instant", *, seed: int = 0, **overrides: Any) -> SandboxConfig:
        """A profile's config with `overrides` applied; nested knobs may be given as partial dicts."""
        if name not in PROFILES:
            raise ValueError(f"unknown sandbox profile {name!r} (choose from {', '.join(PROFILES)})")
        return _PROFILE_BUILDERS[name](seed).with_overrides(**overrides)

    def with_overrides(self, **overrides: Any) -> SandboxConfig:
        """A copy with some knobs changed; `faults={"reset": 1.0}` changes one fault and keeps the rest."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown sandbox setting(s): {', '.join(unknown)}")
        changes: dict[str, Any] = {
            name: _merge(getattr(self, name), value) for name, value in overrides.items()
        }
        return dataclasses.replace(self, **changes)

    def job_seconds(self, job_type: str) -> float:
        """How long a job of this type takes from start to finish, before jitter."""
        return self.durations.get(job_type, 0.0) / self.speed_factor

    def to_json(self) -> dict[str, Any]:
        """The config as plain JSON values, for `GET /_sandbox/config`."""
        return dict(_jsonable(self))


def config_problems(config: SandboxConfig) -> list[str]:
    """Every reason this config cannot run, as short sentences."""
    problems = _type_problems(config, "") + _type_problems(config.faults, "faults.")
    problems += _type_problems(config.rate_limits, "rate_limits.")
    if problems:
        return problems
    if config.speed_factor <= 0:
        problems.append("speed_factor must be > 0")
    if config.capacity < 1:
        problems.append("capacity must be at least 1")
    if not config.api_keys:
        problems.append("api_keys must hold at least one key")
    for name in ("idempotency", "create_shape", "create_status"):
        allowed = _CHOICES[name]
        if getattr(config, name) not in allowed:
            problems.append(f"{name} must be one of {', '.join(allowed)}")
    for fault in dataclasses.fields(Faults):
        value = getattr(config.faults, fault.name)
        if fault.name != "slow_seconds" and not 0.0 <= value <= 1.0:
            problems.append(f"faults.{fault.name} must be between 0 and 1")
    return problems


_SCALAR_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "bool": (bool,),
    "int | None": (int, type(None)),
}
_TYPE_NAMES = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "int | None": "an integer or null",
}


def _type_problems(section: object, prefix: str) -> list[str]:
    """Scalar knobs of the wrong type (booleans are not numbers here)."""
    problems = []
    for knob in dataclasses.fields(section):  # type: ignore[arg-type]
        wanted = _SCALAR_TYPES.get(str(knob.type))
        value = getattr(section, knob.name)
        wrong_bool = isinstance(value, bool) and bool not in (wanted or ())
        if wanted is not None and (wrong_bool or not isinstance(value, wanted)):
            problems.append(f"{prefix}{knob.name} must be {_TYPE_NAMES[str(knob.type)]}")
    return problems


_CHOICES = {
    "idempotency": ("honour", "ignore"),
    "create_shape": ("job", "job_id", "both", "mixed"),
    "create_status": ("200", "202", "mixed"),
}


def _merge(current: object, value: object) -> object:
    """Apply a partial dict onto a nested dataclass or mapping; anything else replaces outright."""
    if dataclasses.is_dataclass(current) and not isinstance(current, type) and isinstance(value, Mapping):
        return dataclasses.replace(current, **{k: _merge(getattr(current, k), v) for k, v in value.items()})
    if isinstance(current, Mapping) and isinstance(value, Mapping):
        return MappingProxyType({**current, **value})
    if isinstance(current, tuple) and isinstance(value, list):
        return tuple(value)
    return value


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _durations(image: float, video: float = 0.0, ads: float = 0.0, other: float = 0.0) -> Mapping[str, float]:
    return MappingProxyType(
        {
            "image_generation": image,
            "video_generation": video,
            "ads_video": ads,
            "face_swap": video,
            "reference_analysis": other,
            "asset_ingest": other,
        }
    )


def _instant(seed: int) -> SandboxConfig:
    return SandboxConfig(profile="instant", seed=seed)


def _realistic(seed: int) -> SandboxConfig:
    return SandboxConfig(
        profile="realistic",
        seed=seed,
        durations=_durations(image=6.0, video=120.0, ads=180.0, other=30.0),
        duration_jitter=0.25,
        capacity=2,
        idempotency="ignore",  # v1 documents no Idempotency-Key: assume the live API ignores it
        faults=Faults(job_failed=0.05, job_expired=0.01, job_canceled=0.01),
    )


def _chaos(seed: int) -> SandboxConfig:
    return SandboxConfig(
        profile="chaos",
        seed=seed,
        durations=_durations(image=0.3, video=4.0, ads=6.0, other=1.0),
        duration_jitter=0.5,
        capacity=2,
        idempotency="ignore",
        rate_limits=RateLimits(reads_per_minute=600, creates_per_minute=60),
        faults=Faults(
            server_error=0.04,
            slow=0.04,
            slow_seconds=0.3,
            reset=0.02,
            garbage=0.02,
            drop_after_commit=0.05,
            job_failed=0.1,
            job_expired=0.03,
            job_canceled=0.03,
        ),
    )


_PROFILE_BUILDERS = {"instant": _instant, "realistic": _realistic, "chaos": _chaos}
