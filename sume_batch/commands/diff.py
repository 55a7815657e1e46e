"""`sume-batch diff`: what a manifest change would buy, without any store (issue 17).

    sume-batch diff manifests/catalog.yaml --base origin/main    # the manifest at a git revision vs now
    sume-batch diff old.yaml new.yaml                            # two files
    sume-batch diff manifests/catalog.yaml --base main --format markdown --warn-over 100 --fail-over 10%

Jobs are matched by id: *new* (an id the base lacks), *changed* (the same id, another request: it is
bought again; the fields that differ are named), *removed*. Credits are each side's estimates,
totalled by type and by the axes changed jobs differ on. A revision is read with `git archive` of
the manifest's folder, so its data files are the revision's too. `--warn-over` / `--fail-over`
take credits or a percent of the base's total: over `--fail-over` the exit is 5; `--quiet-under`
prints nothing below that many credits (a comment bot's noise floor). A change that buys every
variant again is called out.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sume_batch.commands.common import prepare
from sume_batch.errors import UsageError
from sume_batch.plan import Plan, credits, make_plan

Echo = Callable[[str], None]
OVER = 5  # the exit code when the change costs more than --fail-over
MAX_ARCHIVE = 256 * 1024 * 1024


@dataclass
class Change:
    """What one side of the diff has that the other does not (or has otherwise)."""

    new: list[tuple[str, str, float]] = field(default_factory=list)  # (id, type, credits)
    changed: list[tuple[str, str, float, list[str]]] = field(default_factory=list)  # (+ fields)
    removed: list[tuple[str, str, float]] = field(default_factory=list)
    base_total: float = 0.0
    head_total: float = 0.0
    jobs: int = 0  # in the head

    @property
    def bought(self) -> float:
        """What the head would buy that the base had not bought: its new and changed jobs."""
        return sum(c for *_, c in self.new) + sum(c for _, _, c, _ in self.changed)

    def to_json(self) -> dict[str, Any]:
        return {
            "object": "diff", "base_credits": self.base_total, "head_credits": self.head_total,
            "delta_credits": self.head_total - self.base_total, "bought_credits": self.bought,
            "new": [{"id": i, "type": t, "credits": c} for i, t, c in self.new],
            "changed": [{"id": i, "type": t, "credits": c, "fields": f} for i, t, c, f in self.changed],
            "removed": [{"id": i, "type": t, "credits": c} for i, t, c in self.removed],
            "by_type": by_type(self),
        }  # fmt: skip


def diff(
    path: Path, other: Path | None, *, base: str | None, output: str, warn_over: str | None,
    fail_over: str | None, quiet_under: float | None, echo: Echo, roots: Sequence[Path] = (),
) -> int:  # fmt: skip
    """Compare the base (a git revision of `path`, or `path` itself when `other` is given) with the
    head (`path` now, or `other`); exit 0, or OVER past `--fail-over`."""
    if (base is None) == (other is None):
        raise UsageError("give either --base REV (the manifest at a git revision) or a second manifest")
    if other is not None:
        change = compare(plan_of(path, roots), plan_of(other, roots))
    else:
        with tempfile.TemporaryDirectory() as folder:
            at_base = checkout(path, str(base), Path(folder))
            change = compare(plan_of(at_base, roots) if at_base.exists() else None, plan_of(path, roots))
    warn, fail = threshold(warn_over, change), threshold(fail_over, change)
    if quiet_under is not None and change.bought < quiet_under and not change.removed:
        return 0
    if output == "json":
        echo(json.dumps({**change.to_json(), "warn": warn, "fail": fail}, indent=2))
    else:
        echo((markdown if output == "markdown" else text)(change, warn=warn, fail=fail))
    return OVER if fail else 0


def plan_of(path: Path, roots: Sequence[Path]) -> Plan:
    manifest, specs = prepare(path, roots=roots, unread_ok=True)
    return make_plan(manifest, specs)


def checkout(path: Path, revision: str, into: Path) -> Path:
    """The manifest's folder as it was at `revision` (`git archive`), and the manifest's path in it."""
    folder = path.resolve().parent
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=folder, capture_output=True,  # noqa: S607
                             text=True, timeout=30, check=True).stdout.strip()  # fmt: skip
        inside = folder.relative_to(top).as_posix() or "."
        archive = subprocess.run(["git", "archive", "--format=tar", revision, "--", inside], cwd=top,  # noqa: S603, S607
                                 capture_output=True, timeout=120, check=True).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError, ValueError) as error:
        detail = getattr(error, "stderr", b"") or b""
        why = detail.decode(errors="replace").strip() if isinstance(detail, bytes) else str(detail)
        raise UsageError(f"cannot read {path} at {revision!r} from git: {why or error}") from None
    if len(archive) > MAX_ARCHIVE:
        raise UsageError(f"the manifest's folder at {revision!r} is larger than {MAX_ARCHIVE:,} bytes")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")  # no links out, no absolute paths
    return into / inside / path.name


def compare(base: Plan | None, head: Plan) -> Change:
    """Jobs matched by id: new, changed (and which request fields differ), removed."""
    before = {spec.id: (spec, price.credits or 0.0) for spec, price in base.jobs} if base else {}
    after = {spec.id: (spec, price.credits or 0.0) for spec, price in head.jobs}
    change = Change(base_total=base.total if base else 0.0, head_total=head.total, jobs=len(after))
    for job_id, (spec, cost) in after.items():
        if job_id not in before:
            change.new.append((job_id, spec.kind.name, cost))
        elif before[job_id][0].key != spec.key:
            old = before[job_id][0].request
            fields = sorted(name for name in {*old, *spec.request} if old.get(name) != spec.request.get(name))
            change.changed.append((job_id, spec.kind.name, cost, fields or ["the file it uploads"]))
    change.removed = [(i, spec.kind.name, cost) for i, (spec, cost) in before.items() if i not in after]
    return change


def threshold(limit: str | None, change: Change) -> bool:
    """Whether what the change buys passes `limit`: credits (`100`) or a percent of the base (`10%`)."""
    if limit is None:
        return False
    text = limit.strip()
    try:
        number = float(text.removesuffix("%"))
    except ValueError:
        raise UsageError(f"{limit!r} is no threshold: write credits (100) or a percent (10%)") from None
    if text.endswith("%"):
        return change.base_total > 0 and change.bought > change.base_total * number / 100
    return change.bought > number


def by_type(change: Change) -> dict[str, dict[str, float]]:
    totals: dict[str, dict[str, float]] = {}
    for group, rows in (("new", change.new), ("changed", change.changed), ("removed", change.removed)):
        for row in rows:
            counts = totals.setdefault(row[1], {})
            counts[group] = counts.get(group, 0.0) + row[2]
    return dict(sorted(totals.items()))


def _headline(change: Change) -> str:
    delta = change.head_total - change.base_total
    sign = "+" if delta >= 0 else "−"
    line = (f"{len(change.new):,} new, {len(change.changed):,} changed, {len(change.removed):,} removed:"
            f" {credits(change.bought)} credits to buy; the campaign {sign}{credits(abs(delta))} credits"
            f" ({credits(change.base_total)} → {credits(change.head_total)})")  # fmt: skip
    if change.jobs and len(change.changed) + len(change.new) == change.jobs and change.changed:
        line += (
            f"\nevery one of the {change.jobs:,} jobs is bought again: did a shared prompt or setting change?"
        )
    return line


def text(change: Change, *, warn: bool, fail: bool) -> str:
    lines = [_headline(change)]
    for job_id, kind, cost, fields in change.changed[:20]:
        lines.append(f"  changed {job_id} ({kind}, {credits(cost)} credits): {', '.join(fields)}")
    for job_id, kind, cost in change.new[:20]:
        lines.append(f"  new {job_id} ({kind}, {credits(cost)} credits)")
    for job_id, kind, _ in change.removed[:20]:
        lines.append(f"  removed {job_id} ({kind})")
    shown = min(len(change.changed), 20) + min(len(change.new), 20) + min(len(change.removed), 20)
    if shown < len(change.changed) + len(change.new) + len(change.removed):
        lines.append(f"  … {len(change.changed) + len(change.new) + len(change.removed) - shown:,} more")
    lines.append(_verdict(warn, fail))
    return "\n".join(lines)


def markdown(change: Change, *, warn: bool, fail: bool) -> str:
    """A pull request comment: the headline, a table by type, the changed jobs folded away."""
    mark = "❌" if fail else "⚠️" if warn else "✅"
    lines = [f"### {mark} sume-batch credit diff", "", _headline(change).replace("\n", "  \n"), "",
             "| type | new | changed | removed |", "|---|---:|---:|---:|"]  # fmt: skip
    for kind, counts in by_type(change).items():
        lines.append(f"| {kind} | {credits(counts.get('new', 0))} | {credits(counts.get('changed', 0))}"
                     f" | {credits(counts.get('removed', 0))} |")  # fmt: skip
    if change.changed:
        lines += ["", "<details><summary>Changed jobs</summary>", ""]
        lines += [f"- `{i}`: {', '.join(f)}" for i, _, _, f in change.changed[:100]]
        lines += ["", "</details>"]
    lines += ["", _verdict(warn, fail)]
    return "\n".join(lines)


def _verdict(warn: bool, fail: bool) -> str:
    if fail:
        return "over --fail-over: this change needs an approval (exit 5)"
    return "over --warn-over: look before you merge" if warn else "within the thresholds"
