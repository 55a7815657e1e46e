"""Moving bytes for the execute stage: a job's local file up to storage, its outputs down to disk.

Both go over the storage client, which carries no credentials (presigned URLs only). Outputs are
streamed to `.<name>.part` and renamed when whole, under names made from the manifest's job id
(never from the server); their sha256 is recorded in the store. A failed transfer (a bound, a
dropped link, a full disk) leaves no `.part` behind and the next run tries again.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from sume_batch.api import SumeClient
from sume_batch.confine import ConfinementError, confine_file, read_regular
from sume_batch.errors import ApiError
from sume_batch.expand import JobSpec
from sume_batch.records import StoredJob
from sume_batch.redact import Redactor
from sume_batch.responses import Media, find_media
from sume_batch.store import RunStore

DATA_KINDS = frozenset({"reference_analysis", "asset_upload"})  # their result JSON is an output too
SECONDARY_ROLES = ("thumbnail", "preview", "poster")  # downloaded only when a result has nothing else
MAX_UPLOAD_BYTES = 2 << 30  # 2 GiB: a local file a job uploads is read whole, so it is bounded

Results = list[tuple[str, dict[str, Any]]]  # (Sume job id, its result)


@dataclass
class Transfers:
    """Uploads and downloads for one run."""

    client: SumeClient
    storage: httpx.AsyncClient  # no credentials: presigned uploads and media downloads only
    store: RunStore
    redactor: Redactor
    folder: Path  # the manifest's folder: local upload files are relative to it
    downloads: Path
    roots: tuple[Path, ...] = ()  # where local files may be (the manifest's folder and allowed roots)

    async def upload(self, spec: JobSpec) -> dict[str, Any] | None:
        """Presign and PUT the job's local file (presigns make no job and cost nothing)."""
        kind = spec.kind
        if kind.upload_field is None or kind.upload_purpose is None:
            return None
        try:  # confined again now: a file or symlink swapped since `validate` must not be sent
            path = confine_file(str(spec.request[kind.upload_field]), folder=self.folder,
                                roots=self.roots or (self.folder.resolve(),))  # fmt: skip
        except ConfinementError as error:
            raise OSError(str(error)) from None
        data = read_regular(path, limit=MAX_UPLOAD_BYTES)
        if len(data) > MAX_UPLOAD_BYTES:
            raise OSError(f"{path.name} is larger than {MAX_UPLOAD_BYTES >> 20} MiB, the most a job uploads")
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        target = await self.client.presign(
            filename=path.name, content_type=content_type, size_bytes=len(data), purpose=kind.upload_purpose
        )
        await self.client.upload(self.storage, target, data)
        return target

    async def results(self, job: StoredJob) -> Results:
        """Each Sume job's result, fetched afresh (links are signed and expire). Only a partly failed
        job has results that do not exist."""
        found = []
        for sume_id in job.sume_ids:
            try:
                found.append((sume_id, await self.client.job_result(sume_id)))
            except ApiError:
                if not job.error_code:
                    raise
        return found

    async def save_outputs(self, job: StoredJob, results: Results) -> None:
        """Save every output of the results under our names; an analysis or an ingest (or a result
        with no media) saves its result as JSON."""
        self.downloads.mkdir(parents=True, exist_ok=True)
        labels = output_labels(job)
        outputs = [(sume_id, item) for sume_id, result in results for item in primary_media(result)]
        per_job, seen = Counter(sume_id for sume_id, _ in outputs), Counter[str]()
        for sume_id, item in outputs:
            seen[sume_id] += 1
            label = labels.get(sume_id)
            if per_job[sume_id] > 1:  # several files from one Sume job: number them
                label = f"{label}-{seen[sume_id]}" if label else str(seen[sume_id])
            await self.save(job, sume_id, output_name(job.id, label, item.content_type), item)
        if job.kind in DATA_KINDS or not outputs:
            for sume_id, result in results:
                data = json.dumps(
                    self.redactor.value(result.get("result", result)), indent=2, ensure_ascii=False
                )
                name = output_name(
                    job.id, labels.get(sume_id) if len(results) > 1 else None, "application/json"
                )
                self.write(job, sume_id, name, data.encode(), "application/json")

    async def save(self, job: StoredJob, sume_id: str, name: str, item: Media) -> None:
        """One download within its kind's size and time bounds (`bounds`), retried by the client's
        policy; a failed one, a full disk included, leaves no `.part` behind."""
        partial = self.downloads / f".{name}.part"
        try:
            sha, size = await self.client.download(self.storage, item.url, partial, kind=job.kind, name=name)
            partial.replace(self.downloads / name)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        self.store.add_file(
            job.key, path=name, sume_id=sume_id, sha256=sha, size=size, content_type=item.content_type
        )

    def write(self, job: StoredJob, sume_id: str, name: str, data: bytes, content_type: str) -> None:
        partial = self.downloads / f".{name}.part"
        try:
            partial.write_bytes(data)
            partial.replace(self.downloads / name)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        sha = hashlib.sha256(data).hexdigest()
        self.store.add_file(
            job.key, path=name, sume_id=sume_id, sha256=sha, size=len(data), content_type=content_type
        )


def primary_media(result: Mapping[str, Any]) -> list[Media]:
    """The outputs to keep: every media URL but thumbnails and previews, unless that is all there is."""
    found = list({item.url: item for item in find_media(result)}.values())
    primary = [item for item in found if not any(role in item.role for role in SECONDARY_ROLES)]
    return primary or found


def output_labels(job: StoredJob) -> dict[str, str]:
    """A file-name suffix per Sume job: the avatar for Face Swap (one job per avatar), else a number
    when the create made several jobs; none for the usual single job."""
    avatars = job.request.get("avatar_ids") if job.kind == "face_swap" else None
    if isinstance(avatars, list) and len(avatars) == len(job.sume_ids):
        return dict(zip(job.sume_ids, map(str, avatars), strict=True))
    if len(job.sume_ids) == 1:
        return {}
    return {sume_id: str(index) for index, sume_id in enumerate(job.sume_ids, start=1)}


def output_name(job_id: str, label: str | None, content_type: str) -> str:
    """A file name from the manifest's job id (and avatar id) — never from the server."""
    extension = mimetypes.guess_extension(content_type) or ".bin"
    return f"{job_id}{'-' + label if label else ''}{extension}"
