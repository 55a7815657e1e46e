"""`sume-batch review --serve PORT`: the review page on 127.0.0.1, saving each decision to
`reviews/<campaign>.yaml` as it is made (Starlette and uvicorn, as the sandbox serves).

Loopback only. It serves the page, the campaign's outputs under `media/` (only files the store
records, never a path outside the download folder) and `POST /decisions` (a JSON body of at most
16 MiB, checked as the file is before it is written).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from sume_batch import reviews
from sume_batch.manifest import Manifest
from sume_batch.report.document import MEDIA
from sume_batch.report.review import review_html


def review_app(
    document: Mapping[str, Any], decisions: dict[str, Any], *, manifest: Manifest, file: str
) -> Starlette:
    """The app: the page, the media it shows, and the decisions it saves."""
    where = reviews.reviews_path(manifest.folder, manifest.name)
    known = {item["path"].removeprefix(MEDIA + "/") for job in document["jobs"] for item in job["files"]}
    state = {"decisions": decisions}

    async def page(request: Request) -> Response:
        return HTMLResponse(review_html(document, state["decisions"], file=file, served=True))

    async def media(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in known or not (manifest.downloads / name).is_file():
            return JSONResponse({"error": "no such output"}, status_code=404)
        return FileResponse(manifest.downloads / name)

    async def save(request: Request) -> Response:
        body = await request.body()
        if len(body) > reviews.MAX_BYTES:
            return JSONResponse({"error": "too large"}, status_code=413)
        try:
            found = json.loads(body)
        except ValueError:
            return JSONResponse({"error": "not JSON"}, status_code=400)
        wrong = reviews.problem_in({"version": reviews.VERSION, "decisions": found})
        if wrong:
            return JSONResponse({"error": wrong}, status_code=400)
        reviews.save(where, manifest.name, found)
        state["decisions"] = found
        return Response(status_code=204)

    async def nothing(request: Request) -> Response:
        return Response(status_code=204)

    routes = [
        Route("/", page),
        Route(f"/{MEDIA}/{{name:path}}", media),
        Route("/decisions", save, methods=["POST"]),
        Route("/favicon.ico", nothing),  # browsers ask for one
    ]
    return Starlette(routes=routes)


def serve_review(
    document: Mapping[str, Any], decisions: dict[str, Any], *, manifest: Manifest, file: str, port: int,
    echo: Callable[[str], None],
) -> None:  # fmt: skip
    app = review_app(document, decisions, manifest=manifest, file=file)
    echo(f"Review page: http://127.0.0.1:{port}/ (decisions saved to {file}; Ctrl-C to stop)")
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
