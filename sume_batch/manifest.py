"""The manifest stage: a campaign file on disk → a validated, frozen `Manifest`.

Order matters: the size cap, then YAML (safe, marked, duplicate keys refused), then the version
gate (so a newer manifest gets one upgrade message, not a page of schema noise), then the JSON
Schema (`schema`), with every problem reported at its file:line:col. Paths the manifest names
(uploaded files, output folders) are confined to its folder, or to a root the person running it
allows (`confine`).
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from sume_batch import MANIFEST_VERSION, __version__
from sume_batch.confine import allowed_roots, confine_folder
from sume_batch.data import DataFile, DataRow, load_axis, pick_rows
from sume_batch.errors import ManifestError, Problem, UnresolvedWorkspace
from sume_batch.kinds import KINDS, Kind
from sume_batch.schema import campaign_schema, describe_error, schema_problems
from sume_batch.stages import graph_problems
from sume_batch.workspace import Snapshot, WorkspaceAxis
from sume_batch.yamlsafe import MAX_FILE_BYTES, Document, decode_text, format_path, parse_yaml

# isort: split
# re-exported until execute/commands/run import from sume_batch.confine
from sume_batch.confine import ConfinementError as ConfinementError  # noqa: PLC0414
from sume_batch.confine import confine_file as confine_file  # noqa: PLC0414
from sume_batch.confine import file_digest as file_digest  # noqa: PLC0414
from sume_batch.confine import read_regular as read_regular  # noqa: PLC0414

UNREAD = "the workspace has not been read for this axis"
UNREAD_HINT = (
    " (or was read with other settings): `sume-batch plan --refresh` reads it (needs SUME_API_KEY; --sandbox"
    " for a rehearsal), and `run` always does"
)
DEFAULT_MAX_JOBS = 10_000
DEFAULT_CONCURRENCY = 8

Marks = Mapping[str, tuple[int, int]]


@dataclass(frozen=True)
class Matrix:
    """Named axes whose product makes the variants, with extra and removed rows."""

    axes: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    include: tuple[Mapping[str, Any], ...] = ()
    exclude: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class Limits:
    """Bounds on every template render (README, "Confinement and bounds"); `templates:` may change them."""

    seconds: float = 1.0  # one field of one variant
    steps: int = 100_000  # loop iterations, calls, filters and operators in one render
    size: int = 100_000  # characters (or items) of any value a render builds, and of all it writes
    total_seconds: float = 10.0  # every render of the campaign together


@dataclass(frozen=True)
class JobTemplate:
    """One entry of `jobs:` with its type's defaults merged in; `marks` locate each field."""

    index: int
    kind: Kind
    id: str
    fields: Mapping[str, Any]
    vars: Mapping[str, Any]
    matrix: Matrix
    marks: Marks  # field name (and "id", "matrix") → (line, column) of its value
    stage: str | None = None  # the name other jobs `needs:` it by (see `stages`)
    needs: str | None = None  # the stage whose outputs it reads as `upstream`
    fan: str = "aligned"  # one job per upstream output, or `join`: one over all of them
    picked: bool = False  # only the upstream jobs picked in review (see `reviews`)

    @property
    def path(self) -> str:
        return f"jobs[{self.index}]"


@dataclass(frozen=True)
class Manifest:
    """A validated campaign: everything downstream reads this, never the raw YAML."""

    path: Path
    name: str
    description: str
    vars: Mapping[str, Any]
    matrix: Matrix
    jobs: tuple[JobTemplate, ...]
    max_credits: float | None
    max_jobs: int
    concurrency: int
    timeouts: Mapping[str, float]
    poll_intervals: Mapping[str, float]
    downloads: Path
    reports: Path
    pricing: Mapping[str, Any]
    limits: Limits = Limits()
    roots: tuple[Path, ...] = ()  # where local files may be: the folder (resolved) and any allowed root
    data: tuple[DataFile, ...] = ()  # the data files its axes read (see `data`)
    workspace: tuple[WorkspaceAxis, ...] = ()  # the axes the workspace fills (see `workspace`)
    snapshot: Snapshot | None = None  # what they were filled from
    unread: tuple[WorkspaceAxis, ...] = ()  # those left empty: no snapshot has them (validate only)
    report_media: str | None = None  # `copy` or `link` the outputs into each report folder
    state: str | None = None  # a PostgreSQL URL: the shared run store (see `target.shared_state`)
    monthly_credits: float | None = None  # budget.monthly_credits: the workspace's, this month (`shared`)

    @property
    def folder(self) -> Path:
        return self.path.parent


def load_manifest(
    path: Path, *, roots: Sequence[Path] = (), snapshot: Snapshot | None = None, unread_ok: bool = False
) -> Manifest:
    """Read and validate one campaign file; raise ManifestError with every problem found
    (UnresolvedWorkspace when the only one is workspace axes that `snapshot` does not fill).

    `roots` are folders besides the manifest's own that its local files and outputs may use."""
    shown = str(path)
    try:
        data = read_regular(path, limit=MAX_FILE_BYTES)
    except FileNotFoundError:
        raise ManifestError([Problem(shown, 0, 0, "", "no such file")]) from None
    except IsADirectoryError:
        raise ManifestError([Problem(shown, 0, 0, "", "is a folder, not a manifest file")]) from None
    except OSError as error:
        raise ManifestError(
            [Problem(shown, 0, 0, "", f"cannot be read: {error.strerror or error}")]
        ) from None
    if len(data) > MAX_FILE_BYTES:
        limit = f"{MAX_FILE_BYTES:,}"
        raise ManifestError(
            [Problem(shown, 0, 0, "", f"file is {os.path.getsize(path):,} bytes; the limit is {limit}")]
        )
    return parse_manifest(
        decode_text(data, shown), path=path, roots=roots, snapshot=snapshot, unread_ok=unread_ok
    )


def parse_manifest(
    text: str,
    *,
    path: Path,
    roots: Sequence[Path] = (),
    snapshot: Snapshot | None = None,
    unread_ok: bool = False,
) -> Manifest:
    """Validate manifest text; `path` names it in messages and anchors relative paths."""
    file = str(path)
    document, problems = parse_yaml(text, file=file)
    if problems:
        raise ManifestError(problems)
    data = document.data
    if not isinstance(data, dict):
        message = "the top level must be a mapping with version, name and jobs"
        raise ManifestError([Problem(file, 1, 1, "", message)])
    check_version(data, document, file)
    problems = list(schema_problems(data, document, file))
    if problems:
        raise ManifestError(problems)
    return build_manifest(data, document, path, roots, snapshot, unread_ok=unread_ok)


def check_version(data: Mapping[str, Any], document: Document, file: str) -> None:
    """The version gate: a manifest newer than this tool gets one clear upgrade message."""
    version = data.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > MANIFEST_VERSION:
        line, column = document.mark(("version",))
        message = (
            f"this manifest uses format version {version}, but sume-batch {__version__} reads "
            f"version {MANIFEST_VERSION} at most; upgrade with: pip install --upgrade sume-batch"
        )
        raise ManifestError([Problem(file, line, column, "version", message)])


def build_manifest(
    data: Mapping[str, Any],
    document: Document,
    path: Path,
    roots: Sequence[Path] = (),
    snapshot: Snapshot | None = None,
    *,
    unread_ok: bool = False,
) -> Manifest:
    """Turn schema-valid data into frozen dataclasses; nothing downstream indexes raw dicts.
    A workspace axis `snapshot` does not fill is a problem, or, with `unread_ok` (validate), an
    axis of no values, listed in `Manifest.unread`."""
    file = str(path)
    budget, execution, output = data.get("budget", {}), data.get("execution", {}), data.get("output", {})
    allowed = allowed_roots(path.parent, roots)
    files = Files(document, file, path.parent, allowed, snapshot, unread_ok=unread_ok)
    matrix, problems = build_matrix(data.get("matrix", {}), ("matrix",), files)
    folders: dict[str, Path] = {}
    for key, default in (("downloads", f"outputs/{data['name']}"), ("reports", "reports")):
        try:
            folders[key] = confine_folder(output.get(key, default), folder=path.parent, roots=allowed)
        except ConfinementError as error:
            problems.append(Problem(file, *document.mark(("output", key)), f"output.{key}", str(error)))
    jobs = []
    for index, job in enumerate(data["jobs"]):
        template, job_problems = build_job(
            index, job, defaults=data.get("defaults", {}), outer=matrix, files=files
        )
        jobs.append(template)
        problems += job_problems
    problems += graph_problems(jobs, file)
    if "state" in data and urllib.parse.urlsplit(data["state"]).password:
        message = "holds a password: a manifest is kept in git; let PGPASSWORD or ~/.pgpass supply it"
        problems.append(Problem(file, *document.mark(("state",)), "state", message))
    if problems:
        unread = [problem for problem in problems if problem.message.startswith(UNREAD)]
        if len(unread) == len(problems):
            raise UnresolvedWorkspace(problems, tuple(files.workspace), data["name"])
        raise ManifestError(problems)
    return Manifest(
        path=path,
        name=data["name"],
        description=data.get("description", ""),
        vars=data.get("vars", {}),
        matrix=matrix,
        jobs=tuple(jobs),
        max_credits=budget.get("max_credits"),
        max_jobs=budget.get("max_jobs", DEFAULT_MAX_JOBS),
        concurrency=execution.get("concurrency", DEFAULT_CONCURRENCY),
        timeouts={k.name: execution.get("timeouts", {}).get(k.name, k.timeout_s) for k in KINDS.values()},
        poll_intervals={
            k.name: execution.get("poll_interval", {}).get(k.name, k.poll_s) for k in KINDS.values()
        },
        downloads=folders["downloads"],
        reports=folders["reports"],
        pricing=data.get("pricing", {}),
        limits=Limits(**data.get("templates", {})),
        roots=allowed,
        data=tuple(files.read),
        workspace=tuple(files.workspace),
        snapshot=snapshot if files.workspace else None,
        unread=tuple(files.unread),
        report_media=output.get("report_media"),
        state=data.get("state"),
        monthly_credits=budget.get("monthly_credits"),
    )


@dataclass
class Files:
    """Where a manifest's axes find their data files, and the files they read."""

    document: Document
    file: str
    folder: Path
    roots: tuple[Path, ...]
    snapshot: Snapshot | None = None
    unread_ok: bool = False
    read: list[DataFile] = field(default_factory=list)
    workspace: list[WorkspaceAxis] = field(default_factory=list)
    unread: list[WorkspaceAxis] = field(default_factory=list)


def build_job(
    index: int,
    job: Mapping[str, Any],
    *,
    defaults: Mapping[str, Any],
    outer: Matrix,
    files: Files,
) -> tuple[JobTemplate, list[Problem]]:
    document, file = files.document, files.file
    kind = KINDS[job["type"]]
    own = ("jobs", index)
    fields: dict[str, Any] = {}
    marks: dict[str, tuple[int, int]] = {"id": document.mark((*own, "id")), "": document.mark(own)}
    for name in kind.fields:
        for scope in (own, ("defaults", kind.name)):
            source = job if scope == own else defaults.get(kind.name, {})
            if name in source:
                fields[name] = source[name]
                marks[name] = document.mark((*scope, name))
                break
    problems = [
        Problem(
            file,
            *marks[""],
            format_path(own),
            f"missing required key {name!r} (set it here or in defaults.{kind.name})",
        )
        for name in kind.required
        if name not in fields
    ]
    matrix, matrix_problems = build_matrix(job.get("matrix", {}), (*own, "matrix"), files, outer)
    for name in ("matrix", "stage", "needs", "fan", "picked"):
        marks[name] = document.mark((*own, name))
    template = JobTemplate(
        index, kind, job["id"], fields, job.get("vars", {}), matrix, marks,
        stage=job.get("stage"), needs=job.get("needs"), fan=job.get("fan", "aligned"),
        picked=bool(job.get("picked", False)),
    )  # fmt: skip
    return template, problems + matrix_problems


def build_matrix(
    raw: Mapping[str, Any], path: tuple[str | int, ...], files: Files, outer: Matrix = Matrix()
) -> tuple[Matrix, list[Problem]]:
    """A matrix; a job's (`outer` is the campaign's) may not redefine a campaign axis, but its
    `exclude` rows may name campaign axes to narrow them for this job. An axis given as a mapping
    takes its values from a data file (`data.load_axis`)."""
    document, file = files.document, files.file
    axes, problems = [], []
    for name, values in raw.items():
        if name in ("include", "exclude"):
            continue
        if not isinstance(values, Mapping):
            axes.append((name, tuple(values)))
            continue
        if "workspace" in values:
            axis = WorkspaceAxis(format_path((*path, name)), values)
            files.workspace.append(axis)
            rows = files.snapshot.rows(axis) if files.snapshot is not None else None
            if rows is None and files.unread_ok:
                files.unread.append(axis)
            elif rows is None:
                line, column = document.mark((*path, name))
                problems.append(Problem(file, line, column, axis.path, UNREAD + UNREAD_HINT))
            axes.append((name, rows or ()))
            continue
        where = (file, *document.mark((*path, name)))
        rows, found, axis_problems = load_axis(
            values, axis=format_path((*path, name)), folder=files.folder, roots=files.roots, at=where
        )
        problems += axis_problems
        if found is not None and found not in files.read:
            files.read.append(found)
        axes.append((name, rows))
    names = {name for name, _ in axes}
    outer_names = {name for name, _ in outer.axes}
    problems += [
        Problem(
            file,
            *document.mark((*path, name), key=True),
            format_path((*path, name)),
            f"axis {name!r} is already an axis of the campaign matrix; narrow it with exclude instead",
        )
        for name in sorted(names & outer_names)
    ]
    for key in ("include", "exclude"):
        for row_index, row in enumerate(raw.get(key, [])):
            row_path = (*path, key, row_index)
            missing = sorted(names - set(row)) if key == "include" else []
            stray = sorted(set(row) - names - outer_names) if key == "exclude" else []
            if missing:
                message = f"an include row must name every axis; missing {', '.join(map(repr, missing))}"
                problems.append(Problem(file, *document.mark(row_path), format_path(row_path), message))
            for name in stray:
                axes_text = ", ".join(sorted(names | outer_names)) or "none"
                message = f"{name!r} is not a matrix axis (axes: {axes_text})"
                problems.append(
                    Problem(file, *document.mark((*row_path, name), key=True), format_path(row_path), message)
                )
    data: dict[str, tuple[Any, ...]] = {
        name: values for name, values in [*outer.axes, *axes] if values and isinstance(values[0], DataRow)
    }
    chosen = {
        key: pick_rows(
            raw.get(key, []), data, path=(*path, key), document=document, file=file, problems=problems
        )
        for key in ("include", "exclude")
    }
    return Matrix(tuple(axes), chosen["include"], chosen["exclude"]), problems


def load_pricing(path: Path) -> dict[str, Any]:
    """A `--pricing FILE`: the same shape as a manifest's `pricing:` section, checked the same way."""
    file = str(path)
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ManifestError([Problem(file, 0, 0, "", f"cannot read pricing file: {error}")]) from None
    document, problems = parse_yaml(text, file=file)
    if problems:
        raise ManifestError(problems)
    schema = {**campaign_schema()["properties"]["pricing"], "$defs": campaign_schema()["$defs"]}
    validator = jsonschema.Draft202012Validator(schema)
    problems = [
        problem
        for error in validator.iter_errors(document.data)
        for problem in describe_error(error, document, file)
    ]
    if problems:
        raise ManifestError(problems)
    pricing: dict[str, Any] = document.data
    return pricing
