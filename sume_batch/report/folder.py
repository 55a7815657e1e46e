"""A run's report folder: the chosen formats written into it, each atomically, and `latest` beside it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sume_batch.report import FILE_NAMES, FORMATS
from sume_batch.report.as_json import json_chunks
from sume_batch.report.html import html_chunks
from sume_batch.report.junit import junit_chunks

RENDER: dict[str, Callable[[Mapping[str, Any]], Iterator[str]]] = {
    "html": html_chunks,
    "json": json_chunks,
    "junit": junit_chunks,
}


def write_reports(
    document: Mapping[str, Any], folder: Path, formats: Sequence[str] = FORMATS
) -> dict[str, Path]:
    """Write the chosen formats into `folder`, each atomically (OSError if the folder is not writable)."""
    folder.mkdir(parents=True, exist_ok=True)
    return {
        name: _write(folder / FILE_NAMES[name], RENDER[name](document)) for name in FORMATS if name in formats
    }


def point_latest(folder: Path) -> Path:
    """Make `<folder's parent>/latest` a relative symlink to `folder`, replaced atomically."""
    link = folder.parent / "latest"
    partial = folder.parent / f".latest.{os.getpid()}"
    partial.unlink(missing_ok=True)
    partial.symlink_to(folder.name, target_is_directory=True)
    try:
        partial.replace(link)
    finally:
        partial.unlink(missing_ok=True)
    return link


def _write(path: Path, chunks: Iterable[str]) -> Path:
    """Stream the chunks to a temporary name of this process, then rename: a reader sees the old file
    or the new one, and a `report` writing while `run` does cannot mix the two."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        with partial.open("w", encoding="utf-8") as handle:
            handle.writelines(chunks)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path
