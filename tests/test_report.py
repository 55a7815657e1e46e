"""report: report.json against its schema, junit.xml, a self-contained report.html, and `sume-batch report`."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from html import unescape
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from browser import Page, browser, chromium
from helpers import invoke, read_report, report_schema, write

from sume_batch.redact import Redactor
from sume_batch.report.document import Source, build_report, failure_text, run_folder_name
from sume_batch.report.folder import write_reports
from sume_batch.report.html import data_chunks, report_html
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


def report_of(store: RunStore, folder: Path, *, saved: bool = True) -> dict[str, Any]:
    """The report of the store's last run; `saved`: its one output file is where the run saved it."""
    if saved:
        (folder / "out").mkdir(exist_ok=True)
        (folder / "out" / "hero-beach.png").write_bytes(b"\x89PNG" + bytes(95))
    run = store.runs()[-1]
    source = Source(campaign="launch", downloads=folder / "out", folder=folder / "reports/launch/r", run=run)
    return build_report(store, source, redactor=Redactor(api_key=KEY), now=1_800_000_100.0)


def test_an_output_deleted_since_the_run_is_shown_missing(tmp_path: Path) -> None:
    report = report_of(made_store(tmp_path), tmp_path, saved=False)
    (hero,) = [job for job in report["jobs"] if job["files"]]
    assert hero["files"][0]["missing"] is True and hero["status"] == "downloaded"
    problems = [error.message for error in report_schema().iter_errors(report)]
    assert problems == []
    chunks = "".join(data_chunks(report))
    assert '[[3,"../../../out/hero-beach.png"]]' in chunks  # the gallery draws it as missing


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


def page_data(html: str) -> dict[str, Any]:
    """The job data block of report.html, as report.js reads it (see sume_batch/report/html.py)."""
    found = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.DOTALL)
    assert found is not None
    assert "<" not in found[1]  # nothing in it can end the element or open a comment in it
    data: dict[str, Any] = json.loads(found[1])
    return data


def test_html_is_self_contained_and_treats_prompts_as_text(tmp_path: Path) -> None:
    report = report_of(made_store(tmp_path), tmp_path)
    html = report_html(report)
    assert XSS not in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing from the network
    assert not re.search(r"<(link|iframe|object|embed|base)\b", html)
    found = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html)
    assert found is not None
    policy = unescape(found[1])
    assert "default-src 'none'" in policy
    # ours, allowed by its hash (an injected one would not run), and the job data, which is not script
    assert re.findall(r"<script\b[^>]*>", html) == [
        '<script type="application/json" id="report-data">',
        "<script>",
    ]
    scripts = re.findall(r"<script>(.*?)</script>", html, re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in policy
    data = page_data(html)
    assert [row[0] for row in data["jobs"]] == ["hero-beach", "hero-city", "teaser"]
    hero, city, teaser = data["jobs"]
    assert hero[4] == f"Hero {XSS}" and hero[7] == [[0, "../../../out/hero-beach.png"]]
    assert city[5] == failure_text(report["jobs"][1]) and city[5].startswith(
        "job job_2 failed: generation_failed"
    )
    assert data["states"][teaser[1]] == ["planned", "pending", "not submitted"] and teaser[6] == 0
    assert data["axes"] == [["scene", ["beach", "city"]]] and hero[3] == [0, 0] and teaser[3] == []
    assert "provider said: key &lt;redacted:key&gt;" in html and KEY not in html  # the failures table


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
            # The sandbox makes a job the moment it takes a create: a lost one that made none is proven
            # so 1 s after its answer was lost (the product's 30 s would be this fixture's whole time).
            result = invoke("run", "campaign.yaml", "--yes", "--lost-create-grace", "1", env=env)
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
needs_browser = pytest.mark.skipif(
    chromium() is None and not NEEDS_BROWSER,
    reason="no Chromium here (CI installs it and requires this test)",
)


def executable() -> str:
    found = chromium()
    assert found, "SUME_BATCH_REQUIRE_BROWSER=1 but no chromium on PATH"
    return found


def choose(page: Page, label: str, text: str) -> int:
    """Pick the option shown as `text` in the filter labelled `label`; the count of jobs shown then."""
    script = f"""(() => {{
        const s = [...document.querySelectorAll('.filters label')]
            .find((l) => l.firstChild.textContent === {json.dumps(label)}).querySelector('select');
        s.dispatchEvent(new Event('focus'));
        s.value = [...s.options].find((o) => o.text === {json.dumps(text)}).value;
        s.dispatchEvent(new Event('change'));
        return Number(document.getElementById('shown').textContent); }})()"""
    shown: int = page.evaluate(script)
    return shown


def cards(page: Page) -> list[int]:
    """The jobs (their places in the report) whose cards the gallery shows."""
    found: list[int] = page.evaluate(
        "[...document.querySelectorAll('#gallery .card')].map((c) => Number(c.dataset.n))"
    )
    return found


def pager(page: Page, which: int = 0) -> list[list[Any]]:
    """The buttons of the pager above (0) or below (1) the gallery: label, whether disabled or current."""
    found: list[list[Any]] = page.evaluate(
        f"[...document.querySelectorAll('[data-pager]')[{which}].querySelectorAll('button, .gap')]"
        ".map((b) => [b.textContent, b.disabled === true, b.getAttribute('aria-current') === 'page'])"
        f".concat(document.querySelectorAll('[data-pager]')[{which}].hidden ? [['hidden']] : [])"
    )
    return found


def turn(page: Page, label: str, which: int = 0) -> None:
    page.evaluate(
        f"[...document.querySelectorAll('[data-pager]')[{which}].querySelectorAll('button')]"
        f".find((b) => b.textContent === {json.dumps(label)}).click()"
    )


@needs_browser
def test_report_html_in_a_real_browser(chaos_run: Path, tmp_path: Path) -> None:
    report = read_report(chaos_run, "looks")
    images = [f for job in report["jobs"] for f in job["files"] if f["content_type"].startswith("image/")]
    videos = [f for job in report["jobs"] for f in job["files"] if f["content_type"].startswith("video/")]
    failed = sum(1 for job in report["jobs"] if job["failure"])
    with browser(executable()) as page:
        page.open((chaos_run / "reports/looks/latest/report.html").as_uri())
        assert page.evaluate(
            "[...document.querySelectorAll('#gallery img')].every((i) => i.loading === 'lazy')"
        )
        assert page.evaluate(
            "[...document.querySelectorAll('#gallery video')].every((v) => v.preload === 'none')"
        )
        widths = page.evaluate(
            "Promise.all([...document.querySelectorAll('#gallery img')].map(i => { i.loading = 'eager';"
            " return i.decode().then(() => i.naturalWidth); }))"
        )
        assert len(widths) == len(images) > 0 and all(width > 0 for width in widths)  # the gallery shows
        metadata = page.evaluate(
            "Promise.all([...document.querySelectorAll('#gallery video')].map(v => new Promise(r => {"
            " v.addEventListener('loadedmetadata', () => r(v.readyState)); v.addEventListener('error', () => r(-1));"
            " v.preload = 'metadata'; v.load(); })))"
        )
        assert len(metadata) == len(videos) > 0 and all(state >= 1 for state in metadata)  # playable
        assert page.evaluate("document.querySelectorAll('#gallery .card').length") == len(report["jobs"])
        facts = page.evaluate("[...document.querySelectorAll('#gallery .facts')].map((p) => p.textContent)")
        sent = [job for job in report["jobs"] if job["sume_job_ids"]]
        assert len(facts) >= len(sent) > 0 and all(" credits" in line for line in facts)  # cost, id, attempts
        assert any(job["sume_job_ids"][0] in line and "1 attempt" in line for job in sent for line in facts)
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # nothing overflows
        assert pager(page) == pager(page, 1) == [["‹ Previous", True, False], ["1", False, True],
                                                 ["Next ›", True, False], ["hidden"]]  # fmt: skip
        assert page.evaluate("document.querySelectorAll('#failures tbody tr').length") == failed
        assert page.evaluate("document.querySelectorAll('img[src=\"x\"], #gallery script').length") == 0
        assert page.evaluate("document.body.innerText.includes('<script>alert(1)</script><img src=x')")
        assert choose(page, "Type", "video") == sum(1 for job in report["jobs"] if job["type"] == "video")
        assert len(cards(page)) == 2
        page.evaluate("document.getElementById('reset').click()")
        shot = page.screenshot(tmp_path / "report.png")
        problems = page.problems()
    assert shot.startswith(b"\x89PNG") and len(shot) > 20_000
    assert problems == []  # no console error, no exception, no dialog: the planted alert(1) never ran


HOSTILE = (
    "</script><script>alert(1)</script> <!-- <script>alert(2)</script> --> ]]> \"double\" 'single' `tick`"
    " \u2028line\u2029para </SCRIPT ><img src=x onerror=alert(3)> &amp; &lt;b&gt; \\u003c"
)


@pytest.fixture(scope="module")
def paged_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """report.html of 250 jobs, three pages of cards: the first hostile in its id, prompt and a matrix
    value; the 231st (page 3) the only one `scene: rare`, failed with a hostile message."""
    folder = tmp_path_factory.mktemp("paged-report")
    store = RunStore.open(folder / "paged.sqlite", clock=Clock())
    record = store.begin_run({**INFO, "downloads": str(folder / "out"), "reports": str(folder / "reports")})
    rows = [
        (f"k{n:03}", f"job-{n:03}", "image", {"prompt": f"Prompt {n}"},
         {"scene": "rare" if n == 230 else "common", "parity": ("even", "odd")[n % 2]}, 4.0)
        for n in range(250)
    ]  # fmt: skip
    rows[0] = (
        "k000",
        f"job-000 {HOSTILE}",
        "image",
        {"prompt": HOSTILE},
        {"scene": HOSTILE, "parity": "even"},
        4.0,
    )
    store.add_planned(rows, run=record.seq)
    store.reserve("k230", 4.0)
    store.intend("k230", attempt=1, at=store.clock())
    store.created("k230", ["job_230"], reserved=4.0, required=None, request_id="req_230", at=store.clock())
    store.finish("k230", JobState.FAILED, sume_status="failed", code="generation_failed", why=HOSTILE)
    store.end_run(record.seq, {"stopped": None, "interrupted": False, "exit_code": 1, "balance_after": 96.0})
    report = report_of(store, folder)
    written = write_reports(report, folder / "reports/launch/r", ("html",))
    return written["html"], report


@needs_browser
def test_the_gallery_shows_a_page_of_cards_at_a_time(paged_report: tuple[Path, dict[str, Any]]) -> None:
    html, _ = paged_report
    with browser(executable()) as page:
        page.open(html.as_uri())
        assert cards(page) == list(range(100))
        assert pager(page) == [["‹ Previous", True, False], ["1", False, True], ["2", False, False],
                               ["3", False, False], ["Next ›", False, False]]  # fmt: skip
        turn(page, "Next ›")
        assert cards(page) == list(range(100, 200))
        turn(page, "3", which=1)  # the pager below the cards too
        assert cards(page) == list(range(200, 250))
        assert pager(page, 1)[-1] == ["Next ›", True, False] and pager(page)[3] == ["3", False, True]
        turn(page, "‹ Previous")
        assert cards(page) == list(range(100, 200))
        assert page.evaluate("document.getElementById('shown').textContent") == "250"
        problems = page.problems()
    assert problems == []


@needs_browser
def test_filters_choose_among_all_jobs_and_the_pages_follow(
    paged_report: tuple[Path, dict[str, Any]],
) -> None:
    html, _ = paged_report
    with browser(executable()) as page:
        page.open(html.as_uri())
        assert choose(page, "scene", "rare") == 1
        assert cards(page) == [230] and pager(page)[-1] == ["hidden"]  # from page 3 to the only page
        visible = "[...document.querySelectorAll('#failures tbody tr')].filter((r) => !r.hidden).length"
        assert page.evaluate(visible) == 1
        assert choose(page, "scene", "common") == 248 and page.evaluate(visible) == 0
        assert choose(page, "Status", "failed") == 0 and cards(page) == []
        assert (
            page.evaluate("document.getElementById('gallery').textContent") == "No job matches these filters."
        )
        page.evaluate("document.getElementById('reset').click()")
        assert choose(page, "parity", "odd") == 125
        assert [row[0] for row in pager(page)] == ["‹ Previous", "1", "2", "Next ›"]
        turn(page, "2")
        assert cards(page) == list(range(201, 250, 2))
        assert choose(page, "Status", "failed") == 0 and choose(page, "parity", "all") == 1
        assert cards(page) == [230] and page.evaluate(visible) == 1
        problems = page.problems()
    assert problems == []


@needs_browser
def test_hostile_text_in_the_job_data_shows_as_text_and_runs_nothing(
    paged_report: tuple[Path, dict[str, Any]],
) -> None:
    html, report = paged_report
    first, failed = report["jobs"][0], report["jobs"][230]
    assert (
        "</script>" in first["prompt"] and "<!--" in first["id"] and "\u2028" in failed["failure"]["message"]
    )
    data = page_data(html.read_text())  # the block ends where it should, and gives every value back
    assert data["jobs"][0][:5] == [first["id"], 1, 0, [0, 0, 1, 0], first["prompt"]]  # planned: states[1]
    assert data["axes"] == [
        ["parity", ["even", "odd"]],
        ["scene", [first["matrix"]["scene"], "common", "rare"]],
    ]
    assert data["jobs"][230][5] == failure_text(failed)
    with browser(executable()) as page:
        page.open(html.as_uri())
        assert page.evaluate("document.querySelectorAll('script').length") == 2  # the data and ours
        assert (
            page.evaluate(
                "document.querySelectorAll('img[src=\"x\"], #gallery script, #failures script').length"
            )
            == 0
        )
        shown = page.evaluate(
            "(() => { const c = document.querySelector('#gallery .card'); return [c.querySelector('strong').textContent,"
            " c.querySelector('.prompt').textContent, [...c.querySelectorAll('.chip')].map((e) => e.textContent)]; })()"
        )
        assert shown == [
            first["id"],
            first["prompt"],
            ["image", "parity=even", f"scene={first['matrix']['scene']}"],
        ]
        choose(page, "scene", "rare")
        reason = page.evaluate("document.querySelector('#gallery .card .reason').textContent")
        message = page.evaluate(
            "document.querySelector('#failures tbody tr:not([hidden]) td:nth-child(5)').textContent"
        )
        assert (
            reason == failure_text(failed) and message == f"generation_failed {failed['failure']['message']}"
        )
        problems = page.problems()
    assert problems == []  # no exception, no dialog: no alert ran


@needs_browser
def test_without_javascript_the_summary_chart_and_failures_show_and_the_gallery_says_why_not(
    paged_report: tuple[Path, dict[str, Any]],
) -> None:
    html, report = paged_report
    with browser(executable()) as page:
        page.open(html.as_uri(), javascript=False)
        counts = page.evaluate(
            "['.stat', 'svg.chart rect', '#failures tbody tr', '.card', '[data-pager]:not([hidden])']"
            ".map((s) => document.querySelectorAll(s).length)"
        )
        filters = page.evaluate("document.getElementById('filters').hidden")
        text = shown_text(page, "Failures (1)")
        problems = page.problems()
    assert (counts, filters) == ([3, 2, 1, 0, 0], True)
    assert "The gallery of 250 jobs needs JavaScript" in text
    assert "Failures (1)" in text and report["jobs"][230]["failure"]["message"].split("\u2028")[0] in text
    assert problems == []


def shown_text(page: Page, wanted: str) -> str:
    """The page's text as shown, once it holds `wanted` (or after 5 s): the failures table
    (`content-visibility: auto`) is in it only once the browser has drawn it."""
    deadline = time.monotonic() + 5
    while wanted not in (text := page.evaluate("document.body.innerText")) and time.monotonic() < deadline:
        time.sleep(0.05)
    return text


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
    assert page_data(html)["jobs"][0][7] == [[0, "../../../out/user_content_2024%20%231/key_visual_01.png"]]
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


@pytest.mark.parametrize("mode", ["copy", "link"])
def test_report_media_makes_the_report_folder_a_complete_artifact(tmp_path: Path, mode: str) -> None:
    write(tmp_path, f"""\
        version: 1
        name: artifact
        output: {{downloads: out, reports: reports, report_media: {mode}}}
        jobs:
          - {{id: "still-{{{{ n }}}}", type: image, prompt: "p {{{{ n }}}}", matrix: {{n: [1, 2]}}}}
        """)  # fmt: skip
    assert invoke("run", str(tmp_path / "campaign.yaml"), "--sandbox", "--yes", "--quiet").code == 0
    latest = (tmp_path / "reports/artifact/latest").resolve()
    report = read_report(tmp_path, "artifact")
    paths = sorted(file["path"] for job in report["jobs"] for file in job["files"])
    assert paths == ["media/still-1.png", "media/still-2.png"]
    for path in paths:
        copied = latest / path
        assert copied.is_symlink() == (mode == "link")
        assert copied.read_bytes() == (tmp_path / "out" / Path(path).name).read_bytes()
