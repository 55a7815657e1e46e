"""cli: the entry point's own behaviour — version, module entry, clear errors for the server command."""

from __future__ import annotations

import socket
import subprocess
import sys

from helpers import invoke


def test_version_and_module_entry_point() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sume_batch", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout == "sume-batch, version 0.1.0\n"


def test_sandbox_on_a_busy_port_is_a_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = invoke("sandbox", "--port", str(port))
    assert (result.code, result.err) == (
        2,
        f"error: could not serve on 127.0.0.1:{port}: Address already in use\n",
    )


def test_unknown_command_is_a_usage_error() -> None:
    result = invoke("launch")
    assert result.code == 2
    assert "No such command 'launch'" in result.err
