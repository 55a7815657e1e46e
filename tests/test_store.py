"""store: a damaged store is a clear error, never a silent fresh start; old stores migrate; moves are
queued and written in batches, the durable ones (intents, ids) at once and fsynced, and every read
sees what is queued."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from helpers import execute_plan, invoke, write

from sume_batch.budget import Budget
from sume_batch.commands.common import prepare
from sume_batch.errors import StoreError
from sume_batch.migrations import SCHEMA_VERSION
from sume_batch.records import reading
from sume_batch.sandbox import SandboxConfig, running_sandbox
from sume_batch.states import ApiStatus, IllegalTransition, JobState
from sume_batch.store import RunStore
from sume_batch.writes import BATCH, LINGER_S

V1_SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE jobs (key TEXT PRIMARY KEY, id TEXT NOT NULL, kind TEXT NOT NULL, request TEXT NOT NULL,
    matrix TEXT NOT NULL, state TEXT NOT NULL, estimate REAL, reserved REAL NOT NULL DEFAULT 0, required REAL,
    attempts INTEGER NOT NULL DEFAULT 0, sume_ids TEXT NOT NULL DEFAULT '[]', sume_status TEXT, error_code TEXT,
    error_message TEXT, request_id TEXT, submitted_at REAL, updated_at REAL NOT NULL);
CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, state TEXT NOT NULL, at REAL NOT NULL,
    note TEXT);
CREATE TABLE files (key TEXT NOT NULL, path TEXT NOT NULL, sume_id TEXT NOT NULL, sha256 TEXT NOT NULL,
    bytes INTEGER NOT NULL, content_type TEXT NOT NULL, PRIMARY KEY (key, path));
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO jobs (key, id, kind, request, matrix, state, sume_ids, updated_at)
    VALUES ('k1', 'img-1', 'image', '{}', '{}', 'downloaded', '["job_1"]', 0);
"""


def test_a_new_store_is_created_at_the_current_version(tmp_path: Path) -> None:
    store = RunStore.open(tmp_path / "s.sqlite")
    assert store.db.execute("SELECT value FROM meta").fetchone() == (str(SCHEMA_VERSION),)
    store.close()


def test_a_version_1_store_is_migrated_and_keeps_its_jobs(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        db.executescript(V1_SCHEMA)
    store = RunStore.open(tmp_path / "s.sqlite")
    job = store.job("k1")
    assert (job.state, job.sume_ids, job.candidates, job.intent_at) == ("downloaded", ("job_1",), (), None)
    assert store.db.execute("SELECT value FROM meta").fetchone() == (str(SCHEMA_VERSION),)
    store.close()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda path: path.write_bytes(b"this is not sqlite at all" * 100), "file is not a database"),
        (lambda path: path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2]), "malformed"),
    ],
    ids=["garbage", "truncated"],
)
def test_a_damaged_store_is_a_clear_error(tmp_path: Path, damage: object, reason: str) -> None:
    path = tmp_path / "s.sqlite"
    store = RunStore.open(path)
    store.add_planned((f"k{n}", f"img-{n}", "image", {"prompt": "p" * 200}, {}, 4.0) for n in range(2000))
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    damage(path)  # type: ignore[operator]
    with pytest.raises(StoreError, match=f"s.sqlite is not a usable run store .*{reason}.*move it aside"):
        RunStore.open(path)


def test_a_newer_store_is_refused(tmp_path: Path) -> None:
    RunStore.open(tmp_path / "s.sqlite").close()
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        db.execute("UPDATE meta SET value = '99'")
    with pytest.raises(StoreError, match="written by a newer sume-batch \\(store version 99\\); upgrade"):
        RunStore.open(tmp_path / "s.sqlite")


def test_run_on_a_corrupt_store_stops_before_sending_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "version: 1\nname: c\njobs:\n  - {id: a, type: image, prompt: p}\n")
    (tmp_path / ".sume-batch").mkdir()
    (tmp_path / ".sume-batch/c.rehearsal.sqlite").write_bytes(b"garbage" * 1000)
    result = invoke("run", "campaign.yaml", "--sandbox", "--yes")
    assert result.code == 2
    assert result.err.startswith("error: .sume-batch/c.rehearsal.sqlite is not a usable run store (")
    assert (tmp_path / ".sume-batch/c.rehearsal.sqlite").read_bytes() == b"garbage" * 1000  # untouched


# --- batched writes: queued moves, durable ones, and what every read sees ---------------------------


def planned(tmp_path: Path, jobs: int = 3) -> RunStore:
    store = RunStore.open(tmp_path / "s.sqlite")
    store.add_planned(
        (f"k{n}", f"img-{n}", "image", {"prompt": f"p {n}"}, {"n": n}, 4.0) for n in range(jobs)
    )
    return store


def on_disk(tmp_path: Path) -> dict[str, str]:
    """Job key → state, as another process reads the file (a `status` during the run, or the next run)."""
    with contextlib.closing(sqlite3.connect(f"file:{tmp_path / 's.sqlite'}?mode=ro", uri=True)) as db:
        return dict(db.execute("SELECT key, state FROM jobs"))


def counts(store: RunStore) -> tuple[int, int]:
    return store.writes.transactions, store.writes.fsynced


def test_moves_wait_for_a_durable_one_which_writes_them_first_in_one_fsynced_transaction(
    tmp_path: Path,
) -> None:
    store = planned(tmp_path)
    before = counts(store)
    store.reserve("k0", 4.0)
    store.reserve("k1", 4.0)
    assert on_disk(tmp_path) == {"k0": "planned", "k1": "planned", "k2": "planned"}  # queued
    assert (store.job("k0").state, counts(store)) == ("reserved", before)  # the store knows them
    store.intend("k0", attempt=1, at=1.0)  # before the create's bytes go out: everything, fsynced
    assert on_disk(tmp_path) == {"k0": "submitting", "k1": "reserved", "k2": "planned"}
    assert counts(store) == (before[0] + 1, before[1] + 1)
    store.created("k0", ["job_1"], reserved=4.0, required=None, request_id="req_1", at=2.0)
    assert (on_disk(tmp_path)["k0"], counts(store)) == ("submitted", (before[0] + 2, before[1] + 2))
    store.finish("k0", JobState.COMPLETED, sume_status="completed")
    store.fetched("k0")
    store.add_file("k0", path="img-0.png", sume_id="job_1", sha256="0" * 64, size=3, content_type="image/png")
    store.downloaded("k0")
    assert (on_disk(tmp_path)["k0"], counts(store)) == ("submitted", (before[0] + 2, before[1] + 2))
    store.flush()  # one transaction for all of them, not fsynced
    assert (on_disk(tmp_path)["k0"], counts(store)) == ("downloaded", (before[0] + 3, before[1] + 2))
    events = store.db.execute("SELECT state FROM events WHERE key = 'k0' ORDER BY seq").fetchall()
    assert [state for (state,) in events] == ["reserved", "submitting", "submitted", "completed", "fetched",
                                              "downloaded"]  # fmt: skip
    assert [file["path"] for file in store.files("k0")] == ["img-0.png"]
    store.close()


def test_a_queued_move_is_written_at_the_latest_after_a_batch_or_a_moment(tmp_path: Path) -> None:
    now = [0.0]
    store = RunStore.open(tmp_path / "s.sqlite")
    store.writes.ticks = lambda: now[0]
    store.add_planned((f"k{n}", f"img-{n}", "image", {}, {}, 4.0) for n in range(BATCH))
    store.reserve("k0", 4.0)
    now[0] += LINGER_S  # the oldest queued move has waited long enough: the next one writes both
    store.reserve("k1", 4.0)
    assert (on_disk(tmp_path)["k1"], store.writes.queued) == ("reserved", [])
    for n in range(2, BATCH // 2 + 2):  # two statements a move: a full batch is written at once
        store.reserve(f"k{n}", 4.0)
    assert (on_disk(tmp_path)[f"k{BATCH // 2 + 1}"], store.writes.queued) == ("reserved", [])
    store.close()


def test_every_write_returns_the_job_exactly_as_reading_it_back_gives_it(tmp_path: Path) -> None:
    store = planned(tmp_path)
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
        lambda: store.annotate("k0", why="a note"),
        lambda: store.restart(store.job("k0"), note="--retry-failed"),
        lambda: store.reserve("k0", 5),
        lambda: store.skip("k0", "6 > 5"),
        lambda: store.reserve("k0", 4),
        lambda: store.intend("k0", attempt=2, at=20),
        lambda: store.refuse("k0", final=True, code="invalid", why="no", request_id=None),
    ]
    for move in moves:
        moved = move()
        store.flush()
        with reading(tmp_path / "s.sqlite") as reader:
            assert repr(reader.job("k0")) == repr(moved)  # 4 is 4.0 and an enum its string, as read
        assert store.job("k0") == moved
    store.close()


def test_an_illegal_move_is_refused_from_where_the_queued_moves_leave_the_job(tmp_path: Path) -> None:
    store = planned(tmp_path)
    store.reserve("k0", 4.0)  # queued: the file still says planned
    with pytest.raises(IllegalTransition, match="reserved → downloaded"):
        store.downloaded("k0")
    store.intend("k0", attempt=1, at=1.0)
    with pytest.raises(IllegalTransition, match="submitting → reserved"):
        store.reserve("k0", 4.0)
    events = store.db.execute("SELECT state FROM events WHERE key = 'k0' ORDER BY seq").fetchall()
    assert events == [("reserved",), ("submitting",)]  # nothing refused was written
    store.close()


def test_every_read_sees_the_queued_moves(tmp_path: Path) -> None:
    store = planned(tmp_path)
    store.reserve("k0", 4.0)
    store.intend("k0", attempt=1, at=1.0)
    store.lose("k0", why="no answer", request_id=None, settled_at=2.0)  # queued
    assert store.credits() == (4.0, 0.0)  # an uncertain create may have cost its reservation
    assert store.jobs()["k0"].state == store.jobs(["k0"])["k0"].state == "uncertain"
    assert [job.key for job in store.jobs_in({JobState.UNCERTAIN})] == ["k0"]
    assert store.keys_in({JobState.PLANNED}) == {"k1", "k2"}
    assert store.states() == {"k0": "uncertain", "k1": "planned", "k2": "planned"}
    store.close()


def deny_updates(store: RunStore) -> None:
    """The store's writes fail from now on (as on a full disk), its reads still work."""
    store.connection.set_authorizer(
        lambda action, *_: sqlite3.SQLITE_DENY if action == sqlite3.SQLITE_UPDATE else sqlite3.SQLITE_OK
    )


def test_a_failed_write_keeps_the_queue_and_a_failed_durable_move_is_not_taken(tmp_path: Path) -> None:
    store = planned(tmp_path)
    store.reserve("k0", 4.0)
    store.reserve("k1", 4.0)
    deny_updates(store)
    with pytest.raises(sqlite3.DatabaseError):
        store.intend("k0", attempt=1, at=1.0)  # raised before the create is sent: it never is
    assert store.job("k0").state == "reserved" and on_disk(tmp_path)["k0"] == "planned"
    with pytest.raises(sqlite3.DatabaseError):
        store.flush()
    store.connection.set_authorizer(None)  # space again
    store.intend("k0", attempt=1, at=1.0)
    assert on_disk(tmp_path) == {"k0": "submitting", "k1": "reserved", "k2": "planned"}
    store.close()


def test_closing_after_a_failed_write_gives_up_the_queue_quietly_but_a_first_failure_is_raised(
    tmp_path: Path,
) -> None:
    store = planned(tmp_path)
    store.reserve("k0", 4.0)
    deny_updates(store)
    with pytest.raises(sqlite3.DatabaseError):
        store.flush()  # this failure is the one reported (a run ends with exit 74)
    store.close()  # what is queued is lost, as a kill would lose it: harmless, and not raised twice
    again = RunStore.open(tmp_path / "s.sqlite")
    again.reserve("k0", 4.0)
    deny_updates(again)
    with pytest.raises(sqlite3.DatabaseError):
        again.close()  # nothing failed before: closing is where the queue's failure is told
    assert on_disk(tmp_path)["k0"] == "planned"


def test_known_jobs_keep_their_state_and_request_and_join_the_plan_of_the_new_run(tmp_path: Path) -> None:
    store = RunStore.open(tmp_path / "s.sqlite")
    rows = [(f"k{n}", f"img-{n}", "image", {"prompt": f"p {n}"}, {}, 4.0) for n in range(2)]
    assert store.add_planned(rows, run=1) == 2
    store.reserve("k0", 4.0)
    edited = [
        ("k0", "img-0b", "image", {"prompt": "edited"}, {}, 5.0),
        rows[1],
        ("k2", "img-2", "image", {}, {}, None),
    ]
    assert store.add_planned(edited, run=2) == 1
    job = store.job("k0")
    assert (job.state, job.id, job.estimate, job.request) == ("reserved", "img-0b", 5.0, {"prompt": "p 0"})
    assert [job.key for job in store.plan_of(2)] == ["k0", "k1", "k2"] and store.plan_of(1) == []
    assert store.add_planned(rows) == 0 and [job.key for job in store.plan_of(2)] == ["k0", "k1", "k2"]
    store.close()


def test_only_a_new_jobs_request_is_turned_into_what_the_store_keeps(tmp_path: Path) -> None:
    store = RunStore.open(tmp_path / "s.sqlite")
    asked: list[str] = []

    def stored(request: Any, matrix: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        asked.append(request["prompt"])
        return {"prompt": "[kept]"}, {"n": "[kept]"}

    store.add_planned([("k0", "img-0", "image", {"prompt": "p 0"}, {"n": 0}, 4.0)], stored=stored)
    rows = [(f"k{n}", f"img-{n}", "image", {"prompt": f"p {n}"}, {"n": n}, 4.0) for n in range(3)]
    assert store.add_planned(rows, stored=stored) == 2
    assert asked == ["p 0", "p 1", "p 2"]  # k0 once, when it was new
    assert {(job.request["prompt"], job.matrix["n"]) for job in store.jobs().values()} == {
        ("[kept]", "[kept]")
    }
    store.close()


def test_one_priced_job_of_each_kind_tells_a_budget_what_all_of_them_do(tmp_path: Path) -> None:
    store = RunStore.open(tmp_path / "s.sqlite")
    store.add_planned([("a", "a", "image", {}, {}, 4.0), ("b", "b", "image", {}, {}, 4.0),
                       ("c", "c", "image", {}, {}, 0.0), ("d", "d", "video", {}, {}, None),
                       ("e", "e", "face_swap", {}, {}, 9.0)])  # fmt: skip
    with store.transaction() as db:
        db.executemany(
            "UPDATE jobs SET required = ? WHERE key = ?", [(6, "a"), (5, "b"), (2, "c"), (30, "d")]
        )
    everything = Budget.from_store(store.jobs().values(), 0.0, cap=None, assumed=None)
    picked = Budget.from_store(store.priciest(), 0.0, cap=None, assumed=None)
    assert (picked.ratios, picked.confirmed) == (everything.ratios, everything.confirmed)
    assert (picked.ratios, picked.confirmed) == ({"image": 1.5}, {"image", "video"})
    store.close()


def test_a_run_writes_two_fsynced_transactions_a_job_and_reads_no_job_back(tmp_path: Path) -> None:
    write(tmp_path, "version: 1\nname: few\nexecution: {poll_interval: {image: 0.05}}\njobs:\n"
                    "  - {id: 'img-{{ n }}', type: image, prompt: 'p {{ n }}', matrix: {n: [1, 2, 3, 4, 5, 6]}}\n")  # fmt: skip
    _, specs = prepare(tmp_path / "campaign.yaml")
    store = RunStore.open(tmp_path / "store.sqlite")
    store.add_planned((spec.key, spec.id, spec.kind.name, spec.request, spec.matrix, 4.0) for spec in specs)
    reads: list[str] = []
    store.connection.set_trace_callback(
        lambda sql: reads.append(sql) if "FROM jobs WHERE key" in sql else None
    )
    before = counts(store)
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        execute_plan(server, tmp_path, store, concurrency=3)
    transactions, fsynced = counts(store)[0] - before[0], counts(store)[1] - before[1]
    assert set(store.states().values()) == {"downloaded"}
    assert fsynced == 2 * 6  # each job's intent and its ids, nothing else
    assert transactions <= 3 * 6  # the others ride along (a few written on their own, at idle points)
    assert len(reads) <= 6  # each job read once, when the run takes it up: never read back after a move
    store.close()
