"""Progress a person can read while a run goes: counts per state, credits, time, and why we wait.

Live on a terminal, plain lines when not, nothing with --quiet (issue 12, item 5). Every text shown
is built from job ids (our names), states, and the reasons and waits callers pass, already redacted.

A change costs O(1): each job's last state is kept, and the count of each state moves by -1/+1; a
line is built from those counts, one per state of `states.ORDER`, so neither grows with the run.

On a terminal, `rich.live.Live` draws this object, whose `__rich__` builds the line afresh at each
of Live's four refreshes a second, so the clock and a wait's countdown move while no job does (we
chose Live over `rich.progress.Progress`: that draws tasks with bars, and our one line of counts
would be a task pretending to be the run). Off a terminal (CI logs, pipes): a plain line when
something changed and 5 s passed, and a heartbeat at least every 30 s, so a log never looks hung
while the run waits. The heartbeat is a daemon thread rather than a task on the event loop: Live's
refresh is a thread already, and a sign of life should not wait for the loop to be free.

Both threads read what the event loop writes, so `_lock` guards the counts and the waits; nothing
is called out of this module (echo, print, `credits`) while it is held: Live holds its own lock
when it asks for the line, and taking the two in both orders would deadlock.

Colour marks problems (red; yellow for what only needs a look) and what is done (green); a
non-empty `NO_COLOR` (https://no-color.org) leaves every style out, and a plain line is `.plain`
text, which never carries an escape code.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from rich.console import Console
from rich.live import Live
from rich.text import Text

from sume_batch.states import ATTENTION, FAILURES, OK, ORDER, RESTING

PLAIN_EVERY_S = 5.0  # off a terminal, a line after a change at most this often
HEARTBEAT_S = 30.0  # and one at least this often, even when nothing changes
REFRESH_PER_SECOND = 4.0  # on a terminal


def _style(state: str) -> str:
    if state in FAILURES:
        return "red"
    if state in ATTENTION:  # resting short of done but no failure (skipped for the budget)
        return "yellow"
    return "green" if state in OK else ""


_STYLES: dict[str, str] = {state: _style(state) for state in ORDER}


@dataclass(eq=False)
class Progress:
    """Receives the executor's and the client's events and shows them; a context manager."""

    states: dict[str, str]  # job id → state as the run starts; kept up to date as jobs move
    echo: Callable[[str], None]  # plain lines, and failures when there is no live display
    live: bool = False  # draw on `console` (a terminal) rather than echo plain lines
    quiet: bool = False  # show nothing
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time  # only to say until when a wait lasts, in local time
    credits: Callable[[], float] = lambda: 0.0  # credits reserved so far (the executor's ledger)
    console: Console | None = None  # the live display's; stderr when not given
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)  # read for NO_COLOR
    plain_every_s: float = PLAIN_EVERY_S
    heartbeat_s: float = HEARTBEAT_S
    refresh_per_second: float = REFRESH_PER_SECOND
    waits: dict[str, float] = field(default_factory=dict, init=False)  # why → when it ends (`clock`)
    finished_here: int = field(default=0, init=False)  # jobs that came to rest in this run (the ETA)
    started: float = field(default=0.0, init=False)
    colour: bool = field(default=True, init=False)  # no NO_COLOR in `env`
    _counts: Counter[str] = field(default_factory=Counter, init=False, repr=False)
    _last_plain: float = field(default=0.0, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _stopping: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _beat: threading.Thread | None = field(default=None, init=False, repr=False)
    _live: Live | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._counts.update(self.states.values())  # the one pass over every job
        self.started = self._last_plain = self.clock()
        self.colour = not self.env.get("NO_COLOR")

    def __enter__(self) -> Progress:
        with self._lock:
            self.started = self._last_plain = self.clock()
        if self.quiet:
            return self
        if self.live:
            console = self.console
            if console is None:
                console = Console(stderr=True, no_color=not self.colour)
            self._live = Live(
                self, console=console, refresh_per_second=self.refresh_per_second, transient=True
            )
            self._live.start(refresh=True)
        else:
            self._beat = threading.Thread(target=self._beating, name="progress heartbeat", daemon=True)
            self._beat.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        if self._beat is not None:
            self._stopping.set()
            self._beat.join()
            self._beat = None

    def change(self, job_id: str, state: str, why: str | None = None) -> None:
        """A job moved (the executor's `on_change`); `why`, redacted, says what went wrong."""
        with self._lock:
            before = self.states.get(job_id)
            self.states[job_id] = state
            if before is not None:
                self._counts[before] -= 1
            self._counts[state] += 1
            if state in RESTING and before not in RESTING:
                self.finished_here += 1
        if state in FAILURES and state != before:
            self._name(job_id, state, why)
        self._show_plain(self.plain_every_s)

    def wait(self, why: str, seconds: float) -> None:
        """The client waits (its `on_wait`) for `why`, `seconds` long; 0 s when that wait is over."""
        with self._lock:
            if seconds >= 1:
                self.waits[why] = self.clock() + seconds
            else:
                self.waits.pop(why, None)
        self._show_plain(self.plain_every_s)

    @property
    def waiting(self) -> str:
        """The longest wait still running, e.g. `backing off 429 on GET /credits until 14:03:12 (2:00)`."""
        with self._lock:
            now, waits = self.clock(), dict(self.waits)
        return self._waiting(now, waits)

    def line(self) -> str:
        """The status line, like `[0:42] 12/40 done · 3 submitted · 96 credits reserved · ETA 1:10`
        followed by `· waiting: backing off 429 on GET /credits until 14:03:12 (0:12)` when it waits."""
        return self.render().plain

    def render(self) -> Text:
        """The status line, coloured unless NO_COLOR; its cost grows with the states, not the jobs."""
        with self._lock:
            now, total, finished, waits = self.clock(), len(self.states), self.finished_here, dict(self.waits)
            counts = [(state, self._counts[state]) for state in ORDER]
        elapsed = now - self.started
        done = sum(count for state, count in counts if state in RESTING)
        parts = [(f"{count} {state}", _STYLES[state]) for state, count in counts if count and state not in OK]
        parts.append((f"{self.credits():,.0f} credits reserved", ""))
        if finished and done < total:
            parts.append((f"ETA {_clock(elapsed / finished * (total - done))}", ""))
        if waiting := self._waiting(now, waits):
            parts.append((f"waiting: {waiting}", "cyan"))
        line = Text(f"[{_clock(elapsed)}] ")
        line.append(f"{done}/{total} done", self._paint("green"))
        for text, style in parts:
            line.append(" · ")
            line.append(text, self._paint(style))
        return line

    def __rich__(self) -> Text:
        """What Live draws at each refresh (see the module docstring)."""
        return self.render()

    def _waiting(self, now: float, waits: Mapping[str, float]) -> str:
        left = {why: end - now for why, end in waits.items() if end > now}
        if not left:
            return ""
        why = max(left, key=left.__getitem__)
        until = time.strftime("%H:%M:%S", time.localtime(self.wall() + left[why]))
        return f"{why} until {until} ({_clock(left[why])})"

    def _name(self, job_id: str, state: str, why: str | None) -> None:
        """One line for a job that failed, as it happens: `hero-serum: rejected: bad_request: …`."""
        if self.quiet:
            return
        reason = f": {' '.join(why.split())}" if why else ""  # one line, whatever the message holds
        if self._live is None:
            self.echo(f"{job_id}: {state}{reason}")
            return
        text = Text(f"{job_id}: ")
        text.append(state, self._paint(_STYLES.get(state, "")))
        text.append(reason)
        self._live.console.print(text, highlight=False)  # above the live line, which stays

    def _show_plain(self, every: float) -> None:
        """Off a terminal, echo the line if none went out for `every` seconds."""
        if self.quiet or self._live is not None:
            return
        with self._lock:
            now = self.clock()
            if now - self._last_plain < every:
                return
            self._last_plain = now
        self.echo(self.line())

    def _beating(self) -> None:
        try:
            while not self._stopping.wait(self._until_beat()):
                self._show_plain(self.heartbeat_s)
        except OSError:  # the output is gone (a closed pipe); the run meets it on its next write
            return

    def _until_beat(self) -> float:
        with self._lock:
            return max(0.0, self._last_plain + self.heartbeat_s - self.clock())

    def _paint(self, style: str) -> str:
        return style if self.colour else ""


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"
