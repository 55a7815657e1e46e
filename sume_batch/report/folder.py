"""A run's report folder: the chosen formats written into it, each atomically, and `latest` beside it."""

from __future__ import annotations

import functools
import gc
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from sume_batch.report import FILE_NAMES, FORMATS
from sume_batch.report.as_json import write_json
from sume_batch.report.document import MEDIA
from sume_batch.report.html import write_html
from sume_batch.report.junit import write_junit

WRITERS: dict[str, Callable[[Mapping[str, Any], TextIO], None]] = {
    "html": write_html,
    "json": write_json,
    "junit": write_junit,
}


def write_reports(
    document: Mapping[str, Any], folder: Path, formats: Sequence[str] = FORMATS
) -> dict[str, Path]:
    """Write the chosen formats into `folder`, each atomically (OSError if the folder is not writable).

    The document (millions of objects at 100,000 jobs) lives until it is written: the collector's
    full passes over it are pure cost (about half of junit.xml's time), so it is frozen out of them
    while the files are written."""
    folder.mkdir(parents=True, exist_ok=True)
    gc.freeze()
    try:
        return {
            name: _write(folder / FILE_NAMES[name], functools.partial(WRITERS[name], document))
            for name in FORMATS
            if name in formats
        }
    finally:
        gc.unfreeze()


def gather_media(document: Mapping[str, Any], folder: Path, downloads: Path, mode: str) -> int:
    """Copy (or link, relatively) each output the report names into `folder/media/`, so the folder
    alone is a complete artifact; a file no longer there is left out (the report says it is
    missing). Returns how many were gathered."""
    gathered = 0
    for job in document["jobs"]:
        for item in job["files"]:
            name = item["path"].removeprefix(MEDIA + "/")
            source, target = downloads / name, folder / MEDIA / name
            if item.get("missing") or not source.is_file():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.unlink(missing_ok=True)
            if mode == "link":
                target.symlink_to(os.path.relpath(source, target.parent))
            else:
                shutil.copy2(source, target)
            gathered += 1
    return gathered


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


def _write(path: Path, write: Callable[[TextIO], None]) -> Path:
    """Let `write` stream the file to a temporary name of this process, then rename: a reader sees the
    old file or the new one, and a `report` writing while `run` does cannot mix the two."""
    unfinished = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        with unfinished.open("w", encoding="utf-8") as handle:
            write(handle)
        unfinished.replace(path)
    finally:
        unfinished.unlink(missing_ok=True)
    return path
