"""saved: `plan -o` then `run PLAN` does exactly that plan, or refuses before any request naming
what changed; a plan file where a manifest is expected is named as one (issue 17)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import invoke, write

from sume_batch.sandbox import SandboxConfig, running_sandbox

CAMPAIGN = """\
version: 1
name: saved
execution: {poll_interval: {image: 0.05}}
matrix:
  product: {from: products.csv, key: sku}
jobs:
  - {id: "img-{{ product.sku }}", type: image, prompt: "{{ product.name }}"}
"""


def env_of(server: Any) -> dict[str, str]:
    return {"SUME_API_KEY": server.api_key, "SUME_API_BASE_URL": server.base_url}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "products.csv").write_text("sku,name\n007,Serum\n0071,Cream\n")
    write(tmp_path, CAMPAIGN)
    return tmp_path


def test_a_saved_plan_is_run_exactly_once_and_then_refused_as_stale(folder: Path) -> None:
    manifest, plan = str(folder / "campaign.yaml"), str(folder / "campaign.plan")
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        assert invoke("plan", manifest, "-o", plan, env=env_of(server)).code == 0
        applied = invoke("run", plan, "--yes", "--quiet", env=env_of(server))
        assert applied.code == 0, applied.err
        assert len(server.stats()["creates_by_idempotency_key"]) == 2
        again = invoke("run", plan, "--yes", env=env_of(server))
        assert again.code == 3 and "is stale: the run store changed since" in again.err
        assert len(server.stats()["creates_by_idempotency_key"]) == 2


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        ("manifest", "the manifest changed"),
        ("data", "a data file changed"),
        ("prices", "the prices changed"),
        ("target", "the API changed"),
    ],
)
def test_a_stale_plan_is_refused_naming_what_changed_and_nothing_is_sent(
    folder: Path, edit: str, reason: str
) -> None:
    manifest, plan = folder / "campaign.yaml", str(folder / "campaign.plan")
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        env = env_of(server)
        assert invoke("plan", str(manifest), "-o", plan, env=env).code == 0
        flags: list[str] = []
        if edit == "manifest":
            manifest.write_text(CAMPAIGN.replace("{{ product.name }}", "{{ product.name }}, studio light"))
        elif edit == "data":
            (folder / "products.csv").write_text("sku,name\n007,Serum\n0071,Cream\n0099,Toner\n")
        elif edit == "prices":
            (folder / "prices.yaml").write_text("image: {per_image: 9}\n")
            flags = ["--pricing", str(folder / "prices.yaml")]
        else:
            env = {**env, "SUME_API_BASE_URL": server.base_url.replace("127.0.0.1", "localhost")}
        result = invoke("run", plan, "--yes", *flags, env=env)
        assert result.code == 3 and reason in result.err, result.err
        assert server.stats()["job_ids"] == []


def test_a_plan_file_where_a_manifest_is_expected_is_named_as_one(folder: Path) -> None:
    plan = folder / "campaign.plan"
    assert invoke("plan", str(folder / "campaign.yaml"), "-o", str(plan)).code == 0
    for command in ("validate", "plan"):
        result = invoke(command, str(plan))
        assert result.code == 2 and "a saved plan (sume-batch plan -o), not a manifest" in result.err
