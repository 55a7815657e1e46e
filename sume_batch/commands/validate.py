"""`sume-batch validate`: check manifests completely, offline: every problem of every file, listed."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from sume_batch.commands.common import prepare, saved_snapshots
from sume_batch.errors import ManifestError, Problem

Echo = Callable[[str], None]


def validate(
    paths: Sequence[Path],
    *,
    max_jobs: int | None,
    echo: Echo,
    roots: Sequence[Path] = (),
    as_json: bool = False,
) -> int:
    """Check every file completely; report all problems of all files, then one summary line. With
    `as_json`, one object on stdout (`{"object": "validation", "ok", "files": [...]}`), exit 2 still
    when any file has a problem."""
    problems, files = [], []
    for path in paths:
        try:
            found = saved_snapshots(path, None, None, sandbox=None)  # any target's: validate is offline
            manifest, specs = prepare(path, max_jobs=max_jobs, roots=roots, find=found, unread_ok=True)
        except ManifestError as error:
            problems += error.problems
            files.append(
                {"path": str(path), "valid": False, "problems": [_problem(one) for one in error.problems]}
            )
            continue
        files.append({"path": str(path), "valid": True, "campaign": manifest.name, "jobs": len(specs),
                      "unread_workspace_axes": [axis.path for axis in manifest.unread]})  # fmt: skip
        if as_json:
            continue
        echo(f"{path}: valid: campaign {manifest.name}, {len(specs):,} job{'s' if len(specs) != 1 else ''}")
        if manifest.snapshot is not None:
            echo(f"  {manifest.snapshot.text()}")
        if manifest.unread:
            axes = ", ".join(axis.path for axis in manifest.unread)
            echo(f"  not read from the workspace yet: {axes}; `plan --refresh` reads them (their jobs wait)")
    if as_json:
        echo(
            json.dumps(
                {"object": "validation", "ok": not problems, "files": files}, indent=2, ensure_ascii=False
            )
        )
        return ManifestError.exit_code if problems else 0
    if problems:
        raise ManifestError(problems)
    return 0


def _problem(problem: Problem) -> dict[str, object]:
    return {"file": problem.file, "line": problem.line, "column": problem.column, "path": problem.path,
            "message": problem.message}  # fmt: skip
