"""registry: the job ids every store on this machine holds, per target, and those a store could not
take, shared by every process that opens it; a registry that cannot be used is None, not an error."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from sume_batch.registry import Registry, opened, registry_home
from sume_batch.target import Target

HERE, THERE = Target("https://www.sume.so/api/v1", "ws-a"), Target("https://www.sume.so/api/v1", "ws-b")


@pytest.mark.parametrize(
    ("env", "home"),
    [
        ({"SUME_BATCH_HOME": "/h", "XDG_STATE_HOME": "/x", "HOME": "/u"}, "/h"),
        ({"XDG_STATE_HOME": "/x", "HOME": "/u"}, "/x/sume-batch"),
        ({"SUME_BATCH_HOME": "", "XDG_STATE_HOME": "", "HOME": "/u"}, "/u/.local/state/sume-batch"),
    ],
)
def test_the_registry_lives_in_the_first_home_the_environment_names(env: dict[str, str], home: str) -> None:
    assert registry_home(env) == Path(home)


def registry(home: Path, target: Target, store: Path) -> Registry:
    opened = Registry.open(home, target, store)
    assert opened is not None
    return opened


def test_ids_of_other_stores_at_the_same_target_are_foreign(tmp_path: Path) -> None:
    mine = registry(tmp_path, HERE, tmp_path / "a.sqlite")
    theirs = registry(tmp_path, HERE, tmp_path / "b.sqlite")
    elsewhere = registry(tmp_path, THERE, tmp_path / "c.sqlite")
    mine.add(["job_1", "job_2"])
    mine.add(["job_2"])  # entered again: no error, no second row
    theirs.add(["job_3"])
    elsewhere.add(["job_4"])
    assert (mine.foreign(), theirs.foreign(), elsewhere.foreign()) == ({"job_3"}, {"job_1", "job_2"}, set())
    for one in (mine, theirs, elsewhere):
        one.close()


def test_a_store_is_named_by_its_resolved_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    absolute = registry(tmp_path / "home", HERE, tmp_path / "a.sqlite")
    relative = registry(tmp_path / "home", HERE, Path("a.sqlite"))
    absolute.add(["job_1"])
    assert relative.foreign() == set()  # the same store, however it was spelt
    absolute.close()
    relative.close()


def test_rescued_ids_go_back_to_their_store_and_are_foreign_to_every_other(tmp_path: Path) -> None:
    mine = registry(tmp_path, HERE, tmp_path / "a.sqlite")
    theirs = registry(tmp_path, HERE, tmp_path / "b.sqlite")
    elsewhere = registry(tmp_path, THERE, tmp_path / "a.sqlite")
    assert mine.rescue("key-1", ["job_1", "job_2"]) and mine.rescue("key-2", ["job_3"])
    assert theirs.rescue("key-1", ["job_9"])
    assert mine.rescued() == {"key-1": ("job_1", "job_2"), "key-2": ("job_3",)}
    assert theirs.rescued_anywhere() == mine.rescued_anywhere() == {"job_1", "job_2", "job_3", "job_9"}
    assert (elsewhere.rescued(), elsewhere.rescued_anywhere()) == ({}, set())  # another target's ids
    assert mine.rescue("key-2", ["job_4"])  # kept again for the same job: the later ids replace
    mine.forget_rescued(["key-1", "key-unknown"])
    assert (mine.rescued(), theirs.rescued()) == ({"key-2": ("job_4",)}, {"key-1": ("job_9",)})
    for one in (mine, theirs, elsewhere):
        one.close()


CHILD = """
import sys
from pathlib import Path
from sume_batch.registry import Registry
from sume_batch.target import Target

home, store = Path(sys.argv[1]), Path(sys.argv[2])
registry = Registry.open(home, Target("https://www.sume.so/api/v1", "ws-a"), store)
registry.add(["job_child"])
assert registry.rescue("key-child", ["job_kept"])
print(sorted(registry.foreign()))
registry.close()
"""


def test_another_process_sees_what_a_run_entered(tmp_path: Path) -> None:
    mine = registry(tmp_path, HERE, tmp_path / "a.sqlite")
    mine.add(["job_parent"])
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), str(tmp_path / "b.sqlite")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (child.returncode, child.stdout, child.stderr) == (0, "['job_parent']\n", "")
    assert (mine.foreign(), mine.rescued_anywhere(), mine.rescued()) == ({"job_child"}, {"job_kept"}, {})
    mine.close()


def test_a_registry_that_cannot_be_used_is_none(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a file where the registry's folder should be")
    assert Registry.open(tmp_path / "file", HERE, tmp_path / "a.sqlite") is None
    (tmp_path / "home").mkdir()
    (tmp_path / "home/registry.sqlite").write_bytes(b"not a database, " * 64)
    assert Registry.open(tmp_path / "home", HERE, tmp_path / "a.sqlite") is None


def test_opened_finds_the_registry_from_the_environment_and_closes_it(tmp_path: Path) -> None:
    env = {"SUME_BATCH_HOME": str(tmp_path / "home")}
    with opened(env, HERE, tmp_path / "a.sqlite") as first:
        assert first is not None
        first.add(["job_1"])
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        first.foreign()
    with opened(env, HERE, tmp_path / "b.sqlite") as second:
        assert second is not None and second.foreign() == {"job_1"}
    assert (tmp_path / "home/registry.sqlite").is_file()
    (tmp_path / "taken").write_text("a file where the registry's folder should be")
    with opened({"SUME_BATCH_HOME": str(tmp_path / "taken")}, HERE, tmp_path / "a.sqlite") as nothing:
        assert nothing is None
