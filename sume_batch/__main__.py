"""`python -m sume_batch` is the same as the `sume-batch` command."""

from sume_batch.cli import main

main()
