"""Test helpers: run the real CLI entry point and write manifests to a folder."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import jsonschema
from click.testing import CliRunner

from sume_batch.cli import cli
from sume_batch.exits import run_cli

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    code: int
    out: str
    err: str


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run `sume-batch ARGS` through the same error handling as the console script."""
    runner = CliRunner()
    with runner.isolation(env=env) as (out, err, _):
        code = run_cli(cli.main, list(args), debug="--debug" in args)
    return Result(code, out.getvalue().decode(), err.getvalue().decode())


def write(folder: Path, text: str, name: str = "campaign.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), "utf-8")
    return path


@cache
def report_schema() -> jsonschema.Draft202012Validator:
    schema = json.loads((REPO / "schemas/report.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema)


def read_report(folder: Path, campaign: str) -> dict[str, Any]:
    """The latest report.json of a campaign run in `folder`, checked: it validates against its schema,
    junit.xml parses and agrees with it case by case, and report.html is there beside them."""
    latest = folder / "reports" / campaign / "latest"
    report: dict[str, Any] = json.loads((latest / "report.json").read_text())
    problems = [f"{error.json_path}: {error.message}" for error in report_schema().iter_errors(report)]
    assert not problems, problems
    suites = ElementTree.parse(latest / "junit.xml").getroot()
    cases = suites.findall("./testsuite/testcase")
    failed = [job for job in report["jobs"] if job["failure"] is not None]
    skipped = [job for job in report["jobs"] if job["failure"] is None and not job["ok"]]
    assert (int(suites.get("tests", -1)), len(cases)) == (len(report["jobs"]), len(report["jobs"]))
    assert (
        int(suites.get("failures", -1)) == len(failed) == len(suites.findall("./testsuite/testcase/failure"))
    )
    assert (
        int(suites.get("skipped", -1)) == len(skipped) == len(suites.findall("./testsuite/testcase/skipped"))
    )
    assert (latest / "report.html").read_text().startswith("<!doctype html>")
    return report


@contextlib.contextmanager
def tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """A small file system of its own at `folder` (`size=16m`, `size=1m,ro`): a full or read-only disk
    for real. Needs root, as CI has; skipped elsewhere."""
    import pytest

    folder.mkdir(exist_ok=True)
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], check=False
        ).returncode
    ):
        pytest.skip("mounting a small file system needs root (CI runs as root)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def execute_plan(
    server: Any,
    folder: Path,
    store: Any,
    *,
    concurrency: int,
    transfers: type[Any] | None = None,
    configure: Any = None,
    lost_create_grace: float | None = None,
    **client_options: Any,
) -> Any:
    """Run the executor over `folder/campaign.yaml`'s plan against `server` (a running sandbox), with
    `store`; `transfers` replaces the Transfers class, `configure(executor)` runs before it starts,
    `client_options` go to SumeClient. Returns the executor once its run ends."""
    import asyncio
    import time

    import httpx

    from sume_batch.api import SumeClient
    from sume_batch.commands.common import prepare
    from sume_batch.execute import Executor, Settings
    from sume_batch.plan import make_plan
    from sume_batch.redact import Redactor
    from sume_batch.transfer import Transfers

    manifest, specs = prepare(folder / "campaign.yaml")
    grace = {} if lost_create_grace is None else {"lost_create_grace": lost_create_grace}

    async def main() -> Any:
        async with httpx.AsyncClient() as http, httpx.AsyncClient() as storage:
            client = SumeClient(http, api_key=server.api_key, base_url=server.base_url, **client_options)
            kind = transfers or Transfers
            moving = kind(client=client, storage=storage, store=store, redactor=Redactor(), folder=folder,
                          downloads=folder / "out")  # fmt: skip
            settings = Settings(concurrency=concurrency, timeouts=manifest.timeouts,
                                poll_intervals=manifest.poll_intervals, **grace)  # fmt: skip
            executor = Executor(client=client, transfers=moving, store=store, settings=settings,
                                redactor=Redactor(), clock=time.time)  # fmt: skip
            if configure is not None:
                configure(executor)
            await executor.run(make_plan(manifest, specs).jobs)
            return executor

    return asyncio.run(main())
