"""report.html: the report document as one self-contained page (jinja2, sume_batch/templates/report.html.j2).

Inline CSS and script, allowed by hash in its Content-Security-Policy; nothing from the network. The
template autoescapes: prompts and errors are data, never markup.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator, Mapping
from functools import cache
from importlib import resources
from typing import Any, TextIO
from urllib.parse import quote

import jinja2

from sume_batch import states
from sume_batch.report.document import failure_text, show

STATE_CLASS = {state: "ok" for state in states.OK} | {state: "bad" for state in states.FAILURES}
# The template asks `pending.get(state, state)` for a job it shows no media for.
PENDING = {state: states.words(state) for state in states.JobState}
MEDIA_KINDS = ("image/", "video/")
CHART_WIDTH = 560  # px of the longest bar


def report_html(document: Mapping[str, Any]) -> str:
    return "".join(html_chunks(document))


def write_html(document: Mapping[str, Any], handle: TextIO) -> None:
    handle.writelines(html_chunks(document))


def html_chunks(document: Mapping[str, Any]) -> Iterator[str]:
    """The page, streamed as the template renders it."""
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
        pending=PENDING,
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
    longest = max((sum(tally.values()) for tally in types.values()), default=1) or 1
    rows = []
    for n, (kind, tally) in enumerate(types.items()):
        x, segments = 0.0, []
        for state, count in tally.items():
            width = CHART_WIDTH * count / longest
            segments.append(
                {"state": state, "count": count, "x": round(x, 2), "width": round(max(width, 1), 2)}
            )
            x += width
        rows.append({"type": kind, "y": n * 34, "total": sum(tally.values()), "segments": segments})
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
