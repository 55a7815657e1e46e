"""What several commands share: a manifest loaded and expanded, and the run store it names."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from sume_batch.confine import file_digest
from sume_batch.errors import UnresolvedWorkspace, UsageError
from sume_batch.expand import JobSpec, expand_jobs
from sume_batch.manifest import Manifest, load_manifest
from sume_batch.saved import refuse_as_manifest
from sume_batch.target import DEFAULT_BASE_URL, find_store, normalize_url, shared_state, store_folder
from sume_batch.workspace import (
    Snapshot,
    WorkspaceAxis,
    find_snapshot,
    resolve,
    snapshot_path,
    write_snapshot,
)

if TYPE_CHECKING:
    from sume_batch.budget import Budget
    from sume_batch.commands.endpoint import Endpoint
    from sume_batch.plan import Plan, Selection
    from sume_batch.records import Place
    from sume_batch.target import Target


def prepare(
    path: Path,
    *,
    max_jobs: int | None = None,
    roots: Sequence[Path] = (),
    snapshot: Snapshot | None = None,
    find: Callable[[str], Snapshot | None] | None = None,
    unread_ok: bool = False,
) -> tuple[Manifest, list[JobSpec]]:
    """Load, validate and expand one manifest (no network); `roots` are folders besides its own
    that its local files and outputs may use (`--allow-root`). Workspace axes are filled from
    `snapshot`, else from what `find(campaign)` finds (see `workspace`), else UnresolvedWorkspace
    (or, with `unread_ok`, left empty and listed in `Manifest.unread`)."""
    refuse_as_manifest(path)  # a saved plan is named as one, not read as YAML
    try:
        manifest = load_manifest(path, roots=roots, snapshot=snapshot)
    except UnresolvedWorkspace as error:
        found = find(error.campaign) if find is not None and snapshot is None else None
        if found is None and not unread_ok:
            raise
        manifest = load_manifest(path, roots=roots, snapshot=found, unread_ok=unread_ok)
    return manifest, expand_jobs(manifest, digest=cache(file_digest), max_jobs=max_jobs)


def saved_snapshots(
    path: Path, state_dir: Path | None, env: Mapping[str, str] | None, *, sandbox: bool | None
) -> Callable[[str], Snapshot | None]:
    """How `validate` (env None: any target) and `plan` find a campaign's workspace snapshot."""
    folder = store_folder(path.parent, state_dir)
    base_url = None if env is None else env.get("SUME_API_BASE_URL") or DEFAULT_BASE_URL
    return lambda campaign: find_snapshot(folder, campaign, base_url=base_url, rehearsal=sandbox)


def with_reviews(
    selection: Selection, manifest: Manifest, state_dir: Path | None, env: Mapping[str, str], *, sandbox: bool
) -> Selection:
    """The selection, knowing each job's review state when it selects by one (`reviews`)."""
    if not selection.needs_reviews:
        return selection
    from sume_batch.records import reading  # noqa: PLC0415
    from sume_batch.reviews import load, outputs_of, reviews_path, states  # noqa: PLC0415

    decisions = load(reviews_path(manifest.folder, manifest.name))
    store, outputs = offline_store(manifest, state_dir, env, sandbox=sandbox), []
    if store is not None:
        with reading(store) as found:
            outputs = outputs_of(found.files())
    return dataclasses.replace(selection, reviewed=states(decisions, outputs))


def check_selection(plan: Plan, selection: Selection, manifest: Manifest) -> None:
    """`--only` that selects no job (of the first stage, or as a later stage's would be named) is
    a usage error (exit 2): a run of nothing must not look like a run, nor move `latest`."""
    if not selection.only or plan.jobs:
        return
    from sume_batch import stages  # noqa: PLC0415
    from sume_batch.expand import probe_specs  # noqa: PLC0415

    later = (
        spec for one in stages.order(manifest.jobs) for spec in probe_specs(manifest, one, digest=file_digest)
    )
    if not any(selection.selects(spec) for spec in later):
        raise UsageError(
            f"--only {' '.join(selection.only)} selects no job of {manifest.name}; nothing was sent"
        )


def read_workspace(api: Endpoint, axes: Sequence[WorkspaceAxis], campaign: str, folder: Path) -> Snapshot:
    """Read the workspace axes at `api` now (GET requests only) and save the snapshot beside the
    campaign's store at that target; the snapshot, with the URLs as read."""
    import asyncio  # noqa: PLC0415 - only a manifest with workspace axes reads the API here

    import httpx  # noqa: PLC0415

    from sume_batch.api import SumeClient  # noqa: PLC0415
    from sume_batch.target import target_of  # noqa: PLC0415

    async def read() -> tuple[Snapshot, Target]:
        async with httpx.AsyncClient(timeout=30) as http:
            client = SumeClient(http, api_key=api.api_key, base_url=api.base_url)
            target = target_of(api.base_url, await client.me(), sandbox=api.rehearsal is not None)
            return await resolve(client, axes, target, campaign=campaign), target

    found, target = asyncio.run(read())
    write_snapshot(snapshot_path(folder, campaign, target), found)
    return found


def offline_store(
    manifest: Manifest, state_dir: Path | None, env: Mapping[str, str], *, sandbox: bool
) -> Place | None:
    """The store `plan`, `status` and `report` read without asking the API (see `target`): in the
    shared store when there is one (an embedded sandbox's rehearsals are always kept locally)."""
    base_url = env.get("SUME_API_BASE_URL") or DEFAULT_BASE_URL
    if url := shared_state(manifest.state, state_dir, env):
        from sume_batch import pg  # noqa: PLC0415

        found = pg.find(url, manifest.name, base_url=normalize_url(base_url), rehearsal=sandbox)
        if found is not None or not sandbox:
            return found
    folder = store_folder(manifest.folder, state_dir)
    return find_store(folder, manifest.name, base_url=base_url, rehearsal=sandbox)


def chosen_store(
    manifest: Manifest, state_dir: Path | None, env: Mapping[str, str] | None, sandbox: bool
) -> Place:
    """The store a manifest names for `status` and `report`; the place to say when there is none."""
    env = env or {}
    found = offline_store(manifest, state_dir, env, sandbox=sandbox)
    if found is not None:
        return found
    url = shared_state(manifest.state, state_dir, env)
    where = str(store_folder(manifest.folder, state_dir))
    if url is not None:
        from sume_batch import pg  # noqa: PLC0415

        where = pg.shown(url)
    if sandbox:
        raise UsageError(f"no rehearsal store in {where}: this campaign has not been rehearsed yet")
    base_url = env.get("SUME_API_BASE_URL") or DEFAULT_BASE_URL
    rehearsed = offline_store(manifest, state_dir, env, sandbox=True) is not None
    hint = "it was rehearsed: add --sandbox" if rehearsed else "--sandbox reads the rehearsal store"
    raise UsageError(
        f"no run store in {where} for {base_url}: this campaign has not been run there yet ({hint})"
    )


def read_campaign(
    path: Place | None, cap: float | None, assumed: float | None
) -> tuple[dict[str, str], Budget, dict[str, str]]:
    """What a campaign's store at its target says, read once and read-only: job key → state (empty
    when there is no store yet), the budget (what was spent, the prices the API stated), and job
    key → job id (for `plan.diff_plan`'s changed jobs)."""
    from sume_batch.budget import Budget  # noqa: PLC0415 - `validate` needs neither (nor sqlite3)
    from sume_batch.records import reading  # noqa: PLC0415

    if path is None or not path.exists():
        return {}, Budget(cap=cap, assumed=assumed), {}
    with reading(path) as store:  # three columns of every job, and one job of each kind that has a price
        budget = Budget.from_store(store.priciest(), store.committed(), cap=cap, assumed=assumed)
        budget.downstream = store.committed_downstream()
        return store.states(), budget, store.ids()
