"""The `run` command's flow: plan, preflight, refuse or confirm, execute, summarise.

It composes the stages (manifest → expand → plan → execute → store) around one API client and
one credential-free storage client; `run --sandbox` points both at an in-process simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from sume_batch import __version__
from sume_batch.api import DEFAULT_BASE_URL, SumeClient
from sume_batch.errors import RefusedError, UsageError
from sume_batch.execute import Executor, Settings
from sume_batch.manifest import Manifest
from sume_batch.plan import Diff, Plan, Selection, credits, diff_plan, plan_text
from sume_batch.progress import Progress
from sume_batch.redact import Redactor
from sume_batch.responses import balance_of, capacity_of
from sume_batch.store import RunStore, StoredJob, read_states, run_lock

Echo = Callable[[str], None]
FINISHED_OK = frozenset({"downloaded"})


@dataclass(frozen=True)
class Options:
    """What the user asked for on the command line."""

    yes: bool
    dry_run: bool
    allow_unknown_prices: bool
    concurrency: int | None
    state_dir: Path | None
    interactive: bool  # stdin is a terminal: we may ask
    live: bool = False  # stderr is a terminal: draw live progress
    quiet: bool = False  # only the plan and the final summary
    selection: Selection = field(default_factory=Selection)
    idempotency_honoured: bool = False


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    api_key: str


@contextlib.contextmanager
def endpoint(*, sandbox: str | None, env: Mapping[str, str]) -> Iterator[Endpoint]:
    """The API to talk to: a sandbox on an ephemeral loopback port, or SUME_API_BASE_URL with SUME_API_KEY."""
    if sandbox is not None:
        from sume_batch.sandbox import SandboxConfig, running_sandbox  # noqa: PLC0415 - only for --sandbox

        with running_sandbox(SandboxConfig.from_profile(sandbox)) as server:
            yield Endpoint(server.base_url, server.api_key)
        return
    key = env.get("SUME_API_KEY", "").strip()
    if not key:
        raise UsageError(
            "SUME_API_KEY is not set. Set it to your Sume API key, or add --sandbox to rehearse for free."
        )
    yield Endpoint(env.get("SUME_API_BASE_URL", DEFAULT_BASE_URL), key)


def store_path(manifest: Manifest, state_dir: Path | None) -> Path:
    """Where the run store lives: beside the manifest in `.sume-batch/` (ignored by git), or --state-dir."""
    return (state_dir or manifest.folder / ".sume-batch") / f"{manifest.name}.sqlite"


def preflight_text(account: Mapping[str, Any], balance: float | None, capacity: int | None) -> str:
    plan_name = account.get("plan") or "unknown plan"
    shown = "unknown (no balance field recognised)" if balance is None else f"{credits(balance)} credits"
    limit = capacity if capacity is not None else "unknown"
    return f"balance: {shown}; plan: {plan_name}; generation capacity: {limit}"


def refusal(plan: Plan, diff: Diff, balance: float | None, options: Options) -> str | None:
    """Why `run` must not spend, or None; checked before any create. The budget covers the whole
    campaign; the balance needs to cover only what this run would submit."""
    if plan.over_budget:
        return f"the estimate ({credits(plan.total)} credits) is over budget.max_credits ({credits(plan.max_credits)})"  # noqa: E501
    if balance is not None and diff.new_credits > balance:
        return f"the estimate ({credits(diff.new_credits)} credits) is more than the balance ({credits(balance)})"  # noqa: E501
    if plan.unknown and not options.allow_unknown_prices:
        return f"{plan.unknown} job(s) have an unknown price; set pricing: or pass --allow-unknown-prices"
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
    locked = (
        contextlib.nullcontext() if options.dry_run else run_lock(store_path(manifest, options.state_dir))
    )
    with locked, endpoint(sandbox=sandbox, env=env) as target:
        redactor = Redactor(api_key=target.api_key) if sandbox else redactor
        return asyncio.run(
            _run(manifest, plan, target, options=options, redactor=redactor, echo=echo, confirm=confirm)
        )


async def _run(
    manifest: Manifest,
    plan: Plan,
    target: Endpoint,
    *,
    options: Options,
    redactor: Redactor,
    echo: Echo,
    confirm: Callable[[str], bool],
) -> int:
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    async with (
        httpx.AsyncClient(timeout=30, limits=limits) as http,
        httpx.AsyncClient(timeout=120) as storage,
    ):
        client = SumeClient(http, api_key=target.api_key, base_url=target.base_url)
        await client.me()
        account = await client.credits()
        balance, capacity = balance_of(account), capacity_of(account)
        diff = diff_plan(
            plan, read_states(store_path(manifest, options.state_dir)), options.selection.again()
        )
        echo(plan_text(plan))
        echo(diff.text())
        echo(preflight_text(account, balance, capacity))
        if options.dry_run:
            echo("Dry run: nothing was sent.")
            return 0
        reason = refusal(plan, diff, balance, options)
        if reason:
            raise RefusedError(f"refused before spending: {reason}")
        if not options.yes:
            if not options.interactive:
                raise RefusedError(
                    "refused before spending: not a terminal, so pass --yes to confirm the run"
                )
            if not confirm(f"Submit {diff.new} jobs for about {credits(diff.new_credits)} credits?"):
                echo("Nothing was sent.")
                return 3
        store = RunStore.open(store_path(manifest, options.state_dir))
        try:
            return await _execute(manifest, plan, client, storage, store, capacity=capacity, options=options,
                                  redactor=redactor, echo=echo)  # fmt: skip
        finally:
            store.close()


async def _execute(
    manifest: Manifest,
    plan: Plan,
    client: SumeClient,
    storage: httpx.AsyncClient,
    store: RunStore,
    *,
    capacity: int | None,
    options: Options,
    redactor: Redactor,
    echo: Echo,
) -> int:
    start_again(store, plan, options.selection)
    store.add_planned(
        (spec.key, spec.id, spec.kind.name, spec.request, spec.matrix, price.credits)
        for spec, price in plan.jobs
    )
    concurrency = min(options.concurrency or manifest.concurrency, capacity or 1_000_000)
    settings = Settings(
        folder=manifest.folder, downloads=manifest.downloads, concurrency=concurrency,
        timeouts=manifest.timeouts, poll_intervals=manifest.poll_intervals, max_credits=manifest.max_credits,
    )  # fmt: skip
    states = {job.id: job.state for job in store.jobs(spec.key for spec, _ in plan.jobs).values()}
    with Progress(states, echo=echo, live=options.live, quiet=options.quiet) as progress:
        client.on_wait = progress.wait
        executor = Executor(
            client=client, storage=storage, store=store, settings=settings, redactor=redactor,
            clock=time.time, on_change=progress.change, idempotency_honoured=options.idempotency_honoured,
        )  # fmt: skip
        progress.credits = lambda: executor.reserved
        started = time.monotonic()
        signal_number = await execute_with_signals(executor, plan, echo=echo)
    summary = summarise(manifest, plan, store, elapsed=time.monotonic() - started, stopped=executor.stopped)
    path = write_summary(manifest, summary)
    echo(summary_text(summary, path, redactor))
    if signal_number is not None:
        echo(f"Interrupted: every job is recorded. Resume with: sume-batch run {manifest.path}")
        return 128 + signal_number
    return 0 if summary["ok"] else 1


async def execute_with_signals(executor: Executor, plan: Plan, *, echo: Echo) -> int | None:
    """Run the executor; the first SIGINT/SIGTERM stops new creates, a second one stops at once.

    Returns the signal number that interrupted the run, if any. Either way every transition is
    already in the store, so the next `run` resumes from there.
    """
    loop, task = asyncio.get_running_loop(), asyncio.ensure_future(executor.run(plan.jobs))
    received: list[int] = []

    def on_signal(number: int) -> None:
        received.append(number)
        if len(received) == 1:
            echo(
                "Stopping: no new jobs will be created; jobs in flight are recorded."
                " Press Ctrl-C again to force."
            )
            executor.interrupt(f"interrupted by {signal.Signals(number).name}")
        else:
            task.cancel()

    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, on_signal, number)
    try:
        await task
    except asyncio.CancelledError:
        if not received:
            raise
    finally:
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(number)
    return received[0] if received else None


def start_again(store: RunStore, plan: Plan, selection: Selection) -> None:
    """Reset the jobs the flags buy again to `planned`; their old job ids stay in the journal."""
    again = selection.again()
    if not again:
        return
    flag = "--regenerate" if selection.regenerate else "--retry-failed / --resubmit-uncertain"
    for job in store.jobs(spec.key for spec, _ in plan.jobs).values():
        if job.state in again:
            note = f"{flag}: was {job.state} as {', '.join(job.sume_ids) or 'no job id'}"
            store.move(job.key, "planned", note=note, sume_ids=[], candidates=[], error_code=None,
                       error_message=None, sume_status=None, reserved=0)  # fmt: skip


def summarise(
    manifest: Manifest, plan: Plan, store: RunStore, *, elapsed: float, stopped: str | None
) -> dict[str, Any]:
    """Every job of the plan, where it stands, and the totals (until the reports issue lands)."""
    rows = store.jobs(spec.key for spec, _ in plan.jobs)
    made = store.downloaded_at()
    this_run = time.time() - elapsed
    files: dict[str, list[dict[str, Any]]] = {}
    for item in store.files():
        files.setdefault(item["key"], []).append(
            {k: item[k] for k in ("path", "sha256", "bytes", "content_type")}
        )
    jobs = [
        {
            "id": job.id, "key": job.key, "type": job.kind, "state": job.state, "matrix": job.matrix,
            "credits_estimate": job.estimate, "credits_required": job.required, "attempts": job.attempts,
            "sume_job_ids": list(job.sume_ids), "error": _failure(job), "files": files.get(job.key, []),
            "provenance": _provenance(made.get(job.key), this_run),
        }
        for job in (rows[spec.key] for spec, _ in plan.jobs)
    ]  # fmt: skip
    reserved, required = store.credits()
    counts = dict(Counter(row.state for row in rows.values()))
    return {
        "object": "run_summary", "tool": f"sume-batch {__version__}", "campaign": manifest.name,
        "manifest": str(manifest.path), "elapsed_seconds": round(elapsed, 3), "stopped": stopped,
        "credits": {"estimated": plan.total, "reserved": reserved, "stated_by_api": required},
        "counts": counts, "ok": set(counts) <= FINISHED_OK, "jobs": jobs,
    }  # fmt: skip


def _provenance(downloaded_at: float | None, run_started: float) -> dict[str, Any] | None:
    """When the outputs were made, and whether this run reused them rather than buying them."""
    if downloaded_at is None:
        return None
    made = datetime.fromtimestamp(downloaded_at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return {"downloaded_at": made, "reused": downloaded_at < run_started}


def _failure(job: StoredJob) -> dict[str, Any] | None:
    if job.state in FINISHED_OK or not (job.error_code or job.error_message):
        return None
    return {
        "status": job.state,
        "code": job.error_code,
        "message": job.error_message,
        "request_id": job.request_id,
    }


def write_summary(manifest: Manifest, summary: Mapping[str, Any]) -> Path:
    folder = manifest.reports / manifest.name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "summary.json"
    partial = folder / ".summary.json.part"
    partial.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", "utf-8")
    partial.replace(path)
    return path


def summary_text(summary: Mapping[str, Any], path: Path, redactor: Redactor) -> str:
    counts = ", ".join(f"{count} {state}" for state, count in sorted(summary["counts"].items()))
    lines = [f"Done in {summary['elapsed_seconds']:.1f} s: {counts}. Summary: {path}"]
    if summary["stopped"]:
        lines.append(f"Stopped early: {redactor.text(summary['stopped'])}")
    for job in summary["jobs"]:
        if job["error"] or job["state"] not in FINISHED_OK:
            error = job["error"] or {}
            reason = ": ".join(str(part) for part in (error.get("code"), error.get("message")) if part)
            request = f" (request id {error['request_id']})" if error.get("request_id") else ""
            sume = f" [{', '.join(job['sume_job_ids'])}]" if job["sume_job_ids"] else ""
            lines.append(f"  {job['state']}: {job['id']}{sume}{': ' + reason if reason else ''}{request}")
    return "\n".join(lines)


def is_interactive() -> bool:
    return os.isatty(0)


def is_live() -> bool:
    return os.isatty(2)
