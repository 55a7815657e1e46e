"""execute: a bug of ours stops the run cleanly (every job id kept, nothing more created) and is
reported as an internal error, never as a quiet job failure; a download never holds up a create."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, ClassVar

from helpers import execute_plan, write

from sume_batch.commands.common import prepare
from sume_batch.execute import Executor
from sume_batch.records import StoredJob
from sume_batch.sandbox import SandboxConfig, running_sandbox
from sume_batch.store import RunStore
from sume_batch.transfer import Results, Transfers

CAMPAIGN = """\
version: 1
name: buggy
jobs:
  - {id: "img-{{ n }}", type: image, prompt: "p {{ n }}", matrix: {n: [1, 2, 3, 4, 5, 6]}}
execution: {poll_interval: {image: 0.05}}
"""


class BrokenTransfers(Transfers):
    """Downloads that hit a bug of ours (not an API or disk failure) on the first job."""

    async def save_outputs(self, job: StoredJob, results: Results) -> None:
        raise KeyError("a bug in saving outputs")


def run_executor(folder: Path, transfers_class: type[Transfers]) -> tuple[Executor, RunStore, dict[str, Any]]:
    _, specs = prepare(folder / "campaign.yaml")
    store = RunStore.open(folder / "store.sqlite")
    store.add_planned((spec.key, spec.id, spec.kind.name, spec.request, spec.matrix, 4.0) for spec in specs)
    with running_sandbox(SandboxConfig.from_profile("instant", capacity=2)) as server:
        executor = execute_plan(server, folder, store, concurrency=2, transfers=transfers_class)
        stats = server.stats()
    return executor, store, stats


def test_a_bug_stops_the_run_keeps_every_job_id_and_is_kept_for_the_exit_code(tmp_path: Path) -> None:
    write(tmp_path, CAMPAIGN)
    executor, store, stats = run_executor(tmp_path, BrokenTransfers)
    assert isinstance(
        executor.crashed, KeyError
    )  # the command raises it once the reports are written: exit 70
    assert executor.stopped is not None and "internal error: KeyError" in executor.stopped
    jobs = store.jobs().values()
    made = {sume_id for job in jobs for sume_id in job.sume_ids}
    assert made == set(stats["job_ids"])  # every job the sandbox made is in the store
    assert len(made) < 6  # and no create went out after the bug
    assert all(n == 1 for n in stats["creates_by_idempotency_key"].values())
    assert not any(job.state == "failed" for job in jobs)  # a bug is not a job failure


def test_without_the_bug_every_job_is_downloaded(tmp_path: Path) -> None:
    write(tmp_path, CAMPAIGN)
    executor, store, stats = run_executor(tmp_path, Transfers)
    assert executor.crashed is None and executor.stopped is None
    assert {job.state for job in store.jobs().values()} == {"downloaded"}
    assert len(stats["job_ids"]) == 6


class HeldDownloads(Transfers):
    """Downloads that each wait (at most 5 s) until every job of the campaign has been created."""

    created_all: ClassVar[list[bool]] = []

    async def save_outputs(self, job: StoredJob, results: Results) -> None:
        for _ in range(500):
            if all(one.sume_ids for one in self.store.jobs().values()):
                break
            await asyncio.sleep(0.01)
        HeldDownloads.created_all.append(all(one.sume_ids for one in self.store.jobs().values()))
        await super().save_outputs(job, results)


def test_a_download_never_holds_a_slot_that_the_next_create_waits_for(tmp_path: Path) -> None:
    write(tmp_path, CAMPAIGN)
    HeldDownloads.created_all.clear()
    executor, store, stats = run_executor(tmp_path, HeldDownloads)  # concurrency 2, six jobs
    assert executor.crashed is None and executor.stopped is None
    assert HeldDownloads.created_all == [True] * 6  # the first two downloads saw all six jobs made
    assert {job.state for job in store.jobs().values()} == {"downloaded"}
    assert all(n == 1 for n in stats["creates_by_idempotency_key"].values())
