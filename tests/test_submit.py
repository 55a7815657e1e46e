"""submit: a create the client sends again (the API answered 429, or the connection was refused, so
no job can have been made) keeps the intent recorded before its first send: one `submitting`, one
job, never an illegal `submitting → submitting` (which ended such a run as an internal error)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
from helpers import write

from sume_batch.api import SumeClient
from sume_batch.commands.common import prepare
from sume_batch.execute import Executor, Settings
from sume_batch.plan import make_plan
from sume_batch.redact import Redactor
from sume_batch.sandbox import SandboxConfig, running_sandbox
from sume_batch.store import RunStore
from sume_batch.transfer import Transfers


async def no_wait(seconds: float) -> None:
    """The client's back-off, skipped (the sandbox asks for up to a minute after a 429)."""


def test_a_create_refused_with_429_is_sent_again_under_its_first_intent(tmp_path: Path) -> None:
    write(tmp_path, "version: 1\nname: one\nexecution: {poll_interval: {image: 0.05}}\n"
                    "jobs:\n  - {id: a, type: image, prompt: p}\n")  # fmt: skip
    manifest, specs = prepare(tmp_path / "campaign.yaml")
    store = RunStore.open(tmp_path / "store.sqlite")
    store.add_planned((spec.key, spec.id, spec.kind.name, spec.request, spec.matrix, 4.0) for spec in specs)
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        server.add_fault("rate_limit", path="/api/v1/images", method="POST")

        async def main() -> Executor:
            async with httpx.AsyncClient() as http, httpx.AsyncClient() as storage:
                client = SumeClient(http, api_key=server.api_key, base_url=server.base_url, sleep=no_wait)
                transfers = Transfers(client=client, storage=storage, store=store, redactor=Redactor(),
                                      folder=tmp_path, downloads=tmp_path / "out")  # fmt: skip
                settings = Settings(
                    concurrency=1, timeouts=manifest.timeouts, poll_intervals=manifest.poll_intervals
                )
                executor = Executor(client=client, transfers=transfers, store=store, settings=settings,
                                    redactor=Redactor(), clock=time.time)  # fmt: skip
                await executor.run(make_plan(manifest, specs).jobs)
                return executor

        executor = asyncio.run(main())
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
    manifest, specs = prepare(tmp_path / "campaign.yaml")
    store = RunStore.open(tmp_path / "store.sqlite")
    store.add_planned((spec.key, spec.id, spec.kind.name, spec.request, spec.matrix, 4.0) for spec in specs)
    crashed = specs[0].key
    store.reserve(crashed, 4.0)
    store.intend(crashed, attempt=1, at=time.time() - 1)  # the dead run's create, never answered
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:

        async def main() -> None:
            async with httpx.AsyncClient() as http, httpx.AsyncClient() as storage:
                client = SumeClient(http, api_key=server.api_key, base_url=server.base_url)
                transfers = Transfers(client=client, storage=storage, store=store, redactor=Redactor(),
                                      folder=tmp_path, downloads=tmp_path / "out")  # fmt: skip
                settings = Settings(concurrency=2, timeouts=manifest.timeouts, poll_intervals=manifest.poll_intervals,
                                    lost_create_grace=0)  # fmt: skip
                executor = Executor(client=client, transfers=transfers, store=store, settings=settings,
                                    redactor=Redactor(), clock=time.time)  # fmt: skip
                await executor.run(make_plan(manifest, specs).jobs)

        asyncio.run(main())
    events = store.db.execute("SELECT key, state, at FROM events ORDER BY seq").fetchall()
    settled = next(at for key, state, at in events if key == crashed and state == "uncertain")
    first = next(at for key, state, at in events if state == "submitting" and at > settled)
    assert first - settled >= 0.3  # a quiet gap: the dead create's window is well behind this one's
    assert {job.state for job in store.jobs().values()} == {"downloaded"}  # it made none: sent again
    store.close()
