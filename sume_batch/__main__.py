"""`python -m sume_batch` is the same as the `sume-batch` command."""

from sume_batch.entry import main

main()
