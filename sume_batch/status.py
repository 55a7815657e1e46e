"""`sume-batch status`: where a campaign's runs stand, read from its store and nothing else.

It sends no request and takes no lock, so it is safe while a run is going.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sume_batch.errors import UsageError
from sume_batch.store import reading

ATTENTION = ("uncertain", "failed", "canceled", "expired", "rejected", "timed_out", "skipped")
NEXT_RUN = {  # what the next `run` does with a job in each state
    "planned": "submit", "reserved": "submit", "skipped": "submit",
    "submitted": "poll", "timed_out": "poll", "completed": "download", "fetched": "download",
    "submitting": "report uncertain", "uncertain": "leave (resubmit only on request)",
    "failed": "leave (retry only on request)", "canceled": "leave (retry only on request)",
    "expired": "leave (retry only on request)", "rejected": "leave (retry only on request)",
    "downloaded": "reuse",
}  # fmt: skip


def read_status(path: Path) -> dict[str, Any]:
    """The status of the store at `path` as a documented object (`--json` prints it)."""
    if not path.exists():
        raise UsageError(f"no run store at {path}: this campaign has not been run yet")
    with reading(path) as store:
        jobs, (reserved, stated) = store.jobs(), store.credits()
    counts = Counter(job.state for job in jobs.values())
    attention = [
        {"id": job.id, "state": job.state, "sume_job_ids": list(job.sume_ids), "code": job.error_code,
         "message": job.error_message, "request_id": job.request_id}
        for job in sorted(jobs.values(), key=lambda job: job.id) if job.state in ATTENTION
    ]  # fmt: skip
    next_run = Counter(NEXT_RUN.get(state, "poll") for state in counts.elements())
    return {
        "object": "status", "store": str(path), "jobs": len(jobs), "counts": dict(sorted(counts.items())),
        "credits": {"reserved": reserved, "stated_by_api": stated}, "attention": attention,
        "next_run": dict(sorted(next_run.items())),
    }  # fmt: skip


def status_text(status: Mapping[str, Any]) -> str:
    counts = ", ".join(f"{count} {state}" for state, count in status["counts"].items()) or "no jobs"
    reserved, stated = status["credits"]["reserved"], status["credits"]["stated_by_api"]
    lines = [
        f"{status['store']}: {status['jobs']} jobs: {counts}",
        f"credits reserved: {reserved:,.0f} (stated by the API: {stated:,.0f})",
        "next run: " + ", ".join(f"{action} {count}" for action, count in status["next_run"].items()),
    ]
    for job in status["attention"]:
        lines.append(attention_line(job["state"], job["id"], job["sume_job_ids"], job))
    return "\n".join(lines)


def attention_line(state: str, job_id: str, sume_ids: Sequence[str], reason: Mapping[str, Any]) -> str:
    """`  failed: img-1 [job_x]: code: message (request id req_y)`: a job as `status` and the end of a
    `run` list it; `reason` holds its `code`, `message` and `request_id`."""
    why = ": ".join(part for part in (reason["code"], reason["message"]) if part)
    ids = f" [{', '.join(sume_ids)}]" if sume_ids else ""
    request = f" (request id {reason['request_id']})" if reason["request_id"] else ""
    return f"  {state}: {job_id}{ids}{': ' + why if why else ''}{request}"
