"""`sume-batch review`: record and list review decisions (see `reviews`), offline.

    sume-batch review campaign.yaml --pick 'hero-serum-*' --reject hero-toner-9x16 --rate hero-serum-1x1=5

Each flag takes job id globs (or `axis=value`, as `--only` does) and applies to every current output
of each job it names; the decisions go to `reviews/<campaign>.yaml` beside the manifest, for git.
Without a flag it lists the jobs with outputs and their review state. A glob that names no
job with outputs is an error (exit 2), and nothing is written.
"""

from __future__ import annotations

import fnmatch
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from sume_batch.commands.common import chosen_store, prepare
from sume_batch.errors import UsageError
from sume_batch.manifest import Manifest
from sume_batch.records import Place, reading
from sume_batch.redact import Redactor
from sume_batch.report.document import MEDIA, Source, build_report
from sume_batch.report.review import review_html
from sume_batch.reviews import Output, decide, load, outputs_of, reviews_path, save, state_of

Echo = Callable[[str], None]


def review(
    path: Path, *, picks: Sequence[str], rejects: Sequence[str], ratings: Sequence[str],
    comments: Sequence[str], state_dir: Path | None, env: Mapping[str, str], sandbox: bool, echo: Echo,
    roots: Sequence[Path] = (), page: bool = False, serve: int | None = None,
) -> int:  # fmt: skip
    """Record the decisions asked for, or list the jobs and their states, or write (`page`) or serve
    on a loopback port (`serve`) the review page; exit 0."""
    manifest, _ = prepare(path, roots=roots, unread_ok=True)
    store_path = chosen_store(manifest, state_dir, env, sandbox)
    if page or serve is not None:
        return _page(manifest, store_path, env, echo, serve=serve)
    with reading(store_path) as store:
        outputs: dict[str, list[Output]] = {}
        for one in outputs_of(store.files()):
            outputs.setdefault(one.key, []).append(one)
        jobs = store.jobs(outputs)  # the jobs with outputs: what there is to review
    where = reviews_path(manifest.folder, manifest.name)
    decisions = load(where)
    asked = [
        *((pattern, {"decision": "pick"}) for pattern in picks),
        *((pattern, {"decision": "reject"}) for pattern in rejects),
        *((_split(text, "--rate")[0], {"rating": _rating(text)}) for text in ratings),
        *((_split(text, "--comment")[0], {"comment": _split(text, "--comment")[1]}) for text in comments),
    ]
    for pattern, change in asked:
        named = [job for job in jobs.values() if _named(job.id, job.matrix, pattern) and outputs.get(job.key)]
        if not named:
            raise UsageError(f"{pattern!r} names no job with outputs to review")
        for job in named:
            decide(decisions, key=job.key, job_id=job.id, outputs=outputs[job.key], **change)  # type: ignore[arg-type]
    if asked:
        save(where, manifest.name, decisions)
        echo(f"{len(asked)} decision(s) recorded in {where}")
    for job in sorted(jobs.values(), key=lambda one: one.id):
        state = state_of(decisions.get(job.key), outputs.get(job.key, []))
        marks = [
            decisions.get(job.key, {}).get("outputs", {}).get(one.sha256, {})
            for one in outputs.get(job.key, [])
        ]
        rating = next((str(mark["rating"]) for mark in marks if mark.get("rating")), "")
        echo(
            f"{state:10}  {job.id}  {len(outputs.get(job.key, []))} output(s)"
            + (f"  ★{rating}" if rating else "")
        )
    return 0


def _named(job_id: str, matrix: Mapping[str, object], pattern: str) -> bool:
    axis, equals, value = pattern.partition("=")
    if equals and axis in matrix:
        return str(matrix[axis]) == value
    return fnmatch.fnmatchcase(job_id, pattern)


def _split(text: str, flag: str) -> tuple[str, str]:
    pattern, equals, value = text.rpartition("=") if flag == "--rate" else text.partition("=")
    if not equals or not pattern:
        raise UsageError(f"{flag} {text!r}: write GLOB=VALUE")
    return pattern, value


def _rating(text: str) -> int:
    value = _split(text, "--rate")[1]
    if not value.isdigit() or not 1 <= int(value) <= 5:
        raise UsageError(f"--rate {text!r}: a rating is a whole number from 1 to 5")
    return int(value)


def _page(
    manifest: Manifest, store_path: Place, env: Mapping[str, str], echo: Echo, *, serve: int | None
) -> int:
    """Write review.html beside the campaign's reports, or serve it on 127.0.0.1 until Ctrl-C."""
    where = reviews_path(manifest.folder, manifest.name)
    decisions = load(where)
    folder = manifest.reports / manifest.name
    source = Source(campaign=manifest.name, downloads=manifest.downloads, folder=folder, run=None,
                    decisions=decisions, media=MEDIA if serve is not None else None)  # fmt: skip
    with reading(store_path) as store:
        document = build_report(store, source, redactor=Redactor.from_env(env), now=time.time())
    shown = os.path.relpath(where, manifest.folder)
    if serve is None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "review.html").write_text(
            review_html(document, decisions, file=shown, served=False), "utf-8"
        )
        echo(f"Review page: {folder / 'review.html'} (export the decisions to {where})")
        return 0
    from sume_batch.commands.review_server import serve_review  # noqa: PLC0415 - only with --serve

    serve_review(document, decisions, manifest=manifest, file=shown, port=serve, echo=echo)
    return 0
