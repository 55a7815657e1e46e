"""`/_sandbox/...`: counters, reset, runtime knobs, a clock to advance and one-shot faults, for tests.

Outside the Sume paths and without auth: the sandbox only binds to loopback by default.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sume_batch.sandbox.envelope import invalid, json_response
from sume_batch.sandbox.faults import FAULT_KINDS
from sume_batch.sandbox.routes_create import read_json
from sume_batch.sandbox.routes_read import sandbox


async def get_stats(request: Request) -> Response:
    """Requests per route and status, creates per idempotency key and body, credits, leaks, job ids."""
    return json_response(sandbox(request).stats_json())


async def reset(request: Request) -> Response:
    """Forget all jobs, uploads, credits spent and counters; reseed from the config's seed."""
    sandbox(request).reset()
    return json_response({"ok": True})


async def get_config(request: Request) -> Response:
    """The knobs in effect."""
    return json_response(sandbox(request).config.to_json())


async def patch_config(request: Request) -> Response:
    """Change knobs now (partial, nested dicts allowed); a new `seed` takes effect at the next reset."""
    state = sandbox(request)
    overrides = await read_json(request)
    try:
        state.apply_config(state.config.with_overrides(**overrides))
    except (TypeError, ValueError) as error:
        raise invalid({"config": str(error)}, "Invalid sandbox config.") from None
    return json_response(state.config.to_json())


async def advance_clock(request: Request) -> Response:
    """Move sandbox time forward by `seconds`, so jobs progress and URLs expire without sleeping."""
    state = sandbox(request)
    seconds = (await read_json(request)).get("seconds")
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not seconds >= 0:
        raise invalid({"seconds": "must be a number >= 0"})
    state.offset += float(seconds)
    return json_response({"sandbox_time": round(state.tick(), 3)})


async def add_fault(request: Request) -> Response:
    """Queue a one-shot fault: `{"kind", "method": "*", "path": "/api/v1/", "times": 1, "status"?}`."""
    state = sandbox(request)
    entry = _fault_entry(await read_json(request))
    state.scripted_faults.append(entry)
    return json_response({"queued": state.scripted_faults})


async def list_faults(request: Request) -> Response:
    """The one-shot faults still queued; `DELETE` clears them."""
    state = sandbox(request)
    if request.method == "DELETE":
        state.scripted_faults.clear()
    return json_response({"queued": state.scripted_faults})


def _fault_entry(body: dict[str, Any]) -> dict[str, Any]:
    entry = {
        "kind": body.get("kind"),
        "method": body.get("method", "*"),
        "path": body.get("path", "/api/v1/"),
        "times": body.get("times", 1),
        "status": body.get("status"),
    }
    problems = {}
    if entry["kind"] not in FAULT_KINDS:
        problems["kind"] = f"must be one of {', '.join(FAULT_KINDS)}"
    if not isinstance(entry["method"], str) or not isinstance(entry["path"], str):
        problems["method"] = "method and path must be strings"
    if type(entry["times"]) is not int or entry["times"] < 1:
        problems["times"] = "must be an integer >= 1"
    if entry["status"] is not None and entry["status"] not in (500, 502, 503):
        problems["status"] = "must be 500, 502 or 503"
    if problems:
        raise invalid(problems)
    return entry


ROUTES = [
    Route("/_sandbox/stats", get_stats),
    Route("/_sandbox/reset", reset, methods=["POST"]),
    Route("/_sandbox/config", get_config),
    Route("/_sandbox/config", patch_config, methods=["PATCH"]),
    Route("/_sandbox/clock/advance", advance_clock, methods=["POST"]),
    Route("/_sandbox/faults", add_fault, methods=["POST"]),
    Route("/_sandbox/faults", list_faults, methods=["GET", "DELETE"]),
]
