"""stages and chain: jobs that need a stage's outputs — fan-out counts priced before anything runs,
graph errors located, the worst case held against the budget, an upstream failure blocking (never
charging) its downstream, resume link by link, and each output's URL read afresh (issue 15)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, cast

import pytest
from helpers import invoke, write

from sume_batch.chain import next_stage
from sume_batch.commands.common import prepare
from sume_batch.plan import make_plan
from sume_batch.sandbox import SandboxConfig, running_sandbox
from sume_batch.sandbox.config import Faults
from sume_batch.store import RunStore

CHAIN = """\
version: 1
name: chain
execution: {poll_interval: {reference_analysis: 0.05, image: 0.05, ad_video: 0.05}}
jobs:
  - id: "ref-{{ n }}"
    stage: research
    type: reference_analysis
    url: "https://www.tiktok.com/@glow/video/{{ n }}"
    matrix: {n: [111, 222]}
  - id: "hero-{{ upstream.id }}-{{ look }}"
    stage: hero
    needs: research
    type: image
    prompt: "{{ upstream.result.analysis.hook.text }}, {{ look }} look, from {{ upstream.id }}"
    image_count: 2
    matrix: {look: [warm, cool]}
  - id: "ad-{{ avatar }}"
    needs: hero
    fan: join
    type: ad_video
    avatar_id: "{{ avatar }}"
    style: ugc
    script: "Two weeks with Lumen."
    reference_image_urls: "{{ (upstream | map(attribute='url') | list)[:4] }}"
    matrix: {avatar: [avatar_maya01, avatar_leo02]}
"""


def env_of(server: Any) -> dict[str, str]:
    return {"SUME_API_KEY": server.api_key, "SUME_API_BASE_URL": server.base_url}


def test_plan_prices_every_stage_at_its_worst_case_before_anything_runs(tmp_path: Path) -> None:
    shown = invoke("plan", str(write(tmp_path, CHAIN)), "--json")
    assert shown.code == 0, shown.err
    document = json.loads(shown.out)
    stages = [(one["template"], one["jobs"], one["each"], one["outputs"]) for one in document["stages"]]
    # aligned: 2 analyses × 2 looks = 4 image jobs of 2 images each; join: one ad per avatar
    assert stages == [(1, 4, 8.0, 2), (2, 2, 60.0, 1)]
    assert document["total_credits"] == 2 * 5 + 4 * 8 + 2 * 60
    text = invoke("plan", str(tmp_path / "campaign.yaml")).out
    assert "jobs[1] image: needs research (aligned), up to 4 jobs × 8 = 32" in text
    assert "the whole chain: up to 162 credits" in text


def test_an_aligned_stage_without_a_matrix_fans_out_one_job_per_output(tmp_path: Path) -> None:
    text = CHAIN.replace("    matrix: {look: [warm, cool]}\n", "").replace(
        "-{{ look }}", "-{{ upstream.position }}"
    )
    text = text.replace(", {{ look }} look", "")
    document = json.loads(invoke("plan", str(write(tmp_path, text)), "--json").out)
    assert [one["jobs"] for one in document["stages"]] == [2, 2]  # 2 analyses; the join: 2 avatars


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ("needs: hero\n", "needs: heroes\n"),
            "jobs[2].needs: no job is the stage 'heroes' (stages: hero, research)",
        ),
        (
            ("    matrix: {n: [111, 222]}\n", "    needs: hero\n    matrix: {n: [111, 222]}\n"),
            "jobs[0].needs: the stage 'hero' needs this job again: a cycle",
        ),
        (
            ('"hero-{{ upstream.id }}-{{ look }}"', '"hero-{{ look }}"'),
            "jobs[1].id: an aligned job's id must tell its jobs apart by upstream",
        ),
        (
            ("{{ upstream.result.analysis.hook.text }}", "{{ upstream.url }}"),
            "jobs[1].needs: the stage 'research' yields no media URL (an analysis): read upstream.result",
        ),
        (("    fan: join\n", ""), "jobs[2].id: an aligned job's id must tell its jobs apart by upstream"),
        (
            ("    stage: research\n", "    stage: research\n    fan: join\n"),
            "jobs[0].fan: fan: needs a `needs:`",
        ),
    ],
)
def test_a_broken_chain_is_refused_with_located_errors(
    tmp_path: Path, edit: tuple[str, str], message: str
) -> None:
    result = invoke("validate", str(write(tmp_path, CHAIN.replace(*edit))))
    assert result.code == 2
    assert message in result.err, result.err


def test_a_chain_whose_worst_case_crosses_the_cap_is_refused_before_the_first_create(tmp_path: Path) -> None:
    write(tmp_path, CHAIN.replace("name: chain\n", "name: chain\nbudget: {max_credits: 100}\n"))
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        result = invoke("run", str(tmp_path / "campaign.yaml"), "--yes", env=env_of(server))
        stats = server.stats()
    assert result.code == 3
    assert (
        "the estimate (162 credits, its later stages at their worst case (152)) is over budget" in result.err
    )
    assert stats["job_ids"] == []


def test_a_chain_runs_stage_by_stage_and_a_rerun_buys_nothing_again(tmp_path: Path) -> None:
    write(tmp_path, CHAIN)
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        first = invoke("run", str(tmp_path / "campaign.yaml"), "--yes", "--quiet", env=env_of(server))
        assert first.code == 0, first.out + first.err
        made = dict(server.stats()["creates_by_idempotency_key"])
        again = invoke("run", str(tmp_path / "campaign.yaml"), "--yes", "--quiet", env=env_of(server))
        assert again.code == 0, again.out
        after = server.stats()["creates_by_idempotency_key"]
    assert len(made) == 2 + 4 + 2 and set(made.values()) == {1}
    assert after == made  # every stage reused: no create at all
    assert "8 downloaded" in first.out and "8 downloaded" in again.out
    store = RunStore.open(tmp_path / ".sume-batch/chain.rehearsal.sqlite")
    ads = [job for job in store.jobs().values() if job.kind == "ad_video"]
    store.close()
    assert {job.matrix["upstream"] for job in ads} == {"all of hero"}
    assert all(len(job.request["reference_image_urls"]) == 4 for job in ads)


def test_a_changed_downstream_template_buys_only_downstream_jobs_again(tmp_path: Path) -> None:
    path = write(tmp_path, CHAIN)
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        assert (
            invoke("run", str(tmp_path / "campaign.yaml"), "--yes", "--quiet", env=env_of(server)).code == 0
        )
        before = dict(server.stats()["creates_by_idempotency_key"])
        path.write_text(CHAIN.replace("Two weeks with Lumen.", "Three weeks with Lumen."))
        assert (
            invoke("run", str(tmp_path / "campaign.yaml"), "--yes", "--quiet", env=env_of(server)).code == 0
        )
        after = server.stats()["creates_by_idempotency_key"]
    assert len(after) - len(before) == 2 and all(after[key] == 1 for key in before)  # the two ads only


def test_an_upstream_failure_blocks_its_downstream_which_is_never_sent_nor_charged(tmp_path: Path) -> None:
    write(tmp_path, CHAIN)
    failing = SandboxConfig.from_profile("instant", faults=Faults(job_failed=1.0, leaky_error=0.0))
    with running_sandbox(failing) as server:
        result = invoke("run", str(tmp_path / "campaign.yaml"), "--yes", env=env_of(server))
        stats = server.stats()
    assert result.code == 1
    assert len(stats["job_ids"]) == 2  # the two analyses; nothing downstream was sent
    store = RunStore.open(tmp_path / ".sume-batch/chain.rehearsal.sqlite")
    blocked = sorted(job.id for job in store.jobs().values() if job.state == "blocked")
    assert store.committed_downstream() == 0.0
    store.close()
    assert blocked == ["blocked-1-ref-111", "blocked-1-ref-222"]
    assert "its upstream ref-111 is failed: never sent" in result.out
    report = json.loads(next((tmp_path / "reports/chain").glob("*/report.json")).read_text())
    assert sorted(job["id"] for job in report["jobs"] if job["status"] == "blocked") == blocked


class SignedResults:
    """Results whose media URLs carry a signature that changes on every read."""

    def __init__(self) -> None:
        self.reads = 0

    async def results(self, job: Any) -> list[tuple[str, dict[str, Any]]]:
        self.reads += 1
        url = f"https://media.test/{job.id}/image-1.png?X-Amz-Signature=s{self.reads}"
        return [(job.sume_ids[0], {"result": {"images": [{"url": url, "content_type": "image/png"}]}})]


def test_each_run_reads_an_outputs_url_afresh_and_the_downstream_key_stays_the_same(tmp_path: Path) -> None:
    text = CHAIN.replace("type: reference_analysis\n    url:", "type: image\n    prompt:")
    text = text.replace(
        "{{ upstream.result.analysis.hook.text }}, {{ look }} look", "{{ look }} of {{ upstream.url }}"
    )
    manifest, specs = prepare(write(tmp_path, text))
    plan = make_plan(manifest, specs)
    store = RunStore.open(tmp_path / "s.sqlite")
    store.add_planned((s.key, s.id, s.kind.name, s.request, s.matrix, 4.0) for s in specs)
    with store.transaction() as db:
        db.execute("UPDATE jobs SET state = 'downloaded', sume_ids = '[\"job_1\"]'")
    transfers, keys, sent = SignedResults(), [], []
    for _ in range(2):  # two runs: the URL is signed anew each time
        live: dict[str, str] = {}
        stage = asyncio.run(next_stage(manifest.jobs[1], plan.jobs, manifest=manifest, store=store,
                                       transfers=cast(Any, transfers), price=plan.pricer, live=live, run=1))  # fmt: skip
        keys.append(sorted(spec.key for spec, _ in stage.jobs))
        sent.append(sorted(live.values()))
    store.close()
    assert keys[0] == keys[1] and len(keys[0]) == 4
    assert sent[0] != sent[1] and all("X-Amz-Signature=s" in url for url in sent[1])  # as read this time
    assert "Signature" not in json.dumps([spec.request for spec, _ in stage.jobs])  # stored-form only


def test_a_later_stages_avatar_is_checked_before_the_first_stage_is_bought(tmp_path: Path) -> None:
    write(tmp_path, CHAIN.replace("[avatar_maya01, avatar_leo02]", "[avatar_maya01, avatar_noah06]"))
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        result = invoke("run", str(tmp_path / "campaign.yaml"), "--yes", env=env_of(server))
        stats = server.stats()
    assert result.code == 2
    assert "avatar 'avatar_noah06' cannot be used for ugc_ad (it can: talking_head)" in result.err
    assert stats["job_ids"] == []  # not even the analyses


def test_stop_after_runs_and_prices_part_of_a_chain_and_the_next_run_goes_on(tmp_path: Path) -> None:
    path = str(write(tmp_path, CHAIN))
    priced = json.loads(invoke("plan", path, "--stop-after", "hero", "--json").out)
    assert [one["template"] for one in priced["stages"]] == [1] and priced["total_credits"] == 10 + 32
    unknown = invoke("plan", path, "--stop-after", "heroes")
    assert (
        unknown.code == 2
        and "--stop-after heroes: no job is that stage (stages: hero, research)" in unknown.err
    )
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        assert (
            invoke("run", path, "--yes", "--quiet", "--stop-after", "research", env=env_of(server)).code == 0
        )
        first = dict(server.stats()["creates_by_idempotency_key"])
        assert invoke("run", path, "--yes", "--quiet", env=env_of(server)).code == 0
        after = server.stats()["creates_by_idempotency_key"]
    assert len(first) == 2 and len(after) == 8 and all(after[key] == 1 for key in first)


SAME = """\
version: 1
name: same
execution: {poll_interval: {reference_analysis: 0.05, image: 0.05}}
jobs:
  - {id: "r-{{ n }}", stage: research, type: reference_analysis, url: "https://www.tiktok.com/@a/video/{{ n }}", matrix: {n: [1, 2]}}
  - {id: "h-{{ upstream.id }}", needs: research, type: image, prompt: "a bottle of serum on a table"}
  - {id: "k-{{ upstream.id }}", needs: research, type: image, prompt: "a bottle of serum on a table"}
  - {id: plain, type: image, prompt: "a bottle of serum on a table"}
"""


def test_a_downstream_job_stays_itself_when_another_upstream_fails_then_succeeds(tmp_path: Path) -> None:
    path = str(write(tmp_path, SAME))
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        server.configure(faults={"job_failed": 1.0})
        assert invoke("run", path, "--yes", "--quiet", "--only", "r-1", env=env_of(server)).code == 1
        server.configure(faults={"job_failed": 0.0})
        assert invoke("run", path, "--yes", "--quiet", env=env_of(server)).code == 1  # r-1 failed before
        made = dict(server.stats()["creates_by_idempotency_key"])
        again = invoke("run", path, "--yes", "--quiet", "--retry-failed", env=env_of(server))
        assert again.code == 0, again.out
        after = server.stats()["creates_by_idempotency_key"]
    # r-1 once more, then h-r-1 and k-r-1: nothing made for r-2 is bought again, nothing is shared
    assert len(after) - len(made) == 3 and all(after[key] == 1 for key in made)
    store = RunStore.open(tmp_path / ".sume-batch/same.rehearsal.sqlite")
    jobs = {job.id: job for job in store.jobs().values() if job.state == "downloaded"}
    files = [row["path"] for row in store.files()]
    store.close()
    assert sorted(jobs) == [
        "h-r-1",
        "h-r-2",
        "k-r-1",
        "k-r-2",
        "plain",
        "r-1",
        "r-2",
    ]  # identical requests: 5 jobs
    assert {jobs[name].matrix["upstream"] for name in ("h-r-1", "k-r-1")} == {"r-1"}
    assert len(files) == len(set(files))  # no two jobs share (or overwrite) a file


def test_only_on_a_finished_chain_buys_nothing_and_retry_failed_reaches_later_stages(tmp_path: Path) -> None:
    path = str(write(tmp_path, CHAIN))
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        assert invoke("run", path, "--yes", "--quiet", env=env_of(server)).code == 0
        made = dict(server.stats()["creates_by_idempotency_key"])
        assert invoke("run", path, "--yes", "--quiet", "--only", "ref-111", env=env_of(server)).code == 0
        assert server.stats()["creates_by_idempotency_key"] == made  # the join read all of its upstream
        heroes = invoke(
            "run", path, "--yes", "--quiet", "--only", "hero-*", "--regenerate", env=env_of(server)
        )
        assert heroes.code == 0, heroes.out
        after = server.stats()["creates_by_idempotency_key"]
    assert sum(after.values()) - sum(made.values()) == 4  # the four hero images bought again, nothing else


def test_a_broken_decisions_file_stops_a_chain_that_reads_picks_before_anything_is_bought(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, CHAIN.replace("    needs: hero\n", "    needs: hero\n    picked: true\n"))
    (tmp_path / "reviews").mkdir()
    (tmp_path / "reviews/chain.yaml").write_text("version: 1\ndecisions: [oops]\n")
    with running_sandbox(SandboxConfig.from_profile("instant")) as server:
        result = invoke("run", str(path), "--yes", env=env_of(server))
        assert server.stats()["job_ids"] == []
    assert result.code == 2 and "decisions: must be a mapping of job keys" in result.err


def test_a_template_that_loops_counts_and_indexes_its_upstream_is_valid_at_plan_time(tmp_path: Path) -> None:
    text = CHAIN.replace(
        'prompt: "{{ upstream.result.analysis.hook.text }}, {{ look }} look, from {{ upstream.id }}"',
        'prompt: "{% for scene in upstream.result.analysis.scenes %}{{ scene.description }}{% endfor %}'
        '{% for k, v in upstream.result | dictsort %}{{ k }}{% endfor %} {{ upstream.position + 1 }} {{ look }}"',
    ).replace("Two weeks with Lumen.", "After {{ upstream[1].id }} of {{ upstream | length }}.")
    result = invoke("plan", str(write(tmp_path, text)))
    assert result.code == 0, result.err
