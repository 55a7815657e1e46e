"""Hostile manifests (issue 11): each is refused by `validate` with exit 2 and a located message,
no traceback, no connection attempted, in under 5 s and under 300 MB of extra peak memory."""

from __future__ import annotations

import json
import os
import re
import resource
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import invoke

HEAD = "version: 1\nname: hostile\n"
PROMPT = "campaign.yaml:6:13: jobs[0].prompt: "  # where `image(...)` puts the template
LOCATED = re.compile(r"^campaign\.yaml(:\d+:\d+)?: ")
Setup = Callable[[Path], None]


def image(prompt: str, extra: str = "") -> str:
    """A one-job campaign whose prompt is `prompt` (as a JSON string, which YAML reads alike)."""
    return HEAD + extra + f"jobs:\n  - id: a\n    type: image\n    prompt: {json.dumps(prompt)}\n"


def swap(source: str, extra: str = "") -> str:
    return (
        HEAD
        + extra
        + f"jobs:\n  - id: a\n    type: face_swap\n    source_video: {json.dumps(source)}\n    avatar_ids: [av]\n"
    )


SOURCE = "campaign.yaml:6:19: jobs[0].source_video: "
OUTSIDE = "; local files must be inside the manifest's folder"


def files(**entries: str) -> Setup:
    """Make files in the manifest's folder: 'fifo', 'dir', '->TARGET' (a symlink) or text."""

    def setup(folder: Path) -> None:
        for name, what in entries.items():
            path = folder / name.replace("__", "/")
            path.parent.mkdir(parents=True, exist_ok=True)
            if what == "fifo":
                os.mkfifo(path)
            elif what == "dir":
                path.mkdir()
            elif what.startswith("->"):
                path.symlink_to(what[2:])
            else:
                path.write_text(what)

    return setup


def nothing(folder: Path) -> None:
    pass


CASES: list[tuple[str, str | bytes, Setup, str]] = [
    # --- Jinja2: size ---
    (
        "tilde doubling",
        image(
            "{% set ns = namespace(a='x') %}{% for i in range(64) %}{% set ns.a = ns.a ~ ns.a %}{% endfor %}{{ ns.a }}"
        ),
        nothing,
        PROMPT + "the template builds a value of more than 100,000 characters",
    ),
    (
        "plus doubling",
        image(
            "{% set ns = namespace(a='x') %}{% for i in range(64) %}{% set ns.a = ns.a + ns.a %}{% endfor %}{{ ns.a }}"
        ),
        nothing,
        PROMPT + "the template builds a value of more than 100,000",
    ),
    (
        "center 10**9",
        image("{{ 'x'|center(10**9) }}"),
        nothing,
        PROMPT + "the center filter would build more than 100,000",
    ),
    ("center 10**10", image("{{ 'x'|center(10**10) }}"), nothing, PROMPT + "the center filter would build"),
    ("str.ljust", image("{{ 'x'.ljust(10**9) }}"), nothing, PROMPT + "str.ljust() would build"),
    ("str.zfill", image("{{ '1'.zfill(999999999) }}"), nothing, PROMPT + "str.zfill() would build"),
    ("repeat string", image("{{ 'x' * 10**9 }}"), nothing, PROMPT + "repeating a value would build"),
    (
        "repeat list twice",
        image("{{ [1] * 20000 * 20000 }}"),
        nothing,
        PROMPT + "repeating a value would build",
    ),
    (
        "percent star width",
        image("{{ '%*s' % (10**9, 'x') }}"),
        nothing,
        PROMPT + "a '*' width in % formatting is not allowed",
    ),
    (
        "percent big width",
        image("{{ '%1000000000s' % 'x' }}"),
        nothing,
        PROMPT + "a format width of 1,000,000,000 is above the limit of 100,000",
    ),
    (
        "str.format width",
        image("{{ '{:>1000000000}'.format('x') }}"),
        nothing,
        PROMPT + "a format width of 1,000,000,000",
    ),
    (
        "str.format nested width",
        image("{{ '{:>{}}'.format('x', 10**9) }}"),
        nothing,
        PROMPT + "nested format fields",
    ),
    (
        "format filter width",
        image("{{ '%999999999d'|format(1) }}"),
        nothing,
        PROMPT + "a format width of 999,999,999",
    ),
    ("lipsum n", image("{{ lipsum(n=10**6) }}"), nothing, PROMPT + "lipsum() would build"),
    ("lipsum max words", image("{{ lipsum(1, max=10**8) }}"), nothing, PROMPT + "lipsum() would build"),
    (
        "join big range",
        image("{{ range(99999)|join(', ') }}"),
        nothing,
        PROMPT + "the join filter would build",
    ),
    (
        "join of a generator",
        image("{{ range(99999)|map('string')|join('x' * 40000) }}"),
        nothing,
        PROMPT + "the template took more than 100,000 steps",
    ),
    (
        "map center",
        image("{{ range(99999)|map('center', 90000)|list }}"),
        nothing,
        PROMPT + "the template builds, in all, ten times more than 100,000",
    ),
    ("indent", image("{{ 'x'|indent(10**9) }}"), nothing, PROMPT + "the indent filter would build"),
    (
        "batch fill",
        image("{{ [1, 2]|batch(10**9, 'x')|list }}"),
        nothing,
        PROMPT + "the batch filter would build",
    ),
    ("slice", image("{{ range(9)|slice(10**9)|list }}"), nothing, PROMPT + "the slice filter would build"),
    (
        "wordwrap",
        image("{{ ('x' * 20000)|wordwrap(1, wrapstring='y' * 20000) }}"),
        nothing,
        PROMPT + "the wordwrap filter would build",
    ),
    (
        "replace empty",
        image("{{ ('x' * 9000)|replace('', 'y' * 90) }}"),
        nothing,
        PROMPT + "the replace filter would build more than 100,000",
    ),
    ("expandtabs", image("{{ '\t\t'.expandtabs(10**9) }}"), nothing, PROMPT + "str.expandtabs() would build"),
    (
        "translate",
        image("{{ 'abc'.translate({97: 'x' * 50000}) }}"),
        nothing,
        PROMPT + "str.translate() would build",
    ),
    (
        "list literal doubling",
        image(
            "{% set ns = namespace(a=[1]) %}{% for i in range(64) %}{% set ns.a = [ns.a, ns.a] %}{% endfor %}{{ ns.a == ns.a }}"
        ),
        nothing,
        PROMPT + "the template builds a value of more than 100,000",
    ),
    (
        "dict literal",
        image("{{ {'a': 'x' * 60000, 'b': 'y' * 60000} }}"),
        nothing,
        PROMPT + "the template builds a value of more than 100,000",
    ),
    (
        "set block writes",
        image(
            "{% set s = 'x' * 20000 %}{% set b %}{% for i in range(99999) %}{{ s }}{% endfor %}{% endset %}{{ b|length }}"
        ),
        nothing,
        PROMPT + "the template writes more than 100,000",
    ),
    (
        "constant in a loop",
        image(
            "{% set b %}{% for i in range(99999) %}" + "x" * 200 + "{% endfor %}{% endset %}{{ b|length }}"
        ),
        nothing,
        PROMPT + "the template writes more than 100,000",
    ),
    (
        "renders too long",
        image("{{ 'x' * 30000 }}"),
        nothing,
        PROMPT + "renders to 30,000 characters; the limit is 20,000",
    ),
    # --- Jinja2: numbers ---
    (
        "power tower",
        image("{{ ((10**100)**100)**100 }}"),
        nothing,
        PROMPT + "10000000000000000000 ** 100 is a number of more than 4,200 digits",
    ),
    (
        "power 10**4000",
        image("{{ 10**4000 }}"),
        nothing,
        PROMPT + "10 ** 4000 is a number of more than 4,200 digits",
    ),
    (
        "squaring",
        image(
            "{% set ns = namespace(n=10**99) %}{% for i in range(40) %}{% set ns.n = ns.n * ns.n %}{% endfor %}{{ ns.n }}"
        ),
        nothing,
        PROMPT + "the product is a number of more than 4,200 digits",
    ),
    (
        "huge range",
        image("{{ range(10**9)|list }}"),
        nothing,
        PROMPT + "template error: OverflowError: Range too big",
    ),
    ("float overflow", image("{{ 10.0 ** 400 }}"), nothing, PROMPT + "template error: OverflowError"),
    # --- Jinja2: time ---
    (
        "nested range loops",
        image("{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}"),
        nothing,
        PROMPT + "the template took more than 100,000 steps",
    ),
    (
        "nested string loops",
        image("{% for a in 'x' * 20000 %}{% for b in 'x' * 20000 %}{% endfor %}{% endfor %}"),
        nothing,
        PROMPT + "the template took more than 100,000 steps",
    ),
    (
        "macro recursion",
        image("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}"),
        nothing,
        PROMPT + "the template recurses too deeply",
    ),
    (
        "macro fan-out",
        image("{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}"),
        nothing,
        PROMPT + "the template took more than 100,000 steps",
    ),
    (
        "recursive loop",
        image("{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}"),
        nothing,
        PROMPT + "the template recurses too deeply",
    ),
    (
        "seconds per render",
        image(
            "{% for i in range(99999) %}{% for j in range(99) %}{% endfor %}{% endfor %}",
            "templates: {seconds: 0.05, steps: 10000000}\n",
        ),
        nothing,
        "campaign.yaml:7:13: jobs[0].prompt: the template ran for more than 0.05 s; raise templates.seconds",
    ),
    (
        "seconds in all",
        HEAD
        + "templates: {total_seconds: 0.2}\nmatrix: {n: ["
        + ", ".join(map(str, range(200)))
        + "]}\njobs:\n  - id: 'a-{{ n }}'\n    type: image\n    prompt: '{% for i in range(90000) %}{% endfor %}{{ n }}'\n",
        nothing,
        "campaign.yaml:8:13: jobs[0].prompt: the campaign's templates ran for more than 0.2 s in all",
    ),
    (
        "bounds above their maximum",
        image("p", "templates: {seconds: 1000, size: 0}\n"),
        nothing,
        "campaign.yaml:3:22: templates.seconds: 1000 is above the maximum of 60\ncampaign.yaml:3:34: templates.size: 0 is below the minimum of 1\n",
    ),
    # --- Jinja2: the sandbox ---
    (
        "list.append",
        image("{% set l = [] %}{% for i in range(30) %}{{ l.append(l) }}{% endfor %}"),
        nothing,
        PROMPT + "unsafe template: access to attribute 'append' of 'list' object is unsafe",
    ),
    (
        "class walk",
        image("{{ ''.__class__.__mro__[1].__subclasses__() }}"),
        nothing,
        PROMPT + "unsafe template: access to attribute '__class__'",
    ),
    ("include", image("{% include '/etc/passwd' %}"), nothing, PROMPT + "template error"),
    (
        "unknown filter",
        image("{{ 'x'|shell }}"),
        nothing,
        PROMPT + "template syntax error: No filter named 'shell'",
    ),
    # --- YAML ---
    (
        "nesting 10,000 deep",
        HEAD + "vars: {a: " + "[" * 10000 + "]" * 10000 + "}\njobs: []\n",
        nothing,
        "campaign.yaml:3:",
    ),
    (
        "block nesting 200 deep",
        HEAD + "vars:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(200)) + "jobs: []\n",
        nothing,
        "nested more than 64 levels deep",
    ),
    ("recursive anchor", HEAD + "vars: &v {a: *v}\njobs: []\n", nothing, "campaign.yaml:3:"),
    (
        "alias bomb",
        HEAD
        + "\n".join(
            [
                "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]",
                *(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)),
            ]
        )
        + "\njobs: *a8\n",
        nothing,
        "an alias bomb",
    ),
    (
        "raw NUL byte",
        HEAD + "description: a\x00b\njobs: []\n",
        nothing,
        "campaign.yaml:3:15: character U+0000 is not allowed in YAML",
    ),
    ("escaped NUL", image("a\x00b"), nothing, PROMPT + "text holds a NUL character (at character 2)"),
    (
        "bell character",
        HEAD + "description: a\x07b\njobs: []\n",
        nothing,
        "campaign.yaml:3:15: character U+0007 is not allowed",
    ),
    (
        "lone surrogate",
        HEAD + 'jobs:\n  - id: a\n    type: image\n    prompt: "\\ud800"\n',
        nothing,
        PROMPT + "text holds a lone surrogate \\ud800",
    ),
    (
        "integer of 5,000 digits",
        HEAD + "budget: {max_credits: " + "9" * 5000 + "}\njobs: []\n",
        nothing,
        "campaign.yaml:3:23: budget.max_credits: not a usable number: Exceeds the limit (4300 digits)",
    ),
    (
        "non-UTF-8 bytes",
        HEAD.encode() + b"description: caf\xe9\njobs: []\n",
        nothing,
        "campaign.yaml:3:17: not UTF-8 text (byte 41: 0xe9); save it as UTF-8",
    ),
    (
        "UTF-16 with BOM",
        "\ufeff".encode("utf-16-le").join([b"", HEAD.encode("utf-16-le")]),
        nothing,
        "campaign.yaml: the file is UTF-16 text; save it as UTF-8",
    ),
    (
        "UTF-32 with BOM",
        b"\xff\xfe\x00\x00" + HEAD.encode("utf-32-le"),
        nothing,
        "campaign.yaml: the file is UTF-32 text",
    ),
    ("BOM in the middle", HEAD + "\ufeffjobs: []\n", nothing, "unknown key '\\ufeffjobs'"),
    (
        "aspect ratio 1:1",
        HEAD + "jobs:\n  - {id: a, type: image, prompt: p, aspect_ratio: 1:1}\n",
        nothing,
        'campaign.yaml:4:51: jobs[0].aspect_ratio: YAML read 1:1 as the number 61 (base-60); quote it: "1:1"',
    ),
    (
        "aspect ratio 16:9",
        HEAD + "jobs:\n  - {id: a, type: video, prompt: p, aspect_ratio: 16:9}\n",
        nothing,
        "YAML read 16:9 as the number 969 (base-60)",
    ),
    (
        "resolution on",
        HEAD + "jobs:\n  - {id: a, type: video, prompt: p, resolution: on}\n",
        nothing,
        'jobs[0].resolution: YAML read on as the boolean true; write true or false, or quote it: "on"',
    ),
    (
        "matrix value NO",
        HEAD + "matrix: {country: [FR, NO]}\njobs:\n  - {id: 'a-{{ country }}', type: image, prompt: p}\n",
        nothing,
        "campaign.yaml:3:24: matrix.country[1]: YAML read NO as the boolean false",
    ),
    (
        "octal count",
        HEAD + "jobs:\n  - {id: a, type: image, prompt: p, image_count: 010}\n",
        nothing,
        "YAML read 010 as the octal number 8; write 8",
    ),
    (
        "not a number",
        HEAD + "budget: {max_credits: .nan}\njobs: []\n",
        nothing,
        "budget.max_credits: YAML read .nan as not-a-number",
    ),
    (
        "a date",
        HEAD + "description: 2024-01-01\njobs: []\n",
        nothing,
        "campaign.yaml:3:14: description: YAML read 2024-01-01 as a date",
    ),
    (
        "binary tag",
        HEAD + "vars: {a: !!binary aGVsbG8=}\njobs: []\n",
        nothing,
        "vars.a: YAML read aGVsbG8= as binary data",
    ),
    (
        "python tag",
        HEAD + "vars: {a: !!python/object/apply:os.system [id]}\njobs: []\n",
        nothing,
        "tags such as !!python/object are not allowed",
    ),
    (
        "custom tag",
        HEAD + "vars: {a: !shell id}\njobs: []\n",
        nothing,
        "tags such as !!python/object are not allowed",
    ),
    (
        "set tag",
        HEAD + "vars: !!set {a, b}\njobs: []\n",
        nothing,
        "campaign.yaml:3:7: YAML syntax error: tags such as",
    ),
    (
        "boolean key",
        HEAD + "on: push\njobs: []\n",
        nothing,
        "campaign.yaml:3:1: YAML read on as the boolean true",
    ),
    (
        "duplicate key",
        HEAD + "name: again\njobs: []\n",
        nothing,
        "campaign.yaml:3:1: duplicate key 'name' (first defined on line 2)",
    ),
    ("empty file", "", nothing, "campaign.yaml:1:1: the file is empty"),
    (
        "oversize file",
        HEAD + "description: '" + "x" * (5 * 1024 * 1024) + "'\n",
        nothing,
        "campaign.yaml: file is 5,242,",
    ),
    # --- local files ---
    (
        "dot-dot",
        swap("../../etc/passwd"),
        nothing,
        SOURCE + "../../etc/passwd leaves the manifest's folder" + OUTSIDE,
    ),
    (
        "absolute",
        swap("/etc/passwd"),
        nothing,
        SOURCE + "/etc/passwd is an absolute path outside the allowed folders",
    ),
    (
        "templated dot-dot",
        swap("{{ up }}/etc/hostname", "vars: {up: ../../../../../..}\n"),
        nothing,
        "campaign.yaml:7:19: jobs[0].source_video: ../../../../../../etc/hostname leaves",
    ),
    (
        "symlink out",
        swap("clip.mp4"),
        files(**{"clip.mp4": "->/etc/passwd"}),
        SOURCE + "clip.mp4 leads through a symlink to /etc/passwd",
    ),
    (
        "symlinked folder",
        swap("media/passwd"),
        files(media="->/etc"),
        SOURCE + "media/passwd leads through a symlink to /etc/passwd",
    ),
    (
        "dev zero",
        swap("zero.mp4"),
        files(**{"zero.mp4": "->/dev/zero"}),
        SOURCE + "zero.mp4 leads through a symlink to /dev/zero",
    ),
    ("dev zero allowed root", swap("/dev/zero"), nothing, SOURCE + "/dev/zero is an absolute path"),
    (
        "named pipe",
        swap("pipe.mp4"),
        files(**{"pipe.mp4": "fifo"}),
        SOURCE + "pipe.mp4 is a named pipe (FIFO), not a regular file",
    ),
    ("a folder", swap("media"), files(media="dir"), SOURCE + "media is a folder, not a regular file"),
    (
        "symlink loop",
        swap("loop.mp4"),
        files(**{"loop.mp4": "->loop.mp4"}),
        SOURCE + "loop.mp4 cannot be read",
    ),
    ("missing", swap("nowhere.mp4"), nothing, SOURCE + "no such file: nowhere.mp4"),
    (
        "asset file",
        HEAD + "jobs:\n  - {id: a, type: asset_upload, file: ../secret.env}\n",
        nothing,
        "campaign.yaml:4:39: jobs[0].file: ../secret.env leaves the manifest's folder",
    ),
    # --- output folders ---
    (
        "downloads absolute",
        image("p", "output: {downloads: /etc/cron.d}\n"),
        nothing,
        "campaign.yaml:3:21: output.downloads: /etc/cron.d is an absolute path outside the allowed folders; output folders",
    ),
    (
        "reports escape",
        image("p", "output: {reports: ../../../../escape}\n"),
        nothing,
        "campaign.yaml:3:19: output.reports: ../../../../escape leaves the manifest's folder",
    ),
    (
        "downloads through a symlink",
        image("p", "output: {downloads: out/x}\n"),
        files(out="->/tmp"),
        "output.downloads: out/x leads through a symlink to /tmp/x",
    ),
]


@pytest.fixture
def no_connections(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Record (and refuse) any connection attempt: validate must never reach the network."""
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError("tests/test_hostile_manifests.py: no connection may be made")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


@pytest.mark.parametrize(
    ("text", "setup", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_hostile_manifest_is_a_located_error(
    workdir: Path, no_connections: list[object], text: str | bytes, setup: Setup, expected: str
) -> None:
    path = workdir / "campaign.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    setup(workdir)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    result = invoke("validate", "campaign.yaml")
    elapsed = time.perf_counter() - started
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    lines = result.err.splitlines()
    assert result.code == 2, result.err
    assert expected in result.err, result.err
    assert lines[-1].endswith("; nothing was sent."), result.err
    assert all(LOCATED.match(line) for line in lines[:-1]), result.err
    assert "Traceback" not in result.err and "internal error" not in result.err
    assert no_connections == []
    assert elapsed < 5, f"took {elapsed:.1f} s"
    assert grown_mb < 300, f"peak memory grew by {grown_mb:.0f} MB"


def test_there_are_at_least_sixty_cases() -> None:
    assert len(CASES) >= 60
    assert len({case[0] for case in CASES}) == len(CASES)


def test_a_named_pipe_as_the_manifest_does_not_hang(workdir: Path) -> None:
    os.mkfifo(workdir / "campaign.yaml")
    result = invoke("validate", "campaign.yaml")
    assert (result.code, result.err) == (
        2,
        "campaign.yaml: cannot be read: a named pipe (FIFO), not a regular file\n1 problem; nothing was sent.\n",
    )


def test_dev_zero_as_the_manifest_is_refused(workdir: Path) -> None:
    (workdir / "campaign.yaml").symlink_to("/dev/zero")
    result = invoke("validate", "campaign.yaml")
    assert result.err.startswith("campaign.yaml: cannot be read: a character device, not a regular file\n")


def test_allow_root_widens_local_files_and_outputs(
    workdir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    shared = tmp_path_factory.mktemp("shared")
    (shared / "clip.mp4").write_bytes(b"video")
    text = swap(f"{shared}/clip.mp4", f"output: {{downloads: {shared}/out}}\n")
    (workdir / "campaign.yaml").write_text(text)
    assert invoke("validate", "campaign.yaml").code == 2
    assert invoke("validate", "--allow-root", str(shared), "campaign.yaml").code == 0
    assert (
        invoke(
            "validate",
            "campaign.yaml",
            env={"SUME_BATCH_ALLOW_ROOT": f"/nonexistent-root{os.pathsep}{shared}"},
        ).code
        == 2
    )
    assert invoke("validate", "campaign.yaml", env={"SUME_BATCH_ALLOW_ROOT": str(shared)}).code == 0


def test_a_symlink_inside_the_folder_is_fine(workdir: Path) -> None:
    (workdir / "media").mkdir()
    (workdir / "media/clip.mp4").write_bytes(b"video")
    (workdir / "clip.mp4").symlink_to("media/clip.mp4")
    (workdir / "campaign.yaml").write_text(
        swap("clip.mp4", "output: {downloads: media/out, reports: ./reports}\n")
    )
    result = invoke("validate", "campaign.yaml")
    assert (result.code, result.err) == (0, "")


def test_bounds_can_be_raised_in_the_manifest(workdir: Path) -> None:
    loops = "{% for i in range(99999) %}{% for j in range(3) %}{% endfor %}{% endfor %}p"
    (workdir / "campaign.yaml").write_text(image(loops))
    assert "took more than 100,000 steps" in invoke("validate", "campaign.yaml").err
    (workdir / "campaign.yaml").write_text(image(loops, "templates: {steps: 500000, seconds: 60}\n"))
    assert invoke("validate", "campaign.yaml").code == 0
