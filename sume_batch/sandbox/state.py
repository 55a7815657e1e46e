"""Everything one sandbox remembers — jobs, credits, uploads, assets, media, counters — and its clock.

Time is the injected clock (plus any offset tests add); job progress is computed from it lazily.
Randomness comes from the config's seed, split into named streams so that, say, extra reads do not
change which job fails.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sume_batch.sandbox import catalog, results
from sume_batch.sandbox.assets import Asset, seed_assets
from sume_batch.sandbox.books import IdempotencyBook, Ledger, Stats
from sume_batch.sandbox.config import SandboxConfig
from sume_batch.sandbox.envelope import SandboxError
from sume_batch.sandbox.faults import RateLimiter
from sume_batch.sandbox.jobs import FAILURE_STATUSES, Job, Scheduler
from sume_batch.sandbox.media import Signer
from sume_batch.sandbox.uploads import Upload

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
STREAMS = ("ids", "requests", "jobs", "shapes", "faults")
_ID_CHARS = "0123456789abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class JobOrder:
    """A job a create request asks for, already validated and priced."""

    type: str
    params: dict[str, Any]
    price: int
    links: dict[str, str]


@dataclass(frozen=True)
class Urls:
    """Absolute URLs for one request's host: plain ones, and media ones that may be signed."""

    base: str  # scheme://host:port, no trailing slash
    state: SandboxState

    def plain(self, path: str) -> str:
        """`path` on this host, unsigned."""
        return self.base + path

    def media(self, path: str, signed: bool) -> str:
        """`path` on this host, with a fresh signed query string when `signed`."""
        if not signed:
            return self.base + path
        issued = self.state.wall(self.state.now())
        query = self.state.signer.query("GET", path, issued, self.state.config.media_url_ttl)
        return f"{self.base}{path}?{query}"


class SandboxState:
    """The sandbox's memory; only ever touched from the server's event loop, so it needs no locks."""

    def __init__(self, config: SandboxConfig, *, clock: Clock, sleep: Sleep, epoch: float) -> None:
        self.config = config
        self.sleep = sleep
        self._clock = clock
        self._epoch = epoch
        self.reset()

    def reset(self) -> None:
        """Forget everything: back to the workspace as it was at start, under the config's seed."""
        seed = self.config.seed
        self._rngs = {name: random.Random(f"{seed}/{name}") for name in STREAMS}
        self._start = self._clock()
        self.offset = 0.0
        self.jobs: dict[str, Job] = {}
        self.scheduler = Scheduler(self.config.capacity, self._finish)
        self.ledger = Ledger()
        self.idempotency = IdempotencyBook()
        self.stats = Stats()
        self.uploads: dict[str, Upload] = {}
        self.assets: dict[str, Asset] = {asset.id: asset for asset in seed_assets(self._epoch)}
        self.media: dict[str, bool] = dict.fromkeys(catalog.static_media_paths(), False)  # path → signed
        for asset in self.assets.values():
            self.media.update(dict.fromkeys(asset.media_paths(), False))
        self.signer = Signer(self._rngs["ids"].randbytes(32))
        self.limiter = RateLimiter()
        self.scripted_faults: list[dict[str, Any]] = []
        self.workspace_id = self.config.workspace_id or "ws_sbx" + secrets.token_hex(5)

    def apply_config(self, config: SandboxConfig) -> None:
        """Switch knobs at runtime; jobs, credits and counters are kept."""
        self.config = config
        self.scheduler.capacity = config.capacity

    def rng(self, stream: str) -> random.Random:
        """One of the seeded random streams (`ids`, `requests`, `jobs`, `shapes`, `faults`)."""
        return self._rngs[stream]

    def now(self) -> float:
        """Sandbox time: seconds since start on the injected clock, plus any advance."""
        return self._clock() - self._start + self.offset

    def tick(self) -> float:
        """Bring every job up to date and return the current sandbox time."""
        now = self.now()
        self.scheduler.advance(now)
        return now

    def wall(self, sandbox_time: float) -> float:
        """Epoch seconds for a sandbox time."""
        return self._epoch + sandbox_time

    def iso(self, epoch: float) -> str:
        """An ISO 8601 UTC timestamp with milliseconds."""
        stamp = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
        return stamp.replace("+00:00", "Z")

    def new_id(self, prefix: str, length: int = 20) -> str:
        """A fresh id like `job_4k2...`, drawn from the seed."""
        rng = self._rngs["ids"]
        return prefix + "_" + "".join(rng.choice(_ID_CHARS) for _ in range(length))

    def request_id(self) -> str:
        """A fresh `req_...` id."""
        return "req_" + self._rngs["requests"].randbytes(12).hex()

    def remaining_credits(self) -> int:
        """Credits a new job may still reserve."""
        return self.ledger.remaining(self.config.credits + self.config.bonus_credits)

    def create_jobs(self, orders: list[JobOrder]) -> list[Job]:
        """Accept the orders as jobs, reserving their credits; 402 (and nothing created) when short."""
        now = self.tick()
        required, remaining = sum(order.price for order in orders), self.remaining_credits()
        if required > remaining:
            raise SandboxError(
                402,
                "insufficient_credits",
                "Not enough credits for this request.",
                {"required_credits": required, "remaining_credits": remaining},
            )
        self.ledger.reserve(required)
        return [self._new_job(order, now) for order in orders]

    def _new_job(self, order: JobOrder, now: float) -> Job:
        rng, faults = self._rngs["jobs"], self.config.faults
        jitter = 1 + self.config.duration_jitter * (2 * rng.random() - 1)
        outcome = _draw_outcome(rng.random(), faults.job_failed, faults.job_expired, faults.job_canceled)
        if outcome == "canceled" and rng.random() < 0.5:
            outcome = "cancelled"  # serve both spellings (sume-api.md §4)
        job = Job(
            id=self.new_id("job"),
            type=order.type,
            seq=len(self.jobs) + 1,
            created_at=now,
            seconds=self.config.job_seconds(order.type) * jitter,
            outcome=outcome,
            price=order.price,
            params=order.params,
            signed_media=rng.random() < self.config.signed_media_rate,
            error=results.failure_error(
                outcome,
                rng,
                leaky=rng.random() < faults.leaky_error,
                echo=order.params if self.config.echo_input else None,
            ),
            uses_capacity=order.type != "asset_ingest",
            links=dict(order.links),
        )
        self.jobs[job.id] = job
        self.stats.job_ids.append(job.id)
        self.scheduler.submit(job, now)
        return job

    def _finish(self, job: Job) -> None:
        completed = job.outcome == "completed"
        self.ledger.settle(job.price, completed=completed)
        if completed:
            self.media.update(dict.fromkeys(results.media_paths(job), job.signed_media))
        asset = self.assets.get(job.links.get("asset_id", ""))
        if asset is not None:
            asset.status = "ready" if completed else "failed"

    def job_json(self, job: Job, now: float, urls: Urls, *, status: str | None = None) -> dict[str, Any]:
        """The job object (README table); `status` overrides the computed one (create answers say queued)."""
        shown = status or job.status_at(now)
        done = shown == "completed"
        echo = {"input": job.params} if self.config.echo_input else {}
        return {
            **echo,
            "id": job.id,
            "object": "job",
            "type": job.type,
            "status": shown,
            "created_at": self.iso(self.wall(job.created_at)),
            "updated_at": self.iso(self.wall(job.created_at if status else job.updated_at(now))),
            "error": job.error if shown in FAILURE_STATUSES else None,
            "result_url": results.primary_url(job, lambda p: urls.media(p, job.signed_media))
            if done
            else None,
        }

    def stats_json(self) -> dict[str, Any]:
        """The counters plus the credit books."""
        self.tick()
        body = self.stats.to_json()
        body["credits"] = {
            "spent": self.ledger.spent,
            "reserved": self.ledger.reserved,
            "refunded": self.ledger.refunded,
            "remaining": self.remaining_credits(),
        }
        body["sandbox_time"] = round(self.now(), 3)
        body["peak_unfinished"] = self.scheduler.peak_unfinished  # clients' jobs in flight at once, at most
        return body


def _draw_outcome(draw: float, failed: float, expired: float, canceled: float) -> str:
    if draw < failed:
        return "failed"
    if draw < failed + expired:
        return "expired"
    if draw < failed + expired + canceled:
        return "canceled"
    return "completed"
