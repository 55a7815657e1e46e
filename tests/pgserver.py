"""A throwaway PostgreSQL server for the tests: the one `SUME_BATCH_TEST_PG` names, or a cluster of
its own in a temporary folder (PostgreSQL 15 is installed on the machines we run on, but not
running). Without either the PostgreSQL tests are skipped, unless `SUME_BATCH_REQUIRE_PG` is set
(as `.ci/run` sets it): then they fail, so CI can never pass without them.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

BIN = Path(os.environ.get("SUME_BATCH_PG_BIN", "/usr/lib/postgresql/15/bin"))
_numbers = itertools.count()


def _missing(why: str) -> None:
    if os.environ.get("SUME_BATCH_REQUIRE_PG"):
        pytest.fail(f"PostgreSQL is required (SUME_BATCH_REQUIRE_PG) but {why}")
    pytest.skip(f"no PostgreSQL: {why}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _as_owner(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run it as `postgres` when we are root."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@contextlib.contextmanager
def cluster() -> Iterator[str]:
    if url := os.environ.get("SUME_BATCH_TEST_PG"):
        yield url
        return
    if not (BIN / "initdb").exists():
        _missing(f"{BIN / 'initdb'} does not exist")
    # Its own folder under /tmp: pytest's temporary folders are private to root, where postgres runs.
    folder = Path(tempfile.mkdtemp(prefix="sume-batch-pg-"))
    data, port = folder / "data", _free_port()
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    subprocess.run(_as_owner([str(BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]),
                   check=True, capture_output=True)  # fmt: skip
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"  # runners are killed, never the server
    start = [str(BIN / "pg_ctl"), "-D", str(data), "-o", options, "-w", "-l", str(folder / "log"), "start"]
    subprocess.run(_as_owner(start), check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        stop = [str(BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
        subprocess.run(_as_owner(stop), check=False, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def fresh_database(server: str) -> str:
    """A new, empty database on `server`: its URL."""
    import psycopg

    name = f"t{os.getpid()}_{next(_numbers)}"
    with psycopg.connect(server, autocommit=True) as db:
        db.execute(f'CREATE DATABASE "{name}"')
    return server.rsplit("/", 1)[0] + f"/{name}"
