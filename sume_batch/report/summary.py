"""The end of a run in a few lines, for the terminal: counts, where the report is, and every job that
needs attention (as `status` lists them too)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sume_batch.states import words

SHOWN_PROBLEMS = 20  # jobs listed at the end of a run; the report lists them all


def summary_text(document: Mapping[str, Any], path: Path) -> str:
    """The end-of-run lines: counts, where the report is, and every job that needs attention."""
    counts = ", ".join(f"{count} {state}" for state, count in document["counts"].items()) or "no jobs"
    elapsed = document["run"]["duration_seconds"]
    lines = [f"Done in {elapsed or 0:.1f} s: {counts}. Report: {path}"]
    if document["run"]["stopped"]:
        lines.append(f"Stopped early: {document['run']['stopped']}")
    attention = [job for job in document["jobs"] if job["failure"] is not None or not job["ok"]]
    for job in attention[:SHOWN_PROBLEMS]:
        pending = {"code": None, "message": words(job["status"]), "request_id": None}
        lines.append(attention_line(job["status"], job["id"], job["sume_job_ids"], job["failure"] or pending))
    if len(attention) > SHOWN_PROBLEMS:
        lines.append(f"  ... and {len(attention) - SHOWN_PROBLEMS:,} more in the report")
    return "\n".join(lines)


def attention_line(state: str, job_id: str, sume_ids: Sequence[str], reason: Mapping[str, Any]) -> str:
    """`  failed: img-1 [job_x]: code: message (request id req_y)`: a job as `status` and the end of a
    `run` list it; `reason` holds its `code`, `message` and `request_id`."""
    why = ": ".join(part for part in (reason["code"], reason["message"]) if part)
    ids = f" [{', '.join(sume_ids)}]" if sume_ids else ""
    request = f" (request id {reason['request_id']})" if reason["request_id"] else ""
    return f"  {state}: {job_id}{ids}{': ' + why if why else ''}{request}"
