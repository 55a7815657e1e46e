"""`sume-batch plan`: the dry run: a manifest priced, offline, against what its store says was done."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sume_batch.budget import Budget, campaign_line
from sume_batch.commands.common import (
    check_selection,
    offline_store,
    prepare,
    read_campaign,
    read_workspace,
    saved_snapshots,
    with_reviews,
)  # fmt: skip
from sume_batch.commands.endpoint import Rehearsal, endpoint
from sume_batch.errors import RefusedError, UnresolvedWorkspace
from sume_batch.expand import JobSpec
from sume_batch.manifest import Manifest, load_pricing
from sume_batch.plan import Diff, Plan, Selection, diff_plan, make_plan, plan_json, plan_text, restrict
from sume_batch.redact import Redactor
from sume_batch.saved import saved_section
from sume_batch.target import DEFAULT_BASE_URL, normalize_url, store_folder

Echo = Callable[[str], None]


def planned(
    path: Path,
    *,
    max_jobs: int | None,
    roots: Sequence[Path],
    state_dir: Path | None,
    env: Mapping[str, str],
    sandbox: bool,
    refresh: bool,
) -> tuple[Manifest, list[JobSpec]]:
    """The manifest expanded, its workspace axes from the last snapshot at this target (offline),
    or, with `refresh`, read now (the embedded sandbox's workspace for `sandbox`)."""
    if not refresh:
        return prepare(
            path, max_jobs=max_jobs, roots=roots, find=saved_snapshots(path, state_dir, env, sandbox=sandbox)
        )
    try:
        return prepare(path, max_jobs=max_jobs, roots=roots)  # no workspace axis: nothing to read
    except UnresolvedWorkspace as unread:
        with endpoint(sandbox=Rehearsal() if sandbox else None, env=env) as api:
            snapshot = read_workspace(api, unread.axes, unread.campaign, store_folder(path.parent, state_dir))
        return prepare(path, max_jobs=max_jobs, roots=roots, snapshot=snapshot)


def plan(
    path: Path,
    *,
    max_jobs: int | None,
    pricing: Path | None,
    state_dir: Path | None,
    selection: Selection,
    as_json: bool,
    output: Path | None,
    env: Mapping[str, str],
    echo: Echo,
    sandbox: bool = False,
    assume_price: float | None = None,
    roots: Sequence[Path] = (),
    refresh: bool = False,
    detailed: bool = False,
) -> int:
    """Price a manifest and show (or write) the plan, with what changed since the last run at the
    API the environment points at (or the rehearsal store, `sandbox`); exit 0. `refresh` reads the
    workspace axes now (with the key; the embedded sandbox's for `sandbox`).

    Both pass the redaction gate that `run`'s output passes: requests as data, as the store keeps them
    (workspace/user/key ids and secret fields too), the rest as names (keys, emails, signed URLs: a
    matrix value may hold one); its markers hold no quote or backslash, so the JSON stays valid."""
    redactor = Redactor.from_env(env)
    gate = redactor.name
    document, result, manifest, diff, budget = document_of(
        path, max_jobs=max_jobs, pricing=pricing, state_dir=state_dir, selection=selection, env=env,
        sandbox=sandbox, assume_price=assume_price, roots=roots, refresh=refresh, saved=output is not None,
    )  # fmt: skip
    if output is not None:
        output.write_text(gate(json.dumps(document, indent=2, ensure_ascii=False)) + "\n", "utf-8")
    code = detailed_code(result, diff, budget) if detailed else 0
    if as_json:
        echo(gate(json.dumps(document, indent=2, ensure_ascii=False)))
        return code
    lines = [plan_text(result)]
    if manifest.snapshot is not None:
        lines.append(manifest.snapshot.text() + ("" if refresh else "; `plan --refresh` reads it again"))
    if note := budget.price_note():
        lines.append(note)
    if diff:
        lines.append(campaign_line(budget, diff.new_credits))
        lines.append(diff.text())
    echo(gate("\n".join(lines)))
    return code


def document_of(
    path: Path, *, max_jobs: int | None, pricing: Path | None, state_dir: Path | None, selection: Selection,
    env: Mapping[str, str], sandbox: bool, assume_price: float | None, roots: Sequence[Path], refresh: bool,
    saved: bool,
) -> tuple[dict[str, Any], Plan, Manifest, Diff | None, Budget]:  # fmt: skip
    """The plan as `plan --json` has it (and, `saved`, what `run PLAN` checks again), with the plan,
    manifest, the diff against the store and the budget it was made from."""
    redactor = Redactor.from_env(env)
    prices = load_pricing(pricing) if pricing else None
    manifest, specs = planned(path, max_jobs=max_jobs, roots=roots, state_dir=state_dir, env=env,
                              sandbox=sandbox, refresh=refresh)  # fmt: skip
    selection = with_reviews(selection, manifest, state_dir, env, sandbox=sandbox)
    result: Plan = restrict(make_plan(manifest, specs, prices, assume=assume_price), selection)
    check_selection(result, selection, manifest)
    store = offline_store(manifest, state_dir, env, sandbox=sandbox)
    stored, budget, ids = read_campaign(store, manifest.max_credits, assume_price)
    diff = diff_plan(result, stored, selection.again(), cost=budget.cost, ids=ids) if stored else None
    document: dict[str, Any] = {"object": "plan"}
    if saved:
        target = "sandbox" if sandbox else normalize_url(env.get("SUME_API_BASE_URL") or DEFAULT_BASE_URL)
        chosen = {"only": list(selection.only), "retry_failed": selection.retry_failed,
                  "resubmit_uncertain": selection.resubmit_uncertain, "regenerate": selection.regenerate,
                  "stop_after": selection.stop_after, "retry_rejected": selection.retry_rejected}  # fmt: skip
        document["saved"] = saved_section(
            manifest=manifest.path, data=[one.to_json() for one in manifest.data], selection=chosen,
            target=target, states=stored, keys=[spec.key for spec, _ in result.jobs],
        )  # fmt: skip
    document |= {
        **plan_json(result), "since_last_run": diff.__dict__ if diff else None,
        "campaign_credits": {"spent_or_held": budget.committed, "price_ratios": budget.differences()},
    }  # fmt: skip
    document["jobs"] = [{**job, "request": redactor.value(job["request"])} for job in document["jobs"]]
    return document, result, manifest, diff, budget


CHANGES = 10  # `plan --detailed-exitcode`: something to buy (2 is an invalid manifest here, not Terraform's)


def detailed_code(plan: Plan, diff: Diff | None, budget: Budget) -> int:
    """`--detailed-exitcode`: 0 nothing to buy, `CHANGES` something to buy within the budget, 3 over
    it (what `run` would refuse)."""
    to_buy = diff.new_credits if diff is not None else plan.now_total
    staged = max(0.0, plan.staged_total - budget.downstream)
    if plan.max_credits is not None and not budget.admits(to_buy + staged):
        return RefusedError.exit_code
    nothing = (diff is not None and diff.new == diff.changed == 0) or (diff is None and not plan.jobs)
    return 0 if nothing and not staged else CHANGES
