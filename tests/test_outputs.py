"""Every `--json` output validates against schemas/outputs.schema.json, and `report --json` against
schemas/report.schema.json (issue 17)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
from helpers import REPO, invoke, report_schema, write

SCHEMA = jsonschema.Draft202012Validator(json.loads((REPO / "schemas/outputs.schema.json").read_text()))


def valid(text: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(text)
    problems = [f"{error.json_path}: {error.message}" for error in SCHEMA.iter_errors(document)]
    assert not problems, problems
    return document


def test_every_json_output_validates_against_its_schema(tmp_path: Path) -> None:
    path = str(
        write(
            tmp_path,
            "version: 1\nname: outputs\njobs:\n  - {id: 'i-{{ n }}', type: image, prompt: 'p {{ n }}', matrix: {n: [1, 2]}}\n",
        )
    )
    broken = str(
        write(tmp_path, "version: 1\nname: broken\njobs:\n  - {id: a, type: image}\n", "broken.yaml")
    )
    assert valid(invoke("validate", path, broken, "--json").out)["ok"] is False
    assert valid(invoke("plan", path, "--json").out)["object"] == "plan"
    assert invoke("plan", path, "-o", str(tmp_path / "saved.plan")).code == 0
    assert "saved" in valid((tmp_path / "saved.plan").read_text())
    assert valid(invoke("run", path, "--sandbox", "--yes", "--json").out)["exit_code"] == 0
    report = json.loads(invoke("report", path, "--sandbox", "--json").out)
    problems = [error.message for error in report_schema().iter_errors(report)]
    assert problems == [] and report["counts"] == {"downloaded": 2}  # report.json's own schema
    other = str(
        write(
            tmp_path,
            "version: 1\nname: outputs\njobs:\n  - {id: 'i-{{ n }}', type: image, prompt: 'p {{ n }}', matrix: {n: [1, 2, 3]}}\n",
            "more.yaml",
        )
    )
    assert len(valid(invoke("diff", path, other, "--format", "json").out)["new"]) == 1
