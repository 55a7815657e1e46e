"""report.json: the report document as indented JSON with one line per job, streamed."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any, TextIO

_ONE_LINE = json.JSONEncoder(ensure_ascii=False)  # the C encoder: a job is the bulk of a large report


def write_json(document: Mapping[str, Any], handle: TextIO) -> None:
    handle.writelines(json_chunks(document))


def json_chunks(document: Mapping[str, Any]) -> Iterator[str]:
    """Indented JSON, one line per job, "jobs" last: readable, grep-friendly, and streamed job by job."""
    yield "{\n"
    for key, value in document.items():
        if key != "jobs":
            yield f"  {_member(key, value)},\n"
    jobs = document.get("jobs", ())
    if not jobs:
        yield '  "jobs": []\n}\n'
        return
    yield '  "jobs": [\n'
    for n, job in enumerate(jobs):
        yield ("    " if n == 0 else ",\n    ") + _ONE_LINE.encode(job)
    yield "\n  ]\n}\n"


def _member(key: str, value: Any) -> str:
    """`"key": value` of the top-level object, the value indented one level (as `json.dumps` of the
    whole would); only structure breaks lines, since JSON writes a newline in a string as `\\n`."""
    text = json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n  ")
    return f"{_ONE_LINE.encode(key)}: {text}"
