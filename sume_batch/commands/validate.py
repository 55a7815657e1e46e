"""`sume-batch validate`: check manifests completely, offline: every problem of every file, listed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from sume_batch.commands.common import prepare, saved_snapshots
from sume_batch.errors import ManifestError

Echo = Callable[[str], None]


def validate(paths: Sequence[Path], *, max_jobs: int | None, echo: Echo, roots: Sequence[Path] = ()) -> int:
    """Check every file completely; report all problems of all files, then one summary line."""
    problems = []
    for path in paths:
        try:
            found = saved_snapshots(path, None, None, sandbox=None)  # any target's: validate is offline
            manifest, specs = prepare(path, max_jobs=max_jobs, roots=roots, find=found, unread_ok=True)
        except ManifestError as error:
            problems += error.problems
            continue
        echo(f"{path}: valid: campaign {manifest.name}, {len(specs):,} job{'s' if len(specs) != 1 else ''}")
        if manifest.snapshot is not None:
            echo(f"  {manifest.snapshot.text()}")
        if manifest.unread:
            axes = ", ".join(axis.path for axis in manifest.unread)
            echo(f"  not read from the workspace yet: {axes}; `plan --refresh` reads them (their jobs wait)")
    if problems:
        raise ManifestError(problems)
    return 0
