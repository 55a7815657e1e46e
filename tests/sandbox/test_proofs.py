"""proofs: a rehearsal's images are at the aspect ratio the job asked for, and show its id and prompt."""

from __future__ import annotations

import struct
import zlib

import httpx
import pytest

from sume_batch.sandbox import SandboxConfig, running_sandbox
from sume_batch.sandbox.proofs import proof_png, size_for


def decoded(png: bytes) -> tuple[int, int, bytes]:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", png[16:24])
    start = png.index(b"IDAT") + 4
    length = struct.unpack(">I", png[start - 8 : start - 4])[0]
    return width, height, zlib.decompress(png[start : start + length])


@pytest.mark.parametrize(("ratio", "size"), [("1:1", (384, 384)), ("4:5", (307, 384)), ("9:16", (216, 384))])
def test_a_proof_has_the_jobs_aspect_ratio_and_writes_its_id_and_prompt(
    ratio: str, size: tuple[int, int]
) -> None:
    width, height, pixels = decoded(proof_png("job_abc", "A serum on marble", ratio))
    assert (width, height) == size == size_for(ratio)
    assert len(pixels) == height * (1 + 3 * width)
    top = pixels[: 30 * (1 + 3 * width)]
    assert b"\xff\xff\xff" in top  # the text
    assert proof_png("job_abc", "A serum on marble", ratio) == proof_png(
        "job_abc", "A serum on marble", ratio
    )


def test_the_sandbox_serves_a_proof_for_each_image_of_an_image_job() -> None:
    with running_sandbox(SandboxConfig.from_profile("instant", signed_media_rate=0.0)) as server:
        headers = {"Authorization": f"Bearer {server.api_key}"}
        with httpx.Client(base_url=server.base_url, headers=headers) as client:
            made = client.post(
                "/images/generations", json={"prompt": "Tall", "aspect_ratio": "9:16", "image_count": 2}
            )
            job_id = made.json().get("job_id") or made.json()["job"]["id"]
            result = client.get(f"/jobs/{job_id}/result").json()
            urls = [image["url"] for image in result["result"]["images"]]
            sizes = [decoded(httpx.get(url).content)[:2] for url in urls]
    assert sizes == [(216, 384), (216, 384)]


def test_a_video_jobs_video_and_thumbnail_are_at_its_aspect_ratio() -> None:
    from sume_batch.sandbox.proofs import proof_video

    with running_sandbox(SandboxConfig.from_profile("instant", signed_media_rate=0.0)) as server:
        headers = {"Authorization": f"Bearer {server.api_key}"}
        with httpx.Client(base_url=server.base_url, headers=headers) as client:
            body = {"prompt": "Tall", "aspect_ratio": "9:16", "duration": 5, "resolution": "480p"}
            made = client.post("/videos/generations", json=body).json()
            job_id = made.get("job_id") or made["job"]["id"]
            video = client.get(f"/jobs/{job_id}/result").json()["result"]["video"]
            clip, thumbnail = httpx.get(video["url"]).content, httpx.get(video["thumbnail_url"]).content
    assert clip == proof_video("9:16") and clip[4:8] == b"ftyp"
    assert decoded(thumbnail)[:2] == (216, 384)
    assert proof_video("3:2") is None  # a ratio no proof is shipped for: the sandbox's sample
