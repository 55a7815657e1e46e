"""target: one spelling per API URL with nothing that can carry a credential, a workspace known only
by a hash, one store file per campaign and target, and the stores `plan` and `status` find."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from sume_batch.store import RunStore
from sume_batch.target import (
    Target,
    account_ident,
    aside_path,
    find_store,
    legacy_path,
    normalize_url,
    same_workspace,
    store_folder,
    store_path,
    target_of,
)

API = "https://www.sume.so/api/v1"


@pytest.mark.parametrize(
    ("url", "normal"),
    [
        ("https://user:tok@WWW.Sume.so/api/v1/?api_key=s#frag", API),
        ("https://www.sume.so/api/v1/", API),
        ("  https://www.sume.so/api/v1  ", API),
        ("HTTPS://www.sume.so:443/api/v1", API),  # the default port is no part of the name
        ("http://127.0.0.1:8787/api/v1//", "http://127.0.0.1:8787/api/v1"),
        ("https://x.test:8443/api", "https://x.test:8443/api"),
        ("https://x.test/API/V1", "https://x.test/API/V1"),  # a path keeps its case
        ("https://x.test", "https://x.test"),
    ],
)
def test_a_base_url_is_stored_without_anything_that_can_carry_a_credential(url: str, normal: str) -> None:
    assert normalize_url(url) == normal


@pytest.mark.parametrize(
    ("account", "ident"),
    [
        ({"workspace": {"id": "ws_1"}, "workspace_id": "ws_2", "user": {"id": "u"}}, "workspace:ws_1"),
        ({"workspace": "ws_bare"}, "workspace:ws_bare"),
        ({"workspace_id": "ws_2", "api_key": {"id": "key_1"}}, "top:ws_2"),
        ({"workspace_id": 7}, "top:7"),
        ({"workspace_id": True, "api_key": {"id": "key_1"}}, "api_key:key_1"),  # a boolean names nothing
        ({"workspace": {"id": "  "}, "user": {"id": "user_1"}}, "user:user_1"),
        ({"workspace": ["ws_1"], "user": "user_1"}, ""),
        ({"environment": "sandbox"}, ""),
    ],
)
def test_the_workspace_is_the_first_id_me_names(account: dict[str, Any], ident: str) -> None:
    assert account_ident(account) == ident


def test_a_target_knows_its_workspace_by_a_hash_never_by_its_id() -> None:
    target = target_of("https://WWW.sume.so/api/v1/", {"workspace": {"id": "ws_secret_1"}}, sandbox=False)
    assert target == Target(API, hashlib.sha256(b"workspace:ws_secret_1").hexdigest(), rehearsal=False)
    assert "ws_secret_1" not in repr(target) + str(target.to_json()) + target.describe()
    assert Target.from_json(target.to_json()) == target
    assert target_of(API, {}, sandbox=False).workspace == ""


@pytest.mark.parametrize(
    ("account", "sandbox", "rehearsal"),
    [({}, True, True), ({"environment": "sandbox"}, False, True), ({"environment": "production"}, False, False),
     ({}, False, False)],
)  # fmt: skip
def test_a_sandbox_is_a_rehearsal_when_run_so_or_when_it_says_so(
    account: dict[str, Any], sandbox: bool, rehearsal: bool
) -> None:
    assert target_of(API, account, sandbox=sandbox).rehearsal is rehearsal


def test_a_targets_id_names_its_url_and_workspace_together() -> None:
    one, other_workspace, other_url = (
        Target(API, "a"),
        Target(API, "b"),
        Target("https://sume.so/api/v1", "a"),
    )
    assert (
        one.id == Target(API, "a", rehearsal=True).id == hashlib.sha256(f"{API}\na".encode()).hexdigest()[:16]
    )
    assert len({one.id, other_workspace.id, other_url.id}) == 3
    assert one.describe() == f"the Sume API at {API} (target {one.id[:8]})"
    assert Target(API, "a", rehearsal=True).describe() == f"a sandbox at {API} (target {one.id[:8]})"
    assert Target.from_json({"base_url": API}) == Target(API, "", rehearsal=False)


def test_each_campaign_and_target_has_a_store_file_of_its_own(tmp_path: Path) -> None:
    real, rehearsal = Target(API, "a"), Target("http://127.0.0.1:8787/api/v1", "b", rehearsal=True)
    assert store_path(tmp_path, "launch", real) == tmp_path / f"launch.www.sume.so-{real.id[:8]}.sqlite"
    assert store_path(tmp_path, "launch", Target(API, "b")) != store_path(tmp_path, "launch", real)
    assert store_path(tmp_path, "launch", rehearsal) == tmp_path / "launch.rehearsal.sqlite"
    assert legacy_path(tmp_path, "launch") == tmp_path / "launch.sqlite"
    assert aside_path(tmp_path / "launch.rehearsal.sqlite") == tmp_path / "launch.rehearsal.previous.sqlite"
    assert store_folder(tmp_path, None) == tmp_path / ".sume-batch"
    assert store_folder(tmp_path, tmp_path / "state") == tmp_path / "state"


def made_store(folder: Path, campaign: str, target: Target, *, written: float = 1_700_000_000.0) -> Path:
    """A real run store bound to `target`, closed, last written at `written`."""
    path = store_path(folder, campaign, target)
    RunStore.open(path, target=target, campaign=campaign).close()
    os.utime(path, (written, written))
    return path


def read(path: Path) -> None:
    """Read a store as a reader does (read-only): sqlite leaves an empty -wal and -shm beside it."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        db.execute("SELECT value FROM meta").fetchall()


def wal(path: Path) -> Path:
    return Path(f"{path}-wal")


def test_the_store_found_is_the_latest_written_at_that_api(tmp_path: Path) -> None:
    one, two = (
        made_store(tmp_path, "launch", Target(API, "a")),
        made_store(tmp_path, "launch", Target(API, "b")),
    )
    made_store(tmp_path, "launch", Target("https://other.test/api/v1", "a"), written=1_700_000_900)
    for path, main, log in ((one, 1_700_000_100, 1_700_000_100), (two, 1_700_000_200, 1_700_000_200)):
        read(path)
        os.utime(path, (main, main))
        os.utime(wal(path), (log, log))
    assert find_store(tmp_path, "launch", base_url=API + "/", rehearsal=False) == two
    with contextlib.closing(RunStore.open(one)) as store:  # a real write (the WAL takes it)
        store.add_planned([("k1", "img-1", "image", {}, {}, 4.0)])
    assert find_store(tmp_path, "launch", base_url=API, rehearsal=False) == one
    assert find_store(tmp_path, "launch", base_url="https://third.test/api/v1", rehearsal=False) is None


def test_reading_a_store_does_not_make_it_the_latest_written(tmp_path: Path) -> None:
    older = made_store(tmp_path, "launch", Target(API, "a"), written=1_700_000_000)
    newer = made_store(tmp_path, "launch", Target(API, "b"), written=1_700_000_100)
    for path, when in ((newer, 1_700_000_200), (older, 1_700_000_300)):  # both read since, the older last
        read(path)
        assert wal(path).stat().st_size == 0  # nothing was written
        os.utime(wal(path), (when, when))
    assert find_store(tmp_path, "launch", base_url=API, rehearsal=False) == newer


def test_the_campaign_a_store_records_decides_not_its_file_name(tmp_path: Path) -> None:
    made_store(tmp_path, "launch.eu", Target(API, "a"))  # `launch.*.sqlite` matches its name too
    assert find_store(tmp_path, "launch", base_url=API, rehearsal=False) is None
    (tmp_path / "launch.www.sume.so-00000000.sqlite").write_text("not a store")
    assert find_store(tmp_path, "launch", base_url=API, rehearsal=False) is None


def test_a_store_set_aside_is_never_found_and_a_legacy_one_only_when_alone(tmp_path: Path) -> None:
    kept = made_store(tmp_path, "launch", Target(API, "a"))
    kept.rename(aside_path(kept))
    assert find_store(tmp_path, "launch", base_url=API, rehearsal=False) is None
    legacy = legacy_path(tmp_path, "launch")
    RunStore.open(legacy).close()
    assert find_store(tmp_path, "launch", base_url=API, rehearsal=False) == legacy
    current = made_store(tmp_path, "launch", Target(API, "a"))
    assert find_store(tmp_path, "launch", base_url=API, rehearsal=False) == current


def test_the_rehearsal_store_is_found_by_its_name(tmp_path: Path) -> None:
    assert find_store(tmp_path, "launch", base_url=API, rehearsal=True) is None
    rehearsal = made_store(tmp_path, "launch", Target("http://127.0.0.1:1/api/v1", "s", rehearsal=True))
    assert find_store(tmp_path, "launch", base_url=API, rehearsal=True) == rehearsal


def test_one_workspace_under_another_spelling_of_the_url_is_found(tmp_path: Path) -> None:
    there = made_store(tmp_path, "launch", Target(API, "ws"))
    made_store(tmp_path, "launch", Target("https://proxy.test/api/v1", "other"))
    assert same_workspace(tmp_path, "launch", Target("https://sume.so/api/v1", "ws")) == there
    assert same_workspace(tmp_path, "launch", Target(API, "ws")) is None  # its own store
    assert same_workspace(tmp_path, "launch", Target("https://sume.so/api/v1", "new")) is None
    assert (
        same_workspace(tmp_path, "launch", Target("https://sume.so/api/v1", "")) is None
    )  # no workspace known
    assert same_workspace(tmp_path, "launch", Target("https://sume.so/api/v1", "ws", rehearsal=True)) is None
    assert same_workspace(tmp_path, "other-campaign", Target("https://sume.so/api/v1", "ws")) is None
