"""Fixtures shared by the tests in this folder."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temp folder as the current directory, so messages name files as `campaign.yaml`."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
