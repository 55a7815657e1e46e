"""Fixtures shared by the tests in this folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pgserver
import pytest


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temp folder as the current directory, so messages name files as `campaign.yaml`."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(autouse=True)
def registry_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test its own machine registry (see `sume_batch.registry`), never the user's."""
    home = tmp_path_factory.mktemp("sume-batch-home")
    monkeypatch.setenv("SUME_BATCH_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def no_shared_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test inherits a shared store from the environment, nor leaves one (`--state` sets it)."""
    monkeypatch.delenv("SUME_BATCH_STATE", raising=False)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A throwaway PostgreSQL cluster for the session (see `tests/pgserver.py`): its URL."""
    with pgserver.cluster() as url:
        yield url


@pytest.fixture
def pg_url(pg_server: str) -> str:
    """A fresh, empty database on the session's PostgreSQL server: its URL."""
    return pgserver.fresh_database(pg_server)
