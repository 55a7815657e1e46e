"""junit.xml: the report document as JUnit XML, one test suite per job type and one test case per job.

Written with ElementTree, so markup in ids, matrix values and messages is escaped by construction;
what XML 1.0 cannot hold even escaped (most control characters, lone surrogates) is replaced first.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from typing import Any, TextIO
from xml.etree import ElementTree

from sume_batch import states
from sume_batch.report.document import failure_text, show

DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'  # ours: ElementTree's names the locale's encoding
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def report_junit(document: Mapping[str, Any]) -> str:
    text = io.StringIO()
    write_junit(document, text)
    return text.getvalue()


def write_junit(document: Mapping[str, Any], handle: TextIO) -> None:
    """junit.xml into `handle`, declaration first. ElementTree writes the tree piece by piece: a
    string of the whole (`tostring`) would cost twice the file again in memory."""
    handle.write(DECLARATION)
    ElementTree.ElementTree(junit_tree(document)).write(handle, encoding="unicode")


def junit_tree(document: Mapping[str, Any]) -> ElementTree.Element:
    """JUnit XML: one test suite per job type, one test case per job, indented.

    classname is `<campaign>.<type>` and the name is the job id with its matrix values, so CI
    dashboards group cases by type and tell variants apart; each case also carries its matrix
    values as properties. Failed, uncertain, timed-out, canceled, expired and refused jobs are
    failures; jobs the run did not finish (skipped by the budget, not yet submitted or downloaded)
    are skipped.
    """
    campaign = document["campaign"]
    by_type: dict[str, list[Mapping[str, Any]]] = {kind: [] for kind in document["types"]}
    for job in document["jobs"]:
        by_type.setdefault(job["type"], []).append(job)
    root = _element("testsuites", name=f"sume-batch {campaign}", **_tally(document["jobs"]))
    for kind, jobs in by_type.items():
        suite = _element("testsuite", name=f"{campaign}.{kind}", **_tally(jobs))
        suite.extend(_case(f"{campaign}.{kind}", job) for job in jobs)
        root.append(suite)
    ElementTree.indent(root, space="  ")
    root.tail = "\n"
    return root


def _case(classname: str, job: Mapping[str, Any]) -> ElementTree.Element:
    shown = {axis: show(value) for axis, value in job["matrix"].items()}
    seconds = f"{job['timings']['seconds'] or 0:.3f}"
    case = _element("testcase", classname=classname, name=_case_name(job["id"], shown), time=seconds)
    if shown:
        properties = _element("properties")
        properties.extend(
            _element("property", name=f"matrix.{axis}", value=value) for axis, value in shown.items()
        )
        case.append(properties)
    if job["failure"] is not None:
        text = failure_text(job)
        failure = _element("failure", type=job["failure"]["status"] or job["status"], message=text)
        failure.text = _xml(text)
        case.append(failure)
    elif not job["ok"]:
        case.append(_element("skipped", message=states.words(job["status"])))
    return case


def _tally(jobs: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    failures = sum(1 for job in jobs if job["failure"] is not None)
    skipped = sum(1 for job in jobs if job["failure"] is None and not job["ok"])
    seconds = sum(job["timings"]["seconds"] or 0 for job in jobs)
    return {"tests": str(len(jobs)), "failures": str(failures), "errors": "0", "skipped": str(skipped),
            "time": f"{seconds:.3f}"}  # fmt: skip


def _element(tag: str, **attributes: str) -> ElementTree.Element:
    """An element whose attribute values XML 1.0 can hold (ElementTree escapes them when it writes)."""
    return ElementTree.Element(tag, {name: _xml(value) for name, value in attributes.items()})


def _case_name(job_id: str, shown: Mapping[str, str]) -> str:
    """`hero-beach [scene=beach, format=story]`: the job id and its matrix values."""
    values = ", ".join(f"{axis}={value}" for axis, value in shown.items())
    return f"{job_id} [{values}]" if values else job_id


def _xml(text: str) -> str:
    """Text XML 1.0 can hold (control characters are not allowed even escaped)."""
    return _XML_ILLEGAL.sub("\N{REPLACEMENT CHARACTER}", text)
