"""The one place a command's outcome becomes an exit code and a message (see the README's table).

Errors we raise on purpose (`errors`) print as one redacted line (a manifest's problems, one per
line) with their own code; anything else is a bug of ours: one redacted line and exit 70, the
traceback only with `--debug`. Every message passes the redaction gate.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from sume_batch.errors import ManifestError, SumeBatchError

if TYPE_CHECKING:
    from sume_batch.redact import Redactor

INTERNAL_ERROR = 70  # EX_SOFTWARE: a bug, not a failed job (1) nor bad input (2)


def redactor() -> Redactor:
    """The gate every message of ours passes (the API key of the environment, and every shape)."""
    from sume_batch.redact import Redactor  # noqa: PLC0415 - loaded only when there is something to say

    return Redactor.from_env(os.environ)


def report_error(error: SumeBatchError) -> int:
    """Print an expected error for a person and return its exit code."""
    gate = redactor()
    if isinstance(error, ManifestError):
        for problem in error.problems:  # a value quoted from the manifest may hold a key or an email
            click.echo(gate.text(str(problem)), err=True)
        count = len(error.problems)
        click.echo(f"{count} problem{'s' if count != 1 else ''}; nothing was sent.", err=True)
    else:
        click.echo(f"error: {gate.text(str(error))}", err=True)
    return error.exit_code


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
            click.echo(redacted_traceback(error), err=True)
        return report_error(error)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        return 130
    except Exception as error:  # a bug of ours: say so plainly, redacted, and never dump a traceback
        if debug:
            click.echo(redacted_traceback(error), err=True)
        message = redactor().text(f"{type(error).__name__}: {error}")
        click.echo(f"internal error: {message} (rerun with --debug for details, and report it)", err=True)
        return INTERNAL_ERROR
    return result if isinstance(result, int) else 0


def redacted_traceback(error: BaseException) -> str:
    """The --debug traceback, through the redaction gate like every other output."""
    import traceback  # noqa: PLC0415 - only with --debug

    text = "".join(traceback.format_exception(error))
    return redactor().text(text).rstrip()
