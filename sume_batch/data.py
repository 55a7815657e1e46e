"""Data axes: a matrix axis whose values are the rows of a file beside the manifest (issue 14).

    matrix:
      product: {from: data/products.csv, key: sku, where: {active: "yes"}, columns: {price: number}}

The file is CSV (`.csv`, or `.tsv` with tabs), JSON Lines (`.jsonl`, `.ndjson`), a JSON array of
objects (`.json`) or a YAML list of mappings (`.yaml`, `.yml`), UTF-8 (a BOM is fine), confined as
every local file a manifest names is, and at most `MAX_DATA_BYTES` (`SUME_BATCH_MAX_DATA` changes
it). Each row is a mapping that templates read (`{{ product.name_de }}`; a column named like a
mapping method, `items` or `keys`, is read as `product["items"]`).

Columns of a CSV are strings unless `columns:` types them (`string`, `integer`, `number`,
`boolean`); nothing is inferred, so a SKU `007` stays `007`. In JSON and YAML a value keeps the
type the file gives it (YAML's ambiguous scalars are refused as in a manifest), and a typed column
checks it. An empty typed CSV cell is null. `where:` keeps the rows whose columns equal the value
given (or one of a list of values), compared after typing.

`key:` names the column that identifies a row: every row must have a non-empty one, and two rows
with one key are an error naming both lines. The key is what the row is called wherever a matrix
value is shown or matched: `plan`, reports, `--only product=007`, and `exclude: [{product: "007"}]`.
A job's own identity stays its rendered request (`expand.job_key`), so a row added in git is new
jobs, a row removed is removed jobs, a row whose used columns changed is a changed job, and the
other rows are unchanged; the file's sha256 is recorded with the plan and the run.

Every problem is located in the data file (`products.csv:37:4`: line, and column where the field
starts), all of them at once.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sume_batch.confine import ConfinementError, confine_file, read_regular
from sume_batch.errors import ManifestError, Problem, UsageError
from sume_batch.readers import READERS, Located, Raw, type_name
from sume_batch.yamlsafe import Document, decode_text, format_path

MAX_DATA_BYTES = 64 * 1024 * 1024
DATA_ENV = "SUME_BATCH_MAX_DATA"
FORMATS = {
    ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".yaml": "yaml",
    ".yml": "yaml",
}  # fmt: skip
TYPES = ("string", "integer", "number", "boolean")
BOOLEANS = {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}
MAX_PROBLEMS = 20  # problems reported from one data file; the rest are counted


class DataRow(dict[str, Any]):
    """One row of a data file: its columns, with the value of its `key:` column (None without one)
    and the line it starts on."""

    __slots__ = ("line", "row_key")

    def __init__(self, columns: Mapping[str, Any], row_key: str | None, line: int) -> None:
        super().__init__(columns)
        self.row_key, self.line = row_key, line


NAMING = ("name", "key", "id", "title")  # the field a mapping-valued matrix value is called by


def label(value: Any) -> str:
    """A matrix value as people read it, in chips, filters, JUnit names and `--only axis=value`:
    a data row by its key, a mapping by its `name` (`key`, `id`, `title`), else as JSON."""
    value = shown(value)
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        named = next((value[field] for field in NAMING if isinstance(value.get(field), str | int)), None)
        if named is not None:
            return str(named)
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(", ", ": "), default=str)


def shown(value: Any) -> Any:
    """A matrix value as people see and match it: a data row by its key (the row itself without one)."""
    return value.row_key if isinstance(value, DataRow) and value.row_key is not None else value


@dataclass(frozen=True)
class DataFile:
    """A data file an axis read: as the manifest names it, its sha256 and how many rows it gave."""

    name: str
    sha256: str
    rows: int

    def to_json(self) -> dict[str, Any]:
        return {"path": self.name, "sha256": self.sha256, "rows": self.rows}


@dataclass
class _Source:
    """What an axis asks of its file, and where to report what goes wrong."""

    shown: str  # the data file as messages name it
    axis: str  # the manifest path of the axis, e.g. `matrix.product`
    key: str | None
    where: Mapping[str, Any]
    columns: Mapping[str, str]
    problems: list[Problem]
    text: bool = False  # cells are text to parse (CSV), not values to check (JSON, YAML)
    extra: int = 0  # problems past MAX_PROBLEMS

    def problem(self, line: int, column: int, message: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(Problem(self.shown, line, column, self.axis, message))
        else:
            self.extra += 1


def max_data_bytes(env: Mapping[str, str] = os.environ) -> int:
    """The largest data file an axis may read: `SUME_BATCH_MAX_DATA` (e.g. `200MiB`, at most 4 GiB),
    else 64 MiB; a bad value is a UsageError (exit 2)."""
    text = env.get(DATA_ENV, "").strip()
    if not text:
        return MAX_DATA_BYTES
    from sume_batch.bounds import parse_size  # noqa: PLC0415 - only when set: `validate` need not import httpx

    try:
        size = parse_size(text)
    except (ValueError, OverflowError) as error:
        raise UsageError(f"{DATA_ENV}={text!r}: {error}") from None
    if size > 4 << 30:
        raise UsageError(f"{DATA_ENV}={text!r}: at most 4GiB (a data file is read whole)")
    return size


def load_axis(
    spec: Mapping[str, Any], *, axis: str, folder: Path, roots: Sequence[Path], at: tuple[str, int, int]
) -> tuple[tuple[DataRow, ...], DataFile | None, list[Problem]]:
    """The rows of a data axis (`spec` is its schema-valid mapping), the file read, and every
    problem found; `at` (file, line, column) locates the axis in the manifest."""
    manifest, line, column = at
    value = str(spec["from"])
    shown_name = os.path.normpath(Path(manifest).parent / value)
    kind = FORMATS.get(Path(value).suffix.lower())
    if kind is None:
        known = ", ".join(sorted(FORMATS))
        return (
            (),
            None,
            [Problem(manifest, line, column, axis, f"{value}: unknown data format (use {known})")],
        )
    try:
        real = confine_file(value, folder=folder, roots=roots)
        limit = max_data_bytes()
        data = read_regular(real, limit=limit)
    except (ConfinementError, OSError) as error:
        message = str(error) if isinstance(error, ConfinementError) else f"{value} cannot be read: {error}"
        return (), None, [Problem(manifest, line, column, axis, message)]
    if len(data) > limit:
        message = f"{value} is larger than {limit:,} bytes ({DATA_ENV} sets the bound)"
        return (), None, [Problem(manifest, line, column, axis, message)]
    source = _Source(
        shown_name, axis, spec.get("key"), spec.get("where", {}), spec.get("columns", {}), [],
        text=kind in ("csv", "tsv"),
    )  # fmt: skip
    try:
        text = _decode(data, shown_name)
        raw = list(READERS[kind](text, source))
    except Located as error:
        return (), None, [Problem(shown_name, error.line, error.column, axis, error.message)]
    except ManifestError as error:
        return (), None, list(error.problems)
    rows = _rows(raw, source)
    if not raw and not source.problems:
        source.problem(1, 1, "the file holds no rows")
    elif not rows and not source.problems:
        source.problem(1, 1, f"no row matches where: {json.dumps(dict(source.where), ensure_ascii=False)}")
    if source.extra:
        source.problems.append(Problem(shown_name, 0, 0, axis, f"… and {source.extra:,} more problems"))
    found = DataFile(value, hashlib.sha256(data).hexdigest(), len(rows))
    return tuple(rows), found, source.problems


def _decode(data: bytes, shown_name: str) -> str:
    return decode_text(data, shown_name).removeprefix("\ufeff")


def _rows(raw: list[Raw], source: _Source) -> list[DataRow]:
    """Typed, filtered and keyed rows; each problem recorded at its cell."""
    rows: list[DataRow] = []
    keys: dict[str, int] = {}
    named = [("key", source.key)] if source.key else []
    named += [("where", name) for name in source.where] + [("columns", name) for name in source.columns]
    present = set().union(*(columns for _, columns, _ in raw)) if raw else set()
    missing = [(role, name) for role, name in named if raw and name not in present]
    for role, name in missing:
        known = ", ".join(sorted(present)) or "none"
        source.problem(
            raw[0][0], 1, f"{role}: names the column {name!r}, which no row has (columns: {known})"
        )
    if missing:
        return []
    for line, columns, positions in raw:
        typed, ok = dict(columns), True
        for name, value in columns.items():
            if wrong := _bad_text(value):
                source.problem(line, positions.get(name, 1), f"{name}: {wrong}")
                ok = False
        for name, kind in source.columns.items():
            if name not in columns:
                continue
            try:
                typed[name] = _typed(columns[name], kind, text=source.text)
            except ValueError as error:
                source.problem(line, positions.get(name, 1), f"{name}: {error}")
                ok = False
        row_key = _key_of(typed, line, positions, source, keys)
        ok = ok and (source.key is None or row_key is not None)
        if not ok or not _kept(typed, source.where):
            continue
        rows.append(DataRow(typed, row_key, line))
    return rows


def _typed(value: Any, kind: str, *, text: bool) -> Any:
    """A cell as its column's type: parsed from CSV text, or checked as JSON/YAML gave it."""
    if text and isinstance(value, str):
        return _parsed(value, kind)
    if value is None:
        return None
    wanted = {"string": str, "integer": int, "number": int | float, "boolean": bool}[kind]
    if (isinstance(value, bool) and kind != "boolean") or not isinstance(value, wanted):
        hint = '; quote it in the file ("007" stays 007)' if kind == "string" else ""
        raise ValueError(
            f"{json.dumps(value, ensure_ascii=False)} is {type_name(value)}, not {_article(kind)}{hint}"
        )
    if kind == "number" and isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value} is not a finite number")
    return value


def _parsed(cell: str, kind: str) -> Any:
    if kind == "string":
        return cell
    stripped = cell.strip()
    if not stripped:
        return None
    try:
        if kind == "integer":
            if not stripped.lstrip("+-").isdigit():
                raise ValueError
            return int(stripped)
        if kind == "number":
            if stripped.lstrip("+-").isdigit():
                return int(stripped)  # exactly: 9007199254740993 is not a float
            number = float(stripped)
            if not math.isfinite(number):
                raise ValueError
            return (
                int(number)
                if number.is_integer() and "." not in stripped and "e" not in stripped.lower()
                else number
            )
        return BOOLEANS[stripped.lower()]
    except (ValueError, KeyError):
        words = "true/false, yes/no or 1/0" if kind == "boolean" else f"{_article(kind)}"
        raise ValueError(f"{cell!r} is not {words}") from None


def _key_of(
    row: Mapping[str, Any], line: int, positions: Mapping[str, int], source: _Source, keys: dict[str, int]
) -> str | None:
    """The row's key (None without `key:`, or when it is empty or taken: each a problem)."""
    if source.key is None:
        return None
    value = row.get(source.key)
    row_key = "" if value is None else str(value)
    at = positions.get(source.key, 1)
    if not row_key.strip():
        source.problem(line, at, f"the key column {source.key!r} is empty")
        return None
    if row_key in keys:
        source.problem(
            line, at, f"duplicate key {source.key}={row_key!r}: the rows at lines {keys[row_key]} and {line}"
        )
        return None
    keys[row_key] = line
    return row_key


def _bad_text(value: Any, depth: int = 0) -> str | None:
    """Why a value cannot be sent (a NUL, a lone surrogate, nesting past 64 levels), or None."""
    if depth > 64:
        return "nested more than 64 levels deep"
    if isinstance(value, str):
        if "\x00" in value:
            return "holds a NUL character"
        if any("\ud800" <= char <= "\udfff" for char in value):
            return "holds a lone surrogate (not text)"
        return None
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return next((found for item in items if (found := _bad_text(item, depth + 1))), None)


def _kept(row: Mapping[str, Any], where: Mapping[str, Any]) -> bool:
    for name, wanted in where.items():
        value = row.get(name)
        if value not in (wanted if isinstance(wanted, list) else [wanted]):
            return False
    return True


def _article(kind: str) -> str:
    return {"integer": "an integer", "number": "a number", "boolean": "a boolean", "string": "a string"}[kind]


def pick_rows(
    patterns: Sequence[Mapping[str, Any]], rows: Mapping[str, tuple[Any, ...]], *,
    path: tuple[str | int, ...], document: Document, file: str, problems: list[Problem],
) -> tuple[Mapping[str, Any], ...]:  # fmt: skip
    """`include`/`exclude` rows with each data axis's value (a key) replaced by the row it names:
    a key no row has, or a data axis without `key:`, is a located problem (never a silent no-op)."""
    found = []
    for index, pattern in enumerate(patterns):
        fixed = dict(pattern)
        for name, value in pattern.items():
            if name not in rows:
                continue
            by_key = {row.row_key: row for row in rows[name] if row.row_key is not None}
            where = (file, *document.mark((*path, index, name)), format_path((*path, index, name)))
            if not by_key:
                problems.append(
                    Problem(*where, f"the data axis {name!r} has no key: name its `key:` column to pick rows")
                )
            elif (
                isinstance(value, str | int | float) and not isinstance(value, bool) and str(value) in by_key
            ):
                fixed[name] = by_key[str(value)]
            else:
                shown = ", ".join(list(by_key)[:5]) + (", …" if len(by_key) > 5 else "")
                problems.append(Problem(*where, f"no row of {name!r} has the key {value!r} (keys: {shown})"))
        found.append(fixed)
    return tuple(found)
