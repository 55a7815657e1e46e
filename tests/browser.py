"""A headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe).

No driver, no websocket library: Chromium reads commands on fd 3 and writes answers and events on
fd 4, each a JSON object ended by a NUL byte. Enough of the protocol to open a page (with or
without JavaScript), watch its console, errors and dialogs, run a script in it and take a screenshot.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--mute-audio", "--hide-scrollbars", "--remote-debugging-pipe",
)  # fmt: skip


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class Page:
    """One tab: `open` a URL, then `evaluate`, `screenshot`; `events` holds what the page reported."""

    def __init__(self, process: subprocess.Popen[bytes], send: int, receive: int) -> None:
        self.process, self.send, self.receive = process, send, receive
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None

    def call(self, method: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self.send, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            if "method" in reply:
                self.events.append(reply)

    def wait_for(
        self, method: str, timeout: float = 30, where: Callable[[Any], bool] | None = None
    ) -> dict[str, Any]:
        """The first `method` event whose params are `where` (if given), waiting for it if need be."""

        def wanted(event: dict[str, Any]) -> bool:
            return event.get("method") == method and (where is None or where(event.get("params", {})))

        for event in self.events:
            if wanted(event):
                return event
        deadline = time.monotonic() + timeout
        while True:
            event = self._read(deadline)
            if "method" in event:
                self.events.append(event)
                if wanted(event):
                    return event

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            ready, _, _ = select.select([self.receive], [], [], max(deadline - time.monotonic(), 0))
            if not ready:  # a bare read would wait for ever on a page that never loads
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self.receive, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the pipe")
            self.buffer += chunk
        raw, _, self.buffer = self.buffer.partition(b"\0")
        message: dict[str, Any] = json.loads(raw)
        return message

    def open(
        self, url: str, *, timeout: float = 30, javascript: bool = True, first: str | None = None
    ) -> None:
        """Open `url` in a new tab and wait for its load event; `javascript=False` opens it with
        scripting off (so `<noscript>` shows), `first` is a script run before any of the page's own."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        self.call(
            "Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False
        )
        if not javascript:
            self.call("Emulation.setScriptExecutionDisabled", value=True)
        if first is not None:
            self.call("Page.addScriptToEvaluateOnNewDocument", source=first)
        self.call("Page.setLifecycleEventsEnabled", enabled=True)
        loader = self.call("Page.navigate", url=url)["loaderId"]
        # The load of this navigation, not the tab's first about:blank, whose event may come late.
        self.wait_for(
            "Page.lifecycleEvent", timeout, where=lambda e: e["name"] == "load" and e["loaderId"] == loader
        )

    def evaluate(self, expression: str, timeout: float = 30) -> Any:
        """The value of a JavaScript expression (awaited when it is a promise)."""
        result = self.call(
            "Runtime.evaluate", timeout, expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> bytes:
        data = base64.b64decode(
            self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        )
        path.write_bytes(data)
        return data

    def problems(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions, log errors and any dialog the page opened."""
        found = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
                found.append(f"console.{params['type']}: {params.get('args')}")
            elif method == "Runtime.exceptionThrown":
                found.append(f"exception: {params.get('exceptionDetails')}")
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") in ("error", "warning"):
                found.append(f"log: {params['entry'].get('text')} ({params['entry'].get('url')})")
            elif method == "Page.javascriptDialogOpening":
                found.append(f"dialog: {params.get('type')} {params.get('message')!r}")
        return found


@contextmanager
def browser(executable: str) -> Iterator[Page]:
    """A fresh headless Chromium with its own profile, stopped afterwards."""
    to_browser, from_browser = os.pipe(), os.pipe()
    with tempfile.TemporaryDirectory(prefix="sume-chromium-") as profile:

        def wire() -> None:  # in the child: fd 3 reads our commands, fd 4 writes to us (our pipes'
            # own descriptors are close-on-exec, so only these two reach Chromium)
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser[0], from_browser[1])]
            for number, fd in zip((3, 4), high, strict=True):  # dup2 onto itself would keep close-on-exec
                os.dup2(fd, number)

        process = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            close_fds=False, preexec_fn=wire,  # noqa: PLW1509 - no threads of ours run while it forks
        )  # fmt: skip
        os.close(to_browser[0])
        os.close(from_browser[1])
        try:
            yield Page(process, to_browser[1], from_browser[0])
        finally:
            os.close(to_browser[1])
            os.close(from_browser[0])
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
