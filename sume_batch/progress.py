"""Progress a person can read while a run goes: counts per state, credits, time, and why we wait.

Live on a terminal (rich), a plain line every few seconds when not, nothing with --quiet. Every
text shown is built from job ids (our names) and states; error text reaches here redacted.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from rich.console import Console
from rich.live import Live
from rich.text import Text

DONE = frozenset(
    {"downloaded", "failed", "canceled", "expired", "rejected", "skipped", "uncertain", "timed_out"}
)
ORDER = ("planned", "reserved", "submitting", "submitted", "completed", "fetched", *sorted(DONE))
PLAIN_EVERY_S = 5.0


@dataclass
class Progress:
    """Receives the executor's and the client's events and shows them."""

    states: dict[str, str]  # job id → state, as the run starts
    echo: Callable[[str], None]
    live: bool = False
    quiet: bool = False
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time  # only to say until when a wait lasts, in local time
    waits: dict[str, float] = field(default_factory=dict)  # why → when it ends (on `clock`)
    credits: Callable[[], float] = lambda: 0.0  # credits reserved so far (the executor's ledger)
    started: float = field(default=0.0)
    finished_here: int = 0  # jobs that reached a final state during this run (for the ETA)
    last_plain: float = field(default=0.0)
    _live: Live | None = None

    def __enter__(self) -> Progress:
        self.started = self.last_plain = self.clock()
        if self.live and not self.quiet:
            self._live = Live(
                self.render(), console=Console(stderr=True), refresh_per_second=4, transient=True
            )
            self._live.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self._live is not None:
            self._live.stop()

    def change(self, job_id: str, state: str) -> None:
        """A job moved (the executor's `on_change`)."""
        if state in DONE and self.states.get(job_id) not in DONE:
            self.finished_here += 1
        self.states[job_id] = state
        if (
            state in ("failed", "canceled", "expired", "rejected", "uncertain")
            and not self.quiet
            and not self._live
        ):
            self.echo(f"{job_id}: {state}")
        self._refresh()

    def wait(self, why: str, seconds: float) -> None:
        """The client waits (its `on_wait`) for `why`, `seconds` long; 0 s when that wait is over."""
        if seconds >= 1:
            self.waits[why] = self.clock() + seconds
        else:
            self.waits.pop(why, None)
        self._refresh()

    @property
    def waiting(self) -> str:
        """The longest wait still running, e.g. `backing off 429 on GET /credits until 14:03:12 (2:00)`."""
        now = self.clock()
        left = {why: end - now for why, end in self.waits.items() if end > now}
        if not left:
            return ""
        why = max(left, key=left.__getitem__)
        until = time.strftime("%H:%M:%S", time.localtime(self.wall() + left[why]))
        return f"{why} until {until} ({_clock(left[why])})"

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self.render())
        elif not self.quiet and self.clock() - self.last_plain >= PLAIN_EVERY_S:
            self.last_plain = self.clock()
            self.echo(self.line())

    def line(self) -> str:
        """The status line, like `[0:42] 12/40 done · 3 submitted · 96 credits reserved · ETA 1:10`
        followed by `· waiting: backing off 429 on GET /credits until 14:03:12 (0:12)` when it waits."""
        counts = Counter(self.states.values())
        done = sum(counts[state] for state in DONE)
        parts = [f"[{_clock(self.clock() - self.started)}] {done}/{len(self.states)} done"]
        parts += [
            f"{counts[state]} {state}" for state in ORDER if counts[state] and state not in ("downloaded",)
        ]
        parts.append(f"{self.credits():,.0f} credits reserved")
        eta = self.eta(len(self.states) - done)
        if eta is not None:
            parts.append(f"ETA {_clock(eta)}")
        if self.waiting:
            parts.append(f"waiting: {self.waiting}")
        return " · ".join(parts)

    def eta(self, remaining: int) -> float | None:
        elapsed = self.clock() - self.started
        if not self.finished_here or not remaining:
            return None
        return elapsed / self.finished_here * remaining

    def render(self) -> Text:
        return Text(self.line())


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"
