"""review.html: the page a person picks takes from (issue 16), self-contained like report.html.

Takes are laid out by two matrix axes (rows × columns, chosen on the page), each tile with its media
at its true aspect ratio, id, cost, job id, duration and prompt, and its review state. Keyboard alone
or a tap: ←/→ (j/k) move, p pick, x reject, u clear, 1–5 rate, c comment, Enter enlarge. The page
exports `reviews/<campaign>.yaml`; served on loopback (`sume-batch review --serve`), it saves each
decision there at once. The data block:

    {"campaign", "file", "served", "axes": [axis, ...], "decisions": {...as the file has them...},
     "jobs": [[id, key, [value per axis], prompt, facts, [[kind, href, sha256], ...]], ...]}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

import jinja2

from sume_batch.report.document import show
from sume_batch.report.html import MEDIA, content_policy, facts, script_safe


def review_html(document: Mapping[str, Any], decisions: Mapping[str, Any], *, file: str, served: bool) -> str:
    """The review page of a report document's jobs that have outputs to look at."""
    axes = list(document["axes"])
    jobs = []
    for job in document["jobs"]:
        files = [
            [MEDIA.index(kind), item["path"], item["sha256"]]
            for item in job["files"]
            if not item.get("missing") and (kind := item["content_type"].split("/")[0]) in ("image", "video")
        ]
        if files:
            values = [show(job["matrix"][axis]) if axis in job["matrix"] else "" for axis in axes]
            jobs.append([job["id"], job["key"], values, job["prompt"], facts(job), files])
    data = {"campaign": document["campaign"], "file": file, "served": served, "axes": axes,
            "decisions": decisions, "jobs": jobs}  # fmt: skip
    script, style = _asset("review.js"), _asset("review.css")
    return _template().render(
        campaign=document["campaign"], total=len(jobs), file=file, served=served, style=style, script=script,
        csp=content_policy(script, style, connect="'self'" if served else "'none'"),
        data=script_safe(json.dumps(data, ensure_ascii=False)),
    )  # fmt: skip


@cache
def _asset(name: str) -> str:
    return resources.files("sume_batch").joinpath("templates", name).read_text("utf-8")


@cache
def _template() -> jinja2.Template:
    environment = jinja2.Environment(autoescape=True, keep_trailing_newline=True)
    return environment.from_string(_asset("review.html.j2"))
