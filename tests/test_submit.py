"""submit: a create the client sends again (the API answered 429, or the connection was refused, so
no job can have been made) keeps the intent recorded before its first send: one `submitting`, one
job, never an illegal `submitting → submitting` (which ended such a run as an internal error)."""

from __future__ import annotations

import time
from pathlib import Path

from helpers import execute_plan, write

from sume_batch.commands.common import prepare
from sume_batch.sandbox import SandboxConfig, running_sandbox
from sume_batch.store import RunStore


async def no_wait(seconds: float) -> None:
    """The client's back-off, skipped (the sandbox asks for up to a minute after a 429)."""


def test_a_create_refused_with_429_is_sent_again_under_its_first_intent(tmp_path: Path) -> None:
    write(tmp_path, "version: 1\nname: one\nexecution: {poll_interval: {image: 0.05}}\n"
                    "jobs:\n  - {id: a, type: image, prompt: p}\n")  # fmt: skip
    _, specs = prepare(tmp_path / "campaign.yaml")
    store = RunStore.open(tmp_path / "store.sqlite")
    store.add_planned((spec.key, spec.id, spec.kind.name, spec.request, spec.matrix, 4.0) for spec in specs)
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        server.add_fault("rate_limit", path="/api/v1/images", method="POST")

        executor = execute_plan(server, tmp_path, store, concurrency=1, sleep=no_wait)
        stats = server.stats()
    assert executor.crashed is None and executor.stopped is None
    assert stats["requests"]["POST /api/v1/images/generations"] == {"429": 1, "200": 1}
    assert list(stats["creates_by_idempotency_key"].values()) == [1]
    journal = store.db.execute("SELECT state FROM events ORDER BY seq").fetchall()
    assert [state for (state,) in journal] == ["reserved", "submitting", "submitted", "completed", "fetched",
                                               "downloaded"]  # fmt: skip
    store.close()


def test_after_a_crash_the_first_create_waits_until_the_crashed_create_s_window_is_behind_it(
    tmp_path: Path,
) -> None:
    """A create the dead run left in flight may have made its job until this run settled it
    (`settle_in_flight`): a create of ours sent at once could fall in its window, and neither job
    could then be adopted by time. The first create waits a quiet gap, as after a lost answer."""
    write(tmp_path, "version: 1\nname: two\nexecution: {poll_interval: {image: 0.05}}\n"
                    "jobs:\n  - {id: 'img-{{ n }}', type: image, prompt: 'p {{ n }}', matrix: {n: [1, 2]}}\n")  # fmt: skip
    _, specs = prepare(tmp_path / "campaign.yaml")
    store = RunStore.open(tmp_path / "store.sqlite")
    store.add_planned((spec.key, spec.id, spec.kind.name, spec.request, spec.matrix, 4.0) for spec in specs)
    crashed = specs[0].key
    store.reserve(crashed, 4.0)
    store.intend(crashed, attempt=1, at=time.time() - 1)  # the dead run's create, never answered
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        execute_plan(server, tmp_path, store, concurrency=2, lost_create_grace=0)
    events = store.db.execute("SELECT key, state, at FROM events ORDER BY seq").fetchall()
    settled = next(at for key, state, at in events if key == crashed and state == "uncertain")
    first = next(at for key, state, at in events if state == "submitting" and at > settled)
    assert first - settled >= 0.3  # a quiet gap: the dead create's window is well behind this one's
    assert {job.state for job in store.jobs().values()} == {"downloaded"}  # it made none: sent again
    store.close()
