"""`POST /uploads/presign` and the storage it points at: signed PUTs of upload bytes, and media GETs.

Storage never accepts Sume credentials: any request carrying `Authorization` or `X-Api-Key` is
refused (403) and counted, because a client that leaks its key to storage has a bug.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sume_batch.sandbox import validate
from sume_batch.sandbox.envelope import SandboxError, json_response
from sume_batch.sandbox.media import content_type_for, media_bytes
from sume_batch.sandbox.proofs import proof_png, proof_video
from sume_batch.sandbox.routes_create import read_json
from sume_batch.sandbox.routes_read import sandbox, urls_for
from sume_batch.sandbox.state import SandboxState
from sume_batch.sandbox.uploads import Upload, object_key, presign_json

MAX_PUT_BYTES = 64 * 1024 * 1024  # the sandbox keeps uploads in memory


async def presign(request: Request) -> Response:
    """`POST /uploads/presign`: a signed PUT target for one file (not a job, costs nothing)."""
    state, urls = sandbox(request), urls_for(request)
    fields = validate.Fields(await read_json(request))
    params = validate.presign_params(fields)
    fields.finish(strict=state.config.strict_unknown_fields)
    now, upload_id = state.wall(state.now()), state.new_id("upl")
    upload = Upload(
        id=upload_id,
        object_key=object_key(state.workspace_id, upload_id, params["filename"]),
        filename=params["filename"],
        content_type=params["content_type"],
        size_bytes=params["size_bytes"],
        purpose=params["purpose"],
        token=state.rng("ids").randbytes(16).hex(),
        expires_at=now + state.config.upload_url_ttl,
    )
    state.uploads[upload.object_key] = upload
    signed = state.signer.query("PUT", upload.path, now, state.config.upload_url_ttl, "content-type;host")
    body = presign_json(
        upload, f"{urls.base}{upload.path}?{signed}", urls.plain(upload.path), state.iso(upload.expires_at)
    )
    return json_response(body)


async def storage_object(request: Request) -> Response:
    """`GET|HEAD|PUT /storage/...`: the bucket behind upload and media URLs."""
    state = sandbox(request)
    if "authorization" in request.headers or "x-api-key" in request.headers:
        state.stats.storage_requests_with_credentials += 1
        raise SandboxError(
            403,
            "credentials_not_allowed",
            "Storage URLs are pre-signed: do not send Sume API credentials to them.",
        )
    path = request.url.path
    upload = state.uploads.get(path.removeprefix("/storage/"))
    if request.method == "PUT":
        return await _put(request, state, upload)
    if upload is not None:
        if upload.data is None:
            raise SandboxError(404, "not_found", "Nothing has been uploaded here yet.")
        return Response(upload.data, media_type=upload.content_type)
    if path not in state.media:
        raise SandboxError(404, "not_found", "No such object.")
    if state.media[path]:
        _check_signature(state, "GET", request)
    job = _generated(state, path)
    if job is not None:  # a proof at the job's aspect ratio, with its id and prompt (see `proofs`)
        ratio, text = (
            job.params.get("aspect_ratio", "1:1"),
            str(job.params.get("prompt") or job.params.get("script") or ""),
        )
        video = proof_video(ratio) if path.endswith(".mp4") else None
        if video is not None:
            return Response(video, media_type="video/mp4")
        if path.endswith(".png"):
            return Response(proof_png(job.id, text, ratio), media_type="image/png")
    data, media_type = media_bytes(path)
    return Response(data, media_type=media_type or content_type_for(path))


def _generated(state: SandboxState, path: str) -> Any:
    """The image or video job whose output `path` is (`/storage/media/<job id>/<file>`), if any."""
    parts = path.split("/")
    if len(parts) != 5 or parts[1:3] != ["storage", "media"]:
        return None
    job = state.jobs.get(parts[3])
    kinds = ("image_generation", "video_generation", "ads_video")
    return job if job is not None and job.type in kinds else None


async def _put(request: Request, state: SandboxState, upload: Upload | None) -> Response:
    if upload is None:
        raise SandboxError(403, "signature_mismatch", "This URL was not issued for an upload.")
    _check_signature(state, "PUT", request)
    missing = upload.missing_header({k.lower(): v for k, v in request.headers.items()})
    if missing is not None:
        raise SandboxError(
            403,
            "missing_required_header",
            "Send exactly the presign response's required_headers.",
            {"header": missing},
        )
    data = await request.body()
    if len(data) > MAX_PUT_BYTES:
        raise SandboxError(
            413,
            "too_large",
            "The sandbox keeps uploads in memory; this one is too large.",
            {"max_bytes": MAX_PUT_BYTES},
        )
    upload.data = data
    return Response(b"", headers={"ETag": f'"{state.rng("ids").randbytes(8).hex()}"'})


def _check_signature(state: SandboxState, method: str, request: Request) -> None:
    problem = state.signer.check(method, request.url.path, request.query_params, state.wall(state.now()))
    if problem is not None:
        message = {"request_expired": "This signed URL has expired."}.get(
            problem, "The URL signature is invalid."
        )
        raise SandboxError(403, problem, message)


ROUTES = [
    Route("/api/v1/uploads/presign", presign, methods=["POST"]),
    Route("/storage/{path:path}", storage_object, methods=["GET", "HEAD", "PUT"]),
]
