"""plan: the dry run a person reads before spending — exact text, JSON and overrides."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import REPO, invoke, write

CAMPAIGN = """\
version: 1
name: launch
matrix:
  product: [serum, toner]
budget:
  max_credits: 40
defaults:
  video: {resolution: 480p}
jobs:
  - id: "hero-{{ product }}-{{ n }}"
    type: image
    prompt: "{{ product }}"
    image_count: "{{ n }}"
    matrix:
      n: [1, 2]
  - id: "clip-{{ product }}"
    type: video
    prompt: "{{ product }}"
    duration: 4
"""


def test_plan_text(workdir: Path) -> None:
    write(workdir, CAMPAIGN)
    result = invoke("plan", "campaign.yaml")
    assert (result.code, result.err) == (0, "")
    assert result.out == (
        "Campaign launch (campaign.yaml): 6 jobs\n"
        "\n"
        "type   jobs  credits each  subtotal\n"
        "image     4           4–8        24\n"
        "video     2            12        24\n"
        "total     6                      48\n"
        "\n"
        "matrix:\n"
        "  product: 2 values: serum (3), toner (3)\n"
        "  n: 2 values: 1 (2), 2 (2)\n"
        "\n"
        "budget: OVER BUDGET: 48 of 40 credits\n"
        "Prices are estimates: Sume publishes no per-job prices. Override them with pricing: or --pricing.\n"
    )


def test_unknown_prices_are_shown_as_unknown_not_zero(workdir: Path) -> None:
    write(workdir, CAMPAIGN.replace("duration: 4", "generate_audio: true"))
    out = invoke("plan", "campaign.yaml").out
    assert "video     2       unknown       unknown\n" in out
    assert "total     6                24 + unknown\n" in out
    assert "budget: within budget: 24 of 40 credits; 2 jobs priced unknown\n" in out
    assert (
        "  unknown price: clip-serum: video duration not set, and the API's default is not documented\n"
        in out
    )


def test_pricing_file_overrides_the_manifest(workdir: Path) -> None:
    write(workdir, CAMPAIGN.replace("budget:", "pricing:\n  image: {per_image: 1}\nbudget:"))
    write(workdir, "image: {per_image: 2}\nvideo: {per_second: {480p: 1}}\n", "prices.yaml")
    out = invoke("plan", "campaign.yaml", "--pricing", "prices.yaml").out
    assert "image     4           2–4        12\nvideo     2             4         8\n" in out


def test_bad_pricing_file_is_located(workdir: Path) -> None:
    write(workdir, CAMPAIGN)
    write(workdir, "image: {per_picture: 2}\n", "prices.yaml")
    result = invoke("plan", "campaign.yaml", "--pricing", "prices.yaml")
    assert (result.code, result.err) == (
        2,
        "prices.yaml:1:9: image.per_picture: unknown key 'per_picture' (did you mean 'per_image'?)\n"
        "1 problem; nothing was sent.\n",
    )


def test_plan_json_is_a_documented_object(workdir: Path) -> None:
    write(workdir, CAMPAIGN)
    result = invoke("plan", "campaign.yaml", "--json", "-o", "plan.json")
    plan = json.loads(result.out)
    assert plan == json.loads((workdir / "plan.json").read_text())
    assert {key: plan[key] for key in ("object", "campaign", "estimate", "total_credits", "over_budget")} == {
        "object": "plan",
        "campaign": "launch",
        "estimate": True,
        "total_credits": 48,
        "over_budget": True,
    }
    assert plan["jobs"][1] == {
        "id": "hero-serum-2",
        "key": plan["jobs"][1]["key"],
        "type": "image",
        "matrix": {"product": "serum", "n": 2},
        "request": {"prompt": "serum", "image_count": 2},
        "credits": 8,
    }
    assert [line["kind"] for line in plan["types"]] == ["image", "video"]


def test_plan_of_an_invalid_manifest_exits_2(workdir: Path) -> None:
    write(workdir, CAMPAIGN.replace("duration: 4", "duration: 40"))
    result = invoke("plan", "campaign.yaml")
    assert (result.code, result.out) == (2, "")
    assert result.err.endswith("1 problem; nothing was sent.\n")


def test_example_plan_runs(workdir: Path) -> None:
    result = invoke("plan", str(REPO / "manifests/video-ad-set.yaml"))
    assert result.code == 0
    assert "ad_video     4            60       240\n" in result.out
