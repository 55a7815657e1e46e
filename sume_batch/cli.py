"""The `sume-batch` command: parse, call one core function, map the outcome to an exit code."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import Any

import click

from sume_batch import __version__
from sume_batch.errors import ManifestError, SumeBatchError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sume-batch")
@click.option("--debug", is_flag=True, help="Show a traceback when something goes wrong.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Run generative-media campaigns against the Sume Public API.

    Describe a campaign in a YAML manifest, check and price it with `validate`
    and `plan` (no network, no credits), then `run` it.
    """
    ctx.obj = {"debug": debug}


def report_error(error: SumeBatchError) -> int:
    """Print an expected error for a person and return its exit code."""
    if isinstance(error, ManifestError):
        for problem in error.problems:
            click.echo(str(problem), err=True)
        count = len(error.problems)
        click.echo(f"{count} problem{'s' if count != 1 else ''}; nothing was sent.", err=True)
    else:
        click.echo(f"error: {error}", err=True)
    return error.exit_code


def main(argv: list[str] | None = None) -> None:
    """The console-script entry point: the one place errors become exit codes."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    code = run_cli(cli.main, argv, debug=debug)
    sys.exit(code)


def run_cli(entry: Callable[..., Any], argv: list[str] | None, *, debug: bool) -> int:
    try:
        result = entry(args=argv, prog_name="sume-batch", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except click.ClickException as error:
        error.show()
        return 2
    except SumeBatchError as error:
        if debug:
            traceback.print_exc()
        return report_error(error)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        return 130
    return result if isinstance(result, int) else 0
