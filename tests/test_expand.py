"""expand: matrix semantics, native values, stable keys — pure, so tested with tables."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from sume_batch.confine import file_digest
from sume_batch.expand import JobSpec, expand_jobs
from sume_batch.manifest import load_manifest, parse_manifest

REPO = Path(__file__).resolve().parent.parent


def expand(text: str, digest: Any = lambda path: "sha-of-" + path.name, **kwargs: Any) -> list[JobSpec]:
    return expand_jobs(parse_manifest(text, path=Path("c.yaml")), digest=digest, **kwargs)


def ids(text: str) -> list[str]:
    return [spec.id for spec in expand(text)]


HEAD = "version: 1\nname: c\n"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("jobs:\n  - {id: a, type: image, prompt: p}\n", ["a"]),
        (
            "matrix: {p: [x, y]}\njobs:\n  - {id: 'a-{{ p }}', type: image, prompt: p}\n",
            ["a-x", "a-y"],
        ),
        (  # campaign rows × job rows, campaign axes vary slowest
            "matrix: {p: [x, y]}\njobs:\n  - id: 'a-{{ p }}-{{ r }}'\n    type: image\n    prompt: p\n"
            "    matrix: {r: [1, 2]}\n",
            ["a-x-1", "a-x-2", "a-y-1", "a-y-2"],
        ),
        (  # a job's exclude may name a campaign axis
            "matrix: {p: [x, y]}\njobs:\n  - id: 'a-{{ p }}-{{ r }}'\n    type: image\n    prompt: p\n"
            "    matrix: {r: [1, 2], exclude: [{p: y, r: 2}]}\n",
            ["a-x-1", "a-x-2", "a-y-1"],
        ),
        (  # include adds rows, with their own extra variables
            "jobs:\n  - id: 'a-{{ r }}{{ extra | default(\"\") }}'\n    type: image\n    prompt: p\n"
            "    matrix: {r: [1], include: [{r: 9, extra: '-bonus'}]}\n",
            ["a-1", "a-9-bonus"],
        ),
        (  # campaign-level exclude and include
            "matrix: {p: [x, y, z], exclude: [{p: y}], include: [{p: w}]}\n"
            "jobs:\n  - {id: 'a-{{ p }}', type: image, prompt: p}\n",
            ["a-x", "a-z", "a-w"],
        ),
        (  # mapping values in an axis
            "matrix:\n  product: [{name: serum, colour: gold}, {name: toner, colour: blue}]\n"
            "jobs:\n  - {id: 'a-{{ product.name }}', type: image, prompt: '{{ product.colour }}'}\n",
            ["a-serum", "a-toner"],
        ),
    ],
)
def test_matrix_rows(body: str, expected: list[str]) -> None:
    assert ids(HEAD + body) == expected


def test_variables_layer_campaign_then_job_then_matrix() -> None:
    text = HEAD + (
        "vars: {a: campaign, b: campaign, c: campaign}\n"
        "jobs:\n  - id: x\n    type: image\n    prompt: '{{ a }} {{ b }} {{ c }} {{ campaign }}'\n"
        "    vars: {b: job, c: job}\n    matrix: {c: [row]}\n"
    )
    assert expand(text)[0].request["prompt"] == "campaign job row c"


def test_a_single_expression_keeps_its_type() -> None:
    text = HEAD + (
        "jobs:\n  - id: 'v-{{ d }}'\n    type: video\n    prompt: p\n    duration: '{{ d }}'\n"
        "    generate_audio: '{{ d > 5 }}'\n    resolution: 480p\n    matrix: {d: [4, 8]}\n"
    )
    requests = [spec.request for spec in expand(text)]
    assert requests == [
        {"prompt": "p", "duration": 4, "generate_audio": False, "resolution": "480p"},
        {"prompt": "p", "duration": 8, "generate_audio": True, "resolution": "480p"},
    ]


def test_defaults_fill_in_and_the_job_overrides() -> None:
    text = HEAD + (
        "defaults:\n  video: {duration: 5, resolution: 480p}\n"
        "jobs:\n  - {id: a, type: video, prompt: p, duration: 10}\n"
    )
    assert expand(text)[0].request == {"prompt": "p", "duration": 10, "resolution": "480p"}


def test_key_is_stable_and_depends_only_on_campaign_and_request() -> None:
    one = HEAD + "vars: {unused: 1}\njobs:\n  - {id: a, type: image, prompt: p}\n"
    renamed_id = HEAD + "jobs:\n  - {id: b, type: image, prompt: p}\n"
    other_prompt = HEAD + "jobs:\n  - {id: a, type: image, prompt: q}\n"
    other_campaign = "version: 1\nname: d\njobs:\n  - {id: a, type: image, prompt: p}\n"
    key = expand(one)[0].key
    assert key == expand(one)[0].key == expand(renamed_id)[0].key
    assert key != expand(other_prompt)[0].key
    assert key != expand(other_campaign)[0].key
    assert len(key) == 32


def test_key_changes_with_the_bytes_of_an_uploaded_file(workdir: Path) -> None:
    (workdir / "v.mp4").write_bytes(b"video")
    text = HEAD + "jobs:\n  - {id: a, type: face_swap, source_video: v.mp4, avatar_ids: [av]}\n"
    assert expand(text, digest=lambda path: "one")[0].key != expand(text, digest=lambda path: "two")[0].key


def test_the_digest_reads_the_confined_file_with_symlinks_resolved(workdir: Path) -> None:
    (workdir / "media").mkdir()
    (workdir / "media/real.mp4").write_bytes(b"video")
    (workdir / "link.mp4").symlink_to("media/real.mp4")
    read: list[Path] = []
    text = HEAD + "jobs:\n  - {id: a, type: face_swap, source_video: link.mp4, avatar_ids: [av]}\n"
    spec = expand(text, digest=lambda path: read.append(path) or "sha")[0]
    assert read == [workdir.resolve() / "media/real.mp4"]
    assert spec.request["source_video"] == "link.mp4"  # the request (and so the key) keeps what was written


def test_max_jobs_can_be_raised() -> None:
    text = HEAD + "jobs:\n  - {id: 'a-{{ n }}', type: image, prompt: p, matrix: {n: [1, 2, 3]}}\n"
    text = text.replace("type: image", "type: image")
    with pytest.raises(Exception, match="expands to 3 variants \\(n 3\\), above the limit of 2"):
        expand(text, max_jobs=2)
    assert len(expand(text, max_jobs=3)) == 3


def test_a_huge_matrix_is_refused_without_being_enumerated() -> None:
    axes = "".join(f"  a{i}: [{', '.join(str(n) for n in range(100))}]\n" for i in range(6))
    text = HEAD + "matrix:\n" + axes + "jobs:\n  - {id: x, type: image, prompt: p}\n"
    with pytest.raises(Exception, match=r"expands to 1,000,000,000,000 variants \(a0 100 × a1 100"):
        expand(text)


def test_identical_requests_are_separate_jobs_with_stable_keys() -> None:
    text = HEAD + "jobs:\n  - {id: 'take-{{ n }}', type: image, prompt: same, matrix: {n: [1, 2, 3]}}\n"
    keys = [spec.key for spec in expand(text)]
    assert len(set(keys)) == 3
    assert keys == [spec.key for spec in expand(text)]


# Job keys are a variant's identity across runs: a changed key means a campaign is bought again. These
# are the keys (and a digest of the rendered requests) that the example manifests and GOLDEN had
# before issue 13's faster expansion; no change to rendering or matrices may move them.
EXAMPLE_KEYS = {
    "face-swap-set.yaml": {"swap-founder-selfie": "81609ec3e8618230028eeb3043c44c52"},
    "reference-research.yaml": {
        "ref-glowlab-morning": "5d3a4d8dbd2e5a9dd82aff160c37e992",
        "ref-dewy-reel": "fb3ac2f323e60b02f67060921fe63dc7",
        "ref-skinfirst-hook": "9db73169ce27af236f1427523a616c7a",
        "our-best-selfie": "9607972ee5fe4622626f52ac5fe20ee2",
    },
    "spring-launch.yaml": {
        "hero-serum-1x1": "2d830e66284449962fdb81e44e1f6d08",
        "hero-serum-4x5": "7e633e0f62210ac437c4ffb57bac7a34",
        "hero-serum-9x16": "0a013e79c1c3a008ddb19a4ae9d421f9",
        "hero-night-cream-1x1": "1a5a5e771ab31e505af8aee591019daf",
        "hero-night-cream-4x5": "0f1078a48a2cfa3bf40438680242faae",
        "hero-night-cream-9x16": "b4369acd3ccf173cc75fc3c17506eee9",
        "hero-toner-1x1": "8c83bdbbf0b3f6c8e02861908f6059f3",
        "hero-toner-4x5": "7061b84761858f7142212d8aa251ff98",
        "lifestyle-serum-vanity": "d83d29c399b4fb24df3aa1d643ff1cf4",
        "lifestyle-serum-travel": "05d79e1321c4cc4e58239209f920addd",
        "lifestyle-night-cream-vanity": "8f56402fe0772b567e3fb2b43ca53f88",
        "lifestyle-night-cream-travel": "7815e524c75bce1d62526deb7e50cb6b",
        "lifestyle-toner-vanity": "57a1bdbcf4c0f59c2d17c06e04e1262b",
        "lifestyle-toner-travel": "98f45926ba1bb484c8e1d81895b804dd",
    },
    "video-ad-set.yaml": {
        "demo-problem-story": "e89f14ca61035cca0d832cbb79920fa6",
        "demo-problem-feed": "0eef3ba73c459f30af102eb73db2db7d",
        "demo-ritual-story": "7083cd4089da924f3c05856405605dff",
        "demo-ritual-feed": "9e115da0a0ff52cd1605c834aa73cb28",
        "demo-result-story": "ea5a4f6d5cdf4ec4bd0942c9c6c81d09",
        "demo-result-feed": "a5e4e0853fc98b8042d2577211226a40",
        "ad-avatar_maya01-honest": "ae63968bcbee410972c1cb93962ae830",
        "ad-avatar_maya01-quick": "ddd67ff94689a01ab21871490169018f",
        "ad-avatar_leo02-honest": "c3326387d34973d3e62ec30fa6dbdba0",
        "ad-avatar_leo02-quick": "bba4600a6f30c220ab2c8386b35aa16f",
    },
}
EXAMPLE_DIGESTS = {
    "face-swap-set.yaml": "6c06ccab7da624991f1e2b7d5134410759d0f72b30079da7fc88bb8515f4b896",
    "reference-research.yaml": "c1c74e3efa8db1c027ca3dde63d239727007b907799e4caae3a54f391ae91fc2",
    "spring-launch.yaml": "58438e631857fa1755a511129e37d226eb78d72a18659d414bf9afa6592b752b",
    "video-ad-set.yaml": "db8339467531528e9f796e418b5d34115b766383ebf8c725a936414caa5b3ade",
}
# Mapping axis values, excludes of mappings and of campaign axes, includes with extra variables,
# statements, comments, filters, typed single expressions, braces that are not template syntax,
# carriage returns (Jinja reads them as newlines) and repeated requests.
GOLDEN = """\
version: 1
name: golden
vars:
  brand: Lumen
  sizes: {small: 1, large: 3}
matrix:
  product:
    - {name: serum, colour: gold}
    - {name: toner, colour: blue}
    - mist
  ratio: ["1:1", "4:5"]
  exclude:
    - {product: mist, ratio: "4:5"}
    - {product: {name: toner, colour: blue}, ratio: "1:1"}
  include:
    - {product: {name: balm, colour: red}, ratio: "9:16", extra: " (new)"}
jobs:
  - id: "a-{{ product.name | default(product) }}-{{ ratio | replace(':', 'x') }}-{{ take }}"
    type: image
    prompt: "{% set who = product.name if product is mapping else product %}{{ brand | upper }} {{ who }}{{ extra | default('') }}, {% for i in range(take) %}{{ i }};{% endfor %} {json: {}}"
    aspect_ratio: "{{ ratio if ratio != '9:16' else '9:16' }}"
    image_count: "{{ take }}"
    quality: "{ not a template }"
    matrix:
      take: [1, 2]
      exclude: [{product: serum, take: 2}, {take: 2, ratio: "1:1"}]
  - id: "v-{{ product.name | default(product) }}-{{ ratio | replace(':', 'x') }}-{{ loop_name }}{{ n }}"
    type: video
    prompt: "{# a comment #}{{ '%s-%03d' | format(campaign, n) }} {{ '{}x{}'.format(n, n) }}\\r\\nline two"
    duration: "{{ n + 4 }}"
    resolution: 480p
    generate_audio: "{{ n > 1 }}"
    vars:
      loop_name: "x"
    matrix:
      n: [1, 2]
      include: [{n: 3, loop_name: "y"}]
  - id: "take-{{ product.name | default(product) }}-{{ ratio | replace(':', 'x') }}-{{ n }}"
    type: image
    prompt: "the same prompt"
    matrix:
      n: [1, 2, 3]
  - id: "plain-{{ product.name | default(product) }}-{{ ratio | replace(':', 'x') }}"
    type: image
    prompt: "the same prompt"
  - id: "plain2-{{ product.name | default(product) }}-{{ ratio | replace(':', 'x') }}"
    type: image
    prompt: "brace {x} %} }}\\r\\nline two\\rthree"
"""
GOLDEN_DIGEST = "fc5a1d40ef0e4855b952aa3de73aca8c832d7ad7434d6ded09b7a834705efa58"


def requests_digest(specs: list[JobSpec]) -> str:
    blob = json.dumps([[spec.id, spec.key, spec.request, spec.matrix] for spec in specs], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


@pytest.mark.parametrize("name", sorted(EXAMPLE_KEYS))
def test_the_example_manifests_keep_their_job_keys(name: str) -> None:
    specs = expand_jobs(load_manifest(REPO / "manifests" / name), digest=file_digest)
    assert {spec.id: spec.key for spec in specs} == EXAMPLE_KEYS[name]
    assert requests_digest(specs) == EXAMPLE_DIGESTS[name]
    examples = sorted(path.name for path in (REPO / "manifests").glob("*.yaml"))
    assert examples == sorted([*EXAMPLE_KEYS, "catalog.yaml", "launch-chain.yaml", "scene-picks.yaml"])


def test_the_data_driven_example_keeps_its_job_keys() -> None:
    """240 jobs from manifests/data/catalog.csv: pinned by digests of (id, key) and of the requests.
    (scene-picks.yaml's jobs come from the workspace a run reads: no keys to pin offline.)"""
    specs = expand_jobs(load_manifest(REPO / "manifests" / "catalog.yaml"), digest=file_digest)
    keys = json.dumps(sorted((spec.id, spec.key) for spec in specs))
    assert len(specs) == 240
    assert (
        hashlib.sha256(keys.encode()).hexdigest()
        == "c54d275b14532ec3eea7bc7c69e99b8b770a989e6c67ec7303575bfe00a17bef"
    )
    assert requests_digest(specs) == "d4f762b0dc00220f7378996d19d72e667f8764c143e57db4a84ca0b38b723fec"


def test_every_kind_of_template_and_matrix_keeps_its_keys_and_requests() -> None:
    specs = expand(GOLDEN)
    assert len(specs) == 48
    assert requests_digest(specs) == GOLDEN_DIGEST


@pytest.mark.parametrize(
    ("job_id", "matrix", "expected"),
    [
        ("a-{{ n }}", "{n: [1, 2, 3], exclude: [{n: 2.0}]}", ["a-1", "a-3"]),  # equal, as 2 == 2.0
        ("a-{{ n }}", "{n: [0, 1], exclude: [{n: false}]}", ["a-1"]),  # and as 0 == false
        ("a-{{ n }}", "{n: ['1', 2], exclude: [{n: 1}, {n: '2'}]}", ["a-1", "a-2"]),  # text is no number
        (  # mappings and lists compare whole, whatever the order of a mapping's keys
            "a-{{ p.k }}{{ p.l | default([0]) | join('') }}",
            "{p: [{k: 1, l: [1, 2]}, {k: 1, l: [2, 1]}, {k: 2}], exclude: [{p: {l: [1, 2], k: 1}}, {p: {k: 2, x: 1}}]}",
            ["a-121", "a-20"],
        ),
        (  # exclude rows naming different axes, each matched on its own axes
            "a-{{ n }}-{{ m }}", "{n: [1, 2], m: [x, y], exclude: [{n: 1, m: y}, {m: x}]}", ["a-2-y"],
        ),
    ],
)  # fmt: skip
def test_an_exclude_row_drops_the_rows_equal_to_it_on_its_axes(
    job_id: str, matrix: str, expected: list[str]
) -> None:
    text = HEAD + f'jobs:\n  - id: "{job_id}"\n    type: image\n    prompt: p\n    matrix: {matrix}\n'
    assert [spec.id for spec in expand(text)] == expected
