"""The manifest stage: a campaign file on disk → a validated, frozen `Manifest`.

Order matters: the size cap, then YAML (safe, marked, duplicate keys refused), then the version
gate (so a newer manifest gets one upgrade message, not a page of schema noise), then the JSON
Schema, with every problem reported at its file:line:col. Paths the manifest names (uploaded
files, output folders) are confined to its folder, or to a root the person running it allows.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from sume_batch import MANIFEST_VERSION, __version__
from sume_batch.errors import ManifestError, Problem
from sume_batch.kinds import KINDS, Kind
from sume_batch.yamlsafe import MAX_FILE_BYTES, Document, format_path, parse_yaml, text_position

DEFAULT_MAX_JOBS = 10_000
DEFAULT_CONCURRENCY = 8
ALLOW_ROOT_HINT = "pass --allow-root DIR (or set SUME_BATCH_ALLOW_ROOT) to allow another folder"

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

    @property
    def folder(self) -> Path:
        return self.path.parent


@cache
def campaign_schema() -> dict[str, Any]:
    """The campaign JSON Schema, read from the package (it ships with the code)."""
    text = resources.files("sume_batch").joinpath("schemas/campaign.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def load_manifest(path: Path, *, roots: Sequence[Path] = ()) -> Manifest:
    """Read and validate one campaign file; raise ManifestError with every problem found.

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
    return parse_manifest(decode_text(data, shown), path=path, roots=roots)


def read_regular(path: Path, *, limit: int) -> bytes:
    """At most `limit + 1` bytes of a regular file. A FIFO or a device is refused before any read:
    opened non-blocking (a FIFO without a writer would hang the open) and checked with fstat."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(descriptor, "rb") as handle:
        mode = os.fstat(descriptor).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(path)
        if not stat.S_ISREG(mode):
            raise OSError(f"{kind_of(mode)}, not a regular file")
        os.set_blocking(descriptor, True)
        return handle.read(limit + 1)


def kind_of(mode: int) -> str:
    """What a non-regular file is, for a message."""
    kinds = (
        (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
    )  # fmt: skip
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def decode_text(data: bytes, file: str) -> str:
    """UTF-8 (a BOM is fine); anything else is a located error naming the first bad byte."""
    for bom, name in ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\xfe\xff", "UTF-16"), (b"\xff\xfe", "UTF-16")):
        if data.startswith(bom):
            raise ManifestError([Problem(file, 0, 0, "", f"the file is {name} text; save it as UTF-8")])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        before = data[: error.start].decode("utf-8")
        line, column = text_position(before, len(before))
        message = f"not UTF-8 text (byte {error.start}: {data[error.start]:#04x}); save it as UTF-8"
        raise ManifestError([Problem(file, line, column, "", message)]) from None


def parse_manifest(text: str, *, path: Path, roots: Sequence[Path] = ()) -> Manifest:
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
    return build_manifest(data, document, path, roots)


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


def schema_problems(data: Any, document: Document, file: str) -> Iterator[Problem]:
    """Every JSON Schema violation, located and phrased for a person."""
    validator = jsonschema.Draft202012Validator(campaign_schema())
    problems = (
        problem for error in validator.iter_errors(data) for problem in describe_error(error, document, file)
    )
    yield from dict.fromkeys(problems)  # a job that is not a mapping fails each type's branch alike


def describe_error(error: jsonschema.ValidationError, document: Document, file: str) -> Iterator[Problem]:
    error = innermost(error)
    path = tuple(error.absolute_path)
    if error.validator in ("additionalProperties", "unevaluatedProperties"):
        known = sorted(known_keys(_schema_of(error)))
        instance: Mapping[str, Any] = error.instance  # type: ignore[assignment]  # these keywords see objects
        for key in sorted(set(instance) - set(known), key=str):
            line, column = document.mark((*path, key), key=True)
            yield Problem(file, line, column, format_path((*path, key)), unknown_key_message(str(key), known))
        return
    line, column = document.mark(path)
    yield Problem(file, line, column, format_path(path), error_message(error))


def unknown_key_message(key: str, known: list[str]) -> str:
    guesses = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"did you mean {guesses[0]!r}?" if guesses else "expected one of " + ", ".join(known)
    return f"unknown key {key!r} ({hint})"


def known_keys(schema: Mapping[str, Any]) -> set[str]:
    """Property names a (sub)schema allows, following local `$ref`s and `allOf`."""
    keys = set(schema.get("properties", {}))
    for part in schema.get("allOf", []):
        keys |= known_keys(part)
    if "$ref" in schema:
        keys |= known_keys(campaign_schema()["$defs"][schema["$ref"].rsplit("/", 1)[1]])
    return keys


def innermost(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """For `anyOf: [strict, template]` fields, the strict branch's own error says what is wrong."""
    while error.validator == "anyOf" and "x-message" not in _schema_of(error):
        strict = [sub for sub in error.context or () if sub.relative_schema_path[0] == 0]
        if not strict:
            break
        error = strict[0]
    return error


def error_message(error: jsonschema.ValidationError) -> str:  # noqa: PLR0911 - one case per keyword
    error = innermost(error)
    schema, value = _schema_of(error), error.instance
    if error.validator in ("pattern", "anyOf") and "x-message" in schema:
        return f"{schema['x-message']}, got {value!r}"
    if error.validator == "required":
        return f"missing required key {error.message.split(' is a required')[0]}"
    if error.validator in ("enum", "const"):
        allowed: list[Any] = error.validator_value if error.validator == "enum" else [error.validator_value]  # type: ignore[assignment]
        return f"{value!r} is not one of " + ", ".join(repr(option) for option in allowed)
    if error.validator == "type":
        return f"expected {_type_name(error.validator_value)}, got {_type_name(type_of(value))} {value!r}"
    if error.validator in ("minimum", "exclusiveMinimum"):
        return f"{value!r} is below the minimum of {error.validator_value}"
    if error.validator == "maximum":
        return f"{value!r} is above the maximum of {error.validator_value}"
    if error.validator == "minLength":
        return "must not be empty"
    if error.validator == "minItems":
        return f"needs at least {error.validator_value} item{'s' if error.validator_value != 1 else ''}"
    if error.validator == "uniqueItems":
        return "has duplicate items"
    return str(error.message)


def _schema_of(error: jsonschema.ValidationError) -> Mapping[str, Any]:
    return error.schema if isinstance(error.schema, Mapping) else {}


def type_of(value: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _type_name(name: Any) -> str:
    if isinstance(name, list):
        return " or ".join(_type_name(one) for one in name)
    return {"object": "a mapping", "array": "a list", "integer": "an integer"}.get(name, f"a {name}")


def build_manifest(
    data: Mapping[str, Any], document: Document, path: Path, roots: Sequence[Path] = ()
) -> Manifest:
    """Turn schema-valid data into frozen dataclasses; nothing downstream indexes raw dicts."""
    file = str(path)
    budget, execution, output = data.get("budget", {}), data.get("execution", {}), data.get("output", {})
    allowed = allowed_roots(path.parent, roots)
    matrix, problems = build_matrix(data.get("matrix", {}), ("matrix",), document, file)
    folders: dict[str, Path] = {}
    for key, default in (("downloads", f"outputs/{data['name']}"), ("reports", "reports")):
        try:
            folders[key] = confine_folder(output.get(key, default), folder=path.parent, roots=allowed)
        except ConfinementError as error:
            problems.append(Problem(file, *document.mark(("output", key)), f"output.{key}", str(error)))
    jobs = []
    for index, job in enumerate(data["jobs"]):
        template, job_problems = build_job(
            index, job, defaults=data.get("defaults", {}), outer=matrix, document=document, file=file
        )
        jobs.append(template)
        problems += job_problems
    if problems:
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
    )


class ConfinementError(Exception):
    """A path the manifest names that is not a regular file (or folder) inside an allowed root."""


def allowed_roots(folder: Path, extra: Sequence[Path]) -> tuple[Path, ...]:
    """The manifest's folder and the roots its runner allowed, with symlinks resolved."""
    return tuple(dict.fromkeys(Path(os.path.realpath(root)) for root in (folder, *extra)))


def confine_folder(value: str, *, folder: Path, roots: Sequence[Path]) -> Path:
    """An output folder: relative to the manifest's folder and, symlinks resolved, inside a root."""
    lexical = Path(os.path.normpath(folder / value))
    _check_inside(value, lexical, folder=folder, roots=roots, what="output folders")
    return lexical


def confine_file(value: str, *, folder: Path, roots: Sequence[Path]) -> Path:
    """A local file a job uploads: inside a root once symlinks are resolved, and a regular file
    (checked with stat, never opened: a FIFO or /dev/zero must not hang `validate`)."""
    if "\x00" in value:
        raise ConfinementError(f"{value!r} holds a NUL character")
    real = _check_inside(value, folder / value, folder=folder, roots=roots, what="local files")
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        raise ConfinementError(f"no such file: {value} (looked for {real})") from None
    except OSError as error:
        raise ConfinementError(f"{value} cannot be read: {error.strerror or error}") from None
    if not stat.S_ISREG(mode):
        raise ConfinementError(f"{value} is {kind_of(mode)}, not a regular file")
    return real


def _check_inside(value: str, path: Path, *, folder: Path, roots: Sequence[Path], what: str) -> Path:
    try:
        real = Path(os.path.realpath(path))
    except (OSError, ValueError) as error:
        raise ConfinementError(f"{value} cannot be used: {error}") from None
    if any(real.is_relative_to(root) for root in roots):
        return real
    where = f"{what} must be inside the manifest's folder ({roots[0]}); {ALLOW_ROOT_HINT}"
    if Path(value).is_absolute():
        raise ConfinementError(f"{value} is an absolute path outside the allowed folders; {where}")
    if not Path(os.path.normpath(Path(os.path.realpath(folder)) / value)).is_relative_to(roots[0]):
        raise ConfinementError(f"{value} leaves the manifest's folder; {where}")
    raise ConfinementError(f"{value} leads through a symlink to {real}; {where}")


def build_job(
    index: int,
    job: Mapping[str, Any],
    *,
    defaults: Mapping[str, Any],
    outer: Matrix,
    document: Document,
    file: str,
) -> tuple[JobTemplate, list[Problem]]:
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
    matrix, matrix_problems = build_matrix(job.get("matrix", {}), (*own, "matrix"), document, file, outer)
    marks["matrix"] = document.mark((*own, "matrix"))
    template = JobTemplate(index, kind, job["id"], fields, job.get("vars", {}), matrix, marks)
    return template, problems + matrix_problems


def build_matrix(
    raw: Mapping[str, Any],
    path: tuple[str | int, ...],
    document: Document,
    file: str,
    outer: Matrix = Matrix(),
) -> tuple[Matrix, list[Problem]]:
    """A matrix; a job's (`outer` is the campaign's) may not redefine a campaign axis, but its
    `exclude` rows may name campaign axes to narrow them for this job."""
    axes = tuple((name, tuple(values)) for name, values in raw.items() if name not in ("include", "exclude"))
    names = {name for name, _ in axes}
    outer_names = {name for name, _ in outer.axes}
    problems = [
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
    return Matrix(axes, tuple(raw.get("include", ())), tuple(raw.get("exclude", ()))), problems


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


def file_digest(path: Path, *, chunk: int = 1 << 20) -> str:
    """The sha256 of a local file a job uploads; part of the job's key, so new bytes mean a new job.

    Only a regular file is read (opened non-blocking and checked with fstat, so a FIFO swapped in
    after `confine_file` looked cannot hang it)."""
    digest = hashlib.sha256()
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(descriptor, "rb") as handle:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(f"{path} is {kind_of(mode)}, not a regular file")
        os.set_blocking(descriptor, True)
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
