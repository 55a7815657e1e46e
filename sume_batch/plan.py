"""The plan stage (pure): priced jobs, totals by type and axis, and the budget verdict.

`plan` is the dry run: it is what a person reads before a single credit is spent, so its text
says plainly which figures are our estimates and which prices are unknown.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from sume_batch import stages, states
from sume_batch.confine import file_digest
from sume_batch.data import DataFile, label
from sume_batch.errors import UsageError
from sume_batch.expand import JobSpec, probe_specs
from sume_batch.kinds import KINDS
from sume_batch.manifest import Manifest
from sume_batch.pricing import Price, merge_prices, price_job
from sume_batch.reviews import STATES as REVIEW_STATES
from sume_batch.states import FAILED_BEFORE, TO_SUBMIT, JobState

PRICE_NOTE = (
    "Prices are estimates: Sume publishes no per-job prices. Override them with pricing: or --pricing."
)


@dataclass(frozen=True)
class TypeTotal:
    """One line of the plan's table: the jobs of one type."""

    kind: str
    count: int
    lowest: float | None  # the cheapest known price each
    highest: float | None
    subtotal: float  # of the jobs whose price is known
    unknown: int


@dataclass(frozen=True)
class StageBound:
    """A downstream job template: at most how many jobs its upstream allows, priced (see `stages`)."""

    template: int  # its index in `jobs:`
    kind: str
    stage: str | None  # its own stage name, if later jobs need it
    needs: str
    fan: str
    jobs: int  # at most
    each: float | None  # the highest price of its jobs rendered with a stand-in upstream
    outputs: int  # at most, per job (what a stage that needs it fans out over)

    @property
    def subtotal(self) -> float:
        return self.jobs * (self.each or 0.0)


@dataclass(frozen=True)
class Plan:
    """What a run would do and what it would cost, before anything is sent."""

    campaign: str
    manifest: Path
    jobs: tuple[tuple[JobSpec, Price], ...]
    types: tuple[TypeTotal, ...]
    axes: Mapping[str, Mapping[str, int]]  # axis → value → jobs
    max_credits: float | None
    data: tuple[DataFile, ...] = ()  # the data files its axes read, with their sha256
    stages: tuple[StageBound, ...] = ()  # the jobs that run once their upstream is ready
    stage_names: frozenset[str] = frozenset()  # every stage a job names
    everything: tuple[tuple[JobSpec, Price], ...] = ()  # the jobs before `restrict`: what stages read
    pricer: Callable[[JobSpec], Price] | None = field(default=None, compare=False, repr=False)

    @property
    def total(self) -> float:
        """Every job's estimate, each downstream stage at its worst case."""
        return self.now_total + self.staged_total

    @property
    def now_total(self) -> float:
        return sum(line.subtotal for line in self.types)

    @property
    def staged_total(self) -> float:
        return sum(stage.subtotal for stage in self.stages)

    @property
    def unknown(self) -> int:
        return sum(line.unknown for line in self.types)

    @property
    def over_budget(self) -> bool:
        return self.max_credits is not None and self.total > self.max_credits


def make_plan(
    manifest: Manifest,
    specs: Sequence[JobSpec],
    prices: Mapping[str, Any] | None = None,
    *,
    assume: float | None = None,
) -> Plan:
    """Price every job; `prices` (from --pricing) is laid over the manifest's own `pricing:`, and a
    job whose price is still unknown is priced at `assume` (--assume-price), marked as assumed."""
    table = merge_prices(manifest.pricing, prices or {})

    def pricer(spec: JobSpec) -> Price:
        return assumed(price_job(spec.kind.name, spec.request, table), assume)

    jobs = tuple((spec, pricer(spec)) for spec in specs)
    return Plan(
        campaign=manifest.name,
        manifest=manifest.path,
        jobs=jobs,
        types=type_totals(jobs),
        axes=axis_counts(specs),
        max_credits=manifest.max_credits,
        data=manifest.data,
        stages=stage_bounds(manifest, specs, pricer),
        stage_names=frozenset(template.stage for template in manifest.jobs if template.stage),
        pricer=pricer,
    )


def _stop_after(plan: Plan, stage: str) -> Plan:
    if stage not in plan.stage_names:
        known = ", ".join(sorted(plan.stage_names)) or "none"
        raise UsageError(f"--stop-after {stage}: no job is that stage (stages: {known})")
    cut, kept = {stage}, []
    for bound in plan.stages:  # in order: a stage after a cut one is cut too
        if bound.needs in cut and bound.stage != stage:
            cut |= {bound.stage} if bound.stage else set()
        else:
            kept.append(bound)
    return dataclasses.replace(plan, stages=tuple(kept))


def stage_bounds(
    manifest: Manifest, specs: Sequence[JobSpec], price: Callable[[JobSpec], Price]
) -> tuple[StageBound, ...]:
    """Each downstream template's worst case: every upstream job making every output (`stages`)."""
    outputs: Counter[str] = Counter()  # stage → outputs at most
    for spec in specs:
        stage = manifest.jobs[spec.template].stage
        if stage:
            outputs[stage] += stages.outputs_of(spec.kind.name, spec.request)
    bounds = []
    for template in stages.order(manifest.jobs):
        probes = probe_specs(manifest, template, digest=cache(file_digest))
        count = len(probes) * (outputs[template.needs or ""] if template.fan == "aligned" else 1)
        prices = [found.credits for found in map(price, probes) if found.credits is not None]
        per_job = max((stages.outputs_of(one.kind.name, one.request) for one in probes), default=1)
        if template.stage:
            outputs[template.stage] += count * per_job
        bounds.append(StageBound(
            template.index, template.kind.name, template.stage, template.needs or "", template.fan, count,
            max(prices) if len(prices) == len(probes) and prices else None, per_job,
        ))  # fmt: skip
    return tuple(bounds)


def assumed(price: Price, assume: float | None) -> Price:
    if price.credits is not None or assume is None:
        return price
    return Price(assume, f"assumed {credits(assume)} (--assume-price): {price.why}")


def type_totals(jobs: Sequence[tuple[JobSpec, Price]]) -> tuple[TypeTotal, ...]:
    """One line per job type, in the order of KINDS, from a single pass over the jobs."""
    known: dict[str, list[float]] = {}
    counts: Counter[str] = Counter()
    for spec, price in jobs:
        counts[spec.kind.name] += 1
        if price.credits is not None:
            known.setdefault(spec.kind.name, []).append(price.credits)
    lines = []
    for kind in KINDS:
        if counts[kind]:
            prices = known.get(kind, [])
            low, high = (min(prices), max(prices)) if prices else (None, None)
            lines.append(TypeTotal(kind, counts[kind], low, high, sum(prices), counts[kind] - len(prices)))
    return tuple(lines)


def axis_counts(specs: Sequence[JobSpec]) -> dict[str, dict[str, int]]:
    """Jobs per value of each axis, axes and values in the order they first appear."""
    by_value: dict[str, dict[int, list[Any]]] = {}  # axis → id(value) → [value, jobs]
    for spec in specs:  # counted by identity: rows share their axes' value objects, labels cost more
        for axis, value in spec.matrix.items():
            counts = by_value.get(axis)
            if counts is None:
                counts = by_value[axis] = {}
            slot = counts.get(id(value))
            if slot is None:
                counts[id(value)] = [value, 1]
            else:
                slot[1] += 1
    labelled: dict[str, dict[str, int]] = {}
    for axis, counts in by_value.items():
        labels = labelled[axis] = {}
        for value, jobs in counts.values():
            name = label(value)
            labels[name] = labels.get(name, 0) + jobs
    return labelled


def budget_verdict(plan: Plan) -> str:
    unknown = (
        f"; {plan.unknown:,} job{'s' if plan.unknown != 1 else ''} priced unknown" if plan.unknown else ""
    )
    if plan.max_credits is None:
        return f"no budget set (budget.max_credits){unknown}"
    if plan.over_budget:
        return f"OVER BUDGET: {credits(plan.total)} of {credits(plan.max_credits)} credits{unknown}"
    return f"within budget: {credits(plan.total)} of {credits(plan.max_credits)} credits{unknown}"


def credits(amount: float | None) -> str:
    if amount is None:
        return "unknown"
    return f"{amount:,.0f}" if float(amount).is_integer() else f"{amount:,.2f}"


def plan_text(plan: Plan) -> str:
    """The plan as a person reads it on a terminal."""
    count = len(plan.jobs)
    lines = [f"Campaign {plan.campaign} ({plan.manifest}): {count:,} job{'s' if count != 1 else ''}", ""]
    rows = [("type", "jobs", "credits each", "subtotal")]
    for line in plan.types:
        each = (
            credits(line.lowest)
            if line.lowest == line.highest
            else f"{credits(line.lowest)}–{credits(line.highest)}"
        )
        subtotal = credits(line.subtotal) + (f" + {line.unknown:,} unknown" if line.unknown else "")
        if line.unknown == line.count:
            subtotal = "unknown"
        rows.append(
            (line.kind, f"{line.count:,}", each if line.count > line.unknown else "unknown", subtotal)
        )
    rows.append(("total", f"{count:,}", "", credits(plan.now_total) + (" + unknown" if plan.unknown else "")))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        lines.append(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
    if plan.stages:
        lines += ["", "stages (run once their upstream is ready; at most):"]
        for stage in plan.stages:
            each = credits(stage.each) if stage.each is not None else "unknown"
            lines.append(f"  jobs[{stage.template}] {stage.kind}: needs {stage.needs} ({stage.fan}),"
                         f" up to {stage.jobs:,} jobs × {each} = {credits(stage.subtotal)}")  # fmt: skip
        lines.append(f"  the whole chain: up to {credits(plan.total)} credits")
    if plan.axes:
        lines += ["", "matrix:"]
        lines += [f"  {axis}: {_axis_line(values)}" for axis, values in plan.axes.items()]
    lines += ["", f"budget: {budget_verdict(plan)}"]
    for spec, price in plan.jobs:
        if price.credits is None:
            lines.append(f"  unknown price: {spec.id}: {price.why}")
            break
    guesses = sum(1 for _, price in plan.jobs if price.why.startswith("assumed"))
    if guesses:
        lines.append(f"  {guesses:,} job(s) of unknown price reserve the price assumed with --assume-price")
    lines.append(PRICE_NOTE)
    return "\n".join(lines)


def _axis_line(values: Mapping[str, int], shown: int = 8) -> str:
    parts = [f"{value} ({count:,})" for value, count in list(values.items())[:shown]]
    more = f", … {len(values) - shown:,} more" if len(values) > shown else ""
    return f"{len(values):,} value{'s' if len(values) != 1 else ''}: " + ", ".join(parts) + more


def plan_json(plan: Plan) -> dict[str, Any]:
    """The plan as a documented object (see the README's "plan --json" section)."""
    return {
        "object": "plan",
        "campaign": plan.campaign,
        "manifest": str(plan.manifest),
        "data": [file.to_json() for file in plan.data],
        "estimate": True,
        "total_credits": plan.total,
        "unknown_price_jobs": plan.unknown,
        "max_credits": plan.max_credits,
        "over_budget": plan.over_budget,
        "types": [line.__dict__ for line in plan.types],
        "stages": [{**stage.__dict__, "subtotal": stage.subtotal} for stage in plan.stages],
        "axes": plan.axes,
        "jobs": [
            {
                "id": spec.id,
                "key": spec.key,
                "type": spec.kind.name,
                "matrix": spec.matrix,
                "request": spec.request,
                "credits": price.credits,
                **({"unknown_price": price.why} if price.credits is None else {}),
            }
            for spec, price in plan.jobs
        ],
    }


@dataclass(frozen=True)
class Diff:
    """What changed since the last run of this campaign (from its store): like `terraform plan`."""

    new: int  # never submitted: `run` submits these
    changed: int  # a stored job's id with another request (a prompt, a data row): `run` buys these again
    unchanged: int  # submitted before (done, in flight or uncertain): never bought again
    failed: int  # failed, canceled, expired or refused before: re-created only on request
    removed: int  # in the store but no longer in the manifest
    new_credits: float  # the estimate of what `run` would submit now

    def text(self) -> str:
        parts = [f"{self.new:,} new"]
        if self.changed:
            parts.append(f"{self.changed:,} changed (request edited: bought again)")
        parts.append(f"{self.unchanged:,} unchanged (already paid)")
        if self.failed:
            parts.append(f"{self.failed:,} failed before (not retried; --retry-failed)")
        parts.append(f"{self.removed:,} removed")
        return f"since the last run: {', '.join(parts)}; to submit now: {credits(self.new_credits)} credits"


def diff_plan(
    plan: Plan,
    stored: Mapping[str, str],
    again: frozenset[str] = frozenset(),
    *,
    cost: Callable[[str, float | None], float | None] | None = None,
    ids: Mapping[str, str] | None = None,
) -> Diff:
    """Compare the plan's job keys with the states a previous run left (key → state); jobs in
    the `again` states (the --retry-failed and similar flags) are bought again. `cost` prices a
    (kind, estimate) as the budget reserves it (the API's stated rates, see `budget`). With the
    stored jobs' ids (key → id), a job new by key whose id a removed job had is *changed*: its
    request changed (a prompt, a data row), so it is bought again."""
    keys = {spec.key for spec, _ in plan.jobs}
    submit = TO_SUBMIT | again
    new = [
        (spec, Price(cost(spec.kind.name, price.credits)) if cost else price)
        for spec, price in plan.jobs
        if stored.get(spec.key, JobState.PLANNED) in submit
    ]
    failed = sum(1 for spec, _ in plan.jobs if stored.get(spec.key) in FAILED_BEFORE - again)
    removed = [key for key in stored if key not in keys]
    gone = Counter((ids or {}).get(key) for key in removed)
    changed = sum(1 for spec, _ in new if spec.key not in stored and gone.get(spec.id, 0) > 0)
    return Diff(
        new=len(new) - changed,
        changed=changed,
        unchanged=len(plan.jobs) - len(new) - failed,
        failed=failed,
        removed=len(removed) - changed,
        new_credits=sum(price.credits or 0 for _, price in new),
    )


@dataclass(frozen=True)
class Selection:
    """Which jobs a run touches and which finished ones it buys again (the run/plan flags)."""

    only: tuple[str, ...] = ()  # job id globs, axis=value, or a review state (`reviews.STATES`)
    stop_after: str | None = None  # a chain runs up to this stage (see `stages`)
    retry_failed: bool = False
    resubmit_uncertain: bool = False
    regenerate: bool = False
    retry_rejected: bool = False  # only the rejected jobs (of those `only` selects), bought again
    reviewed: Mapping[str, str] = field(default_factory=dict)  # job key → review state (`reviews`)
    shard: tuple[int, int] | None = None  # `--shard i/n`: this runner's part of the jobs (see `in_shard`)
    joined: bool = False  # a runner that joined a shared store's run: its first runner applied the flags

    @property
    def needs_reviews(self) -> bool:
        return self.retry_rejected or any(pattern in REVIEW_STATES for pattern in self.only)

    def again(self) -> frozenset[str]:
        """Stored states whose jobs are created anew."""
        if self.joined:
            return frozenset()
        chosen = {"retry_failed": self.retry_failed, "resubmit_uncertain": self.resubmit_uncertain}
        return states.again(**chosen, regenerate=self.regenerate or self.retry_rejected)

    def selects(self, spec: JobSpec) -> bool:
        chosen = not self.only or any(self._selected(spec, pattern) for pattern in self.only)
        chosen = chosen and (self.shard is None or in_shard(spec.key, self.shard))
        return chosen and (not self.retry_rejected or self.reviewed.get(spec.key) == "rejected")

    def _selected(self, spec: JobSpec, pattern: str) -> bool:
        if pattern in REVIEW_STATES:
            return self.reviewed.get(spec.key, "unreviewed") == pattern
        return _selected(spec, pattern)


def in_shard(key: str, shard: tuple[int, int]) -> bool:
    """Whether a job is in shard `i` of `n` (`--shard i/n`, i from 0, as Kubernetes numbers an
    Indexed Job's pods): by its key's hash, so each job is in exactly one shard, whatever the
    manifest's order, and stays there while its request stays the same."""
    index, count = shard
    return int(hashlib.sha256(key.encode()).hexdigest()[:12], 16) % count == index


def parse_shard(text: str) -> tuple[int, int]:
    """`i/n` with 0 <= i < n, as `--shard` takes it; a UsageError otherwise."""
    index, slash, count = text.partition("/")
    if not slash or not index.strip().isdigit() or not count.strip().isdigit() or int(count) < 1:
        raise UsageError(f"--shard takes i/n (e.g. 0/4, i counted from 0), not {text!r}")
    if int(index) >= int(count):
        raise UsageError(f"--shard {text}: i counts from 0, so it must be below {int(count)}")
    return int(index), int(count)


def _selected(spec: JobSpec, pattern: str) -> bool:
    axis, equals, value = pattern.partition("=")
    if equals and axis in spec.matrix:
        return label(spec.matrix[axis]) == value
    return fnmatch.fnmatchcase(spec.id, pattern)


def restrict(plan: Plan, selection: Selection) -> Plan:
    """The plan of only the selected jobs, with its totals worked out again; with `stop_after`,
    without the stages after that one (a UsageError when no job is that stage)."""
    if selection.stop_after is not None:
        plan = _stop_after(plan, selection.stop_after)
    if not selection.only and not selection.retry_rejected and selection.shard is None:
        return plan
    jobs = tuple((spec, price) for spec, price in plan.jobs if selection.selects(spec))
    specs = [spec for spec, _ in jobs]
    return dataclasses.replace(
        plan,
        jobs=jobs,
        types=type_totals(jobs),
        axes=axis_counts(specs),
        everything=plan.everything or plan.jobs,
    )
