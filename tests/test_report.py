"""report: report.json against its schema, junit.xml, a self-contained report.html, and `sume-batch report`."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from html import unescape
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from browser import browser, chromium
from helpers import invoke, read_report, report_schema, write

from sume_batch.redact import Redactor
from sume_batch.report.document import Source, build_report, run_folder_name
from sume_batch.report.folder import write_reports
from sume_batch.report.html import report_html
from sume_batch.report.junit import report_junit
from sume_batch.sandbox import SandboxConfig, running_sandbox
from sume_batch.states import JobState
from sume_batch.store import RunStore

XSS = "<script>alert(1)</script><img src=x onerror=alert(1)>"
KEY = "sume_live_abcdefghijklmnop1234"
INFO = {
    "campaign": "launch", "manifest": {"path": "launch.yaml", "sha256": "a" * 64, "git_commit": None, "git_dirty": None},
    "downloads": "", "reports": "", "sandbox": None, "selection": [], "estimated": 12.0, "balance_before": 100.0,
}  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def made_store(folder: Path, *, end: bool = True) -> RunStore:
    """A store of one run: a downloaded image, a failed one (its message holding secrets), one never sent."""
    store = RunStore.open(folder / "launch.sqlite", clock=Clock())
    record = store.begin_run({**INFO, "downloads": str(folder / "out"), "reports": str(folder / "reports")})
    rows = [
        ("aa01", "hero-beach", "image", {"prompt": f"Hero {XSS}"}, {"scene": "beach"}, 4.0),
        ("aa02", "hero-city", "image", {"prompt": "Hero city"}, {"scene": "city"}, 4.0),
        ("aa03", "teaser", "video", {"prompt": "Teaser"}, {}, None),
    ]
    store.add_planned(rows, run=record.seq)
    for key, request_id in (("aa01", "req_1"), ("aa02", "req_2")):
        store.reserve(key, 4.0)
        store.intend(key, attempt=1, at=store.clock())
        store.created(
            key, [f"job_{key[-1]}"], reserved=4.0, required=None, request_id=request_id, at=store.clock()
        )
        if key == "aa01":
            store.finish("aa01", JobState.COMPLETED, sume_status="completed")
            store.fetched("aa01")
            store.add_file(
                "aa01",
                path="hero-beach.png",
                sume_id="job_1",
                sha256="b" * 64,
                size=99,
                content_type="image/png",
            )
            store.downloaded("aa01")
    message = f"provider said: key {KEY}, mail ops@brand.example, see https://cdn.example/x.png?X-Amz-Signature=s3cr3t"
    store.finish("aa02", JobState.FAILED, sume_status="failed", code="generation_failed", why=message)
    if end:
        store.end_run(
            record.seq, {"stopped": None, "interrupted": False, "exit_code": 1, "balance_after": 96.0}
        )
    return store


def report_of(store: RunStore, folder: Path) -> dict[str, Any]:
    run = store.runs()[-1]
    source = Source(campaign="launch", downloads=folder / "out", folder=folder / "reports/launch/r", run=run)
    return build_report(store, source, redactor=Redactor(api_key=KEY), now=1_800_000_100.0)


def test_report_json_holds_the_run_the_plan_and_each_job_and_validates(tmp_path: Path) -> None:
    report = report_of(made_store(tmp_path), tmp_path)
    assert not list(report_schema().iter_errors(report))
    assert report["credits"] == {
        "estimated": 8.0,
        "unknown_estimates": 1,
        "reserved": 4.0,
        "reserved_this_run": 4.0,
        "submitted_this_run": 1,
        "stated_by_api": None,
        "balance_before": 100.0,
        "balance_after": 96.0,
        "balance_change": 4.0,
    }  # fmt: skip  (a failed job's reservation is not counted, as the store counts it)
    assert report["counts"] == {"failed": 1, "planned": 1, "downloaded": 1}  # problems first
    assert report["types"] == {"image": {"failed": 1, "downloaded": 1}, "video": {"planned": 1}}
    assert report["axes"] == {"scene": ["beach", "city"]}
    hero, failed, teaser = report["jobs"]
    assert hero["files"] == [{"path": "../../../out/hero-beach.png", "sha256": "b" * 64, "bytes": 99,
                              "content_type": "image/png", "sume_job_id": "job_1"}]  # fmt: skip
    assert (hero["prompt"], hero["timings"]["seconds"], hero["provenance"]["reused"]) == (
        f"Hero {XSS}",
        2.0,
        False,
    )
    assert failed["failure"] == {
        "job_id": "job_2", "status": "failed", "code": "generation_failed", "request_id": "req_2",
        "message": "provider said: key <redacted:key>, mail <redacted:email>, see https://cdn.example/x.png?<redacted>",
    }  # fmt: skip
    assert (teaser["status"], teaser["ok"], teaser["failure"], teaser["timings"]["submitted_at"]) == (
        "planned", False, None, None,
    )  # fmt: skip
    assert report["run"]["partial"] is False and report["ok"] is False


def test_a_run_that_recorded_no_end_is_reported_partial(tmp_path: Path) -> None:
    report = report_of(made_store(tmp_path, end=False), tmp_path)
    assert report["run"]["partial"] and report["run"]["ended_at"] is None
    assert report["run"]["stopped"] == "the run recorded no end: still going, or it was killed"
    assert not list(report_schema().iter_errors(report))


def test_junit_has_one_case_per_job_grouped_by_type_with_matrix_values(tmp_path: Path) -> None:
    report = report_of(made_store(tmp_path), tmp_path)
    root = ElementTree.fromstring(report_junit(report).encode())
    assert {name: root.get(name) for name in ("tests", "failures", "errors", "skipped")} == {
        "tests": "3", "failures": "1", "errors": "0", "skipped": "1",
    }  # fmt: skip
    suites = {suite.get("name"): [case.get("name") for case in suite] for suite in root}
    assert suites == {
        "launch.image": ["hero-beach [scene=beach]", "hero-city [scene=city]"],
        "launch.video": ["teaser"],
    }
    city = root.find("./testsuite/testcase[@name='hero-city [scene=city]']")
    assert city is not None and city.get("classname") == "launch.image"
    failure = city.find("failure")
    assert failure is not None and failure.get("type") == "failed"
    assert failure.get("message", "").startswith(
        "job job_2 failed: generation_failed: provider said: key <redacted:key>"
    )
    assert [(p.get("name"), p.get("value")) for p in city.iter("property")] == [("matrix.scene", "city")]
    skipped = root.find("./testsuite/testcase[@name='teaser']/skipped")
    assert skipped is not None and skipped.get("message") == "not submitted"


def test_junit_stays_parseable_whatever_a_prompt_holds(tmp_path: Path) -> None:
    store = made_store(tmp_path)
    store.annotate("aa02", why="bad \x00\x1b[31m bytes ]]> & <tags>")
    text = report_junit(report_of(store, tmp_path))
    message = ElementTree.fromstring(text.encode()).find(".//failure")
    assert message is not None and "\ufffd[31m bytes ]]> & <tags>" in message.get("message", "")


def test_html_is_self_contained_and_treats_prompts_as_text(tmp_path: Path) -> None:
    html = report_html(report_of(made_store(tmp_path), tmp_path))
    assert (
        XSS not in html and "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    )
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing from the network
    assert not re.search(r"<(link|iframe|object|embed|base)\b", html)
    found = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html)
    assert found is not None
    policy = unescape(found[1])
    assert "default-src 'none'" in policy
    scripts = re.findall(r"<script>(.*?)</script>", html, re.DOTALL)
    assert len(scripts) == 1  # ours, allowed by its hash; an injected one would not run
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in policy
    assert 'src="../../../out/hero-beach.png"' in html
    assert "provider said: key &lt;redacted:key&gt;" in html and KEY not in html


def test_write_reports_writes_the_chosen_formats_atomically(tmp_path: Path) -> None:
    report = report_of(made_store(tmp_path), tmp_path)
    written = write_reports(report, tmp_path / "r", ("json", "junit"))
    assert sorted(path.name for path in written.values()) == ["junit.xml", "report.json"]
    assert sorted(path.name for path in (tmp_path / "r").iterdir()) == ["junit.xml", "report.json"]


def test_run_folder_names_sort_by_time_and_name_the_run(tmp_path: Path) -> None:
    store = made_store(tmp_path)
    assert run_folder_name(store.runs()[-1]) == "20270115T080001Z-run1"


CAMPAIGN = """\
version: 1
name: looks
budget: {max_credits: 3000}
execution:
  concurrency: 6
  poll_interval: {image: 0.05, video: 0.05, ad_video: 0.05}
defaults:
  video: {duration: 4, resolution: 480p}
jobs:
  - id: "still-{{ scene }}-{{ n }}"
    type: image
    prompt: "Serum bottle, {{ scene }} light, take {{ n }} <script>alert(1)</script><img src=x onerror=alert(1)>"
    matrix: {scene: [dawn, noon, dusk], n: [1, 2, 3]}
  - id: "clip-{{ scene }}"
    type: video
    prompt: "A slow pan at {{ scene }}"
    matrix: {scene: [dawn, dusk]}
  - {id: ad, type: ad_video, avatar_id: avatar_maya01, script: "One drop, done."}
"""


@pytest.fixture(scope="module")
def chaos_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A campaign run against the chaos profile: failures, faults and all."""
    folder = tmp_path_factory.mktemp("chaos-report")
    write(folder, CAMPAIGN)
    config = SandboxConfig.from_profile("chaos", seed=11, speed_factor=20.0, signed_media_rate=1.0)
    previous = Path.cwd()
    os.chdir(folder)
    try:
        with running_sandbox(config) as server:
            env = {"SUME_API_KEY": server.api_key, "SUME_API_BASE_URL": server.base_url}
            result = invoke("run", "campaign.yaml", "--yes", env=env)
    finally:
        os.chdir(previous)
    assert result.code in (0, 1), result.err
    return folder


def test_the_chaos_run_report_validates_and_counts_match(chaos_run: Path) -> None:
    report = read_report(chaos_run, "looks")
    assert len(report["jobs"]) == 12
    assert sum(report["counts"].values()) == 12
    assert report["run"]["sandbox"] == "server"  # a sandbox says so in GET /me: a rehearsal, never paid work
    downloaded = [job for job in report["jobs"] if job["status"] == "downloaded"]
    assert downloaded and all(job["files"] for job in downloaded)
    for job in downloaded:
        for item in job["files"]:
            data = (chaos_run / "reports/looks/latest" / item["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == item["sha256"]


def test_report_command_rewrites_the_reports_from_the_store(
    chaos_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    latest = chaos_run / "reports/looks/latest"
    before = json.loads((latest / "report.json").read_text())
    (latest / "report.html").unlink()
    monkeypatch.chdir(chaos_run)
    result = invoke("report", "campaign.yaml", "--sandbox")
    assert result.code == 0, result.err
    assert result.out.splitlines() == [f"wrote reports/looks/{before['run']['id']}/{name}"
                                       for name in ("report.html", "report.json", "junit.xml")]  # fmt: skip
    again = json.loads((latest / "report.json").read_text())
    assert {**again, "generated_at": None} == {**before, "generated_at": None}
    by_store = invoke(
        "report", ".sume-batch/looks.rehearsal.sqlite", "--format", "junit", "-o", str(tmp_path / "ci")
    )
    assert by_store.code == 0 and sorted(p.name for p in (tmp_path / "ci").iterdir()) == ["junit.xml"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("campaign.yaml", "--format", "pdf"), "unknown format pdf (choose from html, json, junit)"),
        (("elsewhere.sqlite",), "no run store at elsewhere.sqlite: this campaign has not been run yet"),
    ],
)
def test_report_command_refuses_bad_input_clearly(workdir: Path, args: tuple[str, ...], message: str) -> None:
    write(workdir, CAMPAIGN)
    result = invoke("report", *args)
    assert result.code == 2 and message in result.err and "Traceback" not in result.err


NEEDS_BROWSER = os.environ.get("SUME_BATCH_REQUIRE_BROWSER") == "1"


@pytest.mark.skipif(
    chromium() is None and not NEEDS_BROWSER,
    reason="no Chromium here (CI installs it and requires this test)",
)
def test_report_html_in_a_real_browser(chaos_run: Path, tmp_path: Path) -> None:
    executable = chromium()
    assert executable, "SUME_BATCH_REQUIRE_BROWSER=1 but no chromium on PATH"
    report = read_report(chaos_run, "looks")
    images = [f for job in report["jobs"] for f in job["files"] if f["content_type"].startswith("image/")]
    videos = [f for job in report["jobs"] for f in job["files"] if f["content_type"].startswith("video/")]
    failed = sum(1 for job in report["jobs"] if job["failure"])
    with browser(executable) as page:
        page.open((chaos_run / "reports/looks/latest/report.html").as_uri())
        widths = page.evaluate(
            "Promise.all([...document.querySelectorAll('#gallery img')].map(i => i.decode().then(() => i.naturalWidth)))"
        )
        assert len(widths) == len(images) > 0 and all(width > 0 for width in widths)  # the gallery shows
        metadata = page.evaluate(
            "Promise.all([...document.querySelectorAll('#gallery video')].map(v => v.readyState >= 1 ? v.readyState :"
            " new Promise(r => { v.addEventListener('loadedmetadata', () => r(v.readyState));"
            " v.addEventListener('error', () => r(-1)); })))"
        )
        assert len(metadata) == len(videos) > 0 and all(state >= 1 for state in metadata)  # playable
        assert page.evaluate("document.querySelectorAll('#gallery .card').length") == len(report["jobs"])
        assert page.evaluate("document.querySelectorAll('#failures tbody tr').length") == failed
        assert page.evaluate("document.querySelectorAll('img[src=\"x\"], #gallery script').length") == 0
        assert page.evaluate("document.body.innerText.includes('<script>alert(1)</script><img src=x')")
        shown = page.evaluate(
            "(() => { const s = document.querySelector('select[data-filter=\"type\"]'); s.value = 'video';"
            " s.dispatchEvent(new Event('change')); return document.getElementById('shown').textContent; })()"
        )
        assert int(shown) == sum(1 for job in report["jobs"] if job["type"] == "video")
        page.evaluate("document.getElementById('reset').click()")
        shot = page.screenshot(tmp_path / "report.png")
        problems = page.problems()
    assert shot.startswith(b"\x89PNG") and len(shot) > 20_000
    assert problems == []  # no console error, no exception, no dialog: the planted alert(1) never ran


NAMES = """\
version: 1
name: names
execution: {poll_interval: {image: 0.05}}
output: {downloads: "out/user_content_2024 #1"}
jobs:
  - id: "key_visual_0{{ n }}"
    type: image
    prompt: "Poster {{ n }} for {{ contact }}"
    matrix: {n: [1, 2], user: [teen], debug: [x], contact: ["alice.secret@brand.example"]}
"""


def test_names_people_chose_are_kept_and_secrets_in_matrix_values_are_not(workdir: Path) -> None:
    write(workdir, NAMES)
    result = invoke("run", "campaign.yaml", "--sandbox", "--yes")
    assert result.code == 0, result.out + result.err
    report = read_report(workdir, "names")  # validates: axes named user or debug are axes, not secrets
    assert [job["id"] for job in report["jobs"]] == ["key_visual_01", "key_visual_02"]
    assert report["axes"] == {
        "n": ["1", "2"],
        "user": ["teen"],
        "debug": ["x"],
        "contact": ["<redacted:email>"],
    }
    assert report["jobs"][0]["files"][0]["path"] == "../../../out/user_content_2024 #1/key_visual_01.png"
    html = (workdir / "reports/names/latest/report.html").read_text()
    assert 'src="../../../out/user_content_2024%20%231/key_visual_01.png"' in html
    assert "alice.secret" not in html + result.out
    for path in (workdir / ".sume-batch").iterdir():
        assert b"alice.secret" not in path.read_bytes(), path  # not in the stored matrix either


def test_regenerated_jobs_forget_the_timings_and_files_of_their_old_outputs(tmp_path: Path) -> None:

    from sume_batch.plan import Selection

    store = made_store(tmp_path)
    store.start_again(["aa01"], Selection(regenerate=True).again(), flag="--regenerate")
    job = report_of(store, tmp_path)["jobs"][0]
    assert (job["status"], job["files"], job["provenance"], job["sume_job_ids"]) == ("planned", [], None, [])
    assert job["timings"] == {"submitted_at": None, "finished_at": None, "seconds": None}
    assert store.credits() == (0.0, 0.0)


def test_a_failure_names_the_sume_job_that_failed(tmp_path: Path) -> None:
    store = made_store(tmp_path)
    with store.transaction() as db:  # a Face Swap of two avatars whose second failed
        db.execute(
            "UPDATE jobs SET sume_ids = ?, error_job_id = ? WHERE key = 'aa02'",
            ('["job_2", "job_3"]', "job_3"),
        )
    assert report_of(store, tmp_path)["jobs"][1]["failure"]["job_id"] == "job_3"


def test_reports_that_cannot_be_written_are_a_clear_error_before_anything_is_sent(workdir: Path) -> None:
    write(
        workdir,
        NAMES.replace('output: {downloads: "out/user_content_2024 #1"}', "output: {reports: blocked}"),
    )
    (workdir / "blocked").write_text("a file where the reports folder should be")
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        env = {"SUME_API_KEY": server.api_key, "SUME_API_BASE_URL": server.base_url}
        result = invoke("run", "campaign.yaml", "--yes", env=env)
        stats = server.stats()
    assert (result.code, result.err) == (2, "error: cannot write reports to blocked/names: Not a directory\n")
    assert (stats["job_ids"], stats["creates_by_idempotency_key"], stats["credits"]["spent"]) == ([], {}, 0)
    (workdir / "blocked").unlink()
    (workdir / "blocked/names/latest").mkdir(parents=True)  # someone made a folder where the link goes
    result = invoke("run", "campaign.yaml", "--sandbox", "--yes")
    assert result.code == 2 and "Done in" in result.out and "but `latest` could not point there" in result.err
    assert invoke("report", "campaign.yaml", "-o", "/dev/null/x").code == 2


def test_status_and_report_read_a_store_of_an_older_version(tmp_path: Path) -> None:
    import sqlite3

    from test_store import V1_SCHEMA

    with sqlite3.connect(tmp_path / "old.sqlite") as db:
        db.executescript(V1_SCHEMA)
    status = invoke("status", str(tmp_path / "old.sqlite"))
    assert status.code == 0 and "1 jobs: 1 downloaded" in status.out, status.err
    report = invoke("report", str(tmp_path / "old.sqlite"))
    assert (
        report.code == 2
        and "this store records no run yet: give the campaign's manifest instead" in report.err
    )
