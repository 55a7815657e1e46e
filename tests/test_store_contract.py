"""The store contract, on SQLite and on PostgreSQL alike: what `store`, `records` and `writes`
promise whichever database is underneath (see `pg`). Each test runs once per backend."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sume_batch import migrations, pg
from sume_batch.errors import StoreError
from sume_batch.records import Place, reading
from sume_batch.states import ApiStatus, IllegalTransition, JobState
from sume_batch.store import RunStore
from sume_batch.target import Target

TARGET = Target("http://127.0.0.1:9/api/v1", "w" * 64, rehearsal=True)


@dataclass
class Backend:
    name: str
    place: Place
    raw: Callable[[], Any]  # a connection of another process's: what it would read now

    def open(self) -> RunStore:
        return RunStore.open(self.place, target=TARGET, campaign="demo")

    def outside(self) -> dict[str, str]:
        with contextlib.closing(self.raw()) as db:
            return dict(db.execute("SELECT key, state FROM jobs ORDER BY key").fetchall())

    def script(self, sql: str, args: tuple[Any, ...] = ()) -> None:
        with contextlib.closing(self.raw()) as db:
            db.execute(sql, args)
            db.commit()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        path = tmp_path / "s.sqlite"
        return Backend("sqlite", path, lambda: sqlite3.connect(path))
    url = request.getfixturevalue("pg_url")
    address = pg.Address(url, "demo", TARGET)
    import psycopg

    def raw() -> Any:
        return psycopg.connect(url, options=f"-c search_path={address.schema}")

    return Backend("postgresql", address, raw)


@contextlib.contextmanager
def planned(backend: Backend, jobs: int = 3) -> Iterator[RunStore]:
    store = backend.open()
    store.add_planned(
        (f"k{n}", f"img-{n}", "image", {"prompt": f"p {n}"}, {"n": n}, 4.0) for n in range(jobs)
    )
    try:
        yield store
    finally:
        store.close()


def test_a_new_store_is_at_the_current_version_and_bound_to_its_target(backend: Backend) -> None:
    with planned(backend) as store:
        assert store.db.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone() == (
            str(migrations.SCHEMA_VERSION),
        )
        assert store.target() == TARGET
    with reading(backend.place) as reader:
        assert reader.states() == {"k0": "planned", "k1": "planned", "k2": "planned"}


def test_durable_moves_reach_every_reader_at_once_with_what_was_queued_before_them(backend: Backend) -> None:
    with planned(backend) as store:
        store.reserve("k0", 4.0)
        store.reserve("k1", 4.0)
        assert backend.outside() == {"k0": "planned", "k1": "planned", "k2": "planned"}  # queued
        assert store.job("k0").state == "reserved"  # the store knows them
        store.intend("k0", attempt=1, at=1.0)  # before the create's bytes go out: all of it, committed
        assert backend.outside() == {"k0": "submitting", "k1": "reserved", "k2": "planned"}
        store.created("k0", ["job_1"], reserved=4.0, required=None, request_id="req_1", at=2.0)
        assert backend.outside()["k0"] == "submitted"
        store.finish("k0", JobState.COMPLETED, sume_status="completed")
        store.fetched("k0")
        store.add_file("k0", path="a.png", sume_id="job_1", sha256="0" * 64, size=3, content_type="image/png")
        store.add_file("k0", path="a.png", sume_id="job_1", sha256="1" * 64, size=5, content_type="image/png")
        store.downloaded("k0")
        assert backend.outside()["k0"] == "submitted"
        store.flush()
        assert backend.outside()["k0"] == "downloaded"
        events = store.db.execute("SELECT state FROM events WHERE key = 'k0' ORDER BY seq").fetchall()
        assert [state for (state,) in events] == ["reserved", "submitting", "submitted", "completed",
                                                  "fetched", "downloaded"]  # fmt: skip
        assert [(file["path"], file["bytes"]) for file in store.files("k0")] == [("a.png", 5)]


def test_every_write_returns_the_job_exactly_as_reading_it_back_gives_it(backend: Backend) -> None:
    with planned(backend) as store:
        moves = [
            lambda: store.reserve("k0", 4),
            lambda: store.intend("k0", attempt=1, at=10),
            lambda: store.lose("k0", why="no answer", request_id="req_1", settled_at=11),
            lambda: store.suspect("k0", ["job_a", "job_b"], why="two fit"),
            lambda: store.adopt("k0", ["job_a"], at=10, note="adopted"),
            lambda: store.time_out("k0"),
            lambda: store.resume("k0"),
            lambda: store.finish(
                "k0", JobState.FAILED, sume_status=ApiStatus.FAILED, code="x", why="bad", failed_id="job_a"
            ),
            lambda: store.restart(store.job("k0"), note="--retry-failed"),
            lambda: store.reserve("k0", 5),
            lambda: store.skip("k0", "6 > 5"),
        ]
        for move in moves:
            moved = move()
            store.flush()
            with reading(backend.place) as reader:
                assert repr(reader.job("k0")) == repr(moved)  # 4 is 4.0 and an enum its string, as read
            assert store.job("k0") == moved


def test_an_illegal_move_is_refused_and_never_written(backend: Backend) -> None:
    with planned(backend) as store:
        store.reserve("k0", 4.0)
        with pytest.raises(IllegalTransition, match="reserved → downloaded"):
            store.downloaded("k0")
        store.intend("k0", attempt=1, at=1.0)
        events = store.db.execute("SELECT state FROM events WHERE key = 'k0' ORDER BY seq").fetchall()
        assert events == [("reserved",), ("submitting",)]


def test_what_a_budget_reads_is_the_same_on_both(backend: Backend) -> None:
    with planned(backend, jobs=4) as store:
        store.add_planned([("d0", "ad-0", "ai_ads", {}, {"upstream": "ref-0"}, 40.0)])
        run = store.begin_run({"campaign": "demo"})
        for key, price, stated in (("k0", 4.0, 8.0), ("k1", 4.0, 4.0), ("d0", 40.0, 50.0)):
            store.reserve(key, price)
            store.intend(key, attempt=1, at=1.0)
            store.created(key, [f"job_{key}"], reserved=stated, required=stated, request_id=None, at=2.0)
        store.reserve("k2", 4.0)  # held, not charged
        store.restart(store.job("k1"), note="--regenerate")  # what it cost stays counted, as retired
        store.end_run(run.seq, {"exit_code": 0})
        assert (store.credits(), store.committed(), store.committed_downstream()) == (
            (58.0, 58.0),
            62.0,
            50.0,
        )
        assert sorted((job.kind, job.key) for job in store.priciest()) == [("ai_ads", "d0"), ("image", "k0")]
        assert [job.key for job in store.plan_of(None)] == ["k0", "k1", "k2", "k3", "d0"]
        assert [job.key for job in store.plan_of(run.seq)] == []  # planned before the run began
        assert (store.runs()[-1].outcome, store.may_have_cost("k0"), store.may_have_cost("k2")) == (
            {"exit_code": 0}, True, False,
        )  # fmt: skip
        assert set(store.moments()["k0"]) == {"reserved", "submitting", "submitted"}


def test_two_runners_planning_one_campaign_at_once_make_each_job_once(backend: Backend) -> None:
    rows = [(f"k{n}", f"img-{n}", "image", {"prompt": str(n)}, {}, 4.0) for n in range(50)]
    first, second = backend.open(), backend.open()
    try:
        assert first.add_planned(rows[:30], run=first.begin_run({}).seq) == 30
        assert second.add_planned(rows, run=second.begin_run({}).seq) == 20
        assert len(first.states()) == 50
    finally:
        first.close()
        second.close()


def test_a_store_of_a_newer_version_is_refused(backend: Backend) -> None:
    backend.open().close()
    backend.script("UPDATE meta SET value = '99' WHERE name = 'schema_version'")
    with pytest.raises(StoreError, match=r"written by a newer sume-batch \(store version 99\); upgrade"):
        backend.open()
    with pytest.raises(StoreError, match="newer sume-batch"), reading(backend.place):
        pass


def test_a_damaged_store_is_a_clear_error_never_a_fresh_start(backend: Backend) -> None:
    backend.open().close()
    backend.script("DROP TABLE meta")
    with pytest.raises(StoreError, match=r"is not a usable run store .*move it aside"):
        backend.open()


def test_an_older_store_is_migrated_and_keeps_its_jobs(backend: Backend) -> None:
    with planned(backend):
        pass
    backend.script("ALTER TABLE jobs DROP COLUMN owner")  # as version 4 left it
    backend.script("UPDATE meta SET value = '4' WHERE name = 'schema_version'")
    with reading(backend.place) as reader:  # a reader sees it migrated
        assert reader.states()["k0"] == "planned"
    with planned(backend, jobs=0) as store:
        assert store.db.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone() == (
            str(migrations.SCHEMA_VERSION),
        )
        assert store.job("k2").request == {"prompt": "p 2"}


KILLED = """
import os, signal, sys
from sume_batch import pg
from sume_batch.store import RunStore
from sume_batch.target import Target
target = Target("http://127.0.0.1:9/api/v1", "w" * 64, rehearsal=True)
place = pg.Address(sys.argv[2], "demo", target) if sys.argv[1] == "postgresql" else __import__("pathlib").Path(sys.argv[2])
store = RunStore.open(place, target=target, campaign="demo")
store.reserve("k1", 4.0)
store.intend("k0", attempt=1, at=1.0)  # durable, with k1's reservation before it: k0 is on the wire
store.reserve("k2", 4.0)  # queued: lost with the process
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_writer_leaves_every_durable_move_and_nothing_after_the_last(backend: Backend) -> None:
    with planned(backend) as store:
        store.reserve("k0", 4.0)
    where = str(backend.place) if backend.name == "sqlite" else backend.place.url  # type: ignore[union-attr]
    child = subprocess.run([sys.executable, "-c", KILLED, backend.name, where], check=False,
                           env={**os.environ}, capture_output=True)  # fmt: skip
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    assert backend.outside() == {"k0": "submitting", "k1": "reserved", "k2": "planned"}
