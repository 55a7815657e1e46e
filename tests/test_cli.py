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


def test_an_internal_error_is_one_redacted_line_with_its_own_exit_code(monkeypatch: object) -> None:
    from sume_batch.commands import validate

    def broken(*args: object, **kwargs: object) -> int:
        raise RuntimeError("boom with sume_live_abcdefghijklmnop inside")

    monkeypatch.setattr(validate, "validate", broken)  # type: ignore[attr-defined]
    result = invoke("validate", "x.yaml")
    assert result.code == 70
    assert result.err == (
        "internal error: RuntimeError: boom with <redacted:key> inside (rerun with --debug for details, and report it)\n"
    )
    debug = invoke("--debug", "validate", "x.yaml")
    assert "Traceback (most recent call last)" in debug.err
    assert "sume_live_abcdefghijklmnop" not in debug.err


def test_api_errors_are_printed_through_the_redaction_gate(monkeypatch: object) -> None:
    from sume_batch.commands import validate
    from sume_batch.errors import AuthError

    def refused(*args: object, **kwargs: object) -> int:
        raise AuthError(
            "key sume_live_abcdefghijklmnop of owner@example.com revoked", status=401, request_id="req_1"
        )

    monkeypatch.setattr(validate, "validate", refused)  # type: ignore[attr-defined]
    result = invoke("validate", "x.yaml")
    assert (
        result.err == "error: HTTP 401: key <redacted:key> of <redacted:email> revoked (request id req_1)\n"
    )
