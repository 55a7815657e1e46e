"""The commands: one module per `sume-batch` command, each a plain function returning an exit code.

`cli` parses arguments and calls exactly one of them, importing it only then, so a command loads
only the stages it uses (`validate` and `plan` never load httpx, asyncio, rich or the reports).
They take explicit keyword arguments and an `echo` for output, so tests call them directly.
"""
