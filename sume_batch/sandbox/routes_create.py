"""The create endpoints of sume-api.md §3.2: validate, price, reserve credits, create jobs, answer.

Every job-creating POST goes through `create`, which also applies the `Idempotency-Key` switch and
picks the documented answer shape (`job.id`, top-level `job_id`, or both) and status (200 / 202).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sume_batch.sandbox import catalog, validate
from sume_batch.sandbox.assets import Asset
from sume_batch.sandbox.books import StoredAnswer, body_hash
from sume_batch.sandbox.envelope import API_KEY_KEY, SandboxError, invalid, json_response
from sume_batch.sandbox.jobs import Job
from sume_batch.sandbox.routes_read import sandbox, urls_for
from sume_batch.sandbox.search import tokens
from sume_batch.sandbox.state import JobOrder, SandboxState, Urls
from sume_batch.sandbox.uploads import Upload


@dataclass(frozen=True)
class Plan:
    """What a valid create request will do: the jobs to create, and how to answer once they exist."""

    orders: list[JobOrder]
    answer: Callable[[list[Job]], dict[str, Any]]


Check = Callable[[validate.Fields, SandboxState, Urls], dict[str, Any]]
Planner = Callable[[dict[str, Any], SandboxState, Urls], Plan]


async def read_json(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying why not."""
    try:
        body = json.loads(await request.body() or b"null")
    except (ValueError, UnicodeDecodeError):
        raise invalid({"body": "is not valid JSON"}) from None
    if not isinstance(body, dict):
        raise invalid({"body": "must be a JSON object"})
    return body


async def create(request: Request, check: Check, planner: Planner) -> Response:
    """The shared create flow: idempotency, validation, credits, jobs, answer."""
    state, urls = sandbox(request), urls_for(request)
    body = await read_json(request)
    key = request.headers.get("idempotency-key")
    api_key, request_hash = request.scope[API_KEY_KEY], body_hash(request.url.path, body)
    honour = bool(key) and state.config.idempotency == "honour"
    stored = state.idempotency.replay(api_key, key, request_hash) if honour and key else None
    if stored is not None:
        state.stats.idempotent_replays += 1
        return json_response(stored.payload, stored.status, {"Idempotent-Replayed": "true"})
    fields = validate.Fields(body)
    params = check(fields, state, urls)
    for name in fields.finish(strict=state.config.strict_unknown_fields):
        state.stats.unknown_fields[f"{request.url.path}:{name}"] += 1
    plan = planner(params, state, urls)
    payload = plan.answer(state.create_jobs(plan.orders))
    if state.config.stated_prices:  # an API that states every create's price, not only Reference Analysis's
        payload.setdefault("required_credits", sum(order.price for order in plan.orders))
    payload.update(state.config.create_extras)
    status = _pick_status(state)
    state.stats.record_commit(key, request_hash)
    if honour and key:
        state.idempotency.remember(api_key, key, StoredAnswer(request_hash, status, payload))
    return json_response(payload, status)


def job_answer(
    state: SandboxState, urls: Urls, object_name: str, job: Job, *, job_id: bool = False
) -> dict[str, Any]:
    """`{"object", "job": {...}}`, `{"object", "job_id", "status"}` or both, as the shape knob picks."""
    shape = state.config.create_shape
    if shape == "mixed":
        shape = state.rng("shapes").choice(("job", "job_id", "both"))
    body: dict[str, Any] = {"object": object_name}
    if shape in ("job", "both"):
        body["job"] = state.job_json(job, state.now(), urls, status="queued")
    if shape in ("job_id", "both") or job_id:
        body["job_id"] = job.id
    if "job" not in body:
        body["status"] = "queued"
    return body


def _pick_status(state: SandboxState) -> int:
    choice = state.config.create_status
    if choice == "mixed":
        return state.rng("shapes").choice((200, 202))
    return int(choice)


def single(job_type: str, object_name: str, price: Callable[[dict[str, Any], SandboxState], int]) -> Planner:
    """A planner for endpoints that make one job and answer with the create shape."""

    def plan(params: dict[str, Any], state: SandboxState, urls: Urls) -> Plan:
        order = JobOrder(job_type, params, price(params, state), {})
        return Plan([order], lambda jobs: job_answer(state, urls, object_name, jobs[0]))

    return plan


def check_image(fields: validate.Fields, state: SandboxState, urls: Urls) -> dict[str, Any]:
    """`POST /images/generations` body."""
    return validate.image_params(fields, urls.base)


def check_video(fields: validate.Fields, state: SandboxState, urls: Urls) -> dict[str, Any]:
    """`POST /videos/generations` body."""
    return validate.video_params(fields)


def check_ads(fields: validate.Fields, state: SandboxState, urls: Urls) -> dict[str, Any]:
    """`POST /ads/videos` body; the avatar must have the capability its `style` needs."""
    params = validate.ads_params(fields, urls.base)
    needed = validate.AD_STYLES.get(str(params["style"]), "talking_head")
    _check_avatars(fields, "avatar_id", [params["avatar_id"]] if params["avatar_id"] else [], needed)
    return params


def check_face_swap(fields: validate.Fields, state: SandboxState, urls: Urls) -> dict[str, Any]:
    """`POST /face-swap` body; the source must be a received `face_swap_source_video` upload."""
    params = validate.face_swap_params(fields)
    _check_avatars(fields, "avatar_ids", params["avatar_ids"], "face_swap")
    source = params["source_video_url"]
    upload = state.uploads.get(urlsplit(source).path.removeprefix("/storage/")) if source else None
    if source and (upload is None or upload.data is None or upload.purpose != "face_swap_source_video"):
        fields.complain(
            "source_video_url",
            "must be the media_url of a received upload with purpose face_swap_source_video",
        )
    return params


def _check_avatars(fields: validate.Fields, name: str, avatar_ids: list[str], capability: str) -> None:
    for avatar_id in avatar_ids:
        avatar = catalog.find_avatar(avatar_id)
        if avatar is None:
            fields.complain(name, f"no avatar {avatar_id!r} in this workspace")
        elif capability not in avatar.capabilities:
            fields.complain(name, f"avatar {avatar_id!r} lacks the {capability!r} capability")


def plan_face_swap(params: dict[str, Any], state: SandboxState, urls: Urls) -> Plan:
    """One job per avatar; answered as a list of jobs plus their ids."""
    orders = [
        JobOrder("face_swap", params, state.config.prices.face_swap, {"avatar_id": avatar_id})
        for avatar_id in params["avatar_ids"]
    ]

    def answer(jobs: list[Job]) -> dict[str, Any]:
        data = [state.job_json(job, state.now(), urls, status="queued") for job in jobs]
        return {
            "object": "list",
            "data": data,
            "has_more": False,
            "next_cursor": None,
            "job_ids": [job.id for job in jobs],
        }

    return Plan(orders, answer)


def plan_reference(params: dict[str, Any], state: SandboxState, urls: Urls) -> Plan:
    """Reference Analysis answers `required_credits` and `job_id` (documented), and maybe `job`."""
    price = state.config.prices.reference_analysis

    def answer(jobs: list[Job]) -> dict[str, Any]:
        body = job_answer(state, urls, "reference_analysis", jobs[0], job_id=True)
        return {**body, "required_credits": price}

    return Plan([JobOrder("reference_analysis", params, price, {})], answer)


def check_finalize(fields: validate.Fields, state: SandboxState, urls: Urls) -> dict[str, Any]:
    """`POST /assets` body; the key must name an upload whose bytes arrived, finalized once."""
    params = validate.finalize_params(fields)
    upload = state.uploads.get(params["object_key"] or "")
    if params["object_key"] and (upload is None or upload.data is None):
        fields.complain("object_key", "no bytes were uploaded under this key")
    elif upload is not None and upload.asset_id is not None:
        raise SandboxError(
            409, "already_finalized", "This upload was already finalized.", {"asset_id": upload.asset_id}
        )
    return params


def plan_finalize(params: dict[str, Any], state: SandboxState, urls: Urls) -> Plan:
    """The asset enters processing; an `asset_ingest` job makes it searchable when it completes."""
    upload = state.uploads[params["object_key"]]
    asset_id = state.new_id("asset")
    order = JobOrder("asset_ingest", params, state.config.prices.asset_ingest, {"asset_id": asset_id})

    def answer(jobs: list[Job]) -> dict[str, Any]:
        asset = _ingested_asset(state, upload, asset_id, params["title"] or upload.filename)
        upload.asset_id = asset_id
        body = asset.to_json(urls.plain, state.iso, full=True)
        return {
            **body,
            **{k: v for k, v in job_answer(state, urls, "asset", jobs[0]).items() if k in ("job", "job_id")},
        }

    return Plan([order], answer)


def _ingested_asset(state: SandboxState, upload: Upload, asset_id: str, title: str) -> Asset:
    words = tokens(title)
    metadata = {
        "visual_summary": f"Uploaded video: {title}",
        "transcript": "",
        "action_labels": [],
        "brands": [],
        "products": [],
        "tags": words,
        "keywords": words,
        "cta_present": False,
    }
    asset = Asset(
        asset_id,
        title,
        "upload",
        "full_video",
        0.0,
        1.0,
        state.wall(state.now()),
        upload.id,
        title,
        metadata,
        "media_url",
        status="processing",
    )
    state.assets[asset_id] = asset
    state.media.update(dict.fromkeys(asset.media_paths(), False))
    return asset


def _price_image(params: dict[str, Any], state: SandboxState) -> int:
    return state.config.prices.image * int(params["image_count"])


def _price_video(params: dict[str, Any], state: SandboxState) -> int:
    return state.config.prices.video_per_second[params["resolution"]] * int(params["duration"])


def _endpoint(check: Check, planner: Planner) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        return await create(request, check, planner)

    return endpoint


ROUTES = [
    Route(
        "/api/v1/images/generations",
        _endpoint(check_image, single("image_generation", "image_generation", _price_image)),
        methods=["POST"],
    ),
    Route(
        "/api/v1/videos/generations",
        _endpoint(check_video, single("video_generation", "video_generation", _price_video)),
        methods=["POST"],
    ),
    Route(
        "/api/v1/ads/videos",
        _endpoint(check_ads, single("ads_video", "ads_video", lambda p, s: s.config.prices.ads_video)),
        methods=["POST"],
    ),
    Route("/api/v1/face-swap", _endpoint(check_face_swap, plan_face_swap), methods=["POST"]),
    Route(
        "/api/v1/reference-analysis",
        _endpoint(lambda f, s, u: validate.reference_params(f), plan_reference),
        methods=["POST"],
    ),
    Route("/api/v1/assets", _endpoint(check_finalize, plan_finalize), methods=["POST"]),
]
