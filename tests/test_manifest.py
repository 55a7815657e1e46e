"""validate: every broken manifest gets exact, located messages and exit 2; nothing is sent."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import REPO, invoke, write

HEAD = """\
version: 1
name: launch
"""

CASES: list[tuple[str, str, list[str]]] = [
    (
        "yaml syntax error",
        HEAD + "jobs:\n  - id: a\n    type: image\n    prompt: [unclosed\n",
        [
            "campaign.yaml:7:1: YAML syntax error: while parsing a flow sequence, expected ',' or ']', but got '<stream end>'"
        ],
    ),
    (
        "bad indentation",
        HEAD + "jobs:\n  - id: a\n     type: image\n",
        ["campaign.yaml:5:10: YAML syntax error: mapping values are not allowed here"],
    ),
    (
        "duplicate key",
        HEAD + "jobs:\n  - id: a\n    type: image\n    prompt: one\n    prompt: two\n",
        ["campaign.yaml:7:5: jobs[0]: duplicate key 'prompt' (first defined on line 6)"],
    ),
    (
        "duplicate top-level key",
        HEAD + "name: again\njobs:\n  - {id: a, type: image, prompt: p}\n",
        ["campaign.yaml:3:1: duplicate key 'name' (first defined on line 2)"],
    ),
    (
        "python tag",
        HEAD + "jobs: !!python/object/apply:os.system ['true']\n",
        ["campaign.yaml:3:7: YAML syntax error: tags such as !!python/object are not allowed in a manifest"],
    ),
    ("empty file", "", ["campaign.yaml:1:1: the file is empty"]),
    (
        "top level is a list",
        "- a\n- b\n",
        ["campaign.yaml:1:1: the top level must be a mapping with version, name and jobs"],
    ),
    (
        "too new version",
        "version: 2\nname: launch\nfuture_key: 1\n",
        [
            "campaign.yaml:1:10: version: this manifest uses format version 2, but sume-batch 0.1.0 reads version 1"
            " at most; upgrade with: pip install --upgrade sume-batch"
        ],
    ),
    (
        "missing jobs and name",
        "version: 1\n",
        ["campaign.yaml:1:1: missing required key 'jobs'", "campaign.yaml:1:1: missing required key 'name'"],
    ),
    (
        "unknown top-level key with suggestion",
        HEAD + "budjet: {max_credits: 5}\njobs:\n  - {id: a, type: image, prompt: p}\n",
        ["campaign.yaml:3:1: budjet: unknown key 'budjet' (did you mean 'budget'?)"],
    ),
    (
        "unknown job key with suggestion",
        HEAD + "jobs:\n  - id: a\n    type: image\n    promt: p\n",
        ["campaign.yaml:6:5: jobs[0].promt: unknown key 'promt' (did you mean 'prompt'?)"],
    ),
    (
        "field of another job type",
        HEAD + "jobs:\n  - id: a\n    type: image\n    prompt: p\n    duration: 5\n",
        ["campaign.yaml:7:5: jobs[0].duration: unknown key 'duration' (did you mean 'description'?)"],
    ),
    (
        "unknown execution key",
        HEAD + "execution:\n  retires: 3\njobs:\n  - {id: a, type: image, prompt: p}\n",
        [
            "campaign.yaml:4:3: execution.retires: unknown key 'retires' (expected one of concurrency, poll_interval, timeouts)"
        ],
    ),
    (
        "unknown job type",
        HEAD + "jobs:\n  - {id: a, type: gif, prompt: p}\n",
        [
            "campaign.yaml:4:19: jobs[0].type: 'gif' is not one of 'image', 'video', 'ad_video', 'face_swap',"
            " 'reference_analysis', 'asset_upload'"
        ],
    ),
    (
        "wrong type for name",
        "version: 1\nname: [a, b]\njobs:\n  - {id: a, type: image, prompt: p}\n",
        ["campaign.yaml:2:7: name: expected a string, got a list ['a', 'b']"],
    ),
    (
        "bad campaign name",
        "version: 1\nname: spring launch!\njobs:\n  - {id: a, type: image, prompt: p}\n",
        [
            "campaign.yaml:2:7: name: must be a slug of up to 64 letters, digits, '.', '_' or '-', got 'spring launch!'"
        ],
    ),
    (
        "wrong type for budget",
        HEAD + "budget: {max_credits: lots}\njobs:\n  - {id: a, type: image, prompt: p}\n",
        ["campaign.yaml:3:23: budget.max_credits: expected a number, got a string 'lots'"],
    ),
    (
        "bad aspect ratio enum",
        HEAD + "jobs:\n  - {id: a, type: image, prompt: p, aspect_ratio: '16:10'}\n",
        ["campaign.yaml:4:51: jobs[0].aspect_ratio: '16:10' is not one of '1:1', '4:5', '9:16'"],
    ),
    (
        "video duration out of range",
        HEAD + "jobs:\n  - {id: a, type: video, prompt: p, duration: 20}\n",
        ["campaign.yaml:4:47: jobs[0].duration: 20 is above the maximum of 15"],
    ),
    (
        "video duration too short",
        HEAD + "jobs:\n  - {id: a, type: video, prompt: p, duration: 2}\n",
        ["campaign.yaml:4:47: jobs[0].duration: 2 is below the minimum of 4"],
    ),
    (
        "video resolution enum",
        HEAD + "jobs:\n  - {id: a, type: video, prompt: p, resolution: 1080p}\n",
        ["campaign.yaml:4:49: jobs[0].resolution: '1080p' is not one of '480p', '720p'"],
    ),
    (
        "non-reel url",
        HEAD + "jobs:\n  - {id: a, type: reference_analysis, url: 'https://www.youtube.com/watch?v=x'}\n",
        [
            "campaign.yaml:4:44: jobs[0].url: must be a public TikTok video (https://www.tiktok.com/@user/video/123)"
            " or Instagram Reel (https://www.instagram.com/reel/CODE/) URL, got 'https://www.youtube.com/watch?<redacted>'"
        ],
    ),
    (
        "rendered url not a reel",
        HEAD
        + "vars: {u: 'https://www.instagram.com/p/abc/'}\njobs:\n  - {id: a, type: reference_analysis, url: '{{ u }}'}\n",
        [
            "campaign.yaml:5:44: jobs[0].url: must be a public TikTok video (https://www.tiktok.com/@user/video/123)"
            " or Instagram Reel (https://www.instagram.com/reel/CODE/) URL, got 'https://www.instagram.com/p/abc/'"
            " in the variant (no matrix)"
        ],
    ),
    (
        "http reference image",
        HEAD + "jobs:\n  - {id: a, type: image, prompt: p, reference_image_urls: ['http://x.test/a.png']}\n",
        [
            "campaign.yaml:4:60: jobs[0].reference_image_urls[0]: must be an https:// URL (or a loopback http:// one, as a sandbox's workspace gives), got 'http://x.test/a.png'"
        ],
    ),
    (
        "empty avatar list",
        HEAD + "jobs:\n  - {id: a, type: face_swap, source_video: v.mp4, avatar_ids: []}\n",
        ["campaign.yaml:4:63: jobs[0].avatar_ids: needs at least 1 item"],
    ),
    (
        "missing required field of the type",
        HEAD + "jobs:\n  - {id: a, type: ad_video, script: hi}\n",
        [
            "campaign.yaml:4:5: jobs[0]: missing required key 'avatar_id' (set it here or in defaults.ad_video)"
        ],
    ),
    (
        "undefined variable with suggestion",
        HEAD
        + "matrix:\n  scene: [beach, city]\njobs:\n  - id: 'a-{{ scene }}'\n    type: image\n    prompt: 'at the {{ scnee }}'\n",
        [
            "campaign.yaml:8:13: jobs[0].prompt: undefined variable 'scnee' (did you mean 'scene'?) in the variant"
            " (scene=beach) (and 1 more variant)"
        ],
    ),
    (
        "undefined attribute",
        HEAD + "vars: {p: {name: x}}\njobs:\n  - {id: a, type: image, prompt: '{{ p.colour }}'}\n",
        [
            "campaign.yaml:5:34: jobs[0].prompt: undefined value: 'dict object' has no attribute 'colour' in the variant (no matrix)"
        ],
    ),
    (
        "sandbox escape via mro",
        HEAD + "jobs:\n  - {id: a, type: image, prompt: \"{{ ''.__class__.__mro__ }}\"}\n",
        [
            "campaign.yaml:4:34: jobs[0].prompt: unsafe template: access to attribute '__class__' of 'str' object is"
            " unsafe (templates may only format values) in the variant (no matrix)"
        ],
    ),
    (
        "sandbox escape via globals",
        HEAD + 'jobs:\n  - {id: a, type: image, prompt: "{{ cycler.__init__.__globals__.os }}"}\n',
        [
            "campaign.yaml:4:34: jobs[0].prompt: unsafe template: access to attribute '__init__' of 'type' object is"
            " unsafe (templates may only format values) in the variant (no matrix)"
        ],
    ),
    (
        "template memory bomb",
        HEAD + "jobs:\n  - {id: a, type: image, prompt: \"{{ 'x' * 100000000 }}\"}\n",
        [
            "campaign.yaml:4:34: jobs[0].prompt: repeating a value would build more than 100,000 characters or"
            " items; raise templates.size if you mean it in the variant (no matrix)"
        ],
    ),
    (
        "template syntax error",
        HEAD + "jobs:\n  - {id: a, type: image, prompt: 'a {{ b '}\n",
        [
            "campaign.yaml:4:34: jobs[0].prompt: template syntax error: unexpected end of template, expected 'end of print statement'. in the variant (no matrix)"
        ],
    ),
    (
        "templated value of the wrong type",
        HEAD
        + "matrix:\n  d: [5, long]\njobs:\n  - {id: 'a-{{ d }}', type: video, prompt: p, duration: '{{ d }}'}\n",
        [
            "campaign.yaml:6:57: jobs[0].duration: expected an integer, got a string 'long' in the variant (d=long)"
        ],
    ),
    (
        "id collision inside one job",
        HEAD
        + "matrix:\n  product: [serum, cream]\njobs:\n  - {id: hero, type: image, prompt: '{{ product }}'}\n",
        [
            "campaign.yaml:6:10: jobs[0].id: job id 'hero' is produced twice: by jobs[0] (product=serum) and by jobs[0]"
            " (product=cream); put the matrix values that differ into the id"
        ],
    ),
    (
        "id collision across jobs",
        HEAD + "jobs:\n  - {id: hero, type: image, prompt: a}\n  - {id: hero, type: video, prompt: b}\n",
        [
            "campaign.yaml:5:10: jobs[1].id: job id 'hero' is produced twice: by jobs[0] (no matrix) and by jobs[1]"
            " (no matrix); put the matrix values that differ into the id"
        ],
    ),
    (
        "rendered id not a file name",
        HEAD + "jobs:\n  - {id: 'hero {{ campaign }}/x', type: image, prompt: a}\n",
        [
            "campaign.yaml:4:10: jobs[0].id: rendered id 'hero launch/x' must be 1–128 letters, digits, '.', '_' or '-' (it names files) in the variant (no matrix)"
        ],
    ),
    (
        "matrix explosion",
        HEAD
        + "matrix:\n  a: [1,2,3,4,5,6,7,8,9,10]\n  b: [1,2,3,4,5,6,7,8,9,10]\njobs:\n  - id: 'x-{{ a }}-{{ b }}-{{ c }}'\n"
        + "    type: image\n    prompt: p\n    matrix:\n      c: [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63,64,65,66,67,68,69,70,71,72,73,74,75,76,77,78,79,80,81,82,83,84,85,86,87,88,89,90,91,92,93,94,95,96,97,98,99,100,101]\n",
        [
            "campaign.yaml:11:7: jobs[0].matrix: expands to 10,100 variants (a 10 × b 10 × c 101), above the limit of"
            " 10,000; raise budget.max_jobs or pass --max-jobs if you mean it"
        ],
    ),
    (
        "job redefines a campaign axis",
        HEAD
        + "matrix:\n  product: [a]\njobs:\n  - id: 'x-{{ product }}'\n    type: image\n    prompt: p\n    matrix:\n      product: [b]\n",
        [
            "campaign.yaml:10:7: jobs[0].matrix.product: axis 'product' is already an axis of the campaign matrix; narrow it with exclude instead"
        ],
    ),
    (
        "exclude names no axis",
        HEAD
        + "jobs:\n  - id: 'x-{{ a }}'\n    type: image\n    prompt: p\n    matrix:\n      a: [1, 2]\n      exclude: [{b: 1}]\n",
        ["campaign.yaml:9:18: jobs[0].matrix.exclude[0]: 'b' is not a matrix axis (axes: a)"],
    ),
    (
        "include row misses an axis",
        HEAD
        + "jobs:\n  - id: 'x-{{ a }}-{{ b }}'\n    type: image\n    prompt: p\n    matrix:\n      a: [1]\n      b: [2]\n      include: [{a: 3}]\n",
        ["campaign.yaml:10:17: jobs[0].matrix.include[0]: an include row must name every axis; missing 'b'"],
    ),
    (
        "missing upload file",
        HEAD + "jobs:\n  - {id: a, type: face_swap, source_video: nowhere.mp4, avatar_ids: [av_1]}\n",
        [
            "campaign.yaml:4:44: jobs[0].source_video: no such file: nowhere.mp4 (looked for {folder}/nowhere.mp4) in the variant (no matrix)"
        ],
    ),
    (
        "unknown pricing key",
        HEAD + "pricing:\n  video: {per_minute: 3}\njobs:\n  - {id: a, type: image, prompt: p}\n",
        [
            "campaign.yaml:4:11: pricing.video.per_minute: unknown key 'per_minute' (expected one of audio_per_second, per_second)"
        ],
    ),
    (
        "unknown defaults key",
        HEAD + "defaults:\n  image: {aspect: '1:1'}\njobs:\n  - {id: a, type: image, prompt: p}\n",
        ["campaign.yaml:4:11: defaults.image.aspect: unknown key 'aspect' (did you mean 'aspect_ratio'?)"],
    ),
]


@pytest.mark.parametrize(("text", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_broken_manifest_is_refused_with_located_messages(
    workdir: Path, text: str, expected: list[str]
) -> None:
    write(workdir, text)
    result = invoke("validate", "campaign.yaml")
    count = len(expected)
    summary = f"{count} problem{'s' if count != 1 else ''}; nothing was sent."
    lines = [line.replace("{folder}", str(workdir.resolve())) for line in expected]
    assert (result.code, result.out, result.err.splitlines()) == (2, "", [*lines, summary])


@pytest.mark.parametrize("example", sorted((REPO / "manifests").glob("*.yaml")), ids=lambda path: path.name)
def test_every_example_campaign_is_valid(example: Path, tmp_path: Path) -> None:
    if "workspace:" in example.read_text():  # its workspace axes are read first, from the sandbox's
        shutil.copytree(REPO / "manifests", tmp_path / "manifests")
        example = tmp_path / "manifests" / example.name
        unread = invoke("validate", str(example))
        assert unread.code == 0 and "not read from the workspace yet" in unread.out
        assert invoke("plan", str(example), "--sandbox", "--refresh").code == 0
    result = invoke("validate", str(example))
    assert result.code == 0, result.err
    assert result.out.startswith(f"{example}: valid: campaign ")


def test_problems_of_several_files_are_listed_together(workdir: Path) -> None:
    write(workdir, HEAD + "jobs:\n  - {id: a, type: image}\n", "one.yaml")
    write(workdir, HEAD + "jobs:\n  - {id: a, type: video, prompt: p, duration: 99}\n", "two.yaml")
    result = invoke("validate", "one.yaml", "two.yaml")
    assert result.code == 2
    assert result.err.splitlines() == [
        "one.yaml:4:5: jobs[0]: missing required key 'prompt' (set it here or in defaults.image)",
        "two.yaml:4:47: jobs[0].duration: 99 is above the maximum of 15",
        "2 problems; nothing was sent.",
    ]


def test_missing_file_is_a_clear_error(workdir: Path) -> None:
    result = invoke("validate", "nope.yaml")
    assert (result.code, result.err) == (2, "nope.yaml: no such file\n1 problem; nothing was sent.\n")


def test_oversize_file_is_refused_before_parsing(workdir: Path) -> None:
    path = workdir / "campaign.yaml"
    path.write_text(HEAD + "description: '" + "x" * (5 * 1024 * 1024) + "'\n")
    result = invoke("validate", "campaign.yaml")
    assert result.code == 2
    assert result.err.startswith("campaign.yaml: file is 5,242,920 bytes; the limit is 4,194,304\n")


def test_alias_bomb_is_refused_quickly(workdir: Path) -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    write(workdir, HEAD + "\n".join(lines) + "\njobs: *a8\n")
    result = invoke("validate", "campaign.yaml")
    assert result.code == 2
    assert "more than 200,000 values after expanding aliases (an alias bomb?)" in result.err


def test_not_utf8_is_refused(workdir: Path) -> None:
    (workdir / "campaign.yaml").write_bytes(b"version: 1\nname: \xff\xfe\n")
    result = invoke("validate", "campaign.yaml")
    message = "campaign.yaml:2:7: not UTF-8 text (byte 17: 0xff); save it as UTF-8"
    assert (result.code, result.err.splitlines()[0]) == (2, message)


def test_debug_shows_a_traceback(workdir: Path) -> None:
    write(workdir, "version: 1\n")
    result = invoke("--debug", "validate", "campaign.yaml")
    assert result.code == 2
    assert "Traceback (most recent call last)" in result.err


def test_no_traceback_without_debug(workdir: Path) -> None:
    write(workdir, "version: 1\n")
    assert "Traceback" not in invoke("validate", "campaign.yaml").err


def test_upload_file_is_found_relative_to_the_manifest(workdir: Path) -> None:
    (workdir / "media").mkdir()
    shutil.copy(REPO / "tests/data/clip.mp4", workdir / "media/clip.mp4")
    write(
        workdir,
        HEAD + "jobs:\n  - {id: a, type: face_swap, source_video: media/clip.mp4, avatar_ids: [av]}\n",
        "sub.yaml",
    )
    assert invoke("validate", "sub.yaml").code == 0


def test_validate_json_lists_every_file_and_every_located_problem(workdir: Path) -> None:
    write(workdir, HEAD + "jobs:\n  - {id: a, type: image, prompt: p}\n", "good.yaml")
    write(workdir, HEAD + "jobs:\n  - {id: a, type: image}\n", "bad.yaml")
    result = invoke("validate", "good.yaml", "bad.yaml", "--json")
    document = __import__("json").loads(result.out)
    assert result.code == 2 and document["object"] == "validation" and document["ok"] is False
    good, bad = document["files"]
    assert (good["valid"], good["campaign"], good["jobs"]) == (True, "launch", 1)
    assert bad["valid"] is False and bad["problems"][0]["line"] == 4
    assert "missing required key 'prompt'" in bad["problems"][0]["message"]
    assert invoke("validate", "good.yaml", "--json").code == 0
