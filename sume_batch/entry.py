"""The console script's first step: a Ctrl-C while the command is still loading exits 130 quietly.

`sume_batch.cli` imports click, the pipeline and their dependencies; an interrupt during those
imports would otherwise end in a KeyboardInterrupt traceback, before `cli.main` can catch it.
"""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from sume_batch.cli import main as cli_main  # noqa: PLC0415 - the import is what is guarded
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted.\n")
        sys.exit(130)
    cli_main()
