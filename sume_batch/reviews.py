"""Review decisions, kept in git beside the manifest: `reviews/<campaign>.yaml` (issue 16).

    version: 1
    campaign: spring-launch
    decisions:
      <job key>:
        job: hero-serum-1x1                 # for people reading the diff; the key is what matches
        outputs:
          <output sha256>: {decision: pick, rating: 5, comment: "the one", at: "2026-12-02T10:15:00Z"}

A decision belongs to a job key and an output's sha256, never to a run, so it survives reruns and
shows in a pull request's diff. An output made again (`--regenerate`, `--retry-rejected`) has
another sha256: the decision on the old one is *stale*. A job is:

- `picked` when one of its current outputs is picked;
- `rejected` when one is rejected and none is picked;
- `stale` when it has decisions, but only on outputs it no longer has;
- `unreviewed` otherwise.

`--only picked` (`rejected`, `stale`, `unreviewed`) selects jobs by it, and `run --retry-rejected`
buys the rejected ones again (`--only rejected --regenerate`). The file is written atomically, in a
stable order, and read with the same safe YAML as a manifest; a damaged file is a located error.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from sume_batch.confine import read_regular
from sume_batch.errors import ManifestError, Problem
from sume_batch.yamlsafe import decode_text, parse_yaml

DECISIONS = ("pick", "reject")
STATES = ("picked", "rejected", "stale", "unreviewed")
VERSION = 1
MAX_BYTES = 16 * 1024 * 1024
MAX_COMMENT = 2_000


@dataclass(frozen=True)
class Output:
    """A job's current output, as the store records it."""

    key: str
    sha256: str
    path: str


def outputs_of(rows: Iterable[Mapping[str, Any]]) -> list[Output]:
    """The outputs a store's `files()` rows record."""
    return [Output(row["key"], row["sha256"], row["path"]) for row in rows]


def reviews_path(manifest_folder: Path, campaign: str) -> Path:
    return manifest_folder / "reviews" / f"{campaign}.yaml"


def for_report(manifest_folder: Path, campaign: str) -> dict[str, dict[str, Any]] | None:
    """The decisions a report shows: None without a decisions file, or with one that cannot be read
    (a report is still written; `sume-batch review` says what is wrong with the file)."""
    path = reviews_path(manifest_folder, campaign)
    if not path.exists():
        return None
    try:
        return load(path)
    except ManifestError:
        return None


def load(path: Path) -> dict[str, dict[str, Any]]:
    """Job key → {"job": id, "outputs": {sha256: decision}}; empty when there is no file yet."""
    if not path.exists():
        return {}
    shown = str(path)
    try:
        data = read_regular(path, limit=MAX_BYTES)
    except OSError as error:
        raise ManifestError([Problem(shown, 0, 0, "", f"cannot be read: {error}")]) from None
    if len(data) > MAX_BYTES:
        raise ManifestError([Problem(shown, 0, 0, "", f"is larger than {MAX_BYTES:,} bytes")])
    document, problems = parse_yaml(decode_text(data, shown), file=shown)
    if problems:
        raise ManifestError(problems)
    found = document.data if isinstance(document.data, dict) else None
    wrong = _shape(found)
    if wrong:
        line, column = document.mark(wrong[0])
        raise ManifestError([Problem(shown, line, column, ".".join(map(str, wrong[0])), wrong[1])])
    return dict((found or {}).get("decisions") or {})


def problem_in(data: Any) -> str | None:
    """What makes `data` no decisions file (located in words), or None."""
    wrong = _shape(data)
    return None if wrong is None else f"{'.'.join(wrong[0]) or 'the file'}: {wrong[1]}"


def _shape(data: Any) -> tuple[tuple[str, ...], str] | None:
    """Where the file is not a decisions file, and why; None when it is one."""
    if not isinstance(data, dict) or data.get("version") != VERSION:
        return (), f"not a decisions file: it needs version: {VERSION} and decisions:"
    decisions = data.get("decisions") or {}
    if not isinstance(decisions, dict):
        return ("decisions",), "must be a mapping of job keys"
    for key, entry in decisions.items():
        outputs = entry.get("outputs") if isinstance(entry, dict) else None
        if not isinstance(outputs, dict):
            return ("decisions", str(key)), "needs outputs: a mapping of output sha256 to a decision"
        for sha, decision in outputs.items():
            if wrong := _decision_problem(decision):
                return ("decisions", str(key), "outputs", str(sha)), wrong
    return None


def _decision_problem(decision: Any) -> str | None:
    if not isinstance(decision, dict) or decision.get("decision") not in (*DECISIONS, None):
        return f"decision must be one of {', '.join(DECISIONS)}"
    rating = decision.get("rating")
    if rating is not None and (isinstance(rating, bool) or rating not in range(1, 6)):
        return "rating must be a whole number from 1 to 5"
    if not isinstance(decision.get("comment", ""), str):
        return "comment must be text"
    return None


def state_of(entry: Mapping[str, Any] | None, outputs: Sequence[Output]) -> str:
    """A job's review state from its decisions and its current outputs (see the module)."""
    decided = (entry or {}).get("outputs") or {}
    if not decided:
        return "unreviewed"
    current = [decided[one.sha256].get("decision") for one in outputs if one.sha256 in decided]
    if "pick" in current:
        return "picked"
    if "reject" in current:
        return "rejected"
    return "stale" if not current and any(d.get("decision") for d in decided.values()) else "unreviewed"


def states(decisions: Mapping[str, Any], outputs: Iterable[Output]) -> dict[str, str]:
    """Job key → review state, for every job with outputs or decisions."""
    by_key: dict[str, list[Output]] = {}
    for one in outputs:
        by_key.setdefault(one.key, []).append(one)
    return {key: state_of(decisions.get(key), by_key.get(key, [])) for key in {*by_key, *decisions}}


def decide(
    decisions: dict[str, dict[str, Any]], *, key: str, job_id: str, outputs: Sequence[Output],
    decision: str | None = None, rating: int | None = None, comment: str | None = None,
) -> None:  # fmt: skip
    """Record a decision (and a rating or comment) on each of a job's current outputs."""
    entry = decisions.setdefault(key, {"job": job_id, "outputs": {}})
    entry["job"] = job_id
    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for one in outputs:
        mark = dict(entry["outputs"].get(one.sha256) or {})
        if decision is not None:
            mark["decision"] = decision
        if rating is not None:
            mark["rating"] = rating
        if comment is not None:
            mark["comment"] = comment[:MAX_COMMENT]
        mark["file"], mark["at"] = one.path, at
        entry["outputs"][one.sha256] = mark


def save(path: Path, campaign: str, decisions: Mapping[str, Any]) -> None:
    """Written whole to a temporary name and renamed, keys sorted, so a diff shows what changed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ordered = {key: decisions[key] for key in sorted(decisions)}
    body = {"version": VERSION, "campaign": campaign, "decisions": ordered}
    text = "# Review decisions (sume-batch review): keyed by job key and output sha256, kept in git.\n"
    text += yaml.safe_dump(body, sort_keys=False, allow_unicode=True, width=100)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, "utf-8")
    os.replace(partial, path)
