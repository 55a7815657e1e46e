"""Running a chain (part of the execute stage): a downstream stage's jobs made from what its
upstream stage produced, once that stage has gone as far as this run takes it (see `stages`)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from sume_batch import reviews, stages
from sume_batch.confine import file_digest
from sume_batch.errors import ApiError, ManifestError
from sume_batch.execute import Executor, OnChange
from sume_batch.expand import JobSpec, expand_downstream
from sume_batch.manifest import JobTemplate, Manifest
from sume_batch.plan import Plan, Selection
from sume_batch.pricing import Price
from sume_batch.records import StoredJob
from sume_batch.redact import Redactor, stored_variant
from sume_batch.stages import RESERVED_AXIS, output_rows
from sume_batch.states import OK, RESTING, JobState
from sume_batch.store import RunStore
from sume_batch.supervise import Interrupts
from sume_batch.transfer import Transfers, primary_media
from sume_batch.workspace import stored_form

Job = tuple[JobSpec, Price]


@dataclass
class Stage:
    """One downstream template's jobs as this run could make them."""

    jobs: list[Job] = field(default_factory=list)  # to run now
    blocked: list[tuple[str, str]] = field(default_factory=list)  # (key, id) of the jobs recorded `blocked`
    waiting: int = 0  # upstream jobs not done yet (interrupted, still generating): the next run goes on
    problems: list[str] = field(default_factory=list)  # the template failed with the real outputs


async def next_stage(
    template: JobTemplate, done: Sequence[Job], *, manifest: Manifest, store: RunStore, transfers: Transfers,
    price: Callable[[JobSpec], Price], live: dict[str, str], run: int,
    reviewed: Mapping[str, str] | None = None,
) -> Stage:  # fmt: skip
    """The jobs of `template` over the outputs of the stage it needs among `done` (the run's jobs
    so far); the upstream's results are fetched afresh and their URLs kept stored-form (`live`
    gets each URL as read). Upstream jobs that ended without success block what needed them."""
    upstream = [spec for spec, _ in done if manifest.jobs[spec.template].stage == template.needs]
    if template.picked:  # only what review picked (`reviews`): the others are neither waited for nor blocking
        upstream = [spec for spec in upstream if (reviewed or {}).get(spec.key) == "picked"]
    stored = store.jobs(spec.key for spec in upstream)
    stage, outputs, failed = Stage(), [], []
    for spec in upstream:
        job = stored.get(spec.key)
        if job is None or job.state not in RESTING:
            stage.waiting += 1
        elif job.state not in OK:
            failed.append(job)
        else:
            try:
                outputs += await _outputs(job, transfers, live)
            except ApiError as error:
                stage.problems.append(f"{template.path}: the result of {job.id} could not be read: {error}")
    if stage.waiting:
        return stage  # a downstream stage starts once its upstream stage has finished
    if template.fan == "join":
        failed = failed if not outputs else []
    for job in failed:
        stage.blocked.append(_block(store, manifest, template, job, run=run))
    try:
        specs = expand_downstream(manifest, template, outputs, digest=cache(file_digest))
    except ManifestError as error:
        stage.problems += [str(problem) for problem in error.problems]
        return stage
    stage.jobs = [(spec, price(spec)) for spec in specs]
    return stage


async def _outputs(job: StoredJob, transfers: Transfers, live: dict[str, str]) -> list[Mapping[str, Any]]:
    """A finished job's outputs, from its results read now: stored-form, each URL as read in `live`."""
    found: list[Mapping[str, Any]] = []
    for _, body in await transfers.results(job):
        result = body.get("result", body) if isinstance(body.get("result", body), Mapping) else body
        # An analysis is one output (its scenes are in its result); else one per media file.
        media = (
            [] if job.kind == "reference_analysis" else [(m.url, m.content_type) for m in primary_media(body)]
        )
        found += [stored_form(row, live) for row in output_rows(job, result, media)]
    return found


def _block(
    store: RunStore, manifest: Manifest, template: JobTemplate, upstream: StoredJob, *, run: int
) -> tuple[str, str]:
    """Record the downstream job an upstream failure holds back (one per template and upstream job)."""
    key = hashlib.sha256(f"{manifest.name}|blocked|{template.index}|{upstream.key}".encode()).hexdigest()[:32]
    job_id = f"blocked-{template.index}-{upstream.id}"[:128]
    why = f"its upstream {upstream.id} is {upstream.state}: never sent"
    store.add_planned([(key, job_id, template.kind.name, {}, {RESERVED_AXIS: upstream.id}, 0.0)], run=run)
    if store.job(key).state == JobState.PLANNED and store.claim(key):
        store.block(key, why)
    return key, job_id


async def run_stages(
    manifest: Manifest, plan: Plan, *, store: RunStore, executor: Executor, interrupts: Interrupts,
    changed: OnChange, echo: Callable[[str], None], redactor: Redactor, run: int, selection: Selection,
) -> list[str]:  # fmt: skip
    """Each downstream stage once its upstream stage has finished (see `stages`), after the plan's
    own jobs ran; the keys of the jobs it made, blocked ones too. Stops when the run is stopped or
    interrupted. A stage reads every job of the stage it needs (`--only` or not: a join over part of
    its upstream would be another job), and `selection` chooses among its jobs and buys again those
    its flags name, as for the first stage's."""
    done, keys = list(plan.everything or plan.jobs), []
    chosen = {bound.template for bound in plan.stages}  # `--stop-after` leaves out what comes after
    reviewed = review_states(manifest, store) if any(one.picked for one in manifest.jobs) else {}
    for template in stages.order(manifest.jobs):
        if template.index not in chosen:
            continue
        if executor.halt.is_set() or executor.stopped or executor.crashed:
            break
        price = plan.pricer or (lambda spec: Price(None, "unpriced"))
        stage = await next_stage(
            template, done, manifest=manifest, store=store, transfers=executor.transfers, price=price,
            live=executor.live_urls, run=run, reviewed=reviewed,
        )  # fmt: skip
        for line in stage.problems:
            echo(redactor.name(line))
        if template.picked and not stage.jobs and not stage.blocked:
            echo(f"{template.path} reads only what review picked: nothing of {template.needs} is picked yet")
        for key, job_id in stage.blocked:
            changed(job_id, JobState.BLOCKED, None)
            keys.append(key)
        if stage.waiting:
            echo(f"{template.path} waits for {stage.waiting:,} upstream job(s) of stage {template.needs}:"
                 " the next run goes on")  # fmt: skip
            continue
        stage.jobs = [(spec, cost) for spec, cost in stage.jobs if selection.selects(spec)]
        flag = "--regenerate" if selection.regenerate else "--retry-failed / --resubmit-uncertain"
        store.start_again((spec.key for spec, _ in stage.jobs), selection.again(), flag=flag)
        rows = (
            (spec.key, spec.id, spec.kind.name, spec.request, spec.matrix, cost.credits)
            for spec, cost in stage.jobs
        )
        store.add_planned(
            rows, run=run, stored=lambda request, matrix: stored_variant(request, matrix, redactor)
        )
        for spec, _ in stage.jobs:
            changed(spec.id, store.job(spec.key).state, None)
        await interrupts.run(stage.jobs)
        done += stage.jobs
        keys += [spec.key for spec, _ in stage.jobs]
    return keys


def review_states(manifest: Manifest, store: RunStore) -> dict[str, str]:
    """Job key → review state, from the decisions file and this store's outputs (see `reviews`)."""
    decisions = reviews.for_report(manifest.folder, manifest.name) or {}  # `run` read it before buying
    outputs = reviews.outputs_of(store.files())
    return reviews.states(decisions, outputs)
