"""Which commit a manifest was run from: the git facts a run records for its report."""

from __future__ import annotations

import subprocess
from pathlib import Path


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
