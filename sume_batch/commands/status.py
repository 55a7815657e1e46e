"""`sume-batch status`: where a campaign's runs stand, read from its store and nothing else.

It sends no request and takes no lock, so it is safe while a run is going.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sume_batch.commands.common import chosen_store
from sume_batch.errors import UsageError
from sume_batch.manifest import load_manifest
from sume_batch.records import Place, reading
from sume_batch.report.summary import attention_line
from sume_batch.states import ATTENTION, next_run_of

Echo = Callable[[str], None]


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
        else chosen_store(load_manifest(target, roots=roots, unread_ok=True), state_dir, env, sandbox)
    )
    result = read_status(path)
    echo(json.dumps(result, indent=2, ensure_ascii=False) if as_json else status_text(result))
    return 0


def read_status(path: Place) -> dict[str, Any]:
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
    next_run = Counter(str(next_run_of(state)) for state in counts.elements())
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
