"""init: a scaffolded campaign validates, rehearses, and a second init keeps what is there (issue 14)."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import REPO, invoke


def test_a_scaffolded_campaign_validates_and_rehearses(tmp_path: Path) -> None:
    folder = tmp_path / "Spring Launch"
    made = invoke("init", str(folder))
    assert made.code == 0, made.err
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        ".gitignore", "campaign.schema.json", "campaign.yaml", "data/products.csv",
    ]  # fmt: skip
    manifest = folder / "campaign.yaml"
    assert manifest.read_text().startswith("# yaml-language-server: $schema=./campaign.schema.json\n")
    shipped = json.loads((REPO / "sume_batch/schemas/campaign.schema.json").read_text())
    assert json.loads((folder / "campaign.schema.json").read_text()) == shipped
    valid = invoke("validate", str(manifest))
    assert (valid.code, valid.out) == (
        0,
        f"{manifest}: valid: campaign Spring-Launch, 8 jobs\n",
    )  # 0123 is inactive
    ran = invoke("run", str(manifest), "--sandbox", "--yes", "--quiet")
    assert ran.code == 0, ran.err
    assert "8 downloaded" in ran.out and (folder / "outputs/Spring-Launch").is_dir()
    ignored = (folder / ".gitignore").read_text().splitlines()
    assert {".sume-batch/", "outputs/", "reports/"} <= set(ignored)


def test_init_again_keeps_every_file_but_brings_the_schema_up_to_date(tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text("node_modules/\n/outputs/\n")
    assert invoke("init", str(tmp_path), "--name", "launch").code == 0
    (tmp_path / "campaign.yaml").write_text("# mine\n")
    (tmp_path / "campaign.schema.json").write_text("{}")
    again = invoke("init", str(tmp_path), "--name", "launch")
    assert again.code == 0
    assert "kept (it exists): " in again.out and "updated: " in again.out
    assert (tmp_path / "campaign.yaml").read_text() == "# mine\n"
    assert json.loads((tmp_path / "campaign.schema.json").read_text())["$id"].endswith("campaign.schema.json")
    assert (tmp_path / ".gitignore").read_text() == (
        "node_modules/\n/outputs/\n# written by sume-batch runs\n.sume-batch/\nreports/\n"
    )


def test_a_name_that_is_no_slug_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    refused = invoke("init", str(tmp_path / "x"), "--name", "no spaces")
    assert refused.code == 2 and "is no campaign name" in refused.err
    assert not (tmp_path / "x").exists()


def test_init_never_writes_through_a_symlink_or_into_a_pipe_and_quotes_a_numeric_name(tmp_path: Path) -> None:
    import os

    folder = tmp_path / "2025"
    folder.mkdir()
    outside = tmp_path / "precious.json"
    outside.write_text("mine")
    (folder / "campaign.schema.json").symlink_to(outside)
    os.mkfifo(folder / ".gitignore")
    made = invoke("init", str(folder))
    assert made.code == 0, made.err
    assert outside.read_text() == "mine"
    assert made.out.count("kept (not a regular file: not followed)") == 2
    valid = invoke("validate", str(folder / "campaign.yaml"))
    assert valid.code == 0 and "valid: campaign 2025, 8 jobs" in valid.out  # "2025", not the number
