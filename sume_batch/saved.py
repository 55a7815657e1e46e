"""Saved plans: `plan -o campaign.plan` writes what `run` will do; `run campaign.plan` does exactly
that or refuses, naming what changed (issue 17).

A saved plan is the plan's JSON (`plan --json`) with a `saved` section: the manifest (path and
sha256), its data files' sha256, the selection (`--only`, the retry flags, `--stop-after`), the API
it was planned for, and a digest of the store's state of the plan's jobs. `run PLAN` plans the
manifest again with that selection and refuses (exit 3), before any request, when any of these
differs, or when the jobs and their prices do. The balance is checked by `run` as always. A plan
file given where a manifest is expected (`validate`, `plan`) is named as such, not read as YAML.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sume_batch.confine import file_digest, read_regular
from sume_batch.errors import ManifestError, Problem, RefusedError, UsageError

VERSION = 1
MAX_BYTES = 256 * 1024 * 1024


def is_saved_plan(path: Path) -> bool:
    """Whether the file is a saved plan (cheaply: its first bytes)."""
    try:
        head = read_regular(path, limit=4096)[:4096]
    except OSError:
        return False
    return head.lstrip().startswith(b"{") and b'"object": "plan"' in head and b'"saved": {' in head


def refuse_as_manifest(path: Path) -> None:
    """A saved plan where a manifest is expected: one clear problem, not a page of schema noise."""
    if path.suffix in (".plan", ".json") and is_saved_plan(path):
        message = "a saved plan (sume-batch plan -o), not a manifest: `sume-batch run` applies it"
        raise ManifestError([Problem(str(path), 1, 1, "", message)])


def saved_section(
    *, manifest: Path, data: Sequence[Mapping[str, Any]], selection: Mapping[str, Any], target: str,
    states: Mapping[str, str], keys: Sequence[str],
) -> dict[str, Any]:  # fmt: skip
    """What `run PLAN` checks again before it does anything."""
    return {
        "version": VERSION, "manifest": {"path": str(manifest.resolve()), "sha256": file_digest(manifest)},
        "data": [dict(one) for one in data], "selection": dict(selection), "target": target,
        "store": state_digest(states, keys),
    }  # fmt: skip


def state_digest(states: Mapping[str, str], keys: Sequence[str]) -> str:
    """A digest of the store's state of these jobs (a job another run moved changes it)."""
    text = "\n".join(f"{key} {states.get(key, '-')}" for key in sorted(keys))
    return hashlib.sha256(text.encode()).hexdigest()


def load(path: Path) -> dict[str, Any]:
    """A saved plan as written; a usage error when it is no saved plan of this version."""
    try:
        data = json.loads(read_regular(path, limit=MAX_BYTES))
    except (OSError, ValueError, RecursionError) as error:
        raise UsageError(f"{path} is not a readable saved plan: {error}") from None
    saved = data.get("saved") if isinstance(data, dict) else None
    if not isinstance(saved, dict) or saved.get("version") != VERSION:
        raise UsageError(f"{path} is no saved plan of this version (write one with `sume-batch plan -o`)")
    found: dict[str, Any] = data
    return found


def changes(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """What differs between the plan as saved and as made now (both `plan_json` + `saved`)."""
    before, after = saved["saved"], now["saved"]
    found = []
    if before["manifest"]["sha256"] != after["manifest"]["sha256"]:
        found.append("the manifest changed")
    if sorted(map(json.dumps, before["data"])) != sorted(map(json.dumps, after["data"])):
        found.append("a data file changed")
    if before["target"] != after["target"]:
        found.append(f"the API changed ({before['target']} → {after['target']})")
    jobs_before = {job["key"]: job["credits"] for job in saved["jobs"]}
    jobs_after = {job["key"]: job["credits"] for job in now["jobs"]}
    if set(jobs_before) != set(jobs_after):
        found.append(f"the jobs changed ({len(set(jobs_before) ^ set(jobs_after)):,} differ)")
    elif jobs_before != jobs_after or saved.get("total_credits") != now.get("total_credits"):
        found.append("the prices changed")
    if before["store"] != after["store"]:
        found.append("the run store changed since (another run moved these jobs)")
    return found


def check(saved: Mapping[str, Any], now: Mapping[str, Any], path: Path) -> None:
    """Refuse (exit 3) a saved plan that is no longer what `run` would do."""
    found = changes(saved, now)
    if found:
        raise RefusedError(
            f"refused: {path} is stale: {'; '.join(found)}; plan again with `sume-batch plan -o`"
        )
