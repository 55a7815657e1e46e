"""expand: matrix semantics, native values, stable keys — pure, so tested with tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sume_batch.expand import JobSpec, expand_jobs
from sume_batch.manifest import parse_manifest


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
