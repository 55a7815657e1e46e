"""The review page in a real browser (Playwright driving Debian's Chromium): keyboard triage, the
decisions exported, or saved at once when served on loopback; a phone-width layout without
overflow; no console error; a hostile prompt inert (issue 16)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import invoke, write

from sume_batch.commands.common import chosen_store, prepare
from sume_batch.records import reading
from sume_batch.reviews import load, outputs_of, states

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and os.environ.get("SUME_BATCH_REQUIRE_BROWSER") != "1",
    reason="no Chromium here (CI installs it and requires these tests)",
)
XSS = "</script><script>alert(1)</script><img src=x onerror=alert(2)>"
TAKES = f"""\
version: 1
name: takes
jobs:
  - id: "take-{{{{ n }}}}-{{{{ ratio | replace(':', 'x') }}}}"
    type: image
    prompt: "Serum take {{{{ n }}}} {XSS}"
    aspect_ratio: "{{{{ ratio }}}}"
    matrix: {{n: [1, 2, 3], ratio: ["1:1", "9:16"]}}
"""


@pytest.fixture
def rehearsed(tmp_path: Path) -> Path:
    path = write(tmp_path, TAKES.replace('"Serum take', "'Serum take").replace('>"\n', ">'\n"))
    assert invoke("run", str(path), "--sandbox", "--yes", "--quiet").code == 0
    return path


@pytest.fixture
def browser() -> Iterator[Any]:
    assert CHROMIUM, "SUME_BATCH_REQUIRE_BROWSER=1 but no chromium on PATH"
    with playwright.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


def opened(browser: Any, url: str, width: int = 1400, ready: str = ".tile") -> tuple[Any, list[str]]:
    page = browser.new_page(viewport={"width": width, "height": 900}, accept_downloads=True)
    errors: list[str] = []
    page.on(
        "console",
        lambda message: (
            errors.append(message.text + " " + str(message.location)) if message.type == "error" else None
        ),
    )
    page.on(
        "response",
        lambda answer: errors.append(f"{answer.status} {answer.url}") if answer.status >= 400 else None,
    )
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("dialog", lambda dialog: (errors.append("dialog: " + dialog.message), dialog.dismiss()))
    page.goto(url)
    page.wait_for_selector(ready)
    # The page makes its images once it has loaded (lazily: those below the fold wait for a scroll),
    # so those in view are loaded, or broken, a moment later. Polled: `wait_for_function` evaluates a
    # string, which the pages' CSP refuses.
    shown = "[...document.images].every((i) => i.complete || i.getBoundingClientRect().top >= innerHeight)"
    deadline = time.monotonic() + 10
    while not page.evaluate(shown):
        assert time.monotonic() < deadline, "the images in view did not load"
        time.sleep(0.05)
    return page, errors


def review_states(path: Path, decisions: dict[str, Any]) -> dict[str, str]:
    manifest, _ = prepare(path)
    with reading(chosen_store(manifest, None, {}, True)) as store:
        outputs = outputs_of(store.files())
        ids = {job.key: job.id for job in store.jobs().values()}
    return {ids[key]: state for key, state in states(decisions, outputs).items()}


def test_keyboard_triage_exports_the_decisions_file(rehearsed: Path, browser: Any, tmp_path: Path) -> None:
    assert invoke("review", str(rehearsed), "--sandbox", "--page").code == 0
    page, errors = opened(browser, (tmp_path / "reports/takes/review.html").as_uri())
    assert page.locator(".tile").count() == 6
    assert page.locator("th").all_inner_texts()[1:3] == ["ratio=1:1", "ratio=9:16"]  # the columns axis
    sizes = page.evaluate(
        "[...document.querySelectorAll('.tile img')].map((i) => [i.naturalWidth, i.naturalHeight])"
    )
    assert sorted(map(tuple, sizes)) == [(216, 384)] * 3 + [(384, 384)] * 3  # true aspect ratios
    page.keyboard.press("p")  # take-1-1x1 picked, on to take-1-9x16
    page.keyboard.press("x")  # rejected, on to the next
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("4")  # take-1-9x16 rated
    assert page.inner_text("#status") == "1 picked · 1 rejected · 4 unreviewed"
    with page.expect_download() as download:
        page.click("#export")
    saved = tmp_path / "reviews/takes.yaml"
    saved.parent.mkdir()
    download.value.save_as(saved)
    decisions = load(saved)  # the file the page wrote is a file `review` and `run` read
    assert review_states(rehearsed, decisions) == {
        "take-1-1x1": "picked", "take-1-9x16": "rejected", **{f"take-{n}-{r}": "unreviewed" for n in (2, 3) for r in ("1x1", "9x16")},
    }  # fmt: skip
    assert any(mark.get("rating") == 4 for entry in decisions.values() for mark in entry["outputs"].values())
    assert page.evaluate("document.querySelectorAll('img[src=\"x\"], #grid script').length") == 0
    assert XSS in page.inner_text("#grid")  # shown as text
    page.set_viewport_size({"width": 390, "height": 800})
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # a phone: no overflow
    assert errors == []
    report, problems = opened(browser, (tmp_path / "reports/takes/latest/report.html").as_uri(), 390, ".card")
    assert report.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # the report too
    assert problems == []


def test_served_on_loopback_each_decision_is_saved_at_once(
    rehearsed: Path, browser: Any, tmp_path: Path
) -> None:
    import uvicorn

    from sume_batch.commands.review_server import review_app
    from sume_batch.redact import Redactor
    from sume_batch.report.document import MEDIA, Source, build_report

    manifest, _ = prepare(rehearsed)
    source = Source(
        campaign="takes", downloads=manifest.downloads, folder=tmp_path, run=None, decisions={}, media=MEDIA
    )
    with reading(chosen_store(manifest, None, {}, True)) as store:
        document = build_report(store, source, redactor=Redactor(), now=time.time())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = review_app(document, {}, manifest=manifest, file="reviews/takes.yaml")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)
        page, errors = opened(browser, f"http://127.0.0.1:{port}/")
        assert page.evaluate(
            "[...document.querySelectorAll('.tile img')].every((i) => i.complete && i.naturalWidth > 0)"
        )
        page.keyboard.press("p")
        playwright.expect(page.locator("#saved")).to_have_text(re.compile(r"^saved to"))  # the page's answer
        assert review_states(rehearsed, load(tmp_path / "reviews/takes.yaml"))["take-1-1x1"] == "picked"
        assert errors == []
    finally:
        server.should_exit = True
        thread.join(timeout=10)


CHAINED = """\
version: 1
name: picks
execution: {poll_interval: {image: 0.05}}
jobs:
  - id: "take-{{ n }}"
    stage: takes
    type: image
    prompt: "Serum take {{ n }}"
    matrix: {n: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]}
  - id: "ad-{{ upstream.id }}"
    needs: takes
    picked: true
    type: image
    prompt: "An ad around {{ upstream.id }}"
"""


def cli_run(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "sume_batch", "run", str(path), "--yes", "--quiet"]
    return subprocess.run(
        command, env={**os.environ, **env}, capture_output=True, text=True, timeout=120, check=False
    )


def test_picks_made_in_the_browser_are_exactly_what_the_next_stage_buys(browser: Any, tmp_path: Path) -> None:
    import uvicorn

    from sume_batch.commands.review_server import review_app
    from sume_batch.redact import Redactor
    from sume_batch.report.document import MEDIA, Source, build_report
    from sume_batch.sandbox import SandboxConfig, running_sandbox

    path = write(tmp_path, CHAINED)
    with running_sandbox(SandboxConfig.from_profile("instant")) as sandbox:
        env = {"SUME_API_KEY": sandbox.api_key, "SUME_API_BASE_URL": sandbox.base_url}
        assert cli_run(path, env).returncode == 0  # a process of its own: Playwright holds this one's loop
        made = dict(sandbox.stats()["creates_by_idempotency_key"])
        manifest, _ = prepare(path)
        source = Source(campaign="picks", downloads=manifest.downloads, folder=tmp_path, run=None,
                        decisions={}, media=MEDIA)  # fmt: skip
        with reading(chosen_store(manifest, None, env, False)) as store:
            document = build_report(store, source, redactor=Redactor(), now=time.time())
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        app = review_app(document, {}, manifest=manifest, file="reviews/picks.yaml")
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            for _ in range(100):
                if server.started:
                    break
                time.sleep(0.05)
            page, errors = opened(browser, f"http://127.0.0.1:{port}/")
            for key in ("p", "ArrowRight", "p", "p"):  # pick, skip one, pick, pick: three picks
                page.keyboard.press(key)
                playwright.expect(page.locator("#saved")).to_have_text(re.compile(r"^saved to"))
            playwright.expect(page.locator("#status")).to_have_text(re.compile(r"^3 picked"))
            saved = tmp_path / "reviews/picks.yaml"
            for _ in range(100):  # each decision is a POST of its own: wait for the third to be written
                if saved.exists() and list(review_states(path, load(saved)).values()).count("picked") == 3:
                    break
                time.sleep(0.05)
            assert list(review_states(path, load(saved)).values()).count("picked") == 3
            assert errors == []
        finally:
            server.should_exit = True
            thread.join(timeout=10)
        again = cli_run(path, env)
        assert again.returncode == 0, again.stdout
        after = sandbox.stats()["creates_by_idempotency_key"]
    assert len(after) - len(made) == 3 and all(after[key] == 1 for key in made)  # exactly the three picks
