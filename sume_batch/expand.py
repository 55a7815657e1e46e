"""The expand stage (pure): a Manifest → one rendered, checked JobSpec per variant.

Variants are the campaign matrix's rows × the job matrix's rows. Every string field is a Jinja2
template rendered in a sandbox with StrictUndefined; a field that is exactly one `{{ expression }}`
keeps the expression's type (so `duration: "{{ seconds }}"` stays an integer). Each job gets a
stable key: a hash of its campaign and its canonical rendered request (and the bytes of any file
it uploads), so an unchanged variant is recognised on every later run. Identical requests (takes
of one prompt) are separate jobs: the n-th repeat's key also hashes n.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import jsonschema
from jinja2.exceptions import SecurityError

from sume_batch.confine import ConfinementError, confine_file
from sume_batch.data import DataRow, shown
from sume_batch.errors import ManifestError, Problem
from sume_batch.kinds import Kind
from sume_batch.manifest import JobTemplate, Manifest, Matrix
from sume_batch.render import Renderer, TemplateFailure
from sume_batch.schema import campaign_schema, error_message
from sume_batch.stages import RESERVED_AXIS, Probe, probe, upstream_values

MAX_RENDERED_CHARS = 20_000
JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# What a hostile template can raise besides Jinja's own errors: each becomes a located problem.
RENDER_ERRORS = (
    TemplateFailure, jinja2.TemplateError, ArithmeticError, TypeError, ValueError,
    RecursionError, MemoryError,
)  # fmt: skip

# What json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=False) makes anew per call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)

Row = Mapping[str, Any]
Digest = Callable[[Path], str]


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One variant, ready to price and submit. `request` uses the manifest's field names."""

    id: str
    kind: Kind
    request: Mapping[str, Any]
    matrix: Row
    template: int  # the index of its entry in `jobs:`
    key: str


def expand_jobs(manifest: Manifest, *, digest: Digest, max_jobs: int | None = None) -> list[JobSpec]:
    """Every variant of every job, rendered and checked; raise ManifestError listing all problems."""
    limit = max_jobs or manifest.max_jobs
    check_counts(manifest, limit)
    renderer, problems, specs = Renderer(manifest.limits), _Problems(str(manifest.path)), []
    owners: dict[str, tuple[JobTemplate, Row]] = {}
    occurrences: dict[str, int] = {}
    for template in manifest.jobs:
        if template.needs is not None:  # expanded from its upstream's outputs (`expand_downstream`)
            for upstream in [probe(template.fan)]:  # checked now, with a stand-in upstream
                list(
                    _downstream(
                        manifest, template, upstream, renderer=renderer, problems=problems, digest=digest
                    )
                )
            continue
        shared = renderer.variables(manifest.vars, template.vars)  # every variant's, but its row's
        for row in matrix_rows(manifest.matrix, template.matrix):
            context = {**shared, **row, "campaign": manifest.name}  # later scopes win, as in `variables`
            spec = expand_one(
                manifest, template, row, context, renderer=renderer, problems=problems, digest=digest
            )
            if spec is None:
                continue
            if spec.id in owners:
                problems.add(template, "id", _collision(spec.id, owners[spec.id], template, row))
                continue
            owners[spec.id] = (template, row)
            repeats = occurrences.get(spec.key, 0)
            occurrences[spec.key] = repeats + 1
            if repeats:  # the same request again (another take of a prompt): its own job, its own key
                spec = dataclasses.replace(spec, key=_hash(f"{spec.key}#{repeats}"))
            specs.append(spec)
    if problems:
        raise ManifestError(problems.list())
    return specs


def expand_downstream(
    manifest: Manifest, template: JobTemplate, outputs: Sequence[Mapping[str, Any]], *, digest: Digest
) -> list[JobSpec]:
    """A downstream job template's jobs over its upstream's outputs (see `stages`); each job's
    stored matrix names its upstream. Raise ManifestError listing all problems."""
    renderer, problems = Renderer(manifest.limits), _Problems(str(manifest.path))
    specs: list[JobSpec] = []
    for upstream in upstream_values(outputs, template.fan):
        specs += _downstream(
            manifest, template, upstream, renderer=renderer, problems=problems, digest=digest
        )
    owners: dict[str, JobSpec] = {}
    occurrences: dict[str, int] = {}
    for index, spec in enumerate(specs):
        if spec.id in owners:
            problems.add(
                template, "id", f"job id {spec.id!r} is produced twice: tell the jobs apart by upstream"
            )
        owners[spec.id] = spec
        repeats = occurrences.get(spec.key, 0)
        occurrences[spec.key] = repeats + 1
        if repeats:  # the same request over another output (two analyses found one hook): its own job
            specs[index] = dataclasses.replace(spec, key=_hash(f"{spec.key}#{repeats}"))
    if problems:
        raise ManifestError(problems.list())
    return specs


def probe_specs(manifest: Manifest, template: JobTemplate, *, digest: Digest) -> list[JobSpec]:
    """A downstream template's jobs for one stand-in upstream: one per row of its own matrix."""
    renderer, problems = Renderer(manifest.limits), _Problems(str(manifest.path))
    return list(
        _downstream(
            manifest, template, probe(template.fan), renderer=renderer, problems=problems, digest=digest
        )
    )


def _downstream(
    manifest: Manifest, template: JobTemplate, upstream: Any, *, renderer: Renderer, problems: _Problems,
    digest: Digest,
) -> Iterator[JobSpec]:  # fmt: skip
    """A downstream template's jobs for one value of `upstream`, each row of its own matrix. A job's
    key hashes its request with its template and the upstream outputs it reads (their jobs' keys and
    positions), so it stays the job it was whichever other upstream jobs exist in a run."""
    shared = renderer.variables(manifest.vars, template.vars)
    if isinstance(upstream, list):
        named = f"all of {template.needs}"
        lineage = sorted(
            f"{one.get('key')}#{one.get('position')}" for one in upstream if isinstance(one, Mapping)
        )
    else:
        named = "upstream" if isinstance(upstream, Probe) else str(upstream.get("id"))
        lineage = [] if isinstance(upstream, Probe) else [f"{upstream.get('key')}#{upstream.get('position')}"]
    for row in product_rows(template.matrix):
        context = {**shared, **row, "campaign": manifest.name, RESERVED_AXIS: upstream}
        spec = expand_one(
            manifest, template, row, context, renderer=renderer, problems=problems, digest=digest
        )
        if spec is not None:
            key = _hash(f"{spec.key}|{template.index}|{','.join(lineage)}")
            yield dataclasses.replace(spec, key=key, matrix={RESERVED_AXIS: named, **spec.matrix})


def expand_one(
    manifest: Manifest,
    template: JobTemplate,
    row: Row,
    context: Mapping[str, Any],
    *,
    renderer: Renderer,
    problems: _Problems,
    digest: Digest,
) -> JobSpec | None:
    """One variant: its `context` holds the campaign's and the job's variables, its row and `campaign`."""
    rendered: dict[str, Any] = {}
    failed = False
    for name, value in (("id", template.id), *template.fields.items()):
        try:
            rendered[name] = renderer.render_field(value, context)
        except RENDER_ERRORS as error:
            problems.add(template, name, describe_failure(error, context), row)
            failed = True
    if failed:
        return None
    job_id = rendered.pop("id")
    failures = [(name, message) for name, message in check_rendered(template, job_id, rendered)]
    file_digest = None
    if template.kind.upload_field and not failures:
        relative = str(rendered[template.kind.upload_field])
        try:
            file_digest = digest(confine_file(relative, folder=manifest.folder, roots=manifest.roots))
        except ConfinementError as error:
            failures.append((template.kind.upload_field, str(error)))
        except OSError as error:
            failures.append(
                (template.kind.upload_field, f"{relative} cannot be read: {error.strerror or error}")
            )
    for name, message in failures:
        problems.add(template, name, message, row)
    if failures:
        return None
    key = job_key(manifest.name, template.kind, rendered, file_digest)
    return JobSpec(job_id, template.kind, rendered, _shown_row(row), template.index, key)


def _shown_row(row: Row) -> Row:
    """The row as the store, reports and `--only` see it: a data row by its key (`data.shown`)."""
    if not any(isinstance(value, DataRow) for value in row.values()):
        return row
    return {name: shown(value) for name, value in row.items()}


def job_key(campaign: str, kind: Kind, request: Mapping[str, Any], file_digest: str | None) -> str:
    """The stable identity of a variant: the same campaign, kind, request and file → the same key."""
    return _hash(_CANONICAL.encode([campaign, kind.name, request, file_digest]))


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def check_rendered(
    template: JobTemplate, job_id: Any, request: Mapping[str, Any]
) -> Iterator[tuple[str, str]]:
    if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
        yield "id", f"rendered id {job_id!r} must be 1–128 letters, digits, '.', '_' or '-' (it names files)"
    for name, value in request.items():
        if value is template.fields[name]:
            continue  # not templated: the schema already checked it
        if isinstance(value, str) and len(value) > MAX_RENDERED_CHARS:
            yield name, f"renders to {len(value):,} characters; the limit is {MAX_RENDERED_CHARS:,}"
            continue
        if isinstance(value, str) and plain_string(template.kind.name, name):
            if not value:
                yield name, "must not be empty"
            continue
        message = field_problem(template.kind.name, name, _hashable(value))
        if message:
            yield name, message


def _hashable(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, list | dict) else (type(value), value)


@cache
def plain_string(kind: str, field: str) -> bool:
    """A field whose only rule is "a non-empty string" (prompts, scripts) needs no schema run."""
    schema = campaign_schema()["$defs"][f"{kind}_fields"]["properties"][field]
    return schema.get("type") == "string" and set(schema) <= {"type", "minLength", "title", "description"}


@cache
def field_problem(kind: str, field: str, value: Any) -> str | None:
    """Check one rendered value against its field's strict schema (cached: values repeat)."""
    actual = json.loads(value) if isinstance(value, str) else value[1]
    schema = campaign_schema()["$defs"][f"{kind}_fields"]["properties"][field]
    strict = schema["anyOf"][0] if "anyOf" in schema else schema
    validator = jsonschema.Draft202012Validator({**strict, "$defs": campaign_schema()["$defs"]})
    error = jsonschema.exceptions.best_match(validator.iter_errors(actual))
    return None if error is None else error_message(error)


def describe_failure(error: Exception, context: Mapping[str, Any]) -> str:  # noqa: PLR0911 - one case per kind
    if isinstance(error, SecurityError):
        return f"unsafe template: {str(error).rstrip('.')} (templates may only format values)"
    if isinstance(error, jinja2.UndefinedError):
        found = re.match(r"'([^']+)' is undefined", error.message or "")
        if found:
            names = [name for name in context if not name.startswith("_")]
            guesses = difflib.get_close_matches(found[1], names, n=1)
            hint = f" (did you mean {guesses[0]!r}?)" if guesses else ""
            return f"undefined variable {found[1]!r}{hint}"
        return f"undefined value: {error.message}"
    if isinstance(error, TemplateFailure):
        return str(error)
    if isinstance(error, RecursionError):
        return "the template recurses too deeply (does a macro call itself?)"
    if isinstance(error, MemoryError):
        return "the template ran out of memory"
    return f"template error: {type(error).__name__}: {error}"


def matrix_rows(outer: Matrix, inner: Matrix) -> Iterator[Row]:
    """The campaign's rows × the job's rows; the job's `exclude` may name campaign axes."""
    outer_excluded, inner_excluded = _Excludes(outer.exclude), _Excludes(inner.exclude)
    outer_rows = [row for row in product_rows(outer) if not outer_excluded.match(row)] + list(outer.include)
    for outer_row in outer_rows:
        for inner_row in product_rows(inner):
            row = {**outer_row, **inner_row}
            if not inner_excluded.match(row):
                yield row
        yield from ({**outer_row, **included} for included in inner.include)


def product_rows(matrix: Matrix) -> Iterator[Row]:
    names = [name for name, _ in matrix.axes]
    for values in itertools.product(*(values for _, values in matrix.axes)):
        yield dict(zip(names, values, strict=True))


class _Excludes:
    """A matrix's `exclude` rows, grouped by the axes they name: a row is matched with one set lookup
    per group, not compared with every exclude row (20 of them made `plan` 65 % slower, issue 13).

    A row matches an exclude row when it has each of its axes with an equal value (`==`, so `1`
    matches `1.0`); mapping and list values are looked up by `_frozen` forms, equal exactly when
    they are."""

    def __init__(self, patterns: Iterable[Row]) -> None:
        self.groups: dict[tuple[str, ...], set[tuple[Any, ...]]] = {}
        for pattern in patterns:
            names = tuple(pattern)
            self.groups.setdefault(names, set()).add(tuple([_frozen(pattern[name]) for name in names]))

    def match(self, row: Row) -> bool:
        for names, values in self.groups.items():
            try:
                found = tuple([_frozen(row[name]) for name in names])
            except KeyError:  # the row lacks an axis this group names: none of its rows match
                continue
            if found in values:
                return True
        return False


def _frozen(value: Any) -> Any:
    """A hashable stand-in for a YAML value, equal to another's exactly when the values are equal;
    a data row with a key stands for its key (`exclude: [{product: "007"}]`)."""
    if isinstance(value, DataRow) and value.row_key is not None:
        return value.row_key
    if isinstance(value, dict):
        return frozenset((key, _frozen(item)) for key, item in value.items())
    if isinstance(value, list):
        return tuple(_frozen(item) for item in value)
    return value


def check_counts(manifest: Manifest, limit: int) -> None:
    """Refuse a matrix explosion before rendering anything, naming the count per axis."""
    file, problems, total = str(manifest.path), [], 0
    for template in manifest.jobs:
        count = count_rows(manifest.matrix, template.matrix, limit)
        total += count
        if count > limit:
            axes = [*manifest.matrix.axes, *template.matrix.axes]
            sizes = " × ".join(f"{name} {len(values)}" for name, values in axes)
            message = (
                f"expands to {count:,} variants ({sizes}), above the limit of {limit:,}; "
                "raise budget.max_jobs or pass --max-jobs if you mean it"
            )
            problems.append(Problem(file, *template.marks["matrix"], template.path + ".matrix", message))
    if not problems and total > limit:
        message = (
            f"the campaign expands to {total:,} jobs, above the limit of {limit:,}; raise budget.max_jobs"
        )
        problems.append(Problem(file, 1, 1, "jobs", message))
    if problems:
        raise ManifestError(problems)


def count_rows(outer: Matrix, inner: Matrix, limit: int) -> int:
    """The exact variant count when cheap to find, else the product's upper bound."""
    bound = _size(outer) * _size(inner)
    if bound > 10 * limit or not (outer.exclude or inner.exclude):
        return bound  # without excludes the bound is the count: each outer row meets each inner row
    return sum(1 for _ in matrix_rows(outer, inner))


def _size(matrix: Matrix) -> int:
    return math.prod(len(values) for _, values in matrix.axes) + len(matrix.include)


def _collision(job_id: str, first: tuple[JobTemplate, Row], template: JobTemplate, row: Row) -> str:
    earlier, earlier_row = first
    return (
        f"job id {job_id!r} is produced twice: by {earlier.path} {format_row(earlier_row)} and by "
        f"{template.path} {format_row(row)}; put the matrix values that differ into the id"
    )


def format_row(row: Row) -> str:
    return (
        "(" + ", ".join(f"{name}={shown(value)}" for name, value in row.items()) + ")"
        if row
        else "(no matrix)"
    )


class _Problems:
    """Problems of one expansion, with a repeated complaint folded into one line and a count."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.seen: dict[tuple[int, str, str], list[Any]] = {}

    def add(self, template: JobTemplate, field: str, message: str, row: Row | None = None) -> None:
        slot = self.seen.setdefault((template.index, field, message), [template, row, 0])
        slot[2] += 1

    def __bool__(self) -> bool:
        return bool(self.seen)

    def list(self) -> list[Problem]:
        problems = []
        for (_, field, message), (template, row, count) in self.seen.items():
            text = message if row is None else f"{message} in the variant {format_row(row)}"
            if count > 1:
                text += f" (and {count - 1:,} more variant{'s' if count > 2 else ''})"
            line, column = template.marks.get(field, template.marks[""])
            problems.append(Problem(self.file, line, column, f"{template.path}.{field}", text))
        return problems
