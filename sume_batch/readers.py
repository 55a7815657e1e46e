"""Reading a data file's rows (see `data`): CSV and TSV, JSON Lines, a JSON array, a YAML list; each
row with the line it starts on and the column where each value starts, every problem located."""

from __future__ import annotations

import bisect
import csv
import json
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from sume_batch.errors import ManifestError
from sume_batch.yamlsafe import parse_yaml

if TYPE_CHECKING:
    from sume_batch.data import _Source

LINE_ENDS = re.compile(r"(?<=\r\n)|(?<=\n)(?<!\r\n)|(?<=\r)(?!\n)")


class Located(Exception):
    """A problem that ends the reading of a file, at a line and column."""

    def __init__(self, line: int, column: int, message: str) -> None:
        super().__init__(message)
        self.line, self.column, self.message = line, column, message


# Each reader yields (line, columns, positions): a row's line, its values, and the column where each
# value starts (a column absent from `positions` is reported at the row's first column).
Raw = tuple[int, dict[str, Any], dict[str, int]]


def _delimited(text: str, source: _Source, delimiter: str) -> Iterator[Raw]:
    lines = LINE_ENDS.split(text)  # not str.splitlines: U+2028 or a form feed in a cell ends no row
    if lines and not lines[-1]:
        lines.pop()
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    header: list[str] | None = None
    start = 1
    try:
        for fields in reader:
            line, end = start, reader.line_num
            starts = _starts(lines[line - 1], delimiter) if end == line else [1] * len(fields)
            start = end + 1
            if not fields or fields == [""]:
                continue  # a blank line
            if header is None:
                header = _header(fields, starts, line, source)
                continue
            if len(fields) != len(header):
                source.problem(line, 1, f"the row has {len(fields)} fields; the header names {len(header)}")
                continue
            positions = dict(zip(header, starts, strict=False))
            yield line, dict(zip(header, fields, strict=True)), positions
    except csv.Error as error:
        raise Located(reader.line_num, 1, f"not valid CSV: {error}") from None
    if header is None:
        raise Located(1, 1, "the file is empty: a header row and at least one row are needed")


def _header(fields: list[str], starts: list[int], line: int, source: _Source) -> list[str]:
    names = [field.strip() for field in fields]
    first: dict[str, int] = {}
    for name, column in zip(names, starts, strict=False):
        if not name:
            source.problem(line, column, "a header cell is empty: every column needs a name")
        elif name in first:
            source.problem(line, column, f"the column {name!r} is named twice (also at column {first[name]})")
        else:
            first[name] = column
    return names


def _starts(line: str, delimiter: str) -> list[int]:
    """The 1-based column where each field of a one-line CSV record starts."""
    starts, quoted = [1], False
    for index, char in enumerate(line):
        if char == '"':
            quoted = not quoted
        elif char == delimiter and not quoted:
            starts.append(index + 2)
    return starts


def _json_lines(text: str, source: _Source) -> Iterator[Raw]:
    for line, content in enumerate(text.split("\n"), start=1):
        if not content.strip():
            continue
        try:
            item = json.loads(content)
        except json.JSONDecodeError as error:
            source.problem(line, error.colno, f"not valid JSON: {error.msg}")
            continue
        except (ValueError, RecursionError) as error:  # a number of 4,300+ digits, nesting too deep
            source.problem(line, 1, f"not usable JSON: {why(error)}")
            continue
        if not isinstance(item, dict):
            source.problem(line, 1, f"each line must be a JSON object, not {type_name(item)}")
            continue
        yield line, item, {name: content.find(json.dumps(name)) + 1 or 1 for name in item}


def _json_array(text: str, source: _Source) -> Iterator[Raw]:
    decoder, index = json.JSONDecoder(), _skip(text, 0)
    starts = [0] + [found.end() for found in re.finditer("\n", text)]

    def _position(text: str, index: int) -> tuple[int, int]:
        line = bisect.bisect_right(starts, index)
        return line, index - starts[line - 1] + 1

    if not text.startswith("[", index):
        raise Located(*_position(text, index), "the file must hold a JSON array of objects")
    index = _skip(text, index + 1)
    while not text.startswith("]", index):
        try:
            item, end = decoder.raw_decode(text, index)
        except json.JSONDecodeError as error:
            raise Located(error.lineno, error.colno, f"not valid JSON: {error.msg}") from None
        except (ValueError, RecursionError) as error:
            raise Located(*_position(text, index), f"not usable JSON: {why(error)}") from None
        line, column = _position(text, index)
        if isinstance(item, dict):
            yield line, item, dict.fromkeys(item, column)  # a value is located at its object
        else:
            source.problem(line, column, f"each item must be an object, not {type_name(item)}")
        index = _skip(text, end)
        if text.startswith(",", index):
            index = _skip(text, index + 1)
        elif not text.startswith("]", index):
            raise Located(*_position(text, index), "not valid JSON: expected ',' or ']'")
    if text[_skip(text, index + 1) :].strip():
        raise Located(*_position(text, _skip(text, index + 1)), "not valid JSON: text after the array")


def _yaml_list(text: str, source: _Source) -> Iterator[Raw]:
    document, problems = parse_yaml(text, file=source.shown)
    if problems:
        raise ManifestError(problems)
    if not isinstance(document.data, list):
        raise Located(1, 1, "the file must hold a YAML list of mappings")
    for index, item in enumerate(document.data):
        line, column = document.mark((index,))
        if isinstance(item, dict):
            columns = {str(name): value for name, value in item.items()}
            yield line, columns, {str(name): document.mark((index, name), key=True)[1] for name in item}
        else:
            source.problem(line, column, f"each item must be a mapping, not {type_name(item)}")


READERS = {
    "csv": lambda text, source: _delimited(text, source, ","),
    "tsv": lambda text, source: _delimited(text, source, "\t"),
    "jsonl": _json_lines,
    "json": _json_array,
    "yaml": _yaml_list,
}


def _skip(text: str, index: int) -> int:
    while index < len(text) and text[index] in " \t\r\n":
        index += 1
    return index


def why(error: Exception) -> str:
    return "nested too deeply" if isinstance(error, RecursionError) else str(error)


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "a mapping"
