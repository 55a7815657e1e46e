"""The read endpoints of sume-api.md §3.1: account, credits, Brand DNA, avatars, jobs, assets.

Auth, rate limits and faults happen in the gate before any of these run.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sume_batch.sandbox import catalog, paging, search
from sume_batch.sandbox.config import JOB_TYPES
from sume_batch.sandbox.envelope import API_KEY_KEY, SandboxError, invalid, json_response, not_found
from sume_batch.sandbox.jobs import STATUSES, Job
from sume_batch.sandbox.results import result_payload
from sume_batch.sandbox.state import SandboxState, Urls

CANCELED = ("canceled", "cancelled")


def sandbox(request: Request) -> SandboxState:
    """The state behind this app."""
    state: SandboxState = request.app.state.sandbox
    return state


def urls_for(request: Request) -> Urls:
    """URL maker for the host this request came in on."""
    return Urls(str(request.base_url).rstrip("/"), sandbox(request))


async def get_me(request: Request) -> Response:
    """`GET /me`."""
    state = sandbox(request)
    config = state.config
    account = catalog.account_json(
        request.scope[API_KEY_KEY], config.plan, workspace_id=state.workspace_id, user_id=config.user_id,
        email=config.user_email, environment=config.environment,
    )  # fmt: skip
    return json_response(account)


async def get_credits(request: Request) -> Response:
    """`GET /credits`: balance, plan and active generation capacity."""
    state = sandbox(request)
    state.tick()
    config = state.config
    return json_response(
        {
            "object": "credits",
            "plan": config.plan,
            "monthly_credits": config.credits,
            "bonus_credits": config.bonus_credits,
            "remaining_credits": state.remaining_credits(),
            "reserved_credits": state.ledger.reserved,
            "active_generation_capacity": {"limit": config.capacity, "active": state.scheduler.active},
        }
    )


async def list_brands(request: Request) -> Response:
    """`GET /brand`, optionally `?domain=`."""
    domain = _bare_domain(request.query_params.get("domain", ""))
    brands = [b for b in catalog.BRANDS if not domain or b.domain == domain]
    page, cursor = paging.page_by_offset(brands, request.query_params, "brand")
    url = urls_for(request).plain
    return json_response(paging.list_body([brand.to_json(url) for brand in page], cursor))


async def get_current_brand(request: Request) -> Response:
    """`GET /brand/current`."""
    return json_response(catalog.current_brand().to_json(urls_for(request).plain))


async def list_avatars(request: Request) -> Response:
    """`GET /avatars`: public and workspace avatars."""
    page, cursor = paging.page_by_offset(catalog.AVATARS, request.query_params, "avatar")
    url = urls_for(request).plain
    return json_response(paging.list_body([avatar.to_json(url) for avatar in page], cursor))


async def get_avatar(request: Request) -> Response:
    """`GET /avatars/{avatar_id}`."""
    avatar = catalog.find_avatar(request.path_params["avatar_id"])
    if avatar is None:
        raise not_found("avatar", request.path_params["avatar_id"])
    return json_response(avatar.to_json(urls_for(request).plain))


async def list_jobs(request: Request) -> Response:
    """`GET /jobs`: newest first, filtered by `type` and `status`, paged by `cursor`."""
    state, params = sandbox(request), request.query_params
    now = state.tick()
    wanted_type, wanted_status, limit, before = _job_query(params)
    found: list[Job] = []
    for job in reversed(state.jobs.values()):  # insertion order is creation order: newest last
        if len(found) > limit:
            break  # one past the page tells us there is more
        if _wanted(job, before, wanted_type) and (
            wanted_status is None or _same_status(job.status_at(now), wanted_status)
        ):
            found.append(job)
    page = found[:limit]
    cursor = paging.encode_cursor("jobs", page[-1].seq) if len(found) > limit else None
    urls = urls_for(request)
    return json_response(paging.list_body([state.job_json(job, now, urls) for job in page], cursor))


async def get_job(request: Request) -> Response:
    """`GET /jobs/{job_id}`."""
    state, job = _job(request)
    return json_response(state.job_json(job, state.tick(), urls_for(request)))


async def get_job_result(request: Request) -> Response:
    """`GET /jobs/{job_id}/result`: the job plus `result`; 409 until the job has completed."""
    state, job = _job(request)
    now = state.tick()
    status = job.status_at(now)
    if status != "completed":
        raise SandboxError(
            409,
            "job_not_completed",
            f"The job is {status}; only completed jobs have a result.",
            {"job_id": job.id, "status": status},
        )
    urls = urls_for(request)
    body = state.job_json(job, now, urls)
    body["result"] = result_payload(job, lambda path: urls.media(path, job.signed_media))
    return json_response(body)


async def list_assets(request: Request) -> Response:
    """`GET /assets`: list or search scenes (sume-api.md §8)."""
    state = sandbox(request)
    state.tick()
    query = search.parse_query(request.query_params)
    found = search.run_search(list(state.assets.values()), query)
    page, cursor = paging.page_by_offset(found, request.query_params, "asset")
    urls = urls_for(request)
    data = []
    for asset, score in page:
        body = asset.to_json(urls.plain, state.iso, full=False)
        if query["q"]:
            body["search"] = {"mode": query["search_mode"], "score": score, "query": query["q"]}
        data.append(body)
    return json_response(paging.list_body(data, cursor))


async def get_asset(request: Request) -> Response:
    """`GET /assets/{asset_id}`: one asset with fuller metadata (processing ones too)."""
    state = sandbox(request)
    state.tick()
    asset = state.assets.get(request.path_params["asset_id"])
    if asset is None:
        raise not_found("asset", request.path_params["asset_id"])
    return json_response(asset.to_json(urls_for(request).plain, state.iso, full=True))


def _job(request: Request) -> tuple[SandboxState, Job]:
    state = sandbox(request)
    job = state.jobs.get(request.path_params["job_id"])
    if job is None:
        raise not_found("job", request.path_params["job_id"])
    return state, job


def _job_query(params: Any) -> tuple[str | None, str | None, int, int | None]:
    """`type`, `status`, `limit` and the cursor position of `GET /jobs`; one 400 naming every bad one."""
    wanted_type, wanted_status = params.get("type") or None, params.get("status") or None
    problems: dict[str, Any] = {}
    if wanted_type is not None and wanted_type not in JOB_TYPES:
        problems["type"] = f"must be one of {', '.join(JOB_TYPES)}"
    if wanted_status is not None and wanted_status not in STATUSES:
        problems["status"] = f"must be one of {', '.join(STATUSES)}"
    limit, before = paging.DEFAULT_LIMIT, None
    try:
        limit = paging.parse_limit(params)
    except SandboxError as error:
        problems.update(error.details)
    try:
        before = paging.decode_cursor(params, "jobs")
    except SandboxError as error:
        problems.update(error.details)
    if problems:
        raise invalid(problems, "Invalid query parameter.")
    return wanted_type, wanted_status, limit, before


def _wanted(job: Job, before: int | None, wanted_type: str | None) -> bool:
    return (before is None or job.seq < before) and (wanted_type is None or job.type == wanted_type)


def _same_status(status: str, wanted: str) -> bool:
    return status == wanted or (status in CANCELED and wanted in CANCELED)


def _bare_domain(value: str) -> str:
    host = value.strip().lower().removeprefix("https://").removeprefix("http://").split("/")[0]
    return host.removeprefix("www.")


ROUTES = [
    Route("/api/v1/me", get_me),
    Route("/api/v1/credits", get_credits),
    Route("/api/v1/brand", list_brands),
    Route("/api/v1/brand/current", get_current_brand),
    Route("/api/v1/avatars", list_avatars),
    Route("/api/v1/avatars/{avatar_id}", get_avatar),
    Route("/api/v1/jobs", list_jobs),
    Route("/api/v1/jobs/{job_id}", get_job),
    Route("/api/v1/jobs/{job_id}/result", get_job_result),
    Route("/api/v1/assets", list_assets, methods=["GET"]),
    Route("/api/v1/assets/{asset_id}", get_asset),
]
