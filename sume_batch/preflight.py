"""Preflight against the workspace: what the jobs of a run need from it, checked before any create
(issue 14). GET requests only; every problem is listed at once, located in the manifest, and the
run exits 2 with nothing sent.

- Every avatar a job names exists (`GET /avatars`, else `GET /avatars/{id}`) and has the capability
  its kind needs: `talking_head` or `ugc_ad` by an AI ad's `style`, `face_swap` for Face Swap. An
  avatar whose answer names no capability in any spelling we read (`workspace.capabilities_of`) is
  let through: the docs name no field, so only what an API says is held against it.
- A job that asks for Brand DNA references finds a current profile with images.
- A file a job uploads (a Face Swap source, an Asset Library video) is a video of a known type,
  within the upload bound (`transfer.MAX_UPLOAD_BYTES`).
"""

from __future__ import annotations

import mimetypes
import os
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sume_batch.api import SumeClient
from sume_batch.confine import ConfinementError, confine_file
from sume_batch.errors import ApiError, ManifestError, Problem
from sume_batch.expand import JobSpec, format_row
from sume_batch.manifest import Manifest
from sume_batch.stages import PROBE_URL, Probe
from sume_batch.transfer import MAX_UPLOAD_BYTES
from sume_batch.workspace import MAX_ROWS, capabilities_of, pages

AD_STYLE_NEEDS = {"talking_head": "talking_head", "ugc": "ugc_ad"}  # an AI ad's style → the capability
MAX_LOOKUPS = 200  # avatars asked for one by one when the list does not show them


async def check_workspace(client: SumeClient, manifest: Manifest, specs: Sequence[JobSpec]) -> None:
    """Raise ManifestError listing every problem; return quietly when there is none."""
    found = _Found(manifest)
    await _check_avatars(client, specs, found)
    if any(spec.request.get("brand_reference_images") for spec in specs):
        problem = await _brand_problem(client)
        for spec in specs if problem else ():
            if spec.request.get("brand_reference_images"):
                found.add(spec, "brand_reference_images", problem or "")
    for spec in specs:
        upload = spec.kind.upload_field
        if upload is not None and (
            wrong := _upload_problem(manifest, str(spec.request[upload]), MAX_UPLOAD_BYTES)
        ):
            found.add(spec, upload, wrong)
    if found.seen:
        raise ManifestError(found.problems())


async def _check_avatars(client: SumeClient, specs: Sequence[JobSpec], found: _Found) -> None:
    needs = list(_avatar_needs(specs))
    if not needs:
        return
    avatars = await _avatars(client, {avatar for _, _, avatar, _ in needs})
    for spec, field, avatar, capability in needs:
        known = avatars.get(avatar)
        if known is None:
            found.add(spec, field, f"no avatar {avatar!r} in this workspace (GET /avatars)")
            continue
        abilities = capabilities_of(known)
        if abilities and capability not in abilities:
            have = ", ".join(sorted(abilities))
            found.add(spec, field, f"avatar {avatar!r} cannot be used for {capability} (it can: {have})")


def _avatar_needs(specs: Iterable[JobSpec]) -> Iterable[tuple[JobSpec, str, str, str]]:
    """(job, field, avatar, capability) for every avatar a job names; a downstream job's stand-in
    values (`stages.Probe`: `upstream-…`) are checked once the real ones exist, by the API."""
    for spec in specs:
        if (
            spec.kind.name == "ad_video"
            and isinstance(spec.request.get("avatar_id"), str)
            and not _probed(spec.request["avatar_id"])
        ):
            needed = AD_STYLE_NEEDS.get(str(spec.request.get("style", "talking_head")), "talking_head")
            yield spec, "avatar_id", spec.request["avatar_id"], needed
        elif spec.kind.name == "face_swap" and isinstance(spec.request.get("avatar_ids"), list):
            for avatar in spec.request["avatar_ids"]:
                if isinstance(avatar, str) and not _probed(avatar):
                    yield spec, "avatar_ids", avatar, "face_swap"


def _probed(value: str) -> bool:
    """A value rendered from a stand-in upstream (`stages.Probe`): its real value is not known yet."""
    return isinstance(value, Probe) or "upstream-" in value or PROBE_URL in value


async def _avatars(client: SumeClient, wanted: set[str]) -> dict[str, Mapping[str, Any]]:
    """The avatars asked for, by id: the list first (paged, bounded), then one by one."""
    listed = await pages(client, "/avatars", {}, MAX_ROWS)
    found: dict[str, Mapping[str, Any]] = {
        str(item["id"]): item for item in listed if item.get("id") in wanted
    }
    for avatar in sorted(wanted - set(found))[:MAX_LOOKUPS]:
        try:
            item = await client.get(
                f"/avatars/{urllib.parse.quote(avatar, safe='')}"
            )  # `../credits` is no path
        except ApiError as error:
            if error.status == 404:
                continue
            raise
        if isinstance(item, Mapping):
            found[avatar] = item
    return found


async def _brand_problem(client: SumeClient) -> str | None:
    try:
        brand = await client.brand_current()
    except ApiError as error:
        if error.status == 404:
            return "the workspace has no current Brand DNA profile (GET /brand/current)"
        raise
    images = [
        image
        for image in brand.get("images") or ()
        if isinstance(image, Mapping) and image.get("reference_url")
    ]
    return None if images else "the current Brand DNA profile has no reference images"


def _upload_problem(manifest: Manifest, relative: str, limit: int) -> str | None:
    try:
        path = confine_file(relative, folder=manifest.folder, roots=manifest.roots)
        size = os.stat(path).st_size
    except (ConfinementError, OSError) as error:
        return str(error)
    kind = mimetypes.guess_type(path.name)[0] or ""
    if not kind.startswith("video/"):
        return f"{relative} is not a video file of a known type (.mp4, .mov, .webm, …): uploads are videos"
    if size > limit:
        return f"{relative} is {size:,} bytes, more than the {limit:,} a job uploads"
    return None


class _Found:
    """Problems folded per job template, field and message, with the variants they hit."""

    def __init__(self, manifest: Manifest) -> None:
        self.file, self.templates = str(manifest.path), manifest.jobs
        self.seen: dict[tuple[int, str, str], list[JobSpec]] = {}

    def add(self, spec: JobSpec, field: str, message: str) -> None:
        self.seen.setdefault((spec.template, field, message), []).append(spec)

    def problems(self) -> list[Problem]:
        listed = []
        for (index, field, message), specs in self.seen.items():
            template = self.templates[index]
            line, column = template.marks.get(field, template.marks[""])
            more = f" (and {len(specs) - 1:,} more)" if len(specs) > 1 else ""
            text = f"{message}: job {specs[0].id} {format_row(specs[0].matrix)}{more}"
            listed.append(Problem(self.file, line, column, f"{template.path}.{field}", text))
        return listed
