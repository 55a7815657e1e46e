"""`sume-batch unlock`: who holds a campaign's store, and, with `--force`, end their hold.

A SQLite store's lock is the kernel's (`store.run_lock`): it ends when its holder exits or is
killed, so there is nothing to force; this says which process holds it. A shared store's runners
hold leases (`shared`): a dead runner's ends by itself within its lease; `--force` ends every lease
now, and their runners are fenced out (they write nothing more and stop).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from sume_batch import pg, shared
from sume_batch.commands.common import chosen_store
from sume_batch.errors import LockedError
from sume_batch.manifest import load_manifest
from sume_batch.store import held_by, lock_path

Echo = Callable[[str], None]


def unlock(
    manifest_path: Path, *, force: bool, state_dir: Path | None, env: Mapping[str, str], sandbox: bool,
    echo: Echo, roots: Sequence[Path] = (),
) -> int:  # fmt: skip
    """Show the holders of the campaign's store; exit 0 when none is left holding it, 75 otherwise."""
    place = chosen_store(load_manifest(manifest_path, roots=roots, unread_ok=True), state_dir, env, sandbox)
    if isinstance(place, pg.Address):
        return _shared(place, force=force, echo=echo)
    return _local(place, force=force, echo=echo)


def _shared(place: pg.Address, *, force: bool, echo: Echo) -> int:
    found = shared.holders(place.url, place.schema)
    live = [holder for holder in found if holder.expires_in_s > 0]
    echo(f"{place}:")
    for holder in found:
        echo(f"  {holder.describe()}")
    if not live:
        echo(
            "  no runner holds it" + (" (the leases listed have ended: their jobs are free)" if found else "")
        )
        return 0
    if not force:
        raise LockedError(
            f"{len(live)} runner(s) hold leases on it; a dead one's ends by itself within its lease."
            " --force ends them now (their runners write nothing more)"
        )
    ended = shared.end_leases(place.url, place.schema)
    echo(f"ended {ended} lease(s): those runners are fenced out, and their jobs are free for the next run")
    return 0


def _local(place: Path, *, force: bool, echo: Echo) -> int:
    try:
        descriptor = os.open(lock_path(place), os.O_RDWR)
    except FileNotFoundError:
        echo(f"{place}: no run holds it")
        return 0
    try:
        if holder := held_by(descriptor):
            raise LockedError(
                f"{place} is held by a live run ({holder}). Its lock is the kernel's: it ends when that"
                " process exits or is killed" + (", so --force has nothing to end" if force else "")
            )
        echo(f"{place}: no run holds it (a lock ends with the process that held it)")
        return 0
    finally:
        os.close(descriptor)
