"""What watches over a run beside the executor: its signals (Ctrl-C, SIGTERM), its log file, and a
store that can no longer be written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from sume_batch.errors import StoreWriteError
from sume_batch.execute import Executor
from sume_batch.expand import JobSpec
from sume_batch.pricing import Price
from sume_batch.redact import Redactor, attach_redaction

Echo = Callable[[str], None]


class Interrupts:
    """SIGINT/SIGTERM for the whole of a run, its reports included.

    The first signal stops new creates and all waiting (`Executor.interrupt`); every transition is
    already in the store, so the next `run` resumes from there. A second one cancels the jobs at
    once, or, once they are done, stops the process (the reports are written again by `report`).
    """

    def __init__(self, executor: Executor, *, echo: Echo) -> None:
        self.executor, self.echo = executor, echo
        self.received: list[int] = []
        self.task: asyncio.Future[None] | None = None
        self.during_jobs = False  # the first signal came before every job had gone as far as it could

    def __enter__(self) -> Interrupts:
        loop = asyncio.get_running_loop()
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(number, self._on_signal, number)
        return self

    def __exit__(self, *_: object) -> None:
        loop = asyncio.get_running_loop()
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(number)

    @property
    def signal(self) -> int | None:
        """The signal that interrupted the run, if any."""
        return self.received[0] if self.received else None

    async def run(self, jobs: Sequence[tuple[JobSpec, Price]]) -> None:
        self.task = asyncio.ensure_future(self.executor.run(jobs))
        try:
            await self.task
        except asyncio.CancelledError:
            if not self.received:
                raise
        finally:
            self.task = None

    def _on_signal(self, number: int) -> None:
        self.received.append(number)
        if len(self.received) == 1:
            self.during_jobs = self.task is not None
            self.echo(
                "Stopping: no new jobs will be created; jobs in flight are recorded."
                " Press Ctrl-C again to force."
            )
            self.executor.interrupt(f"interrupted by {signal.Signals(number).name}")
        elif self.task is not None:
            self.task.cancel()
        else:
            raise KeyboardInterrupt  # the jobs are done and recorded: only the reports are left


@contextlib.contextmanager
def run_log(path: Path, redactor: Redactor) -> Iterator[logging.Logger]:
    """The run's log file (our transitions and httpx's request lines), every record redacted."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    loggers = [logging.getLogger("sume_batch"), logging.getLogger("httpx")]
    gate = attach_redaction(redactor, loggers=loggers, handlers=[handler])
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
    try:
        yield loggers[0]
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.removeFilter(gate)
            logger.setLevel(level)
        handler.close()


@contextlib.contextmanager
def store_failures(executor: Executor) -> Iterator[None]:
    """A store that cannot be written (a full disk, a read-only folder, an I/O error) ends the run
    with exit 74, printing every job id it could not take."""
    try:
        yield
    except sqlite3.Error as error:
        raise unrecorded_error(executor, error) from None


def unrecorded_error(executor: Executor, error: Exception | None = None) -> StoreWriteError:
    why = f" ({error})" if error else ""
    lines = [f"{executor.store.path_name} could not be written{why}, so no further job was created."]
    if executor.unrecorded:
        lines.append("Job ids it could not record (ids are not secrets):")
        lines += [f"  {job_id}: {', '.join(ids)}" for job_id, ids in executor.unrecorded.items()]
        kept = "kept in the machine's registry" if executor.registry is not None else "not kept: copy them"
        lines.append(f"They are {kept}; the next run takes them back.")
    if executor.store.runner is not None:  # a shared store: the server, or this runner's lease
        lines.append("Run again once the database answers: every recorded job resumes, and other runners"
                     " take over this one's jobs once its lease ends.")  # fmt: skip
    else:
        lines.append("Free the space (or fix the folder) and run again: every recorded job resumes.")
    return StoreWriteError("\n".join(lines))
