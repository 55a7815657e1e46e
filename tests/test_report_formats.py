"""junit.xml and report.json from hostile text: markup, CDATA ends, control characters, emoji, line separators.

Both files must parse whatever people or the API put in ids, matrix values and messages, and give that
text back: exactly in JSON, and in XML as far as XML 1.0 can hold it (its Char production).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from helpers import report_schema

from sume_batch.redact import Redactor
from sume_batch.report.document import Source, build_report
from sume_batch.report.folder import write_reports
from sume_batch.report.junit import report_junit
from sume_batch.states import JobState
from sume_batch.store import RunStore

CONTROL = "".join(chr(n) for n in range(0x20) if chr(n) not in "\t\n\r")
HOSTILE = (
    f"say \"hi\" & 'bye' ]]> <b>bold</b> &amp; &#0; <![CDATA[x]]> {CONTROL}\ufffe\uffff"
    " tab\t nl\n crlf\r\n del\x7f nel\x85 ls\u2028 🎬 déjà"
)
INFO = {"campaign": "hostile", "manifest": {"path": "h.yaml", "sha256": "a" * 64, "git_commit": None,
                                            "git_dirty": None}}  # fmt: skip


def xml_chars(text: str) -> str:
    """The text as XML 1.0 can hold it: each character outside its Char production as U+FFFD."""

    def legal(c: str) -> bool:
        n = ord(c)
        return c in "\t\n\r" or 0x20 <= n <= 0xD7FF or 0xE000 <= n <= 0xFFFD or n >= 0x10000

    return "".join(c if legal(c) else "\ufffd" for c in text)


def as_parsed_text(text: str) -> str:
    """Element text as a parser hands it back: XML reads every line end as `\\n` (XML 1.0 §2.11)."""
    return xml_chars(text).replace("\r\n", "\n").replace("\r", "\n")


def hostile_report(folder: Path) -> dict[str, Any]:
    """A run of three jobs: one failed, whose id, matrix and message are all hostile; one downloaded; one
    never sent."""
    store = RunStore.open(folder / "hostile.sqlite")
    run = store.begin_run({**INFO, "downloads": str(folder / "out"), "reports": str(folder / "reports")})
    rows = [
        ("ab01", f"id {HOSTILE}", "image", {"prompt": HOSTILE}, {"mood": HOSTILE, "spec": {"k": HOSTILE}}, 4.0),
        ("ab02", "still 🎬", "image", {"prompt": "A still"}, {"mood": "calm"}, 4.0),
        ("ab03", "teaser", "video", {"prompt": "Teaser"}, {}, None),
    ]  # fmt: skip
    store.add_planned(rows, run=run.seq)
    for key in ("ab01", "ab02"):
        store.reserve(key, 4.0)
        store.intend(key, attempt=1, at=store.clock())
        store.created(key, [f"job_{key[-1]}"], reserved=4.0, required=None, request_id=None, at=store.clock())
    store.finish("ab01", JobState.FAILED, sume_status="failed", code="bad", why=HOSTILE)
    store.finish("ab02", JobState.COMPLETED, sume_status="completed")
    store.fetched("ab02")
    store.add_file(
        "ab02", path="still.png", sume_id="job_2", sha256="b" * 64, size=9, content_type="image/png"
    )
    store.downloaded("ab02")
    store.end_run(run.seq, {"stopped": None, "interrupted": False, "exit_code": 1, "balance_after": None})
    source = Source(campaign="hostile", downloads=folder / "out", folder=folder / "r", run=store.runs()[-1])
    document = build_report(
        store, source, redactor=Redactor(api_key="sume_live_abcdefghijklmnop1234"), now=2e9
    )
    hostile = document["jobs"][0]
    # The redaction gate lets all of it through: nothing in it looks like a secret.
    assert (hostile["id"], hostile["matrix"]["mood"], hostile["failure"]["message"]) == (
        f"id {HOSTILE}", HOSTILE, HOSTILE,
    )  # fmt: skip
    return document


def test_junit_holds_hostile_ids_matrix_values_and_messages(tmp_path: Path) -> None:
    document = hostile_report(tmp_path)
    path = write_reports(document, tmp_path / "r", ("junit",))["junit"]
    root = ElementTree.parse(path).getroot()
    case = root.find("./testsuite[@name='hostile.image']/testcase")
    assert case is not None
    spec = json.dumps({"k": HOSTILE}, ensure_ascii=False)
    assert case.get("name") == xml_chars(f"id {HOSTILE} [mood={HOSTILE}, spec={spec}]")
    assert [(p.get("name"), p.get("value")) for p in case.iter("property")] == [
        ("matrix.mood", xml_chars(HOSTILE)), ("matrix.spec", xml_chars(spec)),
    ]  # fmt: skip
    failure = case.find("failure")
    assert failure is not None and failure.get("type") == "failed"
    message = f"job job_1 failed: bad: {HOSTILE}"
    assert failure.get("message") == xml_chars(message)  # attributes keep even \r, as &#13;
    assert failure.text == as_parsed_text(message)
    assert "\ufffd" * (len(CONTROL) + 2) in failure.text  # each illegal character, one for one
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("3", "1", "1")
    assert path.read_bytes().decode("utf-8") == report_junit(document)


def test_junit_replaces_a_lone_surrogate_rather_than_failing_to_encode() -> None:
    # The store cannot hold one (SQLite text is UTF-8) but the redactor would pass it on.
    assert Redactor().name("a\ud800b") == "a\ud800b"
    job = {"id": "a\ud800b", "type": "image", "matrix": {"mood": "\udfff"}, "status": "failed", "ok": False,
           "timings": {"seconds": None}, "candidates": [],
           "failure": {"job_id": None, "status": "failed", "code": None, "message": "x\udc80y", "request_id": None}}  # fmt: skip
    document = {"campaign": "c", "types": {"image": {"failed": 1}}, "jobs": [job]}
    case = ElementTree.fromstring(report_junit(document).encode("utf-8")).find(".//testcase")
    assert case is not None and case.get("name") == "a\ufffdb [mood=\ufffd]"
    assert case.findtext("failure") == "failed: x\ufffdy"


def test_report_json_parses_validates_and_holds_one_line_per_job(tmp_path: Path) -> None:
    document = hostile_report(tmp_path)
    text = write_reports(document, tmp_path / "r", ("json",))["json"].read_bytes().decode("utf-8")
    report = json.loads(text)
    assert report == document
    assert not [error.message for error in report_schema().iter_errors(report)]
    lines = text.split("\n")  # as grep and `wc -l` count them (str.splitlines also splits at U+2028)
    start = lines.index('  "jobs": [')
    jobs = lines[start + 1 : start + 1 + len(document["jobs"])]
    assert [json.loads(line.removesuffix(",")) for line in jobs] == document["jobs"]
    assert lines[start + 1 + len(jobs) :] == ["  ]", "}", ""]
    assert json.loads("\n".join([*lines[:start], '  "jobs": []', "}"])) == {**document, "jobs": []}


def test_report_json_of_a_run_without_jobs_is_valid(tmp_path: Path) -> None:
    document = {**hostile_report(tmp_path), "jobs": []}
    text = write_reports(document, tmp_path / "r", ("json",))["json"].read_bytes().decode("utf-8")
    assert json.loads(text) == document
    assert text.endswith(',\n  "jobs": []\n}\n')


def test_a_mapping_matrix_value_is_shown_by_its_name_in_chips_filters_and_junit(tmp_path: Path) -> None:
    store = RunStore.open(tmp_path / "named.sqlite")
    run = store.begin_run({**INFO, "downloads": str(tmp_path / "out"), "reports": str(tmp_path / "reports")})
    product = {"name": "serum", "claim": "glow"}
    store.add_planned([("cd01", "hero-serum", "image", {"prompt": "p"}, {"product": product, "spec": {"w": 1}}, 4.0)],
                      run=run.seq)  # fmt: skip
    source = Source(campaign="named", downloads=tmp_path / "out", folder=tmp_path / "r", run=store.runs()[-1])
    document = build_report(store, source, redactor=Redactor(), now=2e9)
    assert document["axes"] == {"product": ["serum"], "spec": ['{"w": 1}']}  # a mapping with no name: JSON
    assert document["jobs"][0]["matrix"]["product"] == product  # report.json keeps the value itself
    case = ElementTree.fromstring(report_junit(document)).find(".//testcase")
    assert case is not None and case.get("name") == 'hero-serum [product=serum, spec={"w": 1}]'
