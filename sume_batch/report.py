"""The report stage: report.json (see schemas/report.schema.json), report.html and junit.xml, from the store.

A report covers one run: the jobs that run planned, where each one stands now, and what the run
cost. It is built from the store alone (`sume-batch report` rewrites it at any time, even while a
run goes on) and every string in it passes the redaction gate once more on the way out, though the
store holds only redacted text already: a report is the file people attach to tickets.

Layout: `<output.reports>/<campaign>/<run>/` holds the three files and the run's `run.log`;
`<output.reports>/<campaign>/latest` is a symlink to the newest run's folder. Output file paths in
the reports are relative to the report's folder, so report.html opens its gallery from disk; the
`latest` link sits beside the run folders, so the same relative paths work through it.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import json
import os
import re
import subprocess
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape, quoteattr

import jinja2

from sume_batch import __version__
from sume_batch.kinds import KINDS
from sume_batch.redact import Failure, Redactor
from sume_batch.store import CHARGED, RunRecord, RunStore, StoredJob

FORMATS = ("html", "json", "junit")
FILE_NAMES = {"html": "report.html", "json": "report.json", "junit": "junit.xml"}
REPORT_SCHEMA_VERSION = 1

OK = frozenset({"downloaded"})
FAILED = frozenset({"failed", "canceled", "expired", "rejected", "uncertain", "timed_out"})
# Where a job that is neither done nor failed stands, in words for people.
PENDING_WORDS = {
    "planned": "not submitted", "reserved": "not submitted", "skipped": "skipped (budget)",
    "submitting": "being submitted", "submitted": "generating", "completed": "not downloaded yet",
    "fetched": "not downloaded yet",
}  # fmt: skip
# Display order of states: problems first, then what is unfinished, then what is done.
STATE_ORDER = (
    "failed", "uncertain", "timed_out", "rejected", "expired", "canceled", "skipped", "planned", "reserved",
    "submitting", "submitted", "completed", "fetched", "downloaded",
)  # fmt: skip
MEDIA_KINDS = ("image/", "video/")
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


@dataclass(frozen=True)
class Source:
    """What a report needs beyond the store's jobs: whose campaign, and where its files live."""

    campaign: str
    downloads: Path  # where the outputs were saved
    folder: Path  # where this report is written
    run: RunRecord | None  # None: a store from before runs were recorded


def run_folder_name(run: RunRecord) -> str:
    """A run's report folder: its start in UTC and its number, e.g. `20261122T101500Z-run3`."""
    stamp = datetime.fromtimestamp(run.started_at, UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-run{run.seq}"


def git_revision(path: Path) -> tuple[str | None, bool | None]:
    """The commit of the file's repository and whether the file differs from it; (None, None) outside git."""
    try:
        commit = _git("rev-parse", "HEAD", cwd=path.parent)
        changed = _git("status", "--porcelain", "--", path.name, cwd=path.parent)
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit or None, bool(changed)


def _git(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True)  # noqa: S603, S607
    return done.stdout.strip()


def build_report(store: RunStore, source: Source, *, redactor: Redactor, now: float) -> dict[str, Any]:
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
    downloads = Path(os.path.relpath(source.downloads, source.folder)).as_posix()
    entries = [
        _job_entry(
            job,
            moments=moments.get(job.key, {}),
            files=files.get(job.key, ()),
            downloads=downloads,
            run=run,
            run_starts=starts,
            redactor=redactor,
        )
        for job in jobs
    ]
    counts = Counter(entry["status"] for entry in entries)
    by_type: dict[str, Counter[str]] = {}
    for entry in entries:
        by_type.setdefault(entry["type"], Counter())[entry["status"]] += 1
    info = dict(run.info) if run else {}
    outcome = dict(run.outcome) if run else {}
    before, after = info.get("balance_before"), outcome.get("balance_after")
    charged = [entry for entry in entries if _charged(entry)]
    sent = [entry for entry in charged if entry["sent_this_run"]]
    manifest = info.get("manifest") or {}
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
        },
        "run": run_entry,
        "credits": {
            "estimated": sum(entry["credits"]["estimated"] or 0 for entry in entries),
            "unknown_estimates": sum(1 for entry in entries if entry["credits"]["estimated"] is None),
            "reserved": sum(entry["credits"]["reserved"] for entry in charged),
            "reserved_this_run": sum(entry["credits"]["reserved"] for entry in sent),
            "submitted_this_run": len(sent),
            "stated_by_api": _total(entry["credits"]["stated_by_api"] for entry in charged),
            "balance_before": before,
            "balance_after": after,
            "balance_change": before - after if before is not None and after is not None else None,
        },
        "counts": _ordered(counts),
        "types": {kind: _ordered(states) for kind, states in sorted(by_type.items())},
        "axes": _axes(entries),
        "ok": not run_entry["partial"] and set(counts) <= OK,
        "jobs": entries,
    }


def _charged(entry: Mapping[str, Any]) -> bool:
    """Whether a job may have cost credits: as the store counts them, plus a Face Swap whose other
    avatars failed but whose files were made (paid for)."""
    return entry["status"] in CHARGED or (entry["status"] == "failed" and bool(entry["files"]))


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
    if ended is None:
        stopped = "the run recorded no end: still going, or it was killed"
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
) -> dict[str, Any]:
    """One job of the report, as the schema's `job`, through the redaction gate: free text (prompt,
    request, error) as text, names people chose (id, matrix, files) as names."""
    kind = KINDS.get(job.kind)
    prompt = job.request.get(kind.prompt_field) if kind and kind.prompt_field else None
    submitted = job.submitted_at or moments.get("submitted")
    finished = _finished_at(job.state, moments)
    failed = job.state in FAILED or (job.state not in OK and bool(job.error_code or job.error_message))
    failed_id = job.error_job_id or (job.sume_ids[0] if len(job.sume_ids) == 1 else None)
    failure = redactor.failure(
        job_id=failed_id, status=job.state, code=job.error_code,
        message=job.error_message or PENDING_WORDS.get(job.state, job.state), request_id=job.request_id,
    ) if failed else None  # fmt: skip
    downloaded = moments.get("downloaded")
    sent = moments.get("submitting")
    matrix = {redactor.name(str(axis)): _matrix_value(value, redactor) for axis, value in job.matrix.items()}
    return {
        "id": redactor.name(job.id),
        "key": job.key,
        "type": job.kind,
        "matrix": matrix,
        "prompt": redactor.text(str(prompt)) if prompt is not None else None,
        "request": redactor.value(dict(job.request)),
        "status": job.state,
        "ok": job.state in OK and not failed,
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
        "files": [_file_entry(item, downloads, redactor) for item in files],
        "provenance": _provenance(downloaded, run, run_starts),
    }


def _matrix_value(value: object, redactor: Redactor) -> Any:
    return redactor.name(value) if isinstance(value, str) else redactor.value(value)


def _file_entry(item: Mapping[str, Any], downloads: str, redactor: Redactor) -> dict[str, Any]:
    """An output file; `downloads` is the outputs' folder relative to the report's, for the gallery."""
    names = ("sha256", "bytes", "content_type")
    path = redactor.name(f"{downloads}/{item['path']}")
    return {"path": path, **{name: item[name] for name in names}, "sume_job_id": item["sume_id"]}


def _finished_at(state: str, moments: Mapping[str, float]) -> float | None:
    """When generation ended: completed, or the state it failed in."""
    if "completed" in moments and state not in FAILED:
        return moments["completed"]
    return moments.get(state) if state in FAILED else None


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
    rank = {state: n for n, state in enumerate(STATE_ORDER)}
    return {state: counts[state] for state in sorted(counts, key=lambda state: (rank.get(state, -1), state))}


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def show(value: object) -> str:
    """A matrix value as text: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)


# --- writing -------------------------------------------------------------------------------------------


def write_reports(
    document: Mapping[str, Any], folder: Path, formats: Sequence[str] = FORMATS
) -> dict[str, Path]:
    """Write the chosen formats into `folder`, each atomically (OSError if the folder is not writable)."""
    folder.mkdir(parents=True, exist_ok=True)
    render = {"json": json_chunks, "html": html_chunks, "junit": junit_chunks}
    written = {}
    for name in FORMATS:
        if name in formats:
            written[name] = _write(folder / FILE_NAMES[name], render[name](document))
    return written


def point_latest(folder: Path) -> Path:
    """Make `<folder's parent>/latest` a relative symlink to `folder`, replaced atomically."""
    link = folder.parent / "latest"
    partial = folder.parent / f".latest.{os.getpid()}"
    partial.unlink(missing_ok=True)
    partial.symlink_to(folder.name, target_is_directory=True)
    try:
        partial.replace(link)
    finally:
        partial.unlink(missing_ok=True)
    return link


def _write(path: Path, chunks: Iterable[str]) -> Path:
    """Stream the chunks to a temporary name of this process, then rename: a reader sees the old file
    or the new one, and a `report` writing while `run` does cannot mix the two."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        with partial.open("w", encoding="utf-8") as handle:
            handle.writelines(chunks)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def json_chunks(document: Mapping[str, Any]) -> Iterator[str]:
    """Indented JSON, one line per job: readable, grep-friendly, and written by the C encoder."""
    head = {key: value for key, value in document.items() if key != "jobs"}
    text = json.dumps(head, indent=2, ensure_ascii=False)
    yield text[:-2] + ',\n  "jobs": ['
    for n, job in enumerate(document.get("jobs", ())):
        yield ("\n    " if n == 0 else ",\n    ") + json.dumps(job, ensure_ascii=False)
    yield "\n  ]\n}\n" if document.get("jobs") else "]\n}\n"


def report_junit(document: Mapping[str, Any]) -> str:
    return "".join(junit_chunks(document))


def junit_chunks(document: Mapping[str, Any]) -> Iterator[str]:
    """JUnit XML: one test suite per job type, one test case per job.

    classname is `<campaign>.<type>` and the name is the job id with its matrix values, so CI
    dashboards group cases by type and tell variants apart; each case also carries its matrix
    values as properties. Failed, uncertain, timed-out, canceled, expired and refused jobs are
    failures; jobs the run did not finish (skipped by the budget, not yet submitted or downloaded)
    are skipped.
    """
    campaign = document["campaign"]
    by_type: dict[str, list[Mapping[str, Any]]] = {kind: [] for kind in document["types"]}
    for job in document["jobs"]:
        by_type.setdefault(job["type"], []).append(job)
    tallies = {kind: _tally(jobs) for kind, jobs in by_type.items()}
    yield '<?xml version="1.0" encoding="UTF-8"?>\n'
    yield f"<testsuites{_attributes(name=f'sume-batch {campaign}', **_tally(document['jobs']))}>\n"
    for kind, jobs in by_type.items():
        yield f"  <testsuite{_attributes(name=f'{campaign}.{kind}', **tallies[kind])}>\n"
        for job in jobs:
            yield _case(f"{campaign}.{kind}", job)
        yield "  </testsuite>\n"
    yield "</testsuites>\n"


def _case(classname: str, job: Mapping[str, Any]) -> str:
    seconds = f"{job['timings']['seconds'] or 0:.3f}"
    inner = []
    if job["matrix"]:
        properties = "".join(
            f"        <property{_attributes(name=f'matrix.{axis}', value=show(value))}/>\n"
            for axis, value in job["matrix"].items()
        )
        inner.append(f"      <properties>\n{properties}      </properties>\n")
    if job["failure"] is not None:
        text = failure_text(job)
        kind = job["failure"]["status"] or job["status"]
        inner.append(f"      <failure{_attributes(type=kind, message=text)}>{escape(_xml(text))}</failure>\n")
    elif not job["ok"]:
        reason = PENDING_WORDS.get(job["status"], job["status"])
        inner.append(f"      <skipped{_attributes(message=reason)}/>\n")
    head = f"    <testcase{_attributes(classname=classname, name=case_name(job), time=seconds)}"
    return f"{head}>\n{''.join(inner)}    </testcase>\n" if inner else f"{head}/>\n"


def _tally(jobs: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    failures = sum(1 for job in jobs if job["failure"] is not None)
    skipped = sum(1 for job in jobs if job["failure"] is None and not job["ok"])
    seconds = sum(job["timings"]["seconds"] or 0 for job in jobs)
    return {"tests": str(len(jobs)), "failures": str(failures), "errors": "0", "skipped": str(skipped),
            "time": f"{seconds:.3f}"}  # fmt: skip


def _attributes(**values: str) -> str:
    return "".join(f" {name}={quoteattr(_xml(value))}" for name, value in values.items())


def case_name(job: Mapping[str, Any]) -> str:
    """`hero-beach [scene=beach, format=story]`: the job id and its matrix values."""
    values = ", ".join(f"{axis}={show(value)}" for axis, value in job["matrix"].items())
    return f"{job['id']} [{values}]" if values else job["id"]


def failure_text(job: Mapping[str, Any]) -> str:
    """A job's failure as one line (as `Failure` says it), with the ids an uncertain create may have made."""
    text = str(Failure(**job["failure"]))
    return f"{text}; it may have made {', '.join(job['candidates'])}" if job["candidates"] else text


def _xml(text: str) -> str:
    """Text XML 1.0 can hold (control characters are not allowed even escaped)."""
    return _XML_ILLEGAL.sub("\N{REPLACEMENT CHARACTER}", text)


# --- HTML ----------------------------------------------------------------------------------------------

STATE_CLASS = {state: "ok" for state in OK} | {state: "bad" for state in FAILED}
CHART_WIDTH = 560  # px of the longest bar


def report_html(document: Mapping[str, Any]) -> str:
    return "".join(html_chunks(document))


def html_chunks(document: Mapping[str, Any]) -> Iterator[str]:
    """One self-contained page: inline CSS and script (allowed by hash in its CSP), no network."""
    template = _templates().get_template("report.html.j2")
    script = _asset("report.js")
    style = _asset("report.css")
    jobs = document["jobs"]
    failures = [job for job in jobs if job["failure"] is not None]
    axes = list(document["axes"])
    return template.generate(
        report=document,
        jobs=jobs,
        failures=failures,
        axes=axes,
        chart=_chart(document),
        states=list(document["counts"]),
        cards=_cards(document),
        style=style,
        script=script,
        csp=_csp(script, style),
        state_class=lambda state: STATE_CLASS.get(state, "pending"),
        media=_media,
        split_files=_split_files,
        axis_values=lambda job: [
            show(job["matrix"].get(axis)) if axis in job["matrix"] else "" for axis in axes
        ],
        failure_text=failure_text,
        pending=PENDING_WORDS,
        href=lambda path: quote(path, safe="/"),
        show=show,
    )


def _media(item: Mapping[str, Any]) -> str:
    """How the gallery shows one file: image, video, or a link."""
    content_type = str(item["content_type"])
    return next((kind.rstrip("/") for kind in MEDIA_KINDS if content_type.startswith(kind)), "link")


def _split_files(job: Mapping[str, Any]) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """A job's files: those the gallery shows (images, videos), and the rest (linked)."""
    files = job["files"]
    return [f for f in files if _media(f) != "link"], [f for f in files if _media(f) == "link"]


def _cards(document: Mapping[str, Any]) -> list[dict[str, str]]:
    counts, credits, run = document["counts"], document["credits"], document["run"]
    total = sum(counts.values())
    done = sum(1 for job in document["jobs"] if job["ok"])
    bad = sum(1 for job in document["jobs"] if job["failure"] is not None)
    spent = credits["balance_change"]
    duration = run["duration_seconds"]
    return [
        {"label": "Jobs", "value": f"{done:,} of {total:,} done",
         "detail": f"{bad:,} failed or uncertain · {total - done - bad:,} unfinished"},
        {"label": "Credits", "value": f"{_number(credits['estimated'])} estimated",
         "detail": f"{_number(credits['reserved'])} reserved ({_number(credits['reserved_this_run'])} by"
                   f" this run) · {_number(credits['stated_by_api'])} stated by the API · balance change"
                   f" {_number(spent)}"},
        {"label": "Duration", "value": _duration(duration) if duration is not None else "unfinished",
         "detail": f"started {run['started_at'] or 'unknown'}"},
    ]  # fmt: skip


def _chart(document: Mapping[str, Any]) -> dict[str, Any]:
    """Stacked bars of jobs by state for each type, as SVG geometry."""
    types = document["types"]
    longest = max((sum(states.values()) for states in types.values()), default=1) or 1
    rows = []
    for n, (kind, states) in enumerate(types.items()):
        x, segments = 0.0, []
        for state, count in states.items():
            width = CHART_WIDTH * count / longest
            segments.append(
                {"state": state, "count": count, "x": round(x, 2), "width": round(max(width, 1), 2)}
            )
            x += width
        rows.append({"type": kind, "y": n * 34, "total": sum(states.values()), "segments": segments})
    return {"rows": rows, "height": len(rows) * 34, "width": CHART_WIDTH}


def _number(value: float | None) -> str:
    if value is None:
        return "unknown"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return (
        f"{hours} h {minutes} min" if hours else f"{minutes} min {rest} s" if minutes else f"{seconds:.1f} s"
    )


def _csp(script: str, style: str) -> str:
    """Nothing from the network; only our own script and style run (by hash), media from beside the file."""

    def digest(text: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"

    return (
        f"default-src 'none'; script-src {digest(script)}; style-src {digest(style)}; "
        "img-src 'self' file: data:; media-src 'self' file:; base-uri 'none'; form-action 'none'"
    )


@cache
def _templates() -> jinja2.Environment:
    """Autoescaping for every template: prompts and errors are data, never markup."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("sume_batch", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


@cache
def _asset(name: str) -> str:
    return resources.files("sume_batch").joinpath("templates", name).read_text("utf-8")
