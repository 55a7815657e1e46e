"""Open report.html of JOBS jobs in headless Chromium: time to first paint, DOMContentLoaded, first card.

    .venv/bin/python tests/perf/bench_report_page.py [JOBS ...]

The store is bench_report's (90 % downloaded, 10 % failed, three matrix axes); only report.html is
written, opened from disk (file://) through our CDP client (tests/browser.py). Times are the page's
own (`performance`, from the start of navigation): first paint and first contentful paint, the end of
DOMContentLoaded and of the load event, when the first gallery card entered the DOM (seen by a
MutationObserver installed before any script of the page) and the frame after it (a paint of it).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/: browser.py

from bench_report import build  # type: ignore[import-not-found]
from browser import browser, chromium

from sume_batch.redact import Redactor
from sume_batch.report.document import Source, build_report
from sume_batch.report.folder import write_reports

WATCH = """
window.__bench = {};
new MutationObserver((records, watcher) => {  // a look at each record: a query of the DOM would cost O(n²)
  if (!records.some((r) => r.target.id === "gallery" && [...r.addedNodes].some((n) => n.className === "card"))) return;
  watcher.disconnect();
  window.__bench.card = performance.now();
  requestAnimationFrame(() => requestAnimationFrame(() => { window.__bench.shown = performance.now(); }));
}).observe(document, {childList: true, subtree: true});
"""
TIMES = """(() => {
  const navigation = performance.getEntriesByType("navigation")[0];
  const paints = Object.fromEntries(performance.getEntriesByType("paint").map((e) => [e.name, e.startTime]));
  return {fp: paints["first-paint"], fcp: paints["first-contentful-paint"],
          dcl: navigation.domContentLoadedEventEnd, load: navigation.loadEventEnd,
          card: window.__bench.card, shown: window.__bench.shown,
          cards: document.querySelectorAll("#gallery .card").length};
})()"""
LIMIT = 300.0  # s: the old page of 100,000 jobs never finished loading


def measure(html: Path, executable: str) -> str:
    with browser(executable) as page:
        started = time.perf_counter()
        try:
            page.open(html.as_uri(), timeout=LIMIT, first=WATCH)
        except TimeoutError:
            return f"no load event within {LIMIT:.0f} s"
        loaded = time.perf_counter() - started
        page.evaluate("new Promise((done) => setTimeout(done, 300))")  # the frames after the first card
        times = page.evaluate(TIMES, timeout=LIMIT)
    shown = ", ".join(
        f"{name} {times[key] / 1000:.2f} s" if times.get(key) is not None else f"{name} none"
        for name, key in (("first paint", "fp"), ("first contentful paint", "fcp"),
                          ("DOMContentLoaded", "dcl"), ("load", "load"), ("first card", "card"),
                          ("first card painted", "shown"))
    )  # fmt: skip
    return f"{shown}; {times['cards']:,} cards in the DOM; load seen by us after {loaded:.2f} s"


def main(sizes: list[int]) -> None:
    executable = chromium()
    if executable is None:
        raise SystemExit("no Chromium on PATH")
    for jobs in sizes:
        with tempfile.TemporaryDirectory() as name:
            folder = Path(name)
            store = build(folder / "bench.sqlite", jobs)
            source = Source(
                campaign="bench", downloads=folder / "out", folder=folder / "r", run=store.runs()[-1]
            )
            document = build_report(
                store, source, redactor=Redactor(api_key="sume_live_benchkey0123"), now=time.time()
            )
            html = write_reports(document, folder / "r", ("html",))["html"]
            del document
            print(f"{jobs:,} jobs, report.html {html.stat().st_size / 1e6:.1f} MB:", flush=True)
            print(f"  {measure(html, executable)}", flush=True)


if __name__ == "__main__":
    main([int(arg) for arg in sys.argv[1:]] or [10_000, 100_000])
