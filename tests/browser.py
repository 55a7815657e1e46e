"""A headless Chromium for the tests, driven by Playwright on Debian's own Chromium (Playwright's
browser download is not available here: `executable_path`). The interface the report tests use:
open a page (with or without JavaScript, a script run first), evaluate, take a screenshot, and
list what the page reported (console errors and warnings, exceptions, dialogs, failed loads).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, sync_playwright


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class Page:
    """One tab at a time: `open` a URL, then `evaluate`, `screenshot`; `problems` says what went wrong."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.page: Any = None
        self.found: list[str] = []

    def open(
        self, url: str, *, timeout: float = 30, javascript: bool = True, first: str | None = None
    ) -> None:
        """Open `url` in a new tab and wait for its load event; `javascript=False` opens it with
        scripting off (so `<noscript>` shows), `first` is a script run before any of the page's own."""
        context = self.browser.new_context(
            viewport={"width": 1280, "height": 900}, java_script_enabled=javascript
        )
        page = context.new_page()
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.found.append(f"exception: {error}"))
        page.on("dialog", self._dialog)
        page.on("requestfailed", self._failed)
        if first is not None:
            page.add_init_script(first)
        page.goto(url, wait_until="load", timeout=timeout * 1000)
        self.page = page

    def _failed(self, request: Any) -> None:
        # A load the page itself ended (a filter re-rendering the gallery drops a video still
        # loading its metadata) is aborted, not failed: only the others are problems.
        if request.failure != "net::ERR_ABORTED":
            self.found.append(f"log: failed {request.url} ({request.failure})")

    def _console(self, message: Any) -> None:
        if message.type in ("error", "warning", "assert"):
            self.found.append(f"console.{message.type}: {message.text}")

    def _dialog(self, dialog: Any) -> None:
        self.found.append(f"dialog: {dialog.type} {dialog.message!r}")
        dialog.dismiss()

    def evaluate(self, expression: str, timeout: float = 30) -> Any:
        """The value of a JavaScript expression (awaited when it is a promise)."""
        return self.page.evaluate(expression)

    def screenshot(self, path: Path) -> bytes:
        data: bytes = self.page.screenshot(path=path, full_page=True)
        return data

    def problems(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions, failed loads and any dialog the page opened."""
        return list(self.found)


@contextmanager
def browser(executable: str) -> Iterator[Page]:
    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield Page(launched)
        finally:
            launched.close()
