"""workspace and preflight: axes read from the workspace (scenes with their own media first, the
source video with timecodes only on request, avatars by capability), online by `run` and
`plan --refresh`, offline from their snapshot; and the preflight that refuses, before any create,
a job whose avatar, Brand DNA or upload cannot work (issue 14)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, cast

import pytest
from helpers import invoke, write

from sume_batch.commands.common import prepare
from sume_batch.errors import ApiError, ManifestError
from sume_batch.preflight import check_workspace
from sume_batch.sandbox import SandboxConfig, running_sandbox
from sume_batch.workspace import MissingMedia, capabilities_of, live_request, scene_row, stored_form

SCENES = """\
version: 1
name: scenes
jobs:
  - id: "still-{{ scene.id }}"
    type: image
    prompt: "A still in the mood of: {{ scene.metadata.visual_summary }}"
    reference_image_urls: ["{{ scene.thumbnail_url }}"]
    matrix:
      scene: {workspace: assets, q: hook, limit: 4}
  - id: "ugc-{{ avatar.id }}"
    type: ad_video
    avatar_id: "{{ avatar.id }}"
    style: ugc
    script: "Hi, I am {{ avatar.name }}."
    matrix:
      avatar: {workspace: avatars, capability: ugc_ad}
"""


def env_of(server: Any) -> dict[str, str]:
    return {"SUME_API_KEY": server.api_key, "SUME_API_BASE_URL": server.base_url}


SOURCE = {"id": "src_1", "media_url": "https://media.test/src_1.mp4"}


def scene(**fields: Any) -> dict[str, Any]:
    return {"id": "asset_1", "status": "ready", "start_time_seconds": 2, "end_time_seconds": 6.5,
            "source_video": SOURCE, **fields}  # fmt: skip


def test_a_scene_is_its_own_media_first_and_its_source_with_timecodes_only_when_asked() -> None:
    own = scene_row(scene(media_url="https://media.test/clip.mp4"), fallback=False)
    assert own is not None and (own["media_url"], own["scene_media"]) == ("https://media.test/clip.mp4", True)
    clip = scene_row(
        scene(clip_url="https://media.test/c.mp4", source_media_url="https://m.test/s.mp4"), fallback=False
    )
    assert clip is not None and clip["media_url"] == "https://media.test/c.mp4"
    assert clip["source_media_url"] == "https://m.test/s.mp4"
    assert scene_row(scene(), fallback=False) is None  # no scene media: left out
    fallback = scene_row(scene(), fallback=True)
    assert fallback is not None
    assert (fallback["media_url"], fallback["scene_media"]) == ("https://media.test/src_1.mp4", False)
    assert (fallback["start_time_seconds"], fallback["end_time_seconds"], fallback["duration_seconds"]) == (
        2,
        6.5,
        4.5,
    )
    assert scene_row(scene(media_url="https://m.test/a.mp4", status="processing"), fallback=True) is None
    assert scene_row(scene(media_url="javascript:alert(1)"), fallback=False) is None  # not a URL: no media


@pytest.mark.parametrize(
    ("avatar", "found"),
    [
        ({"capabilities": ["talking_head", "ugc_ad"]}, {"talking_head", "ugc_ad"}),
        ({"capabilities": {"face_swap": True, "ugc_ad": False}}, {"face_swap"}),
        ({"supports_face_swap": True, "supports_ugc_ad": "yes"}, {"face_swap"}),
        ({"use_cases": ["ugc_ad", 3]}, {"ugc_ad"}),
        ({"capabilities": "ugc_ad"}, set()),  # a wrong type says nothing
    ],
)
def test_an_avatars_capabilities_are_read_in_every_spelling(avatar: dict[str, Any], found: set[str]) -> None:
    assert capabilities_of(avatar) == found


def test_a_snapshot_keeps_no_signed_url_and_a_run_sends_the_url_it_just_read() -> None:
    live: dict[str, str] = {}
    signed = "https://media.test/a.png?X-Amz-Signature=abc123&X-Amz-Expires=900"
    row = stored_form({"id": "a", "thumbnail_url": signed, "notes": ["plain https://media.test/b.png"]}, live)
    assert row["thumbnail_url"] == "https://media.test/a.png?<redacted>"
    assert live == {"https://media.test/a.png?<redacted>": signed}
    request = {"prompt": "p", "reference_image_urls": [row["thumbnail_url"]]}
    assert live_request(request, live) == {"prompt": "p", "reference_image_urls": [signed]}
    with pytest.raises(MissingMedia):  # a later run whose workspace no longer offers it: not sent
        live_request(request, {})
    assert live_request({"prompt": "p"}, {}) == {"prompt": "p"}


def test_workspace_axes_are_read_by_plan_refresh_and_then_planned_offline_saying_how_old(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, SCENES)
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        env = {"SUME_API_KEY": server.api_key, "SUME_API_BASE_URL": server.base_url}
        unread = invoke("plan", str(path), env=env)
        assert unread.code == 2
        assert f"{path}:9:14: jobs[0].matrix.scene: the workspace has not been read" in unread.err
        unchecked = invoke("validate", str(path))  # valid as far as it goes: it says what is not read
        assert unchecked.code == 0 and "valid: campaign scenes, 0 jobs" in unchecked.out
        assert "not read from the workspace yet: jobs[0].matrix.scene, jobs[1].matrix.avatar" in unchecked.out
        refreshed = invoke("plan", str(path), "--refresh", env=env)
        assert refreshed.code == 0, refreshed.err
        requests = server.stats()["requests"]
    assert "workspace: read 0 s ago" in refreshed.out and "3 left out" in refreshed.out
    assert not any(route.startswith("POST") for route in requests)  # reads only
    offline = invoke("plan", str(path), "--json", env={"SUME_API_BASE_URL": env["SUME_API_BASE_URL"]})
    ids = sorted(job["id"] for job in json.loads(offline.out)["jobs"])
    assert ids == ["still-asset_seed01", "still-asset_seed05", "ugc-avatar_amara05", "ugc-avatar_kenji04",
                   "ugc-avatar_leo02", "ugc-avatar_maya01"]  # fmt: skip
    shown = invoke("plan", str(path), env={"SUME_API_BASE_URL": env["SUME_API_BASE_URL"]})
    assert "workspace: read" in shown.out and "`plan --refresh` reads it again" in shown.out
    valid = invoke("validate", str(path))
    assert valid.code == 0 and "6 jobs" in valid.out and "workspace: read" in valid.out
    snapshot = next((tmp_path / ".sume-batch").glob("scenes.*.workspace.json")).read_text()
    assert "sume_test" not in snapshot and "asset_seed05" in snapshot
    write(tmp_path, SCENES.replace("q: hook", "q: unboxing"))
    changed = invoke("plan", str(path), env={"SUME_API_BASE_URL": env["SUME_API_BASE_URL"]})
    assert changed.code == 2 and "(or was read with other settings)" in changed.err  # another query


def test_a_run_reads_the_workspace_afresh_and_buys_one_job_per_row(tmp_path: Path) -> None:
    path = write(tmp_path, SCENES)
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        env = {"SUME_API_KEY": server.api_key, "SUME_API_BASE_URL": server.base_url}
        result = invoke("run", str(path), "--yes", "--quiet", env=env)
        assert result.code == 0, result.err
        stats = server.stats()
    assert len(stats["job_ids"]) == 6 and all(n == 1 for n in stats["creates_by_idempotency_key"].values())
    assert "workspace: read 0 s ago" in result.out
    report = json.loads(next((tmp_path / "reports" / "scenes").glob("*/report.json")).read_text())
    assert report["manifest"]["workspace"]["axes"]["jobs[1].matrix.avatar"]["rows"] == [
        "avatar_maya01", "avatar_leo02", "avatar_kenji04", "avatar_amara05"
    ]  # fmt: skip


AVATARS = """\
version: 1
name: ads
jobs:
  - id: "ad-{{ avatar }}"
    type: ad_video
    avatar_id: "{{ avatar }}"
    script: Hi
    style: ugc
    matrix: {avatar: [avatar_maya01, avatar_noah06, avatar_nobody]}
  - id: swap
    type: face_swap
    source_video: selfie.txt
    avatar_ids: [avatar_leo02]
"""


def test_the_preflight_refuses_every_job_the_workspace_cannot_make_before_any_create(tmp_path: Path) -> None:
    (tmp_path / "selfie.txt").write_text("not a video")
    path = write(tmp_path, AVATARS)
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        env = {"SUME_API_KEY": server.api_key, "SUME_API_BASE_URL": server.base_url}
        result = invoke("run", str(path), "--yes", env=env)
        stats = server.stats()
    assert result.code == 2
    assert result.err.splitlines() == [
        f"{path}:6:16: jobs[0].avatar_id: avatar 'avatar_noah06' cannot be used for ugc_ad (it can: talking_head):"
        " job ad-avatar_noah06 (avatar=avatar_noah06)",
        f"{path}:6:16: jobs[0].avatar_id: no avatar 'avatar_nobody' in this workspace (GET /avatars):"
        " job ad-avatar_nobody (avatar=avatar_nobody)",
        f"{path}:12:19: jobs[1].source_video: selfie.txt is not a video file of a known type (.mp4, .mov, .webm, …):"
        " uploads are videos: job swap (no matrix)",
        f"{path}:13:17: jobs[1].avatar_ids: avatar 'avatar_leo02' cannot be used for face_swap (it can:"
        " talking_head, ugc_ad): job swap (no matrix)",
        "4 problems; nothing was sent.",
    ]
    assert stats["job_ids"] == [] and not any(route.startswith("POST") for route in stats["requests"])


class FakeApi:
    """An API whose avatars carry no capability field and whose Brand DNA is as given."""

    def __init__(self, brand: dict[str, Any] | None) -> None:
        self.brand = brand

    async def get(self, path: str, **_: Any) -> dict[str, Any]:
        if path == "/avatars":
            return {"data": [{"id": "avatar_plain", "name": "Plain"}], "has_more": False}
        raise ApiError("not found", status=404)

    async def brand_current(self) -> dict[str, Any]:
        if self.brand is None:
            raise ApiError("not found", status=404)
        return self.brand


BRANDED = """\
version: 1
name: branded
jobs:
  - {id: ad, type: ad_video, avatar_id: avatar_plain, script: Hi, style: ugc}
  - {id: hero, type: image, prompt: p, brand_reference_images: all}
"""


@pytest.mark.parametrize(
    ("brand", "problem"),
    [
        ({"images": [{"reference_url": "https://media.test/b.png"}]}, None),
        ({"images": []}, "the current Brand DNA profile has no reference images"),
        (None, "the workspace has no current Brand DNA profile (GET /brand/current)"),
    ],
)
def test_an_avatar_without_a_stated_capability_passes_and_brand_dna_must_have_images(
    tmp_path: Path, brand: dict[str, Any] | None, problem: str | None
) -> None:
    manifest, specs = prepare(write(tmp_path, BRANDED))
    check = check_workspace(cast(Any, FakeApi(brand)), manifest, specs)
    if problem is None:
        asyncio.run(check)
        return
    with pytest.raises(ManifestError) as raised:
        asyncio.run(check)
    assert [one.message for one in raised.value.problems] == [f"{problem}: job hero (no matrix)"]


def test_two_urls_that_differ_only_in_their_query_are_never_sent_for_each_other() -> None:
    live: dict[str, str] = {}
    first = stored_form("https://media.test/file?id=111&sig=a", live)
    second = stored_form("https://media.test/file?id=222&sig=b", live)
    assert first == second  # stored alike: the query is where signatures live
    with pytest.raises(MissingMedia, match="stands for several URLs"):
        live_request({"reference_image_urls": [first]}, live)


@pytest.mark.parametrize(
    "content",
    ['{"version": 1, "campaign": "scenes", "resolved_at": "soon", "target": {}, "axes": {}}',
     '{"version": 1, "campaign": "scenes", "resolved_at": 1, "target": {}, "axes": {"a": {"rows": 3}}}',
     "[" * 100_000, "not json"],
)  # fmt: skip
def test_a_damaged_snapshot_is_no_snapshot(tmp_path: Path, content: str) -> None:
    path = write(tmp_path, SCENES)
    (tmp_path / ".sume-batch").mkdir()
    (tmp_path / ".sume-batch/scenes.rehearsal.workspace.json").write_text(content)
    result = invoke("plan", str(path), "--sandbox")
    assert result.code == 2 and "the workspace has not been read for this axis" in result.err


def test_a_pipe_where_a_snapshot_would_be_hangs_nothing_and_another_campaigns_is_not_read(
    tmp_path: Path,
) -> None:
    import os

    path = write(tmp_path, SCENES)
    other = write(tmp_path, SCENES.replace("name: scenes", "name: scenes.v2"), "v2.yaml")
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        assert invoke("plan", str(other), "--refresh", env=env_of(server)).code == 0  # scenes.v2's only
    os.mkfifo(tmp_path / ".sume-batch/scenes.x.workspace.json")
    assert invoke("plan", str(other), "--sandbox").code == 0
    unread = invoke(
        "plan", str(path), "--sandbox"
    )  # scenes.*.workspace.json matches scenes.v2's: not its own
    assert unread.code == 2 and "the workspace has not been read for this axis" in unread.err


def test_status_and_report_work_for_a_campaign_of_workspace_axes(tmp_path: Path) -> None:
    path = write(tmp_path, SCENES)
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        assert invoke("run", str(path), "--yes", "--quiet", env=env_of(server)).code == 0
    assert invoke("status", str(path), "--sandbox").code == 0
    assert invoke("report", str(path), "--sandbox").code == 0


def test_an_avatar_id_is_never_read_as_a_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "version: 1\nname: ads\njobs:\n  - {id: ad, type: ad_video, avatar_id: ../credits, script: Hi}\n",
    )
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        result = invoke("run", str(path), "--yes", env=env_of(server))
        assert server.stats()["job_ids"] == []
    assert result.code == 2 and "no avatar '../credits' in this workspace" in result.err
