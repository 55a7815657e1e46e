"""One plain function per command: compose the pipeline stages and return an exit code.

The CLI parses arguments and calls exactly one of these; they take explicit keyword
arguments and an `echo` for output, so tests call them directly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from pathlib import Path

from sume_batch.api import DEFAULT_BASE_URL
from sume_batch.budget import campaign_line
from sume_batch.errors import ManifestError, UsageError
from sume_batch.expand import JobSpec, expand_jobs
from sume_batch.manifest import Manifest, file_digest, load_manifest, load_pricing
from sume_batch.plan import Plan, Selection, diff_plan, make_plan, plan_json, plan_text, restrict
from sume_batch.redact import Redactor
from sume_batch.report import Source, build_report, point_latest, run_folder_name, write_reports
from sume_batch.run import Options, read_campaign, run_campaign
from sume_batch.status import read_status, status_text
from sume_batch.store import RunRecord, reading
from sume_batch.target import find_store, store_folder

Echo = Callable[[str], None]


def prepare(
    path: Path, *, max_jobs: int | None = None, roots: Sequence[Path] = ()
) -> tuple[Manifest, list[JobSpec]]:
    """Load, validate and expand one manifest (no network); `roots` are folders besides its own
    that its local files and outputs may use (`--allow-root`)."""
    manifest = load_manifest(path, roots=roots)
    return manifest, expand_jobs(manifest, digest=cache(file_digest), max_jobs=max_jobs)


def validate(paths: Sequence[Path], *, max_jobs: int | None, echo: Echo, roots: Sequence[Path] = ()) -> int:
    """Check every file completely; report all problems of all files, then one summary line."""
    problems = []
    for path in paths:
        try:
            manifest, specs = prepare(path, max_jobs=max_jobs, roots=roots)
        except ManifestError as error:
            problems += error.problems
            continue
        echo(f"{path}: valid: campaign {manifest.name}, {len(specs):,} job{'s' if len(specs) != 1 else ''}")
    if problems:
        raise ManifestError(problems)
    return 0


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
) -> int:
    """Price a manifest and show (or write) the plan, with what changed since the last run at the
    API the environment points at (or the rehearsal store, `sandbox`); exit 0.

    Both pass the redaction gate that `run`'s output passes: requests as data, as the store keeps them
    (workspace/user/key ids and secret fields too), the rest as names (keys, emails, signed URLs: a
    matrix value may hold one); its markers hold no quote or backslash, so the JSON stays valid."""
    redactor = Redactor.from_env(env)
    gate = redactor.name
    prices = load_pricing(pricing) if pricing else None
    manifest, specs = prepare(path, max_jobs=max_jobs, roots=roots)
    result: Plan = restrict(make_plan(manifest, specs, prices, assume=assume_price), selection)
    store = offline_store(manifest, state_dir, env, sandbox=sandbox)
    stored, budget = read_campaign(store, manifest.max_credits, assume_price)
    diff = diff_plan(result, stored, selection.again(), cost=budget.cost) if stored else None
    document = {
        **plan_json(result), "since_last_run": diff.__dict__ if diff else None,
        "campaign_credits": {"spent_or_held": budget.committed, "price_ratios": budget.differences()},
    }  # fmt: skip
    document["jobs"] = [{**job, "request": redactor.value(job["request"])} for job in document["jobs"]]
    if output is not None:
        output.write_text(gate(json.dumps(document, indent=2, ensure_ascii=False)) + "\n", "utf-8")
    if as_json:
        echo(gate(json.dumps(document, indent=2, ensure_ascii=False)))
        return 0
    lines = [plan_text(result)]
    if note := budget.price_note():
        lines.append(note)
    if diff:
        lines.append(campaign_line(budget, diff.new_credits))
        lines.append(diff.text())
    echo(gate("\n".join(lines)))
    return 0


def chosen_store(
    manifest: Manifest, state_dir: Path | None, env: Mapping[str, str] | None, sandbox: bool
) -> Path:
    """The store a manifest names for `status` and `report`; the path to say when there is none."""
    found = offline_store(manifest, state_dir, env or {}, sandbox=sandbox)
    if found is not None:
        return found
    folder = store_folder(manifest.folder, state_dir)
    if sandbox:
        raise UsageError(f"no rehearsal store in {folder}: this campaign has not been rehearsed yet")
    base_url = (env or {}).get("SUME_API_BASE_URL") or DEFAULT_BASE_URL
    rehearsed = offline_store(manifest, state_dir, env or {}, sandbox=True) is not None
    hint = "it was rehearsed: add --sandbox" if rehearsed else "--sandbox reads the rehearsal store"
    raise UsageError(
        f"no run store in {folder} for {base_url}: this campaign has not been run there yet ({hint})"
    )


def offline_store(
    manifest: Manifest, state_dir: Path | None, env: Mapping[str, str], *, sandbox: bool
) -> Path | None:
    """The store `plan`, `status` and `report` read without asking the API (see `target`)."""
    base_url = env.get("SUME_API_BASE_URL") or DEFAULT_BASE_URL
    folder = store_folder(manifest.folder, state_dir)
    return find_store(folder, manifest.name, base_url=base_url, rehearsal=sandbox)


def sandbox(
    *, host: str, port: int, profile: str, seed: int, speed: float | None, idempotency: str | None, echo: Echo
) -> int:
    """Serve the simulator in the foreground until Ctrl-C."""
    from sume_batch.sandbox import SandboxConfig, serve  # noqa: PLC0415 - load the server stack only when asked

    overrides: dict[str, object] = {}
    if speed is not None:
        overrides["speed_factor"] = speed
    if idempotency is not None:
        overrides["idempotency"] = idempotency
    config = SandboxConfig.from_profile(profile, seed=seed, **overrides)
    if host not in ("127.0.0.1", "localhost", "::1"):
        echo(f"warning: serving on {host}, not loopback: other machines may reach this sandbox")
    try:
        serve(config, host, port, echo=echo)
    except OSError as error:
        raise UsageError(f"could not serve on {host}:{port}: {error.strerror or error}") from error
    return 0


def run(
    path: Path,
    *,
    max_jobs: int | None,
    pricing: Path | None,
    sandbox: str | None,
    options: Options,
    env: Mapping[str, str],
    echo: Echo,
    confirm: Callable[[str], bool],
    roots: Sequence[Path] = (),
) -> int:
    """Plan, preflight, confirm, execute and summarise a campaign."""
    prices = load_pricing(pricing) if pricing else None
    manifest, specs = prepare(path, max_jobs=max_jobs, roots=roots)
    return run_campaign(
        manifest,
        restrict(make_plan(manifest, specs, prices, assume=options.assume_price), options.selection),
        options=options,
        sandbox=sandbox,
        env=env,
        echo=echo,
        confirm=confirm,
    )


def status(
    target: Path,
    *,
    state_dir: Path | None,
    as_json: bool,
    echo: Echo,
    env: Mapping[str, str] | None = None,
    sandbox: bool = False,
    roots: Sequence[Path] = (),
) -> int:
    """Show where a campaign's runs stand; `target` is its manifest or its store (.sqlite)."""
    path = (
        target
        if target.suffix == ".sqlite"
        else chosen_store(load_manifest(target, roots=roots), state_dir, env, sandbox)
    )
    result = read_status(path)
    echo(json.dumps(result, indent=2, ensure_ascii=False) if as_json else status_text(result))
    return 0


def report(
    target: Path,
    *,
    state_dir: Path | None,
    formats: Sequence[str],
    output: Path | None,
    env: Mapping[str, str],
    echo: Echo,
    sandbox: bool = False,
    roots: Sequence[Path] = (),
) -> int:
    """(Re)write the latest run's reports from its store; `target` is the manifest or the store (.sqlite).

    Read-only on the store, so it is safe while a run is going (that report is marked partial).
    Reports go to the run's own folder (and `latest` points there) unless `output` is given.
    """
    manifest = None if target.suffix == ".sqlite" else load_manifest(target, roots=roots)
    path = target if manifest is None else chosen_store(manifest, state_dir, env, sandbox)
    if not path.exists():
        raise UsageError(f"no run store at {path}: this campaign has not been run yet")
    with reading(path) as store:
        runs = store.runs()
        source = report_source(runs[-1] if runs else None, manifest, output)
        document = build_report(store, source, redactor=Redactor.from_env(env), now=time.time())
    try:
        written = write_reports(document, source.folder, formats)
    except OSError as error:
        raise UsageError(f"cannot write reports to {source.folder}: {error.strerror or error}") from None
    for file in written.values():
        echo(f"wrote {file}")
    if output is None:
        try:
            point_latest(source.folder)
        except OSError as error:
            reason = error.strerror or error
            raise UsageError(f"could not point latest at {source.folder}: {reason}") from None
    return 0


def report_source(run: RunRecord | None, manifest: Manifest | None, output: Path | None) -> Source:
    """Whose report and where it goes: the manifest's folders when it is given (they may have moved
    since), else those the run recorded."""
    if manifest is not None:
        campaign, downloads, reports = manifest.name, manifest.downloads, manifest.reports
    elif run is not None:
        campaign, downloads = str(run.info["campaign"]), Path(str(run.info["downloads"]))
        reports = Path(str(run.info["reports"]))
    else:
        raise UsageError("this store records no run yet: give the campaign's manifest instead")
    if output is not None:
        folder = output
    elif run is not None:
        folder = reports / campaign / run_folder_name(run)
    else:
        raise UsageError("this store records no run yet: pass --output DIR to write a report anyway")
    return Source(campaign=campaign, downloads=downloads, folder=folder, run=run)
