"""The report stage: report.json (see schemas/report.schema.json), report.html and junit.xml, from the store.

A report covers one run: the jobs that run planned, where each one stands now, and what the run
cost. It is built from the store alone (`sume-batch report` rewrites it at any time, even while a
run goes on) and every string in it passes the redaction gate once more on the way out, though the
store holds only redacted text already: a report is the file people attach to tickets.

Layout: `<output.reports>/<campaign>/<run>/` holds the three files and the run's `run.log`;
`<output.reports>/<campaign>/latest` is a symlink to the newest run's folder. Output file paths in
the reports are relative to the report's folder, so report.html opens its gallery from disk; the
`latest` link sits beside the run folders, so the same relative paths work through it.

One module per job: `document` builds the report document (what report.json holds) from the store;
`as_json`, `junit` and `html` each render it in one format; `folder` writes the formats into a
run's folder and points `latest` at it; `summary` says the end of a run in a few terminal lines.
This module holds only what the CLI needs for `--help`, so importing it stays cheap (no jinja2, no
store).
"""

FORMATS = ("html", "json", "junit")
FILE_NAMES = {"html": "report.html", "json": "report.json", "junit": "junit.xml"}
