"""progress: the live line and the plain lines, driven by injected clocks and a captured rich Console."""

from __future__ import annotations

import io
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

from rich.console import Console

from sume_batch.progress import Progress

SGR = re.compile(r"\x1b\[[0-9;]*m")  # a style (colour, bold): what NO_COLOR must leave out
WHY = "backing off 429 on GET /credits"
NOON = time.mktime((2025, 6, 1, 12, 0, 0, 0, 0, -1))  # a local wall time, so `until` reads 12:00:..


class Clock:
    """A monotonic clock that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Lines(list[str]):
    """An `echo` that lets a test wait, bounded, for the lines another thread writes."""

    def __init__(self) -> None:
        super().__init__()
        self.added = threading.Condition()

    def __call__(self, line: str) -> None:
        with self.added:
            self.append(line)
            self.added.notify_all()

    def await_count(self, count: int) -> bool:
        with self.added:
            return self.added.wait_for(lambda: len(self) >= count, timeout=10)


class Screen(io.StringIO):
    """A terminal for a rich Console: what was drawn, and a bounded wait for a text to appear."""

    def __init__(self) -> None:
        super().__init__()
        self.drawn = threading.Condition()

    def write(self, text: str) -> int:
        with self.drawn:
            written = super().write(text)
            self.drawn.notify_all()
            return written

    def shows(self, text: str) -> bool:
        with self.drawn:
            return self.drawn.wait_for(lambda: text in self.getvalue(), timeout=10)


class Watched(dict[str, str]):
    """A job → state dict that counts how often it is read, written and walked."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.touched = self.walked = 0

    def get(self, *args: Any) -> Any:
        self.touched += 1
        return super().get(*args)

    def __getitem__(self, key: str) -> str:
        self.touched += 1
        return super().__getitem__(key)

    def __setitem__(self, key: str, value: str) -> None:
        self.touched += 1
        super().__setitem__(key, value)

    def __iter__(self) -> Iterator[str]:
        self.walked += 1
        return super().__iter__()

    def keys(self) -> Any:
        self.walked += 1
        return super().keys()

    def values(self) -> Any:
        self.walked += 1
        return super().values()

    def items(self) -> Any:
        self.walked += 1
        return super().items()


def terminal(screen: Screen) -> Console:
    return Console(file=screen, force_terminal=True, color_system="standard", no_color=False, width=200)


def plain(text: str) -> str:
    return SGR.sub("", text)


def test_the_counts_follow_every_change_including_a_job_that_moves_back() -> None:
    clock = Clock()
    progress = Progress(
        {"a": "planned", "b": "planned", "c": "downloaded", "d": "submitted"}, echo=Lines(), clock=clock
    )
    assert progress.line() == "[0:00] 1/4 done · 2 planned · 1 submitted · 0 credits reserved"
    progress.change("a", "reserved")
    progress.change("a", "submitting")
    progress.change("a", "submitted")
    progress.change("d", "timed_out")
    clock.now += 10
    assert progress.line() == (
        "[0:10] 2/4 done · 1 timed_out · 1 planned · 1 submitted · 0 credits reserved · ETA 0:20"
    )
    progress.change("d", "submitted")  # polled again: no longer counted done
    progress.change("b", "rejected")
    progress.credits = lambda: 1234.4
    assert progress.line() == (
        "[0:10] 2/4 done · 1 rejected · 2 submitted · 1,234 credits reserved · ETA 0:10"
    )
    progress.change("e", "planned")  # a job the run did not start with counts too
    assert progress.line().startswith("[0:10] 2/5 done · 1 rejected · 1 planned · 2 submitted ·")


def test_a_change_and_a_line_touch_the_same_few_jobs_at_100k_jobs_as_at_10() -> None:
    touched = {}
    for size in (10, 100_000):
        states = Watched({f"job-{n}": "planned" for n in range(size)})
        progress = Progress(states, echo=Lines(), clock=Clock())
        states.touched = states.walked = 0  # building it may read every job once
        for state in ("reserved", "submitting", "submitted", "failed"):
            progress.change("job-3", state)
        line = progress.line()
        assert states.walked == 0, f"{size} jobs: walked every job {states.walked} times"
        touched[size] = states.touched
        assert line.startswith(f"[0:00] 1/{size} done · 1 failed · {size - 1} planned ·")
    assert touched[10] == touched[100_000] == 8  # a read and a write per change


def test_the_clock_and_the_eta_move_while_no_job_does() -> None:
    clock = Clock()
    progress = Progress({"a": "downloaded", "b": "submitted"}, echo=Lines(), clock=clock)
    progress.change("c", "downloaded")
    first = progress.line()
    clock.now += 12
    assert first == "[0:00] 2/3 done · 1 submitted · 0 credits reserved · ETA 0:00"
    assert progress.line() == "[0:12] 2/3 done · 1 submitted · 0 credits reserved · ETA 0:12"


def test_the_live_display_redraws_by_itself_as_the_clock_moves() -> None:
    clock, screen = Clock(), Screen()
    with Progress(
        {"a": "submitted"}, echo=Lines(), live=True, clock=clock, console=terminal(screen), env={}
    ) as progress:
        assert screen.shows("[0:00] ")
        clock.now += 12
        progress.wait(WHY, 30)
        assert screen.shows("[0:12] ")
        assert screen.shows("(0:30)")
        clock.now += 5
        assert screen.shows("[0:17] ")
        assert screen.shows("(0:25)")


def test_off_a_terminal_a_heartbeat_line_comes_while_nothing_changes() -> None:
    lines = Lines()
    with Progress({"a": "submitted", "b": "downloaded"}, echo=lines, heartbeat_s=0.02):
        assert lines.await_count(3)
    assert all(re.fullmatch(r"\[0:0\d\] 1/2 done · 1 submitted · 0 credits reserved", line) for line in lines)


def test_off_a_terminal_a_change_shows_the_line_once_5_s_passed() -> None:
    clock, lines = Clock(), Lines()
    with Progress({"a": "planned", "b": "planned"}, echo=lines, clock=clock) as progress:
        clock.now += 4
        progress.change("a", "reserved")
        assert lines == []
        clock.now += 1
        progress.change("a", "submitting")
        progress.change("b", "reserved")  # within 5 s of the last line
        assert lines == ["[0:05] 0/2 done · 1 planned · 1 submitting · 0 credits reserved"]


def test_off_a_terminal_a_failure_is_named_at_once_with_its_reason_and_no_escape_code() -> None:
    clock, lines = Clock(), Lines()
    states = {"hero-serum": "submitting", "clip": "submitted", "ad": "submitted"}
    with Progress(states, echo=lines, clock=clock, env={}) as progress:
        progress.change("hero-serum", "rejected", "bad_request: avatar lacks the ugc_ad\ncapability")
        progress.change("clip", "timed_out")
        progress.change("ad", "completed", "never shown: not a failure")
        clock.now += 6
        progress.change("ad", "fetched")
    assert lines == [
        "hero-serum: rejected: bad_request: avatar lacks the ugc_ad capability",
        "clip: timed_out",
        "[0:06] 2/3 done · 1 timed_out · 1 rejected · 1 fetched · 0 credits reserved · ETA 0:03",
    ]


def test_on_a_terminal_a_failure_is_printed_above_the_live_line_at_once() -> None:
    screen, lines = Screen(), Lines()
    with Progress(
        {"hero-serum": "submitting", "b": "submitted"},
        echo=lines,
        live=True,
        clock=Clock(),
        console=terminal(screen),
        env={},
    ) as progress:
        progress.change("hero-serum", "rejected", "bad_request: avatar lacks the ugc_ad capability")
        printed = plain(screen.getvalue())  # printed before `change` returned, no refresh awaited
    assert "hero-serum: rejected: bad_request: avatar lacks the ugc_ad capability\n" in printed
    assert "\x1b[31mrejected" in screen.getvalue()
    assert lines == []  # not echoed as well


def test_a_live_line_has_colour_and_no_color_takes_every_style_out() -> None:
    drawn = {}
    for env in ({}, {"NO_COLOR": ""}, {"NO_COLOR": "1"}):
        screen = Screen()
        states = {"a": "failed", "b": "skipped", "c": "downloaded", "d": "submitted"}
        with Progress(states, echo=Lines(), live=True, clock=Clock(), console=terminal(screen), env=env) as p:
            p.change("d", "expired", "job expired before it ran")
            assert screen.shows("4/4 done")
        drawn[env.get("NO_COLOR")] = screen.getvalue()
    for colourful in (drawn[None], drawn[""]):  # an empty NO_COLOR is no NO_COLOR (no-color.org)
        assert "\x1b[32m3/4 done" in colourful
        assert "\x1b[31m1 failed" in colourful
        assert "\x1b[31m1 expired" in colourful
        assert "\x1b[33m1 skipped" in colourful
    assert SGR.search(drawn["1"]) is None, repr(drawn["1"])
    assert "d: expired: job expired before it ran" in drawn["1"]
    assert "4/4 done · 1 failed · 1 expired · 1 skipped · 0 credits reserved" in drawn["1"]


def test_quiet_shows_nothing_at_all() -> None:
    clock, screen, lines = Clock(), Screen(), Lines()
    for live in (False, True):
        with Progress(
            {"a": "submitted"}, echo=lines, live=live, quiet=True, clock=clock, console=terminal(screen)
        ) as progress:
            progress.wait(WHY, 60)
            clock.now += 40
            progress.change("a", "failed", "content_policy")
    assert lines == []
    assert screen.getvalue() == ""


def test_the_waiting_text_counts_down_names_the_longest_wait_and_goes_when_it_ends() -> None:
    clock = Clock()
    progress = Progress({"a": "submitted"}, echo=Lines(), clock=clock, wall=lambda: NOON + clock.now - 1000)
    progress.wait(WHY, 12)
    progress.wait("pacing reads to the rate limit before GET /me", 3)
    progress.wait("a blink", 0.5)  # under a second: not worth a word
    head = "[0:00] 0/1 done · 1 submitted · 0 credits reserved · "
    assert progress.line() == head + f"waiting: {WHY} until 12:00:12 (0:12)"
    clock.now += 5
    assert progress.line().endswith(f"waiting: {WHY} until 12:00:12 (0:07)")
    progress.wait(WHY, 0)  # the client's word that the wait is over
    assert progress.line().endswith("0 credits reserved")
    progress.wait(WHY, 2)
    clock.now += 2  # over by the clock, before the client says so
    assert progress.waiting == ""
    assert progress.line().endswith("0 credits reserved")
