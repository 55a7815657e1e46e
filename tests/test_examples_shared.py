"""The shared-store recipes: examples/github-actions/sume-batch-postgres.yml (4 matrix workers on a
PostgreSQL service) and examples/kubernetes/indexed-job.yaml (an Indexed Job of 4 pods). Both parse
and are built as their comments say; every `sume-batch` command in them, the commented
alternatives too, parses against the real CLI; and 2 of the workflow's workers, run at once as the
workflow runs them, finish one campaign on a real PostgreSQL store without buying anything twice."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import yaml
from helpers import REPO, write

from sume_batch.cli import cli
from sume_batch.errors import UsageError
from sume_batch.plan import parse_shard
from sume_batch.sandbox import SandboxConfig, running_sandbox

WORKFLOW = REPO / "examples/github-actions/sume-batch-postgres.yml"
PLAIN_WORKFLOW = REPO / "examples/github-actions/sume-batch.yml"
INDEXED_JOB = REPO / "examples/kubernetes/indexed-job.yaml"
SERVICE_STATE = "postgresql://postgres@localhost:5432/postgres"
SHELL_OPERATORS = {">", ">>", "<", "|", "||", "&&", ";", "2>", "2>&1"}
SMALL = """\
version: 1
name: shared-example
execution:
  poll_interval: {image: 0.1}
jobs:
  - id: "img-{{ n }}"
    type: image
    prompt: "Bottle {{ n }} on a counter"
    matrix: {n: [1, 2, 3, 4, 5, 6, 7, 8]}
"""
SMALL_JOBS = 8


def load_workflow() -> dict[str, Any]:
    workflow: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())
    return workflow


def load_job() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The Job, and the other documents of the file (its PVC)."""
    documents = [document for document in yaml.safe_load_all(INDEXED_JOB.read_text()) if document]
    jobs = [document for document in documents if document["kind"] == "Job"]
    assert len(jobs) == 1, documents
    return jobs[0], [document for document in documents if document["kind"] != "Job"]


def the_container(job: dict[str, Any]) -> dict[str, Any]:
    containers = job["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def run_steps(workflow: dict[str, Any], job: str) -> list[dict[str, Any]]:
    """The job's steps that run sume-batch, as tests/test_github_actions.py picks them."""
    return [step for step in workflow["jobs"][job]["steps"] if step.get("run", "").startswith("sume-batch ")]


def commented(text: str, key: str) -> list[str]:
    """The values of the commented-out `key:` lines: the alternatives a reader is told to swap in."""
    return [match.group(1) for match in re.finditer(rf"^\s*#\s*{key}:\s*(.+?)\s*$", text, re.MULTILINE)]


# --- the command lines, as argv ----------------------------------------------------------------------


def workflow_commands() -> list[list[str]]:
    """Every sume-batch command line of the workflow, active or commented, once per matrix worker
    (`${{ matrix.worker }}` is each worker's value; any other expression a placeholder word)."""
    workflow = load_workflow()
    lines = [step["run"] for job in workflow["jobs"] for step in run_steps(workflow, job)]
    lines += [line for line in commented(WORKFLOW.read_text(), "run") if line.startswith("sume-batch ")]
    workers = workflow["jobs"]["run"]["strategy"]["matrix"]["worker"]
    commands = []
    for line in lines:
        for worker in workers:
            expanded = line.replace("${{ matrix.worker }}", str(worker))
            expanded = re.sub(r"\$\{\{[^}]*\}\}", "EXPR", expanded)
            commands.append(shell_argv(expanded))
    return commands


def shell_argv(line: str) -> list[str]:
    """A shell line's first command as argv: up to its first redirection, pipe or `&&`."""
    words = shlex.split(line)
    for at, word in enumerate(words):
        if word in SHELL_OPERATORS or word.startswith(">"):
            return words[:at]
    return words


def job_commands() -> list[list[str]]:
    """The Job's container command + args, and + each commented `args:` alternative, once per index
    (`$(JOB_COMPLETION_INDEX)` expanded as Kubernetes expands it)."""
    job, _ = load_job()
    container = the_container(job)
    alternatives = [yaml.safe_load(line) for line in commented(INDEXED_JOB.read_text(), "args")]
    commands = []
    for args in [container["args"], *alternatives]:
        assert isinstance(args, list), args
        for index in range(job["spec"]["completions"]):
            argv = [*container["command"], *args]
            commands.append([str(word).replace("$(JOB_COMPLETION_INDEX)", str(index)) for word in argv])
    return commands


def check_against_the_cli(argv: list[str]) -> None:
    """`sume-batch SUBCOMMAND ...` as the real CLI would parse it: the subcommand exists, every option
    is one of its own, each option that takes a value has one, and the arguments are as many as it
    takes. `--shard` values are parsed as `run` parses them."""
    assert argv[0] == "sume-batch", argv
    with click.Context(cli, info_name="sume-batch") as ctx:
        command = cli.get_command(ctx, argv[1])
    assert command is not None, f"no such subcommand: {argv[1]} in {argv}"
    by_name = {opt: param for param in command.params for opt in [*param.opts, *param.secondary_opts]}
    options = {opt for param in command.params if isinstance(param, click.Option) for opt in param.opts}
    options |= {opt for param in command.params for opt in param.secondary_opts}
    arguments = [param for param in command.params if isinstance(param, click.Argument)]
    positional, words = [], iter(argv[2:])
    for word in words:
        if not word.startswith("-") or word == "-":
            positional.append(word)
            continue
        name, equals, value = word.partition("=")
        assert name in options, f"sume-batch {argv[1]} has no option {name}: {argv}"
        param = by_name[name]
        assert isinstance(param, click.Option)
        if not param.is_flag and not equals:
            value = next(words, "")
            assert value and not value.startswith("--"), f"{name} takes a value: {argv}"
        if name == "--shard":
            parse_shard(value)
    fewest = sum(max(argument.nargs, 1) for argument in arguments if argument.required)
    most = sum(argument.nargs for argument in arguments) if all(a.nargs >= 0 for a in arguments) else None
    assert len(positional) >= fewest and (most is None or len(positional) <= most), argv


# --- (a) the structure claimed -----------------------------------------------------------------------


def test_the_workflow_runs_4_workers_on_a_postgres_service_beside_the_plain_plan_job() -> None:
    workflow, plain = load_workflow(), yaml.safe_load(PLAIN_WORKFLOW.read_text())
    assert set(workflow["jobs"]) == {"plan", "run"}
    assert workflow["jobs"]["plan"] == plain["jobs"]["plan"]  # the pull request job, as it was
    assert workflow[True] == plain[True] and workflow["env"] == plain["env"]  # `on:`, CAMPAIGN
    run = workflow["jobs"]["run"]
    assert run["if"] == "github.event_name == 'push'"
    postgres = run["services"]["postgres"]
    assert postgres["image"] == "postgres:15" and "5432:5432" in postgres["ports"]
    assert "--health-cmd pg_isready" in postgres["options"]
    assert run["strategy"]["matrix"]["worker"] == [0, 1, 2, 3] and run["strategy"]["fail-fast"] is False
    # One workflow run at a time, set on the workflow: on the matrix job it would run one worker at a time.
    assert "concurrency" not in run and "group" in workflow["concurrency"]
    (step,) = run_steps(workflow, "run")
    assert step["run"] == 'sume-batch run "$CAMPAIGN" --yes'
    assert step["env"]["SUME_BATCH_STATE"] == SERVICE_STATE  # no password in the URL...
    assert step["env"]["PGPASSWORD"] == postgres["env"]["POSTGRES_PASSWORD"]  # ...libpq's, the service's
    assert step["env"]["SUME_API_KEY"] == "${{ secrets.SUME_API_KEY }}"
    (upload,) = [step for step in run["steps"] if step.get("uses", "").startswith("actions/upload-artifact")]
    assert "${{ matrix.worker }}" in upload["with"]["name"]  # one artifact per worker
    assert upload["if"] == "always()"


def test_the_kubernetes_job_is_indexed_4_by_4_with_its_secrets_campaign_and_volume() -> None:
    job, others = load_job()
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert job["apiVersion"] == "batch/v1" and spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 4
    assert "backoffLimitPerIndex" in spec or "backoffLimit" in spec
    if "backoffLimitPerIndex" in spec or "podFailurePolicy" in spec:
        assert pod["restartPolicy"] == "Never"  # what Kubernetes requires of both
    assert pod["restartPolicy"] in {"Never", "OnFailure"}
    never_retried = {code for rule in spec["podFailurePolicy"]["rules"] if rule["action"] == "FailJob"
                     for code in rule.get("onExitCodes", {}).get("values", [])}  # fmt: skip
    assert never_retried == {2, 3, 4}  # 75 (store busy) and 1 stay retried
    container = the_container(job)
    env = {item["name"]: item for item in container["env"]}
    for name in ("SUME_API_KEY", "SUME_BATCH_STATE", "PGPASSWORD"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "sume-batch", name
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    campaign = volumes[mounts["/campaign"]["name"]]["configMap"]
    manifest = container["args"][1]
    assert manifest.startswith("/campaign/")
    assert manifest.removeprefix("/campaign/") in {item["path"] for item in campaign["items"]}
    claims = {document["metadata"]["name"]: document for document in others if document["kind"] == "PersistentVolumeClaim"}  # fmt: skip
    shared = [mount for mount in mounts.values() if "persistentVolumeClaim" in volumes[mount["name"]]]
    assert {mount["mountPath"] for mount in shared} == {"/data/outputs", "/data/reports"}
    for mount in shared:
        claim = claims[volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]]
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # 4 pods, any nodes, one volume
    assert env["SUME_BATCH_ALLOW_ROOT"]["value"] == "/data"
    assert "$(JOB_COMPLETION_INDEX)" in mounts["/data/reports"]["subPathExpr"]  # a report folder per pod
    assert any("--shard" in args for args in map(yaml.safe_load, commented(INDEXED_JOB.read_text(), "args")))


# --- (b) every command line parses against the CLI ---------------------------------------------------


def test_every_sume_batch_command_of_both_recipes_parses_against_the_cli() -> None:
    from_workflow, from_job = workflow_commands(), job_commands()
    assert {tuple(argv[:2]) for argv in from_workflow} == {
        ("sume-batch", "validate"), ("sume-batch", "diff"), ("sume-batch", "run")
    }  # fmt: skip
    assert any("--shard" in argv for argv in from_workflow) and any("--shard" in argv for argv in from_job)
    assert {argv[argv.index("--shard") + 1] for argv in from_job if "--shard" in argv} == {
        "0/4", "1/4", "2/4", "3/4"
    }  # fmt: skip
    for argv in from_workflow + from_job:
        check_against_the_cli(argv)
        if argv[1] == "run":
            assert "--yes" in argv, argv  # else exit 4: nobody is there to confirm


def test_the_cli_check_catches_what_help_would_not() -> None:
    for wrong in (["sume-batch", "run", "c.yaml", "--yes", "--shards", "0/4"],
                  ["sume-batch", "run", "c.yaml", "--shard", "4/4"],
                  ["sume-batch", "run", "c.yaml", "--lease"],
                  ["sume-batch", "status", "c.yaml", "--lease", "5"],
                  ["sume-batch", "runs", "c.yaml"]):  # fmt: skip
        try:
            check_against_the_cli(wrong)
        except (AssertionError, UsageError):
            continue
        raise AssertionError(f"passed: {wrong}")


# --- (c) 2 of the workflow's workers at once ---------------------------------------------------------


def start(command: str, folder: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    bin_dir = str(Path(sys.executable).parent)
    environment = {**os.environ, **env, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    return subprocess.Popen(["bash", "-eo", "pipefail", "-c", command], cwd=folder, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def test_two_workers_of_the_workflow_finish_one_campaign_buying_nothing_twice(
    tmp_path: Path, pg_url: str
) -> None:
    workflow = load_workflow()
    (step,) = run_steps(workflow, "run")
    workers = workflow["jobs"]["run"]["strategy"]["matrix"]["worker"][:2]
    checkouts = {}
    for worker in workers:  # each matrix worker on a runner of its own: its own checkout and home
        checkouts[worker] = tmp_path / f"worker-{worker}"
        (checkouts[worker] / "manifests").mkdir(parents=True)
        write(checkouts[worker] / "manifests", SMALL, "shared.yaml")
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        env = {**workflow["env"], **step["env"], "CAMPAIGN": "manifests/shared.yaml",
               "SUME_API_KEY": server.api_key, "SUME_API_BASE_URL": server.base_url,
               "SUME_BATCH_STATE": pg_url}  # fmt: skip
        going = {
            worker: start(
                step["run"],
                folder,
                {**env, "SUME_BATCH_HOME": str(tmp_path / f"home-{worker}"), "GITHUB_RUN_ID": "4242"},
            )
            for worker, folder in checkouts.items()
        }
        done = {worker: (process, *process.communicate(timeout=60)) for worker, process in going.items()}
        creates = server.stats()["creates_by_idempotency_key"]
    for worker, (process, out, err) in done.items():
        assert process.returncode == 0, (worker, out, err)
        assert (
            checkouts[worker] / "manifests/reports/shared-example/latest/report.json"
        ).exists()  # uploaded
    assert len(creates) == SMALL_JOBS and set(creates.values()) == {1}  # nothing bought twice
    downloaded = [path.name for folder in checkouts.values()
                  for path in (folder / "manifests/outputs/shared-example").glob("*.png")]  # fmt: skip
    assert sorted(downloaded) == sorted(
        f"img-{n}.png" for n in range(1, SMALL_JOBS + 1)
    )  # each once, somewhere
