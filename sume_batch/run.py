"""The `run` command's flow: plan, preflight, refuse or confirm, execute, summarise.

It composes the stages (manifest → expand → plan → execute → store) around one API client and
one credential-free storage client; `run --sandbox` points both at an in-process simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shlex
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from sume_batch import registry
from sume_batch.api import DEFAULT_BASE_URL, SumeClient
from sume_batch.budget import BalanceWatch, Budget
from sume_batch.errors import RefusedError, StoreWriteError, UsageError
from sume_batch.execute import Executor, Settings
from sume_batch.manifest import Manifest, file_digest
from sume_batch.plan import Diff, Plan, Selection, credits, diff_plan, plan_text
from sume_batch.progress import Progress
from sume_batch.reconcile import LOST_CREATE_GRACE_S
from sume_batch.redact import Redactor, attach_redaction
from sume_batch.registry import Registry
from sume_batch.report import (
    FILE_NAMES,
    OK,
    PENDING_WORDS,
    Source,
    build_report,
    git_revision,
    point_latest,
    run_folder_name,
    write_reports,
)  # fmt: skip
from sume_batch.responses import balance_of, capacity_of
from sume_batch.status import attention_line
from sume_batch.store import RunStore, prepare_store, reading, run_lock
from sume_batch.target import Target, legacy_path, same_workspace, store_folder, store_path, target_of

Echo = Callable[[str], None]
SHOWN_PROBLEMS = 20  # jobs listed at the end of a run; the report lists them all


@dataclass(frozen=True)
class Options:
    """What the user asked for on the command line."""

    yes: bool
    dry_run: bool
    concurrency: int | None
    state_dir: Path | None
    interactive: bool  # stdin is a terminal: we may ask
    live: bool = False  # stderr is a terminal: draw live progress
    quiet: bool = False  # only the plan and the final summary
    selection: Selection = field(default_factory=Selection)
    idempotency_honoured: bool = False
    assume_price: float | None = None  # credits reserved for a job of unknown price (--assume-price)
    lost_create_grace: float = LOST_CREATE_GRACE_S  # see `reconcile`


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    api_key: str
    sandbox: str | None = None  # the simulator's profile, when this is a rehearsal

    def describe(self) -> str:
        return f"the sandbox ({self.sandbox} profile)" if self.sandbox else f"the Sume API at {self.base_url}"


@contextlib.contextmanager
def endpoint(*, sandbox: str | None, env: Mapping[str, str]) -> Iterator[Endpoint]:
    """The API to talk to: a sandbox on an ephemeral loopback port, or SUME_API_BASE_URL with SUME_API_KEY."""
    if sandbox is not None:
        from sume_batch.sandbox import SandboxConfig, running_sandbox  # noqa: PLC0415 - only for --sandbox

        with running_sandbox(SandboxConfig.from_profile(sandbox)) as server:
            yield Endpoint(server.base_url, server.api_key, sandbox=sandbox)
        return
    key = env.get("SUME_API_KEY", "").strip()
    if not key:
        raise UsageError(
            "SUME_API_KEY is not set. Set it to your Sume API key, or add --sandbox to rehearse for free."
        )
    yield Endpoint(env.get("SUME_API_BASE_URL", DEFAULT_BASE_URL), key)


def preflight_text(account: Mapping[str, Any], balance: float | None, capacity: int | None) -> str:
    plan_name = account.get("plan") or "unknown plan"
    shown = "unknown (no balance field recognised)" if balance is None else f"{credits(balance)} credits"
    limit = capacity if capacity is not None else "unknown"
    return f"balance: {shown}; plan: {plan_name}; generation capacity: {limit}"


def refusal(plan: Plan, diff: Diff, balance: float | None, budget: Budget, options: Options) -> str | None:
    """Why `run` must not spend, or None; checked before any create. The budget covers the whole
    campaign at its target, what earlier runs spent included; the balance needs to cover only what
    this run would submit."""
    if budget.cap is not None and not budget.admits(diff.new_credits):
        need, cap = budget.committed + diff.new_credits, f"over budget.max_credits ({credits(budget.cap)})"
        if not budget.committed:
            return f"the estimate ({credits(need)} credits) is {cap}"
        spent = f"{credits(budget.committed)} spent or held, {credits(diff.new_credits)} to submit"
        return f"the campaign would reach {credits(need)} credits ({spent}), {cap}"
    if balance is not None and diff.new_credits > balance:
        return f"the estimate ({credits(diff.new_credits)} credits) is more than the balance ({credits(balance)})"  # noqa: E501
    if plan.unknown and options.assume_price is None:
        return f"{plan.unknown} job(s) have an unknown price; set pricing: or pass --assume-price"
    return None


def run_campaign(
    manifest: Manifest,
    plan: Plan,
    *,
    options: Options,
    sandbox: str | None,
    env: Mapping[str, str],
    echo: Echo,
    confirm: Callable[[str], bool],
) -> int:
    """Preflight, ask, execute and summarise; returns the exit code."""
    redactor = Redactor.from_env(env)
    with endpoint(sandbox=sandbox, env=env) as api:
        redactor = Redactor(api_key=api.api_key) if sandbox else redactor
        call = Call(manifest, plan, api, options, redactor, echo, confirm, env)
        return asyncio.run(_run(call))


@dataclass(frozen=True)
class Call:
    """One `run` as asked for: what to run, against what, and how to talk to the person."""

    manifest: Manifest
    plan: Plan
    api: Endpoint
    options: Options
    redactor: Redactor
    echo: Echo
    confirm: Callable[[str], bool]
    env: Mapping[str, str]


async def _run(call: Call) -> int:
    options, echo = call.options, call.echo
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    async with (
        httpx.AsyncClient(timeout=30, limits=limits) as http,
        httpx.AsyncClient(timeout=120) as storage,
    ):
        client = SumeClient(http, api_key=call.api.api_key, base_url=call.api.base_url)
        me = await client.me()
        account = await client.credits()
        redactor = call.redactor.with_account(me)
        call = dataclasses.replace(call, redactor=redactor)
        balance, capacity = balance_of(account), capacity_of(account)
        target = target_of(call.api.base_url, me, sandbox=call.api.sandbox is not None)
        folder = store_folder(call.manifest.folder, options.state_dir)
        path = store_path(folder, call.manifest.name, target)
        twin = same_workspace(folder, call.manifest.name, target)
        if twin is not None and not path.exists():
            raise UsageError(
                f"{twin} holds this campaign's jobs in this very workspace, recorded for another spelling"
                " of the API's URL; set SUME_API_BASE_URL to the URL it was run with rather than buy the"
                " campaign again"
            )
        with contextlib.nullcontext() if options.dry_run else run_lock(path):
            if not options.dry_run:
                for notice in prepare_store(folder, call.manifest.name, target):
                    echo(redactor.name(notice))
            existing = path if path.exists() else None
            legacy = legacy_path(folder, call.manifest.name)
            if existing is None and options.dry_run and not target.rehearsal and legacy.exists():
                existing = legacy  # what the run would take over (see `prepare_store`)
            states, budget = read_campaign(existing, call.manifest.max_credits, options.assume_price)
            diff = diff_plan(call.plan, states, options.selection.again(), cost=budget.cost)
            echo(redactor.name(plan_text(call.plan)))
            echo(diff.text())
            if note := budget.price_note():
                echo(note)
            echo(preflight_text(account, balance, capacity))
            if options.dry_run:
                echo("Dry run: nothing was sent.")
                return 0
            reason = refusal(call.plan, diff, balance, budget, options)
            if reason:
                raise RefusedError(f"refused before spending: {reason}")
            if not options.yes:
                if not options.interactive:
                    raise RefusedError(
                        "refused before spending: not a terminal, so pass --yes to confirm the run"
                    )
                if not call.confirm(f"Submit {diff.new} jobs for about {credits(diff.new_credits)} credits?"):
                    echo("Nothing was sent.")
                    return 3
            store = RunStore.open(path, target=target, campaign=call.manifest.name)
            try:
                with registry.opened(call.env, target, path) as known:
                    state = Live(client, storage, store, target, known, balance, capacity, budget)
                    return await _execute(call, state)
            finally:
                store.close()


@dataclass(frozen=True)
class Live:
    """What a run has open once it is cleared to spend."""

    client: SumeClient
    storage: httpx.AsyncClient
    store: RunStore
    target: Target
    registry: Registry | None
    balance: float | None
    capacity: int | None
    budget: Budget


def read_campaign(
    path: Path | None, cap: float | None, assumed: float | None
) -> tuple[dict[str, str], Budget]:
    """What a campaign's store at its target says, read once and read-only: job key → state (empty
    when there is no store yet), and the budget (what was spent, the prices the API stated)."""
    if path is None or not path.exists():
        return {}, Budget(cap=cap, assumed=assumed)
    with reading(path) as store:
        jobs = store.jobs().values()
        budget = Budget.from_store(jobs, store.committed(), cap=cap, assumed=assumed)
        return {job.key: job.state for job in jobs}, budget


async def _execute(call: Call, live: Live) -> int:
    manifest, plan, options, redactor, echo = call.manifest, call.plan, call.options, call.redactor, call.echo
    store = live.store
    reports = manifest.reports / manifest.name
    try:
        reports.mkdir(parents=True, exist_ok=True)  # before anything is recorded or sent
    except OSError as error:
        raise UsageError(f"cannot write reports to {reports}: {error.strerror or error}") from None
    start_again(store, plan, options.selection)
    info = run_info(call, live)
    record, began = store.begin_run(info), time.monotonic()
    folder = reports / run_folder_name(record)
    folder.mkdir(exist_ok=True)
    rows = (
        (spec.key, spec.id, spec.kind.name, *stored_variant(spec.request, spec.matrix, redactor), c.credits)
        for spec, c in plan.jobs
    )
    store.add_planned(rows, run=record.seq)
    concurrency = min(options.concurrency or manifest.concurrency, live.capacity or 1_000_000)
    settings = Settings(
        folder=manifest.folder, downloads=manifest.downloads, concurrency=concurrency,
        timeouts=manifest.timeouts, poll_intervals=manifest.poll_intervals,
        lost_create_grace=options.lost_create_grace, roots=manifest.roots,
    )  # fmt: skip
    states = {job.id: job.state for job in store.jobs(spec.key for spec, _ in plan.jobs).values()}
    with (
        run_log(folder / "run.log", redactor) as log,
        Progress(states, echo=echo, live=options.live, quiet=options.quiet) as progress,
    ):
        log.info(
            "run %d of %s: %d jobs, %s", record.seq, manifest.name, len(plan.jobs), live.target.describe()
        )

        def changed(job_id: str, state: str) -> None:
            progress.change(job_id, state)
            log.info("%s: %s", job_id, state)

        live.client.on_wait = progress.wait
        executor = Executor(
            client=live.client, storage=live.storage, store=store, settings=settings, redactor=redactor,
            clock=time.time, on_change=changed, idempotency_honoured=options.idempotency_honoured,
            budget=live.budget, balance=BalanceWatch(start=live.balance), registry=live.registry,
        )  # fmt: skip
        live.client.halt = executor.halt  # a first Ctrl-C also ends any rate-limit wait or back-off
        progress.credits = lambda: executor.reserved
        with Interrupts(executor, echo=echo) as interrupts, store_failures(executor):
            await interrupts.run(plan)
            if executor.unrecorded:
                raise unrecorded_error(executor)
            counts = Counter(job.state for job in store.plan_of(record.seq))
            after = await balance_after(live.client, live.balance, halt=executor.halt)
            number = interrupts.signal
            code = 128 + number if number is not None else 0 if set(counts) <= OK else 1
            outcome = {"stopped": executor.stopped, "interrupted": interrupts.during_jobs, "exit_code": code,
                       "balance_after": after,
                       "duration_seconds": round(time.monotonic() - began, 3)}  # fmt: skip
            store.end_run(record.seq, outcome)
            log.info("run %d ended: %s", record.seq, ", ".join(f"{n} {state}" for state, n in counts.items()))
            source = Source(campaign=manifest.name, downloads=manifest.downloads, folder=folder,
                            run=store.runs()[-1])  # fmt: skip
            document = build_report(store, source, redactor=redactor, now=time.time())
            problem = publish(document, folder)
    echo(summary_text(document, folder / FILE_NAMES["html"]))
    if note := live.budget.price_note():
        echo(note)
    if number is not None:
        echo(f"Interrupted: every job is recorded. Resume with: {resume_command(call, live.target)}")
    if problem:
        raise UsageError(f"{problem}; `sume-batch report {manifest.path}` writes them again")
    return code


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
    lines.append("Free the space (or fix the folder) and run again: every recorded job resumes.")
    return StoreWriteError("\n".join(lines))


def resume_command(call: Call, target: Target) -> str:
    """The command that resumes this run: every flag that chose its API target and its store."""
    words = ["sume-batch", "run", shlex.quote(str(call.manifest.path))]
    if call.api.sandbox is not None:
        words += ["--sandbox", "--sandbox-profile", call.api.sandbox]
    elif call.env.get("SUME_API_BASE_URL"):
        words.insert(0, f"SUME_API_BASE_URL={shlex.quote(call.redactor.text(target.base_url))}")
    if call.options.state_dir is not None:
        words += ["--state-dir", shlex.quote(str(call.options.state_dir))]
    if call.options.idempotency_honoured:
        words.append("--idempotency-honoured")
    if call.options.assume_price is not None:
        words += ["--assume-price", f"{call.options.assume_price:g}"]
    command = " ".join(words)
    if call.api.sandbox is not None:
        command += " (a new embedded sandbox starts empty: the rehearsal starts over)"
    return command


def publish(document: Mapping[str, Any], folder: Path) -> str | None:
    """Write a run's reports and point `latest` at them; what went wrong, if anything."""
    try:
        write_reports(document, folder)
    except OSError as error:
        reason = error.strerror or error
        return f"the run is recorded, but its reports could not be written to {folder}: {reason}"
    try:
        point_latest(folder)
    except OSError as error:
        return f"the reports are in {folder}, but `latest` could not point there: {error.strerror or error}"
    return None


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

    async def run(self, plan: Plan) -> None:
        self.task = asyncio.ensure_future(self.executor.run(plan.jobs))
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


def run_info(call: Call, live: Live) -> dict[str, Any]:
    """What a run's reports say about its start: the manifest it ran, where its files go, the balance."""
    manifest, options, redactor = call.manifest, call.options, call.redactor
    commit, dirty = git_revision(manifest.path)
    flags = [f"--only {pattern}" for pattern in options.selection.only] + [
        flag for flag, chosen in (
            ("--retry-failed", options.selection.retry_failed),
            ("--resubmit-uncertain", options.selection.resubmit_uncertain),
            ("--regenerate", options.selection.regenerate),
        ) if chosen
    ]  # fmt: skip
    sandbox = call.api.sandbox or ("server" if live.target.rehearsal else None)
    return {
        "campaign": manifest.name,
        "manifest": {"path": str(manifest.path), "sha256": file_digest(manifest.path), "git_commit": commit,
                     "git_dirty": dirty},
        "downloads": str(manifest.downloads.resolve()),
        "reports": str(manifest.reports.resolve()),
        "sandbox": sandbox,
        "target": live.target.id,
        "selection": [redactor.name(flag) for flag in flags],
        "estimated": call.plan.total,
        "balance_before": live.balance,
    }  # fmt: skip


KEPT_AS_SENT = ("avatar_id", "avatar_ids")  # API ids the store reads back (Face Swap file names)


def stored_variant(
    request: Mapping[str, Any], matrix: Mapping[str, Any], redactor: Redactor
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The request and matrix values as the store keeps them: a prompt or a matrix value holding a
    key or an email must not land on disk. Only reports read them back (job keys are hashed from
    the originals, and creates are sent from the manifest), so nothing is lost."""
    stored = redactor.value({name: value for name, value in request.items() if name not in KEPT_AS_SENT})
    kept = {name: request[name] for name in KEPT_AS_SENT if name in request}
    values = {
        axis: redactor.name(value) if isinstance(value, str) else redactor.value(value)
        for axis, value in matrix.items()
    }
    return {**(stored if isinstance(stored, dict) else {}), **kept}, values


async def balance_after(client: SumeClient, before: float | None, *, halt: asyncio.Event) -> float | None:
    """The balance at the end, for the report's balance change; unknown if it cannot be read quickly
    or the run is being stopped."""
    if before is None or halt.is_set():
        return None
    reading, stopping = asyncio.ensure_future(client.credits()), asyncio.ensure_future(halt.wait())
    try:
        done, _ = await asyncio.wait((reading, stopping), timeout=15, return_when=asyncio.FIRST_COMPLETED)
        return balance_of(reading.result()) if reading in done and not reading.exception() else None
    finally:
        for task in (reading, stopping):
            task.cancel()


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


def start_again(store: RunStore, plan: Plan, selection: Selection) -> None:
    """Reset the jobs the flags buy again to `planned`; their old job ids stay in the journal, and
    what they cost stays counted against the budget."""
    again = selection.again()
    if not again:
        return
    flag = "--regenerate" if selection.regenerate else "--retry-failed / --resubmit-uncertain"
    for job in store.jobs(spec.key for spec, _ in plan.jobs).values():
        if job.state in again:
            store.restart(job, note=f"{flag}: was {job.state} as {', '.join(job.sume_ids) or 'no job id'}")


def summary_text(document: Mapping[str, Any], path: Path) -> str:
    """The end-of-run lines: counts, where the report is, and every job that needs attention."""
    counts = ", ".join(f"{count} {state}" for state, count in document["counts"].items()) or "no jobs"
    elapsed = document["run"]["duration_seconds"]
    lines = [f"Done in {elapsed or 0:.1f} s: {counts}. Report: {path}"]
    if document["run"]["stopped"]:
        lines.append(f"Stopped early: {document['run']['stopped']}")
    attention = [job for job in document["jobs"] if job["failure"] is not None or not job["ok"]]
    for job in attention[:SHOWN_PROBLEMS]:
        pending = {"code": None, "message": PENDING_WORDS.get(job["status"]), "request_id": None}
        lines.append(attention_line(job["status"], job["id"], job["sume_job_ids"], job["failure"] or pending))
    if len(attention) > SHOWN_PROBLEMS:
        lines.append(f"  ... and {len(attention) - SHOWN_PROBLEMS:,} more in the report")
    return "\n".join(lines)


def is_interactive() -> bool:
    return os.isatty(0)


def is_live() -> bool:
    return os.isatty(2)
