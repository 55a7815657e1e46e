"""The GitHub Actions recipe (examples/github-actions): its workflow parses, and each of its
`run:` commands works, run as the workflow runs them, against the sandbox (issue 17)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import REPO

from sume_batch.sandbox import SandboxConfig, running_sandbox

WORKFLOW = REPO / "examples/github-actions/sume-batch.yml"
pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="no git here")


def steps(workflow: dict[str, Any], job: str) -> list[str]:
    """The job's shell commands as this test runs them: with `origin/<base>` the previous commit, and
    neither the install (sume-batch is installed here) nor the `gh` comment (no GitHub here)."""
    commands = [step["run"] for step in workflow["jobs"][job]["steps"] if "run" in step]
    kept = [command for command in commands if command.startswith("sume-batch ")]
    return [command.replace('"origin/${{ github.base_ref }}"', "HEAD~1") for command in kept]


def shell(command: str, folder: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    bin_dir = str(Path(sys.executable).parent)
    environment = {**os.environ, **env, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    return subprocess.run(["bash", "-eo", "pipefail", "-c", command], cwd=folder, env=environment,
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip


def git(folder: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@example.test", "-c", "user.name=t", *args], cwd=folder,
                   check=True, capture_output=True)  # fmt: skip


def test_the_workflow_parses_and_its_commands_work_against_the_sandbox(tmp_path: Path) -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert set(workflow["jobs"]) == {"plan", "run"}
    env = dict(workflow["env"])
    shutil.copytree(
        REPO / "manifests", tmp_path / "manifests", ignore=shutil.ignore_patterns("outputs", "reports")
    )
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "base")
    data = tmp_path / "manifests/data/catalog.csv"
    data.write_text(data.read_text() + '0999,"Neue Creme","New cream",cream,9.9,yes\n')
    git(tmp_path, "commit", "-qam", "a new product")
    for command in steps(workflow, "plan"):
        done = shell(command, tmp_path, env)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
    comment = (tmp_path / "diff.md").read_text()
    assert comment.startswith("### ✅ sume-batch credit diff") and "6 new, 0 changed, 0 removed" in comment
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        api = {"SUME_API_KEY": server.api_key, "SUME_API_BASE_URL": server.base_url}
        for command in steps(workflow, "run"):
            done = shell(command, tmp_path, {**env, **api})
            assert done.returncode == 0, (command, done.stdout, done.stderr)
        again = shell(
            steps(workflow, "run")[0], tmp_path, {**env, **api}
        )  # the cached store: nothing bought twice
        creates = server.stats()["creates_by_idempotency_key"]
    assert "246 downloaded" in done.stdout and again.returncode == 0
    assert len(creates) == 246 and set(creates.values()) == {1}
    assert (tmp_path / "manifests/reports/catalog/latest/report.html").exists()  # what the artifact uploads
