"""Confinement of the paths a manifest names, and safe reading of local files.

Uploaded files and output folders must lie inside the manifest's folder, or a root the person
running it allows, once symlinks are resolved; a FIFO or a device is never opened for reading.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Sequence
from pathlib import Path

ALLOW_ROOT_HINT = "pass --allow-root DIR (or set SUME_BATCH_ALLOW_ROOT) to allow another folder"


class ConfinementError(Exception):
    """A path the manifest names that is not a regular file (or folder) inside an allowed root."""


def allowed_roots(folder: Path, extra: Sequence[Path]) -> tuple[Path, ...]:
    """The manifest's folder and the roots its runner allowed, with symlinks resolved."""
    return tuple(dict.fromkeys(Path(os.path.realpath(root)) for root in (folder, *extra)))


def confine_folder(value: str, *, folder: Path, roots: Sequence[Path]) -> Path:
    """An output folder: relative to the manifest's folder and, symlinks resolved, inside a root."""
    lexical = Path(os.path.normpath(folder / value))
    _check_inside(value, lexical, folder=folder, roots=roots, what="output folders")
    return lexical


def confine_file(value: str, *, folder: Path, roots: Sequence[Path]) -> Path:
    """A local file a job uploads: inside a root once symlinks are resolved, and a regular file
    (checked with stat, never opened: a FIFO or /dev/zero must not hang `validate`)."""
    if "\x00" in value:
        raise ConfinementError(f"{value!r} holds a NUL character")
    real = _check_inside(value, folder / value, folder=folder, roots=roots, what="local files")
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        raise ConfinementError(f"no such file: {value} (looked for {real})") from None
    except OSError as error:
        raise ConfinementError(f"{value} cannot be read: {error.strerror or error}") from None
    if not stat.S_ISREG(mode):
        raise ConfinementError(f"{value} is {kind_of(mode)}, not a regular file")
    return real


def _check_inside(value: str, path: Path, *, folder: Path, roots: Sequence[Path], what: str) -> Path:
    try:
        real = Path(os.path.realpath(path))
    except (OSError, ValueError) as error:
        raise ConfinementError(f"{value} cannot be used: {error}") from None
    if any(real.is_relative_to(root) for root in roots):
        return real
    where = f"{what} must be inside the manifest's folder ({roots[0]}); {ALLOW_ROOT_HINT}"
    if Path(value).is_absolute():
        raise ConfinementError(f"{value} is an absolute path outside the allowed folders; {where}")
    if not Path(os.path.normpath(Path(os.path.realpath(folder)) / value)).is_relative_to(roots[0]):
        raise ConfinementError(f"{value} leaves the manifest's folder; {where}")
    raise ConfinementError(f"{value} leads through a symlink to {real}; {where}")


def read_regular(path: Path, *, limit: int) -> bytes:
    """At most `limit + 1` bytes of a regular file. A FIFO or a device is refused before any read:
    opened non-blocking (a FIFO without a writer would hang the open) and checked with fstat."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(descriptor, "rb") as handle:
        mode = os.fstat(descriptor).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(path)
        if not stat.S_ISREG(mode):
            raise OSError(f"{kind_of(mode)}, not a regular file")
        os.set_blocking(descriptor, True)
        return handle.read(limit + 1)


def file_digest(path: Path, *, chunk: int = 1 << 20) -> str:
    """The sha256 of a local file a job uploads; part of the job's key, so new bytes mean a new job.

    Only a regular file is read (opened non-blocking and checked with fstat, so a FIFO swapped in
    after `confine_file` looked cannot hang it)."""
    digest = hashlib.sha256()
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(descriptor, "rb") as handle:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(f"{path} is {kind_of(mode)}, not a regular file")
        os.set_blocking(descriptor, True)
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def kind_of(mode: int) -> str:
    """What a non-regular file is, for a message."""
    kinds = (
        (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
    )  # fmt: skip
    return next((name for test, name in kinds if test(mode)), "not a regular file")
