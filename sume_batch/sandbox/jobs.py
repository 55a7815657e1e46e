"""Sandbox jobs and their schedule: queued → running → processing → a terminal status.

Nothing runs in the background: `Scheduler.advance(now)` replays, lazily, what would have happened
up to `now` on the injected clock, keeping at most `capacity` generation jobs active at once.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

FAILURE_STATUSES = frozenset({"failed", "expired", "canceled", "cancelled"})
TERMINAL_STATUSES = FAILURE_STATUSES | {"completed"}
STATUSES = ("queued", "running", "processing", "completed", "failed", "canceled", "cancelled", "expired")
RUNNING_SHARE = 0.7  # share of a job's time spent `running`; the rest is `processing`


@dataclass(eq=False)
class Job:
    """One job as the sandbox knows it; times are seconds on the sandbox clock."""

    id: str
    type: str
    seq: int
    created_at: float
    seconds: float  # from start to the terminal status
    outcome: str  # the terminal status it will reach
    price: int
    params: dict[str, Any]
    signed_media: bool = False
    error: dict[str, Any] | None = None
    uses_capacity: bool = True
    links: dict[str, str] = field(default_factory=dict)  # e.g. the asset an ingest job indexes
    started_at: float | None = None

    def status_at(self, now: float) -> str:
        """The public status at sandbox time `now`."""
        if self.started_at is None:
            return "queued"
        elapsed = now - self.started_at
        if elapsed >= self.seconds:
            return self.outcome
        return "running" if elapsed < self.seconds * RUNNING_SHARE else "processing"

    def updated_at(self, now: float) -> float:
        """When the status last changed, as of `now`."""
        if self.started_at is None:
            return self.created_at
        elapsed = now - self.started_at
        if elapsed >= self.seconds:
            return self.started_at + self.seconds
        if elapsed >= self.seconds * RUNNING_SHARE:
            return self.started_at + self.seconds * RUNNING_SHARE
        return self.started_at

    def is_done(self, now: float) -> bool:
        """Whether the job has reached its terminal status by `now`."""
        return self.status_at(now) in TERMINAL_STATUSES


class Scheduler:
    """Starts queued jobs as capacity frees up and reports each one as it finishes."""

    def __init__(self, capacity: int, on_finish: Callable[[Job], None]) -> None:
        self.capacity = capacity
        self._on_finish = on_finish
        self._queue: deque[Job] = deque()
        self._active: list[tuple[float, int, Job]] = []  # heap of (finish time, seq, job)
        self._generating = 0  # active jobs that count against capacity
        self.peak_unfinished = 0  # the most capacity jobs made and not yet finished at once (queued too)

    @property
    def active(self) -> int:
        """Generation jobs running or processing right now (after the last `advance`)."""
        return self._generating

    def submit(self, job: Job, now: float) -> None:
        """Add a job created at `now`: it starts at once if capacity allows, else it waits its turn."""
        self.advance(now)
        if job.uses_capacity and self._generating >= self.capacity:
            self._queue.append(job)
        else:
            self._start(job, now)
        if job.uses_capacity:
            self.peak_unfinished = max(self.peak_unfinished, self._generating + len(self._queue))

    def advance(self, now: float) -> None:
        """Finish every job due by `now`, starting queued ones in the freed slots at the time they freed."""
        self._finish_due(now)
        if self._queue and self._generating < self.capacity:  # capacity was raised at runtime
            self._fill(now)
            self._finish_due(now)

    def _finish_due(self, now: float) -> None:
        while self._active and self._active[0][0] <= now:
            finished_at, _, job = heapq.heappop(self._active)
            if job.uses_capacity:
                self._generating -= 1
            self._on_finish(job)
            self._fill(finished_at)

    def _fill(self, at: float) -> None:
        while self._queue and self._generating < self.capacity:
            job = self._queue.popleft()
            self._start(job, max(at, job.created_at))

    def _start(self, job: Job, at: float) -> None:
        job.started_at = at
        heapq.heappush(self._active, (at + job.seconds, job.seq, job))
        if job.uses_capacity:
            self._generating += 1
