"""Test helpers: run the real CLI entry point and write manifests to a folder."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

from sume_batch.cli import cli, run_cli

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
