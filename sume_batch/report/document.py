"""The report document (what report.json holds, see schemas/report.schema.json), built from the store.

Every string in it passes the redaction gate on the way in; the format modules render it as it is.
"""

from __future__ import annotations

import bisect
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sume_batch import __version__, states
from sume_batch.data import label
from sume_batch.kinds import KINDS
from sume_batch.records import RunRecord, StoredJob, StoreReader
from sume_batch.redact import Failure, Redactor
from sume_batch.reviews import outputs_of, state_of
from sume_batch.states import JobState

REPORT_SCHEMA_VERSION = 1
_RANK: dict[str, int] = {state: n for n, state in enumerate(states.ORDER)}  # display order: problems first


@dataclass(frozen=True)
class Source:
    """What a report needs beyond the store's jobs: whose campaign, and where its files live."""

    campaign: str
    downloads: Path  # where the outputs were saved
    folder: Path  # where this report is written
    run: RunRecord | None  # None: a store from before runs were recorded
    decisions: Mapping[str, Any] | None = None  # the campaign's review decisions (`reviews.load`), if known
    media: str | None = None  # `copy`/`link`: the outputs go into the report folder (`folder.gather_media`)


MEDIA = "media"  # the report folder's own copy of the outputs (`output.report_media`)


def run_folder_name(run: RunRecord) -> str:
    """A run's report folder: its start in UTC and its number, e.g. `20261122T101500Z-run3`."""
    stamp = datetime.fromtimestamp(run.started_at, UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-run{run.seq}"


def build_report(store: StoreReader, source: Source, *, redactor: Redactor, now: float) -> dict[str, Any]:
    """The report document (report.json) of `source.run`, from the store.

    `run` writes it at its end (or after an interrupt); `sume-batch report` may write it at any time,
    so a run that has recorded no end (still going, or killed) is marked partial.
    """
    run = source.run
    jobs = store.plan_of(run.seq if run else None)
    moments = store.moments()
    files: dict[str, list[dict[str, Any]]] = {}
    for item in store.files():
        files.setdefault(item["key"], []).append(item)
    starts = [other.started_at for other in store.runs()]
    downloads = MEDIA if source.media else Path(os.path.relpath(source.downloads, source.folder)).as_posix()
    entries = [
        _job_entry(
            job,
            moments=moments.get(job.key, {}),
            files=files.get(job.key, ()),
            downloads=downloads,
            run=run,
            run_starts=starts,
            redactor=redactor,
            saved_in=source.downloads,
            decisions=source.decisions,
        )
        for job in jobs
    ]
    counts = Counter(entry["status"] for entry in entries)
    by_type: dict[str, Counter[str]] = {}
    for entry in entries:
        by_type.setdefault(entry["type"], Counter())[entry["status"]] += 1
    manifest = (run.info.get("manifest") if run else None) or {}
    run_entry = _run_entry(run, redactor)
    return {
        "object": "report",
        "schema_version": REPORT_SCHEMA_VERSION,
        "tool": f"sume-batch {__version__}",
        "generated_at": _iso(now),
        "campaign": redactor.name(source.campaign),
        "manifest": {
            "path": redactor.name(str(manifest["path"])) if manifest.get("path") else None,
            "sha256": manifest.get("sha256"),
            "git_commit": manifest.get("git_commit"),
            "git_dirty": manifest.get("git_dirty"),
            "data": [
                {**item, "path": redactor.name(str(item.get("path", "")))}
                for item in manifest.get("data") or ()
            ],
            "workspace": redactor.value(manifest["workspace"]) if manifest.get("workspace") else None,
        },
        "run": run_entry,
        "credits": _credits(entries, run),
        "counts": _ordered(counts),
        "types": {kind: _ordered(tally) for kind, tally in sorted(by_type.items())},
        "axes": _axes(entries),
        "ok": not run_entry["partial"] and set(counts) <= states.OK,
        "jobs": entries,
    }


def _credits(entries: Sequence[Mapping[str, Any]], run: RunRecord | None) -> dict[str, Any]:
    """What the run's jobs were estimated to cost, what they may have cost, and what the balance says."""
    before = run.info.get("balance_before") if run else None
    after = run.outcome.get("balance_after") if run else None
    charged = [entry for entry in entries if states.charged(entry["status"], has_files=bool(entry["files"]))]
    sent = [entry for entry in charged if entry["sent_this_run"]]
    return {
        "estimated": sum(entry["credits"]["estimated"] or 0 for entry in entries),
        "unknown_estimates": sum(1 for entry in entries if entry["credits"]["estimated"] is None),
        "reserved": sum(entry["credits"]["reserved"] for entry in charged),
        "reserved_this_run": sum(entry["credits"]["reserved"] for entry in sent),
        "submitted_this_run": len(sent),
        "stated_by_api": _total(entry["credits"]["stated_by_api"] for entry in charged),
        "balance_before": before,
        "balance_after": after,
        "balance_change": before - after if before is not None and after is not None else None,
    }


def _total(values: Iterable[float | None]) -> float | None:
    """The sum of the values known; None when none is."""
    known = [value for value in values if value is not None]
    return sum(known) if known else None


def _run_seconds(run: RunRecord) -> float | None:
    """How long the run took: measured on a monotonic clock when the run recorded it (a jump of the
    wall clock must not make it negative), else from its start and end."""
    measured = run.outcome.get("duration_seconds")
    if isinstance(measured, int | float):
        return float(measured)
    return round(run.ended_at - run.started_at, 3) if run.ended_at is not None else None


def _run_entry(run: RunRecord | None, redactor: Redactor) -> dict[str, Any]:
    if run is None:
        return {"id": None, "number": None, "started_at": None, "ended_at": None, "duration_seconds": None,
                "sandbox": None, "partial": True, "stopped": "the store records no run",
                "exit_code": None, "selection": []}  # fmt: skip
    ended = run.ended_at
    stopped = redactor.text(str(run.outcome["stopped"])) if run.outcome.get("stopped") else None
    if ended is None:  # a shared store's runner done before the others says why itself
        stopped = stopped or "the run recorded no end: still going, or it was killed"
    return {
        "id": run_folder_name(run),
        "number": run.seq,
        "started_at": _iso(run.started_at),
        "ended_at": _iso(ended) if ended is not None else None,
        "duration_seconds": _run_seconds(run),
        "sandbox": run.info.get("sandbox"),
        "partial": ended is None or bool(run.outcome.get("interrupted")),
        "stopped": stopped,
        "exit_code": run.outcome.get("exit_code"),
        "selection": [redactor.name(str(flag)) for flag in run.info.get("selection", [])],
    }


def _job_entry(
    job: StoredJob,
    *,
    moments: Mapping[str, float],
    files: Iterable[Mapping[str, Any]],
    downloads: str,
    run: RunRecord | None,
    run_starts: Sequence[float],
    redactor: Redactor,
    saved_in: Path,
    decisions: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """One job of the report, as the schema's `job`, through the redaction gate: free text (prompt,
    request, error) as text, names people chose (id, matrix, files) as names."""
    kind = KINDS.get(job.kind)
    prompt = job.request.get(kind.prompt_field) if kind and kind.prompt_field else None
    submitted = job.submitted_at or moments.get(JobState.SUBMITTED)
    finished = _finished_at(job.state, moments)
    failed = job.state in states.FAILURES or (
        job.state not in states.OK and bool(job.error_code or job.error_message)
    )
    failed_id = job.error_job_id or (job.sume_ids[0] if len(job.sume_ids) == 1 else None)
    failure = redactor.failure(
        job_id=failed_id, status=job.state, code=job.error_code,
        message=job.error_message or states.words(job.state), request_id=job.request_id,
    ) if failed else None  # fmt: skip
    downloaded = moments.get(JobState.DOWNLOADED)
    sent = moments.get(JobState.SUBMITTING)
    matrix = {redactor.name(str(axis)): _matrix_value(value, redactor) for axis, value in job.matrix.items()}
    return {
        "id": redactor.name(job.id),
        "key": job.key,
        "type": job.kind,
        "matrix": matrix,
        "prompt": redactor.text(str(prompt)) if prompt is not None else None,
        "request": redactor.value(dict(job.request)),
        "status": job.state,
        "ok": job.state in states.OK and not failed,
        "attempts": job.attempts,
        "timings": {
            "submitted_at": _iso(submitted) if submitted else None,
            "finished_at": _iso(finished) if finished else None,
            "seconds": round(finished - submitted, 3) if finished and submitted else None,
        },
        "sume_job_ids": list(job.sume_ids),
        "request_ids": [redactor.text(job.request_id)] if job.request_id else [],
        "candidates": list(job.candidates),
        "failure": failure.as_dict() if failure else None,
        "credits": {"estimated": job.estimate, "reserved": job.reserved, "stated_by_api": job.required},
        "sent_this_run": run is not None and sent is not None and sent >= run.started_at,
        "files": [_file_entry(item, downloads, redactor, saved_in=saved_in) for item in files],
        "review": _review(job.key, files, decisions, redactor),
        "provenance": _provenance(downloaded, run, run_starts),
    }


def _matrix_value(value: object, redactor: Redactor) -> Any:
    return redactor.name(value) if isinstance(value, str) else redactor.value(value)


def _file_entry(
    item: Mapping[str, Any], downloads: str, redactor: Redactor, *, saved_in: Path
) -> dict[str, Any]:
    """An output file; `downloads` is the outputs' folder relative to the report's, for the gallery;
    one no longer where the run saved it (in `saved_in`) is marked missing."""
    names = ("sha256", "bytes", "content_type")
    path = redactor.name(f"{downloads}/{item['path']}")
    entry = {"path": path, **{name: item[name] for name in names}, "sume_job_id": item["sume_id"]}
    if not os.path.isfile(saved_in / item["path"]):
        entry["missing"] = True
    return entry


def _review(
    key: str, files: Iterable[Mapping[str, Any]], decisions: Mapping[str, Any] | None, redactor: Redactor
) -> dict[str, Any] | None:
    """The job's review state, rating and comment (see `reviews`), or None without a decisions file."""
    if decisions is None:
        return None
    outputs = outputs_of(files)
    marks = [(decisions.get(key) or {}).get("outputs", {}).get(one.sha256) or {} for one in outputs]
    rating = next((mark["rating"] for mark in marks if mark.get("rating")), None)
    comment = next((mark["comment"] for mark in marks if mark.get("comment")), None)
    return {"state": state_of(decisions.get(key), outputs), "rating": rating,
            "comment": redactor.text(comment) if comment else None}  # fmt: skip


def _finished_at(state: str, moments: Mapping[str, float]) -> float | None:
    """When generation ended: completed, or the state it failed in."""
    if state in states.FAILURES:
        return moments.get(state)
    return moments.get(JobState.COMPLETED)


def _provenance(
    downloaded: float | None, run: RunRecord | None, starts: Sequence[float]
) -> dict[str, Any] | None:
    """When the outputs were made, by which run, and whether this run reused them rather than buying them."""
    if downloaded is None:
        return None
    made_by = bisect.bisect_right(starts, downloaded)  # the number of the last run started before then
    return {
        "downloaded_at": _iso(downloaded),
        "run_number": made_by or None,
        "reused": run is not None and downloaded < run.started_at,
    }


def _axes(entries: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Every matrix axis and its values, as shown in the filters."""
    axes: dict[str, dict[str, None]] = {}
    for entry in entries:
        for axis, value in entry["matrix"].items():
            axes.setdefault(axis, {})[show(value)] = None
    return {axis: list(values) for axis, values in axes.items()}


def _ordered(counts: Mapping[str, int]) -> dict[str, int]:
    """Counts by state in display order; a state this version does not know comes first."""
    return {state: counts[state] for state in sorted(counts, key=lambda state: (_RANK.get(state, -1), state))}


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def show(value: object) -> str:
    """A matrix value as text (`data.label`): a mapping by its name, key or id, else as JSON."""
    return value if isinstance(value, str) else label(value)


def failure_text(job: Mapping[str, Any]) -> str:
    """A job's failure as one line (as `Failure` says it), with the ids an uncertain create may have made."""
    text = str(Failure(**job["failure"]))
    return f"{text}; it may have made {', '.join(job['candidates'])}" if job["candidates"] else text
