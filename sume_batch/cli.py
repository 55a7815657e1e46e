"""The `sume-batch` command: parse, call one command (`commands/`), map the outcome to an exit code.

Each command's module is imported only when that command runs, so `--help` and `validate` load no
HTTP, asyncio, terminal-UI or report code.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sume_batch import __version__
from sume_batch.exits import run_cli
from sume_batch.report import FORMATS
from sume_batch.target import STATE_ENV

if TYPE_CHECKING:
    from sume_batch.plan import Selection


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sume-batch")
@click.option("--debug", is_flag=True, help="Show a traceback when something goes wrong.")
def cli(debug: bool) -> None:
    """Run generative-media campaigns against the Sume Public API.

    Describe a campaign in a YAML manifest, check and price it with `validate`
    and `plan` (no network, no credits), then `run` it.
    """


def main(argv: list[str] | None = None) -> None:
    """The console-script entry point: the one place errors become exit codes."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    code = run_cli(cli.main, argv, debug=debug)
    # The work is done and its exit code decided: a late Ctrl-C (a second one while the process
    # winds down) must neither print a traceback nor kill it by signal instead of exiting `code`.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code)


def selection_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The flags that choose which jobs `plan` prices and `run` touches."""
    options = [
        click.option(
            "--only",
            multiple=True,
            metavar="GLOB|AXIS=VALUE|picked|rejected",
            help="Only these jobs (repeatable): an id glob, a matrix value, or a review state.",
        ),
        click.option(
            "--retry-failed", is_flag=True, help="Create failed, canceled, expired and refused jobs again."
        ),
        click.option(
            "--resubmit-uncertain", is_flag=True, help="Create uncertain jobs again (they may exist)."
        ),
        click.option("--regenerate", is_flag=True, help="Create every selected job again, done or not."),
        click.option(
            "--retry-rejected",
            is_flag=True,
            help="Create the jobs rejected in review again (reviews/CAMPAIGN.yaml).",
        ),
        click.option(
            "--stop-after",
            metavar="STAGE",
            help="Run and price a chain up to this stage, not the ones after it.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def make_selection(only: tuple[str, ...], **flags: Any) -> Selection:
    """The selection flags (`selection_options`) as one value."""
    from sume_batch.plan import Selection  # noqa: PLC0415 - the planning stack, for plan and run only

    return Selection(only=only, **flags)


# The sandbox's profiles, named here so `validate` and `plan` need not import the server stack.
PROFILES = click.Choice(["instant", "realistic", "chaos"])


def _manifest_path() -> click.Path:
    return click.Path(path_type=Path, dir_okay=False)


def state_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--state URL`: the shared run store (PostgreSQL), as SUME_BATCH_STATE names it (see `target`)."""

    def chosen(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        if value is not None:
            os.environ[STATE_ENV] = value  # this process is this one command: the store it names

    return click.option(
        "--state", metavar="URL", expose_value=False, callback=chosen,
        help="Keep the run store in this PostgreSQL database (postgresql://user@host/db; or "
        "SUME_BATCH_STATE, or the manifest's state:) instead of SQLite beside the manifest.",
    )(command)  # fmt: skip


def allow_root_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--allow-root DIR`: the runner (never the manifest) widens where local files and outputs may be."""
    return click.option(
        "--allow-root", "allow_roots", multiple=True, envvar="SUME_BATCH_ALLOW_ROOT",
        type=click.Path(path_type=Path, file_okay=False, exists=True),
        help="Also allow local files and output folders inside DIR (repeatable; or SUME_BATCH_ALLOW_ROOT, "
        "several separated by ':'). By default they must be inside the manifest's folder.",
    )(command)  # fmt: skip


@cli.command()
@click.argument("files", nargs=-1, required=True, type=_manifest_path())
@click.option("--max-jobs", type=click.IntRange(min=1), help="Allow more variants than budget.max_jobs.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (every file and problem).")
@allow_root_option
def validate(
    files: tuple[Path, ...], max_jobs: int | None, allow_roots: tuple[Path, ...], as_json: bool
) -> int:
    """Check manifests: schema, templates, and every variant rendered.

    No network, no credits. Lists every problem as file:line:col: path: message
    and exits 2 if there is any.
    """
    from sume_batch.commands.validate import validate  # noqa: PLC0415 - see the module's docstring

    return validate(files, max_jobs=max_jobs, echo=click.echo, roots=allow_roots, as_json=as_json)


@cli.command()
@click.argument("file", type=_manifest_path())
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON (see the README).")
@click.option(
    "-o", "--output", type=click.Path(path_type=Path, dir_okay=False), help="Also write the JSON plan here."
)
@click.option(
    "--pricing", type=click.Path(path_type=Path, dir_okay=False), help="A YAML file of prices to use."
)
@click.option("--max-jobs", type=click.IntRange(min=1), help="Allow more variants than budget.max_jobs.")
@click.option(
    "--state-dir", type=click.Path(path_type=Path, file_okay=False), help="Where the run store lives."
)
@click.option(
    "--sandbox", "use_sandbox", is_flag=True, help="Compare with the rehearsal store (run --sandbox)."
)
@click.option(
    "--detailed-exitcode", "detailed", is_flag=True,
    help="Exit 0 when nothing is to buy, 10 when something is (within budget), 3 when over budget.",
)  # fmt: skip
@click.option(
    "--refresh", is_flag=True,
    help="Read the manifest's workspace axes now (SUME_API_KEY; with --sandbox, the sandbox's).",
)  # fmt: skip
@click.option(
    "--assume-price", type=click.FloatRange(min=0, min_open=True), metavar="CREDITS",
    help="Price each job of unknown price at CREDITS (as run --assume-price reserves).",
)  # fmt: skip
@selection_options
@state_option
@allow_root_option
def plan(
    *,
    file: Path,
    use_sandbox: bool,
    assume_price: float | None,
    as_json: bool,
    output: Path | None,
    pricing: Path | None,
    max_jobs: int | None,
    state_dir: Path | None,
    only: tuple[str, ...],
    retry_failed: bool,
    resubmit_uncertain: bool,
    regenerate: bool,
    stop_after: str | None,
    retry_rejected: bool,
    allow_roots: tuple[Path, ...],
    refresh: bool,
    detailed: bool,
) -> int:
    """Price a campaign before spending anything: jobs by type, credits, budget.

    The dry run: no credits are spent. Prices are estimates unless you give
    your own with pricing: in the manifest or --pricing. After a run, it also
    says what is new, unchanged (already paid) and removed since then.
    """
    from sume_batch.commands.plan import plan  # noqa: PLC0415

    return plan(
        file,
        max_jobs=max_jobs,
        pricing=pricing,
        state_dir=state_dir,
        selection=make_selection(
            only,
            retry_failed=retry_failed,
            resubmit_uncertain=resubmit_uncertain,
            regenerate=regenerate,
            stop_after=stop_after,
            retry_rejected=retry_rejected,
        ),
        as_json=as_json,
        output=output,
        env=os.environ,
        echo=click.echo,
        sandbox=use_sandbox,
        assume_price=assume_price,
        roots=allow_roots,
        refresh=refresh,
        detailed=detailed,
    )


@cli.command()
@click.argument("folder", type=click.Path(path_type=Path, file_okay=False), default=".")
@click.option("--name", help="The campaign's name (default: the folder's name).")
def init(folder: Path, name: str | None) -> int:
    """Scaffold a campaign: a commented manifest, a sample data file, the schema, .gitignore entries.

    Files that exist are kept; the schema copy is brought up to date (run it again after an upgrade).
    """
    from sume_batch.commands.init import init  # noqa: PLC0415

    return init(folder, name=name, echo=click.echo)


@cli.command()
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback by default)."
)
@click.option(
    "--port", default=8787, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free)."
)
@click.option(
    "--profile",
    type=PROFILES,
    default="instant",
    show_default=True,
    help="instant: no waiting; realistic: image seconds, video minutes; chaos: every fault.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for every random choice.")
@click.option(
    "--speed", type=click.FloatRange(min=0, min_open=True), help="Speed factor: 10 runs ten times faster."
)
@click.option(
    "--idempotency", type=click.Choice(["honour", "ignore"]), help="Honour Idempotency-Key on creates."
)
def sandbox(
    *, host: str, port: int, profile: str, seed: int, speed: float | None, idempotency: str | None
) -> int:
    """Serve a simulator of the Sume API for free rehearsals.

    It is stateful (jobs, credits, uploads, Asset Library), serves the API under
    /api/v1 and can misbehave on demand (the chaos profile). Use the test key it
    prints: SUME_API_BASE_URL=http://127.0.0.1:8787/api/v1 SUME_API_KEY=sume_test_sandbox_key
    """
    from sume_batch.commands.sandbox import sandbox  # noqa: PLC0415

    return sandbox(
        host=host,
        port=port,
        profile=profile,
        seed=seed,
        speed=speed,
        idempotency=idempotency,
        echo=click.echo,
    )


@cli.command()
@click.argument("file", type=_manifest_path())
@click.option("-y", "--yes", is_flag=True, help="Do not ask: go ahead if the plan passes every check.")
@click.option("--dry-run", is_flag=True, help="Preflight and show the plan, then stop; nothing is sent.")
@click.option(
    "--sandbox", "use_sandbox", is_flag=True, help="Run against a simulator on loopback: free, no key needed."
)
@click.option(
    "--sandbox-profile",
    type=PROFILES,
    default="instant",
    show_default=True,
    help="How the --sandbox simulator behaves.",
)
@click.option("--sandbox-seed", type=int, metavar="N", help="Seed of the --sandbox simulator's choices.")
@click.option(
    "--sandbox-capacity", type=click.IntRange(1, 10_000), metavar="N",
    help="Generations the --sandbox account runs at once (default 4).",
)  # fmt: skip
@click.option(
    "--sandbox-credits", type=click.IntRange(min=0), metavar="N",
    help="The --sandbox account's balance (default 10,000).",
)  # fmt: skip
@click.option(
    "--sandbox-speed", type=click.FloatRange(min=0, min_open=True), metavar="F",
    help="Speed of the --sandbox simulator's jobs: 10 is ten times faster than the profile.",
)  # fmt: skip
@click.option(
    "--concurrency", type=click.IntRange(min=1, max=256), help="Jobs in flight (default: the manifest's)."
)
@click.option("--allow-unknown-prices", is_flag=True, hidden=True)
@click.option(
    "--assume-price", type=click.FloatRange(min=0, min_open=True), metavar="CREDITS",
    help="Run jobs whose price is unknown, reserving CREDITS for each against the budget.",
)  # fmt: skip
@click.option(
    "--lost-create-grace", type=click.FloatRange(0, 3600), default=30, show_default=True, metavar="SECONDS",
    help="How long after a lost create's answer the API may still make its job (see reconciliation).",
)  # fmt: skip
@click.option(
    "--state-dir", type=click.Path(path_type=Path, file_okay=False), help="Where the run store lives."
)
@click.option(
    "--pricing", type=click.Path(path_type=Path, dir_okay=False), help="A YAML file of prices to use."
)
@click.option("--max-jobs", type=click.IntRange(min=1), help="Allow more variants than budget.max_jobs.")
@click.option("-q", "--quiet", is_flag=True, help="Show only the plan and the final summary.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the outcome as one JSON object (the rest on stderr)."
)
@click.option(
    "--detach", is_flag=True,
    help="Submit (within the budget), record the job ids and exit; a later run polls and downloads.",
)  # fmt: skip
@click.option(
    "--shard", metavar="I/N",
    help="Run only shard I of N of the jobs (I from 0, as a Kubernetes Indexed Job numbers its pods).",
)  # fmt: skip
@click.option(
    "--lease", type=click.FloatRange(1, 3600), metavar="SECONDS", envvar="SUME_BATCH_LEASE_S",
    help="On a shared store: how long a runner that dies holds its jobs (default 30).",
)  # fmt: skip
@click.option(
    "--idempotency-honoured",
    is_flag=True,
    help="The API honours Idempotency-Key (v1 documents none): re-send uncertain creates with their key.",
)
@selection_options
@state_option
@allow_root_option
def run(
    *,
    file: Path,
    yes: bool,
    dry_run: bool,
    use_sandbox: bool,
    sandbox_profile: str,
    sandbox_seed: int | None,
    sandbox_capacity: int | None,
    sandbox_credits: int | None,
    sandbox_speed: float | None,
    concurrency: int | None,
    allow_unknown_prices: bool,
    assume_price: float | None,
    lost_create_grace: float,
    state_dir: Path | None,
    pricing: Path | None,
    max_jobs: int | None,
    quiet: bool,
    detach: bool,
    as_json: bool,
    idempotency_honoured: bool,
    shard: str | None,
    lease: float | None,
    only: tuple[str, ...],
    retry_failed: bool,
    resubmit_uncertain: bool,
    regenerate: bool,
    stop_after: str | None,
    retry_rejected: bool,
    allow_roots: tuple[Path, ...],
) -> int:
    """Run a campaign: plan, check the balance, ask, submit, poll, download.

    Uses SUME_API_KEY and SUME_API_BASE_URL (default https://www.sume.so/api/v1),
    or --sandbox for a free rehearsal. Refuses (exit 3) when the estimate is over
    the budget or the balance, or a price is unknown; exit 4 when not confirmed
    (no --yes off a terminal). Exit 0 when every job is downloaded, 1 when any
    failed or was left uncertain.
    """
    if allow_unknown_prices and assume_price is None:
        raise click.UsageError(
            "--allow-unknown-prices needs --assume-price CREDITS: the credits each job of unknown price"
            " reserves against the budget (reserving 0 let such jobs cross it)"
        )
    knobs: dict[str, float | None] = {"seed": sandbox_seed, "capacity": sandbox_capacity}
    knobs |= {"credits": sandbox_credits, "speed": sandbox_speed}
    if not use_sandbox and (chosen := [name for name, value in knobs.items() if value is not None]):
        raise click.UsageError(f"--sandbox-{chosen[0]} sets the embedded sandbox: add --sandbox")
    from sume_batch.commands.endpoint import Rehearsal  # noqa: PLC0415
    from sume_batch.commands.run import Options, run  # noqa: PLC0415
    from sume_batch.plan import parse_shard  # noqa: PLC0415
    from sume_batch.shared import LEASE_S  # noqa: PLC0415

    options = Options(
        yes=yes, dry_run=dry_run, concurrency=concurrency, state_dir=state_dir, interactive=os.isatty(0),
        live=os.isatty(2), quiet=quiet, idempotency_honoured=idempotency_honoured,
        selection=make_selection(
            only, retry_failed=retry_failed, resubmit_uncertain=resubmit_uncertain, regenerate=regenerate,
            stop_after=stop_after, retry_rejected=retry_rejected,
        ),
        assume_price=assume_price, lost_create_grace=lost_create_grace, detach=detach,
        lease=lease if lease is not None else LEASE_S,
    )  # fmt: skip
    if shard is not None:
        options = dataclasses.replace(
            options, selection=dataclasses.replace(options.selection, shard=parse_shard(shard))
        )
    sandbox = Rehearsal(sandbox_profile, **knobs) if use_sandbox else None  # type: ignore[arg-type]
    echo = (lambda text: click.echo(text, err=True)) if as_json else click.echo  # stdout holds the JSON
    return run(
        file, max_jobs=max_jobs, pricing=pricing, sandbox=sandbox, options=options, roots=allow_roots,
        env=os.environ, echo=echo, confirm=lambda question: click.confirm(question, default=False),
        emit=click.echo if as_json else None,
    )  # fmt: skip


@cli.command()
@click.argument("file", type=_manifest_path())
@click.argument("other", required=False, type=_manifest_path())
@click.option(
    "--base", metavar="REV", help="Compare with the manifest at this git revision (e.g. origin/main)."
)
@click.option(
    "--format", "output", type=click.Choice(["text", "json", "markdown"]), default="text", show_default=True
)
@click.option("--warn-over", metavar="CREDITS|PCT%", help="Warn when the change buys more than this.")
@click.option("--fail-over", metavar="CREDITS|PCT%", help="Exit 5 when the change buys more than this.")
@click.option(
    "--quiet-under", type=float, metavar="CREDITS", help="Print nothing when it buys less than this."
)
@allow_root_option
def diff(
    *, file: Path, other: Path | None, base: str | None, output: str, warn_over: str | None,
    fail_over: str | None, quiet_under: float | None, allow_roots: tuple[Path, ...],
) -> int:  # fmt: skip
    """What a manifest change would buy, with no store: jobs new, changed (and which fields), removed.

    FILE at --base REV against FILE now, or FILE against OTHER. Exit 5 past --fail-over.
    """
    from sume_batch.commands.diff import diff  # noqa: PLC0415

    return diff(file, other, base=base, output=output, warn_over=warn_over, fail_over=fail_over,
                quiet_under=quiet_under, echo=click.echo, roots=allow_roots)  # fmt: skip


@cli.command()
@click.argument("file", type=_manifest_path())
@click.option("--pick", "picks", multiple=True, metavar="GLOB", help="Pick these jobs' outputs (repeatable).")
@click.option("--reject", "rejects", multiple=True, metavar="GLOB", help="Reject these jobs' outputs.")
@click.option("--rate", "ratings", multiple=True, metavar="GLOB=N", help="Rate these jobs' outputs 1-5.")
@click.option("--comment", "comments", multiple=True, metavar="GLOB=TEXT", help="Comment on these jobs.")
@click.option("--page", is_flag=True, help="Write the review page (review.html) beside the reports.")
@click.option(
    "--serve", type=click.IntRange(0, 65535), metavar="PORT", help="Serve the review page on 127.0.0.1."
)
@click.option(
    "--state-dir", type=click.Path(path_type=Path, file_okay=False), help="Where the run store lives."
)
@click.option("--sandbox", "use_sandbox", is_flag=True, help="The rehearsal store, not the API's.")
@state_option
@allow_root_option
def review(
    *, file: Path, picks: tuple[str, ...], rejects: tuple[str, ...], ratings: tuple[str, ...],
    comments: tuple[str, ...], state_dir: Path | None, use_sandbox: bool, allow_roots: tuple[Path, ...],
    page: bool, serve: int | None,
) -> int:  # fmt: skip
    """Record review decisions in reviews/CAMPAIGN.yaml (for git), or list them.

    Decisions belong to a job and an output's sha256, so they survive reruns; an output made again
    makes its old decision stale. `run --only picked` and `run --retry-rejected` act on them.
    """
    from sume_batch.commands.review import review  # noqa: PLC0415

    return review(
        file, picks=picks, rejects=rejects, ratings=ratings, comments=comments, state_dir=state_dir,
        env=os.environ, sandbox=use_sandbox, echo=click.echo, roots=allow_roots, page=page, serve=serve,
    )  # fmt: skip


@cli.command()
@click.argument("target", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.option(
    "--state-dir", type=click.Path(path_type=Path, file_okay=False), help="Where the run store lives."
)
@click.option("--sandbox", "use_sandbox", is_flag=True, help="The rehearsal store, not the API's.")
@state_option
@allow_root_option
def status(
    target: Path, as_json: bool, state_dir: Path | None, use_sandbox: bool, allow_roots: tuple[Path, ...]
) -> int:
    """Where a campaign's runs stand: jobs per state, credits, what needs attention.

    TARGET is the campaign's manifest or its run store (.sqlite). Reads the store
    only: no request is sent, and it is safe while a run is going.
    """
    from sume_batch.commands.status import status  # noqa: PLC0415

    return status(
        target, state_dir=state_dir, as_json=as_json, echo=click.echo, env=os.environ, sandbox=use_sandbox,
        roots=allow_roots,
    )  # fmt: skip


@cli.command()
@click.argument("file", type=_manifest_path())
@click.option("--force", is_flag=True, help="End the leases of a shared store's runners now.")
@click.option(
    "--state-dir", type=click.Path(path_type=Path, file_okay=False), help="Where the run store lives."
)
@click.option("--sandbox", "use_sandbox", is_flag=True, help="The rehearsal store, not the API's.")
@state_option
@allow_root_option
def unlock(
    file: Path, force: bool, state_dir: Path | None, use_sandbox: bool, allow_roots: tuple[Path, ...]
) -> int:
    """Who holds a campaign's run store (host, pid, age, CI run); --force ends a shared store's leases.

    Exit 0 when nothing holds it (any more), 75 when a live holder is left.
    """
    from sume_batch.commands.unlock import unlock  # noqa: PLC0415

    return unlock(
        file, force=force, state_dir=state_dir, env=os.environ, sandbox=use_sandbox, echo=click.echo,
        roots=allow_roots,
    )  # fmt: skip


def _formats(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    """`--format html,json` and `--format html --format json` alike; every format when none is given."""
    chosen = tuple(part.strip() for value in values for part in value.split(",") if part.strip())
    unknown = sorted(set(chosen) - set(FORMATS))
    if unknown:
        raise click.BadParameter(f"unknown format {', '.join(unknown)} (choose from {', '.join(FORMATS)})")
    return chosen or FORMATS


@cli.command()
@click.argument("target", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--format", "formats", multiple=True, callback=_formats, metavar="html,json,junit",
    help="Which reports to write (default: all three).",
)  # fmt: skip
@click.option(
    "-o", "--output", type=click.Path(path_type=Path, file_okay=False),
    help="Write them here instead of the run's report folder.",
)  # fmt: skip
@click.option(
    "--state-dir", type=click.Path(path_type=Path, file_okay=False), help="Where the run store lives."
)
@click.option("--sandbox", "use_sandbox", is_flag=True, help="The rehearsal store, not the API's.")
@click.option(
    "--json", "as_json", is_flag=True, help="Also print the report document (report.json) to stdout."
)
@state_option
@allow_root_option
def report(
    target: Path, *, formats: tuple[str, ...], output: Path | None, state_dir: Path | None,
    use_sandbox: bool, allow_roots: tuple[Path, ...], as_json: bool,
) -> int:  # fmt: skip
    """Write the latest run's reports again, from its store: report.html, report.json, junit.xml.

    TARGET is the campaign's manifest or its run store (.sqlite). No request is sent;
    it is safe while a run is going (that report is marked partial).
    """
    from sume_batch.commands.report import report  # noqa: PLC0415

    return report(
        target, state_dir=state_dir, formats=formats, output=output, env=os.environ, echo=click.echo,
        sandbox=use_sandbox, roots=allow_roots, as_json=as_json,
    )  # fmt: skip
