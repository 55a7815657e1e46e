"""report.html: the report document as one self-contained page (jinja2, sume_batch/templates/report.html.j2).

Inline CSS and script, allowed by hash in its Content-Security-Policy; nothing from the network. The
summary, chart and failures table are HTML (autoescaped: prompts and errors are data, never markup);
the gallery is drawn by report.js, a page of cards at a time, from the jobs embedded once as JSON in
an inert `<script type="application/json">` block, so a page of 100,000 jobs opens in a second or two
(issue 13). The block is streamed, a batch of jobs per call of the C JSON encoder.

The block (`data_chunks`) holds one object; report.js reads it by these positions:

    {"states": [[state, class, words], ...],   status filter; class: ok, bad or pending
     "types": [type, ...], "axes": [[axis, [value, ...]], ...],
     "jobs": [[id, state, type, [axis, value, ...], prompt, failure, ok, [[kind, href], ...], facts], ...]}

where a job's state, type, axes and values are indexes into those lists (its matrix in its own order),
prompt and failure are text or null, ok is 0 or 1, and a file's kind is one of `MEDIA` (0 image, 1
video, 2 a link, 3 missing: no longer where the run saved it), its href the path relative to the
page, percent-encoded; facts is one line of what the job cost and was (`4 credits · job_abc123 · 1
attempt · 3.2 s`).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from importlib import resources
from itertools import islice
from json import JSONEncoder
from typing import Any, TextIO
from urllib.parse import quote

import jinja2

from sume_batch import states
from sume_batch.report.document import failure_text, show

STATE_CLASS = {str(state): "ok" for state in states.OK} | {str(state): "bad" for state in states.FAILURES}
MEDIA = ("image", "video", "link")  # how the gallery shows a file, by the start of its content type
MISSING = len(MEDIA)  # a file no longer where the run saved it
CHART_WIDTH = 560  # px of the longest bar
# Jobs per call of the encoder: enough to keep the work in C, few enough that a batch's rows (about
# 4 containers each) are gone before the cyclic GC's youngest generation fills (700): rows that live
# longer are promoted and set off full collections over the whole document, 0.7 s each at 100,000 jobs.
BATCH = 100
_ENCODER = JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)
# In a script element only `</script` or `<!--` can end or derail the data; with every `<` escaped
# neither can occur. `>` and `&` go too, and the two line separators, so the text stays valid in any
# script context it may be pasted into. They occur only inside JSON strings, where \uXXXX means them.
_SCRIPT_SAFE = (
    ("<", "\\u003c"),
    (">", "\\u003e"),
    ("&", "\\u0026"),
    ("\u2028", "\\u2028"),
    ("\u2029", "\\u2029"),
)


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
    return template.generate(
        report=document,
        total=len(jobs),
        jobs=jobs,
        failures=[n for n, job in enumerate(jobs) if job["failure"] is not None],  # ints: nothing for the GC
        chart=_chart(document),
        cards=_cards(document),
        data=data_chunks(document),
        style=style,
        script=script,
        csp=content_policy(script, style),
        state_class=_state_class,
    )


def data_chunks(document: Mapping[str, Any]) -> Iterator[str]:
    """The job data block's text (see the module's docstring), safe inside a script element."""
    statuses = list(document["counts"])
    axes = document["axes"]
    head = {
        "states": [[state, _state_class(state), states.words(state)] for state in statuses],
        "types": list(document["types"]),
        "axes": [[axis, values] for axis, values in axes.items()],
    }
    yield script_safe(_ENCODER.encode(head)[:-1] + ',"jobs":[')
    index = _Index(statuses, list(document["types"]), axes)
    rows = map(index.row, document["jobs"])
    separator = ""
    while batch := list(islice(rows, BATCH)):
        yield separator + script_safe(_ENCODER.encode(batch)[1:-1])
        separator = ","
    yield "]}"


class _Index:
    """A job as the data block's row: its state, type and matrix as indexes into the block's lists."""

    def __init__(self, statuses: Sequence[str], types: Sequence[str], axes: Mapping[str, Sequence[str]]):
        self.status = {state: n for n, state in enumerate(statuses)}
        self.type = {kind: n for n, kind in enumerate(types)}
        self.axis = {axis: n for n, axis in enumerate(axes)}
        self.value = {axis: {value: n for n, value in enumerate(values)} for axis, values in axes.items()}

    def row(self, job: Mapping[str, Any]) -> list[Any]:
        matrix: list[int] = []
        for axis, value in job["matrix"].items():
            matrix += (self.axis[axis], self.value[axis][_shown(value)])
        failure = failure_text(job) if job["failure"] is not None else None
        files = [
            [MISSING if item.get("missing") else _media(item["content_type"]), quote(item["path"], safe="/")]
            for item in job["files"]
        ]
        return [job["id"], self.status[job["status"]], self.type[job["type"]], matrix, job["prompt"],
                failure, int(job["ok"]), files, facts(job)]  # fmt: skip


def facts(job: Mapping[str, Any]) -> str:
    """What a card says a job cost and was: credits (stated, reserved or estimated), its Sume job
    ids, attempts and how long it took."""
    money = job["credits"]
    spent = money["stated_by_api"] if money["stated_by_api"] is not None else money["reserved"] or None
    credits = spent if spent is not None else money["estimated"]
    parts = (
        [f"{credits:g} credits" + ("" if spent is not None else " (estimate)")] if credits is not None else []
    )
    ids = job["sume_job_ids"]
    parts += [", ".join(ids[:2]) + (f" +{len(ids) - 2}" if len(ids) > 2 else "")] if ids else []
    if job["attempts"]:
        parts.append(f"{job['attempts']} attempt{'s' if job['attempts'] != 1 else ''}")
    if job["timings"]["seconds"] is not None:
        parts.append(f"{job['timings']['seconds']:.1f} s")
    review = job.get("review") or {}
    if review.get("state") not in (None, "unreviewed") or review.get("rating"):
        parts.append(review["state"] + (f" ★{review['rating']}" if review.get("rating") else ""))
    return " · ".join(parts)


def _shown(value: object) -> str:
    """`show(value)`, without a call of the JSON encoder for the usual values (a call costs more than
    the rest of a job's row): a string is itself, and JSON writes an int as `int.__repr__` does."""
    if type(value) is str:
        return value
    return repr(value) if type(value) is int else show(value)


def script_safe(text: str) -> str:
    for character, escaped in _SCRIPT_SAFE:
        text = text.replace(character, escaped)
    return text


def _state_class(state: str) -> str:
    return STATE_CLASS.get(state, "pending")


@cache
def _media(content_type: str) -> int:
    """How the gallery shows a file of this type: as an image, a video or a link (an index of MEDIA)."""
    kind = str(content_type).partition("/")[0]
    return MEDIA.index(kind) if kind in MEDIA[:2] else MEDIA.index("link")


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


def content_policy(script: str, style: str, *, connect: str = "'none'") -> str:
    """Nothing from the network; only our own script and style run (by hash), media from beside the file.

    The job data block is not script (its type is application/json): no policy applies to it, and it
    never runs."""

    def digest(text: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"

    return (
        f"default-src 'none'; script-src {digest(script)}; style-src {digest(style)}; "
        "img-src 'self' file: data:; media-src 'self' file:; base-uri 'none'; form-action 'none'; "
        f"connect-src {connect}"
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
