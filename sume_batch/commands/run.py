"""`sume-batch run`: plan, preflight, refuse or confirm, execute, report, summarise.

It composes the stages (manifest → expand → plan → execute → store → report) around one API client
and one credential-free storage client; `run --sandbox` points both at an in-process simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import shlex
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import httpx

from sume_batch import pg, registry, reviews, saved, shared, stages
from sume_batch.api import SumeClient, in_flight_for
from sume_batch.budget import BalanceWatch, Budget
from sume_batch.chain import run_stages
from sume_batch.commands.common import check_selection, prepare, read_campaign, read_workspace, with_reviews
from sume_batch.commands.endpoint import Endpoint, Rehearsal, endpoint
from sume_batch.confine import file_digest
from sume_batch.errors import NotConfirmed, RefusedError, UnresolvedWorkspace, UsageError
from sume_batch.execute import Executor, OnChange, Settings, balance_after
from sume_batch.exits import INTERNAL_ERROR
from sume_batch.expand import probe_specs
from sume_batch.git import git_revision
from sume_batch.manifest import Manifest, load_pricing
from sume_batch.plan import Diff, Plan, Selection, credits, diff_plan, make_plan, plan_text, restrict
from sume_batch.poll import FLOOR_S, REHEARSAL_FLOOR_S
from sume_batch.preflight import check_workspace
from sume_batch.progress import Progress
from sume_batch.reconcile import LOST_CREATE_GRACE_S
from sume_batch.records import Place, RunRecord
from sume_batch.redact import Redactor, stored_variant
from sume_batch.registry import Registry
from sume_batch.report import FILE_NAMES
from sume_batch.report.document import Source, build_report, run_folder_name
from sume_batch.report.folder import gather_media, point_latest, write_reports
from sume_batch.report.summary import summary_text
from sume_batch.responses import balance_of, capacity_of
from sume_batch.shared import Runner
from sume_batch.states import OK, TO_DOWNLOAD, TO_POLL, TO_SUBMIT, JobState
from sume_batch.store import RunStore, prepare_store, run_lock
from sume_batch.supervise import Interrupts, run_log, store_failures, unrecorded_error
from sume_batch.target import (
    Target,
    legacy_path,
    same_workspace,
    shared_state,
    store_folder,
    store_path,
    target_of,
)
from sume_batch.transfer import Transfers

Echo = Callable[[str], None]


def run(
    path: Path,
    *,
    max_jobs: int | None,
    pricing: Path | None,
    sandbox: Rehearsal | None,
    options: Options,
    env: Mapping[str, str],
    echo: Echo,
    confirm: Callable[[str], bool],
    roots: Sequence[Path] = (),
    emit: Echo | None = None,
) -> int:
    """Plan, preflight, confirm, execute and summarise a campaign; `emit` (`run --json`) gets the
    run's outcome as one JSON object at its end (`echo` then writes to stderr)."""
    if saved.is_saved_plan(path):  # `run campaign.plan`: exactly that plan, or refused naming what changed
        path, options = applied(path, options, pricing=pricing, env=env, sandbox=sandbox, max_jobs=max_jobs,
                                roots=roots)  # fmt: skip
    prices = load_pricing(pricing) if pricing else None
    unread: UnresolvedWorkspace | None = None
    try:  # every problem a manifest can have without the workspace, found before any request
        manifest, specs = prepare(path, max_jobs=max_jobs, roots=roots)
    except UnresolvedWorkspace as error:
        unread = error
    redactor = Redactor.from_env(env)
    with endpoint(sandbox=sandbox, env=env) as api:
        redactor = Redactor(api_key=api.api_key) if sandbox else redactor
        if unread is not None:  # a run reads its workspace axes afresh, then plans with what it read
            folder = store_folder(path.parent, options.state_dir)
            snapshot = read_workspace(api, unread.axes, unread.campaign, folder)
            manifest, specs = prepare(path, max_jobs=max_jobs, roots=roots, snapshot=snapshot)
            echo(redactor.name(snapshot.text()))
        selection = with_reviews(
            options.selection, manifest, options.state_dir, env, sandbox=sandbox is not None
        )
        if any(template.picked for template in manifest.jobs):  # read before anything is bought
            reviews.load(reviews.reviews_path(manifest.folder, manifest.name))
        options = dataclasses.replace(options, selection=selection)
        plan = restrict(make_plan(manifest, specs, prices, assume=options.assume_price), selection)
        check_selection(plan, selection, manifest)
        return asyncio.run(_run(Call(manifest, plan, api, options, redactor, echo, confirm, env, emit)))


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
    detach: bool = False  # submit, record the job ids and exit: a later `run` polls and downloads
    lease: float = shared.LEASE_S  # a shared store's runner lease (--lease, SUME_BATCH_LEASE_S)


def applied(
    path: Path, options: Options, *, pricing: Path | None, env: Mapping[str, str], sandbox: Rehearsal | None,
    max_jobs: int | None, roots: Sequence[Path],
) -> tuple[Path, Options]:  # fmt: skip
    """The manifest a saved plan was made from and the run options that make it again, once it is
    checked to be what `run` would do now (`saved.check`: exit 3 otherwise, before any request)."""
    from sume_batch.commands.plan import document_of  # noqa: PLC0415

    data = saved.load(path)
    chosen = data["saved"]["selection"]
    selection = Selection(
        only=tuple(chosen.get("only") or ()), retry_failed=bool(chosen.get("retry_failed")),
        resubmit_uncertain=bool(chosen.get("resubmit_uncertain")), regenerate=bool(chosen.get("regenerate")),
        stop_after=chosen.get("stop_after"), retry_rejected=bool(chosen.get("retry_rejected")),
    )  # fmt: skip
    manifest = Path(data["saved"]["manifest"]["path"])
    now, *_ = document_of(
        manifest, max_jobs=max_jobs, pricing=pricing, state_dir=options.state_dir, selection=selection,
        env=env, sandbox=sandbox is not None, assume_price=options.assume_price, roots=roots, refresh=False,
        saved=True,
    )  # fmt: skip
    saved.check(data, now, path)
    return manifest, dataclasses.replace(options, selection=selection)


def store_of(call: Call, target: Target) -> tuple[Path, Place]:
    """The folder of the campaign's local files (snapshots) and its store at this target: in the
    shared store when one is named (an embedded sandbox is a world of its own: always local).
    Refused when another store holds this very workspace under another spelling of the API's URL."""
    folder = store_folder(call.manifest.folder, call.options.state_dir)
    url = None if call.api.sandbox else shared_state(call.manifest.state, call.options.state_dir, call.env)
    if url is not None:
        return folder, pg.Address(url, call.manifest.name, target)
    if call.manifest.monthly_credits is not None and not target.rehearsal:
        raise UsageError(
            "budget.monthly_credits caps every campaign of the workspace, which only a shared store sees:"
            " set state: (or --state, SUME_BATCH_STATE) to a PostgreSQL URL, or remove it"
        )
    path = store_path(folder, call.manifest.name, target)
    twin = same_workspace(folder, call.manifest.name, target)
    if twin is not None and not path.exists():
        raise UsageError(
            f"{twin} holds this campaign's jobs in this very workspace, recorded for another spelling"
            " of the API's URL; set SUME_API_BASE_URL to the URL it was run with rather than buy the"
            " campaign again"
        )
    return folder, path


@contextlib.contextmanager
def held(path: Place, target: Target, options: Options, env: Mapping[str, str]) -> Iterator[Runner | None]:
    """What lets this process write the store: the SQLite store's lock (one run at a time), or, on
    a shared store, a runner's lease (several at once: see `shared`). Nothing for a dry run."""
    if options.dry_run:
        yield None
    elif isinstance(path, pg.Address):
        with shared.joined(path, target.id, lease=options.lease, env=env) as runner:
            yield runner
    else:
        with run_lock(path):
            yield None


def preflight_text(account: Mapping[str, Any], balance: float | None, capacity: int | None) -> str:
    plan_name = account.get("plan") or "unknown plan"
    shown = "unknown (no balance field recognised)" if balance is None else f"{credits(balance)} credits"
    limit = capacity if capacity is not None else "unknown"
    return f"balance: {shown}; plan: {plan_name}; generation capacity: {limit}"


def refusal(plan: Plan, diff: Diff, balance: float | None, budget: Budget, options: Options) -> str | None:
    """Why `run` must not spend, or None; checked before any create. The budget covers the whole
    campaign at its target, what earlier runs spent included; the balance needs to cover only what
    this run would submit."""
    staged = max(0.0, plan.staged_total - budget.downstream)  # a chain's stages not paid for yet, worst case
    new = diff.new_credits + staged
    if budget.cap is not None and not budget.admits(new):
        need, cap = budget.committed + new, f"over budget.max_credits ({credits(budget.cap)})"
        chain = f", its later stages at their worst case ({credits(staged)})" if staged else ""
        if not budget.committed:
            return f"the estimate ({credits(need)} credits{chain}) is {cap}"
        spent = f"{credits(budget.committed)} spent or held, {credits(diff.new_credits)} to submit{chain}"
        return f"the campaign would reach {credits(need)} credits ({spent}), {cap}"
    if balance is not None and diff.new_credits > balance:
        return f"the estimate ({credits(diff.new_credits)} credits) is more than the balance ({credits(balance)})"  # noqa: E501
    if plan.unknown and options.assume_price is None:
        return f"{plan.unknown} job(s) have an unknown price; set pricing: or pass --assume-price"
    return None


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
    emit: Echo | None = None  # `run --json`: the outcome as one object, on stdout


async def _run(call: Call) -> int:
    options, echo = call.options, call.echo
    jobs = options.concurrency or call.manifest.concurrency  # at most: the account's capacity may lower it
    pool = in_flight_for(jobs)  # connections follow the requests in flight; a job downloads a file at once
    api_pool = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
    storage_pool = httpx.Limits(max_connections=jobs, max_keepalive_connections=jobs)
    async with (
        httpx.AsyncClient(timeout=30, limits=api_pool) as http,
        httpx.AsyncClient(timeout=120, limits=storage_pool) as storage,
    ):
        client = SumeClient(http, api_key=call.api.api_key, base_url=call.api.base_url, max_in_flight=pool)
        me = await client.me()
        account = await client.credits()
        redactor = call.redactor.with_account(me)
        call = dataclasses.replace(call, redactor=redactor)
        balance, capacity = balance_of(account), capacity_of(account)
        client.size_for(min(jobs, capacity or jobs))  # the executor runs no more jobs than the capacity
        target = target_of(call.api.base_url, me, sandbox=call.api.sandbox is not None)
        folder, path = store_of(call, target)
        with held(path, target, options, call.env) as runner:
            if not options.dry_run and isinstance(path, Path):
                for notice in prepare_store(folder, call.manifest.name, target):
                    echo(redactor.name(notice))
            existing = path if path.exists() else None
            legacy = legacy_path(folder, call.manifest.name)
            if existing is None and options.dry_run and not target.rehearsal and legacy.exists():
                existing = legacy  # what the run would take over (see `prepare_store`)
            states, budget, ids = read_campaign(existing, call.manifest.max_credits, options.assume_price)
            diff = diff_plan(call.plan, states, options.selection.again(), cost=budget.cost, ids=ids)
            buying = TO_SUBMIT | options.selection.again()
            later = [spec for stage in stages.order(call.manifest.jobs)  # a chain's later stages
                     for spec in probe_specs(call.manifest, stage, digest=cache(file_digest))]  # fmt: skip
            buy = [spec for spec, _ in call.plan.jobs if states.get(spec.key, JobState.PLANNED) in buying]
            await check_workspace(client, call.manifest, [*buy, *later])  # what they need, before any create
            echo(redactor.name(plan_text(call.plan)))
            echo(diff.text())
            if note := budget.price_note():
                echo(note)
            echo(preflight_text(account, balance, capacity))
            if options.dry_run:
                echo("Dry run: nothing was sent.")
                return 0
            reason = refusal(call.plan, diff, balance, budget, options)
            if not cleared(call, diff, reason, states):
                echo("Nothing was sent.")
                return NotConfirmed.exit_code
            store, balance = await open_store(
                path, target, call.manifest, runner, client=client, balance=balance
            )
            try:
                with registry.opened(call.env, target, path) as known:
                    state = Live(client, storage, store, target, known, balance, capacity, budget, reason)
                    return await _execute(call, state)
            finally:
                store.close()


async def open_store(
    path: Place, target: Target, manifest: Manifest, runner: Runner | None, *, client: SumeClient,
    balance: float | None,
) -> tuple[RunStore, float | None]:  # fmt: skip
    """The campaign's store at its target, worked as one of several runners when it is shared; and
    the balance the run's spend is watched against (a shared store's is read again as it joins: from
    then on, every runner's reservations explain its fall)."""
    store = RunStore.open(path, target=target, campaign=manifest.name)
    if runner is not None:
        store.share(runner, cap=manifest.max_credits, monthly=manifest.monthly_credits)
        runner.mark_start()
        balance = balance_of(await client.credits())
    return store, balance


def cleared(call: Call, diff: Diff, reason: str | None, states: Mapping[str, str]) -> bool:
    """Whether the run may go on: confirmed (or `--yes`), or refused (`reason`) with jobs already paid
    for to collect (polled and downloaded, nothing new bought: else the next run would be refused
    too, and they would never be). A refusal with nothing to collect is exit 3, as ever."""
    options = call.options
    if reason:
        paid = [spec for spec, _ in call.plan.jobs if states.get(spec.key) in TO_POLL | TO_DOWNLOAD]
        if not paid:
            raise RefusedError(f"refused before spending: {reason}")
        call.echo(f"refused before spending: {reason}. Nothing new is bought; the {len(paid):,} job(s)"
                  " already paid for are polled and downloaded.")  # fmt: skip
        return True
    if options.yes:
        return True
    if not options.interactive:
        raise NotConfirmed("not confirmed: not a terminal, so pass --yes to confirm the run")
    return call.confirm(
        f"Submit {diff.new + diff.changed} jobs for about {credits(diff.new_credits)} credits?"
    )


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
    refused: str | None = None  # over the budget or the balance: only what was paid for is collected


async def _execute(call: Call, live: Live) -> int:
    manifest, options, redactor, echo = call.manifest, call.options, call.redactor, call.echo
    store, record, folder, joined = begin(call, live)
    if joined:  # the first runner of this run applied the flags: this one buys nothing again
        options = dataclasses.replace(options, selection=dataclasses.replace(options.selection, joined=True))
        call = dataclasses.replace(call, options=options)
    began = time.monotonic()
    stored = store.states()  # two columns of every job: no request decoded
    states = {spec.id: stored[spec.key] for spec, _ in call.plan.jobs}
    with (
        run_log(folder / "run.log", redactor) as log,
        Progress(states, echo=echo, live=options.live, quiet=options.quiet) as progress,
    ):
        log.info("run %d of %s: %d jobs, %s", record.seq, manifest.name, len(states), live.target.describe())

        def changed(job_id: str, state: str, why: str | None) -> None:
            progress.change(job_id, state, why)
            log.info("%s: %s", job_id, state)

        live.client.on_wait = progress.wait
        executor = make_executor(call, live, changed)
        progress.credits = lambda: executor.reserved
        with Interrupts(executor, echo=echo) as interrupts, store_failures(executor):
            await interrupts.run(call.plan.jobs)
            keys = [spec.key for spec, _ in call.plan.jobs]
            keys += await run_stages(
                call.manifest, call.plan, store=store, executor=executor, interrupts=interrupts,
                changed=changed, echo=echo, redactor=redactor, run=record.seq, selection=options.selection,
            )  # fmt: skip
            if executor.unrecorded:
                raise unrecorded_error(executor)
            stored = store.states()
            counts = Counter(stored[key] for key in keys)  # the run's plan (`begin`), its stages' jobs
            after = await balance_after(live.client, live.balance, halt=executor.halt)
            number = interrupts.signal
            code = exit_code(executor, number, set(counts), refused=live.refused is not None)
            outcome = {"stopped": executor.stopped, "interrupted": interrupts.during_jobs, "exit_code": code,
                       "balance_after": after,
                       "duration_seconds": round(time.monotonic() - began, 3)}  # fmt: skip
            run = end(store, record, outcome)
            log.info("run %d ended: %s", record.seq, ", ".join(f"{n} {state}" for state, n in counts.items()))
            source = Source(campaign=manifest.name, downloads=manifest.downloads, folder=folder,
                            run=run, media=manifest.report_media,
                            decisions=reviews.for_report(manifest.folder, manifest.name))  # fmt: skip
            document = build_report(store, source, redactor=redactor, now=time.time())
            problem = publish(document, folder, source)
    echo(summary_text(document, folder / FILE_NAMES["html"]))
    if note := live.budget.price_note():
        echo(note)
    if executor.crashed is not None:
        raise executor.crashed  # every job is recorded and the reports written: now say it was a bug
    if number is not None:
        echo(f"Interrupted: every job is recorded. Resume with: {resume_command(call, live.target)}")
    elif options.detach and counts.get(JobState.SUBMITTED):
        echo(f"Detached: {counts[JobState.SUBMITTED]:,} job(s) generating, their ids recorded."
             f" Poll and download them with: {resume_command(call, live.target)}")  # fmt: skip
    if call.emit is not None:
        call.emit(json.dumps(outcome_json(document, folder, code), indent=2, ensure_ascii=False))
    if problem:
        raise UsageError(f"{problem}; `sume-batch report {manifest.path}` writes them again")
    return code


def end(store: RunStore, record: RunRecord, outcome: Mapping[str, Any]) -> RunRecord:
    """Record how the run ended, and the run as its reports show it. Of a shared store's runners the
    last one out records it; the others' reports say that the run goes on."""
    others = store.runner.leave(record.seq) if store.runner else 0
    if not others:
        store.end_run(record.seq, outcome)
    run = next(run for run in store.runs() if run.seq == record.seq)
    if others:  # why this runner stopped early, if it did, stays said
        going = f"this runner is done; {others} other runner(s) are still working this run"
        why = outcome.get("stopped")
        run = dataclasses.replace(run, outcome={**outcome, "stopped": f"{why}; {going}" if why else going})
    return run


def outcome_json(document: Mapping[str, Any], folder: Path, code: int) -> dict[str, Any]:
    """`run --json`: how the run ended, its counts and credits, and where its reports are."""
    reports = {name: str(folder / FILE_NAMES[name]) for name in ("html", "json", "junit")}
    return {"object": "run", "exit_code": code, "campaign": document["campaign"], "run": document["run"],
            "counts": document["counts"], "credits": document["credits"], "reports": reports}  # fmt: skip


def exit_code(executor: Executor, signal: int | None, states: set[str], *, refused: bool = False) -> int:
    """70 for a bug of ours, 128 + the signal that interrupted the run, 3 when it was refused before
    spending (and only collected what was paid for), else 0 when every job is done (or, detached,
    done or submitted)."""
    if executor.crashed is not None:
        return INTERNAL_ERROR
    if signal is not None:
        return 128 + signal
    if refused:
        return RefusedError.exit_code
    return 0 if states <= (OK | {JobState.SUBMITTED} if executor.detach else OK) else 1


def begin(call: Call, live: Live) -> tuple[RunStore, RunRecord, Path, bool]:
    """Record the run's start and its plan (the flags' jobs made `planned` again first), and make its
    report folder; the store, the run, that folder, and whether this runner joined a run that other
    runners of a shared store had begun (it then takes their run, and applies no flag again)."""
    manifest, store, redactor = call.manifest, live.store, call.redactor
    reports = manifest.reports / manifest.name
    try:
        reports.mkdir(parents=True, exist_ok=True)  # before anything is recorded or sent
    except OSError as error:
        raise UsageError(f"cannot write reports to {reports}: {error.strerror or error}") from None
    selection = call.options.selection
    flag = "--regenerate" if selection.regenerate else "--retry-failed / --resubmit-uncertain"
    with store.runner.beginning() if store.runner else contextlib.nullcontext():
        going = store.runner.live_run() if store.runner else None
        if going is None:
            store.start_again((spec.key for spec, _ in call.plan.jobs), selection.again(), flag=flag)
            record = store.begin_run(run_info(call, live))
        else:
            record = next(run for run in store.runs() if run.seq == going)
        if store.runner:
            store.runner.work_for(record.seq)
    folder = reports / run_folder_name(record)
    folder.mkdir(exist_ok=True)
    rows = ((spec.key, spec.id, spec.kind.name, spec.request, spec.matrix, price.credits)
            for spec, price in call.plan.jobs)  # fmt: skip
    store.add_planned(
        rows, run=record.seq, stored=lambda request, matrix: stored_variant(request, matrix, redactor)
    )
    return store, record, folder, going is not None


def make_executor(call: Call, live: Live, changed: OnChange) -> Executor:
    """The executor of this run, at the concurrency the manifest (or --concurrency) and the account's
    capacity allow; a rehearsal polls on its lower floor (`poll.REHEARSAL_FLOOR_S`)."""
    manifest, options = call.manifest, call.options
    concurrency = min(options.concurrency or manifest.concurrency, live.capacity or 1_000_000)
    settings = Settings(
        concurrency=concurrency, timeouts=manifest.timeouts, poll_intervals=manifest.poll_intervals,
        poll_floor=REHEARSAL_FLOOR_S if live.target.rehearsal else FLOOR_S,
        lost_create_grace=options.lost_create_grace, capacity=live.capacity,
    )  # fmt: skip
    transfers = Transfers(
        client=live.client, storage=live.storage, store=live.store, redactor=call.redactor,
        folder=manifest.folder, downloads=manifest.downloads, roots=manifest.roots,
    )  # fmt: skip
    executor = Executor(
        client=live.client, transfers=transfers, store=live.store, settings=settings, redactor=call.redactor,
        clock=time.time, on_change=changed, idempotency_honoured=options.idempotency_honoured,
        detach=options.detach,
        budget=live.budget, balance=watch(live), registry=live.registry,
        live_urls=dict(manifest.snapshot.live) if manifest.snapshot else {},
    )  # fmt: skip
    live.client.halt = executor.halt  # a first Ctrl-C also ends any rate-limit wait or back-off
    if live.refused:
        executor.stop(f"refused before spending: {live.refused}")
    return executor


def watch(live: Live) -> BalanceWatch:
    """The balance watch of this run: on a shared store, against what every runner reserved."""
    runner = live.store.runner
    return BalanceWatch(start=live.balance, everyone=runner.reserved_since_start if runner else None)


def resume_command(call: Call, target: Target) -> str:
    """The command that resumes this run: every flag that chose its API target and its store."""
    words = ["sume-batch", "run", shlex.quote(str(call.manifest.path))]
    if call.api.rehearsal is not None:
        words += ["--sandbox", *call.api.rehearsal.flags()]
    elif call.env.get("SUME_API_BASE_URL"):
        words.insert(0, f"SUME_API_BASE_URL={shlex.quote(call.redactor.text(target.base_url))}")
    if call.options.state_dir is not None:
        words += ["--state-dir", shlex.quote(str(call.options.state_dir))]
    if call.options.idempotency_honoured:
        words.append("--idempotency-honoured")
    if call.options.assume_price is not None:
        words += ["--assume-price", f"{call.options.assume_price:g}"]
    command = " ".join(words)
    if call.api.rehearsal is not None:
        command += " (a new embedded sandbox starts empty: the rehearsal starts over)"
    return command


def publish(document: Mapping[str, Any], folder: Path, source: Source | None = None) -> str | None:
    """Write a run's reports (with its media, `output.report_media`) and point `latest` at them;
    what went wrong, if anything."""
    try:
        write_reports(document, folder)
        if source is not None and source.media:
            gather_media(document, folder, source.downloads, source.media)
    except OSError as error:
        reason = error.strerror or error
        return f"the run is recorded, but its reports could not be written to {folder}: {reason}"
    try:
        point_latest(folder)
    except OSError as error:
        return f"the reports are in {folder}, but `latest` could not point there: {error.strerror or error}"
    return None


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
                     "git_dirty": dirty, "data": [file.to_json() for file in manifest.data],
                     "workspace": manifest.snapshot.summary() if manifest.snapshot else None},
        "downloads": str(manifest.downloads.resolve()),
        "reports": str(manifest.reports.resolve()),
        "sandbox": sandbox,
        "target": live.target.id,
        "selection": [redactor.name(flag) for flag in flags],
        "estimated": call.plan.total,
        "balance_before": live.balance,
    }  # fmt: skip
