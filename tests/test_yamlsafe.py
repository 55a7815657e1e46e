"""yamlsafe: plain data with every value's place in the file, and a located problem for whatever
PyYAML would silently change, duplicate or expand without bound.

Every case runs twice: read by libyaml (when it does not decline the file) and by PyYAML's
pure-Python parser; both must give the same data, marks and messages."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from sume_batch.yamlsafe import (
    LIBYAML,
    MAX_FILE_BYTES,
    Document,
    format_path,
    parse_yaml,
    read_with_libyaml,
    text_position,
)

FILE = "campaign.yaml"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(params=[True, False], ids=["libyaml", "pure"])
def libyaml(request: pytest.FixtureRequest) -> bool:
    if request.param and not LIBYAML:
        pytest.skip("PyYAML is built without libyaml here")
    return bool(request.param)


def parse(text: str, libyaml: bool) -> tuple[Document, list[Any]]:
    return parse_yaml(text, file=FILE, libyaml=libyaml)


def problems(text: str, libyaml: bool) -> list[str]:
    return [str(problem) for problem in parse(text, libyaml)[1]]


def test_plain_data_is_read_with_the_place_of_every_value_and_key(libyaml: bool) -> None:
    document, found = parse(
        'version: 1\njobs:\n  - id: a\n    prompt: "hi"\n    matrix: {n: [1, 2]}\n', libyaml
    )
    assert (document.data, found) == (
        {"version": 1, "jobs": [{"id": "a", "prompt": "hi", "matrix": {"n": [1, 2]}}]},
        [],
    )
    assert document.mark(("jobs", 0, "prompt")) == (4, 13)  # the value
    assert document.mark(("jobs", 0, "prompt"), key=True) == (4, 5)  # its key
    assert document.mark(("jobs", 0, "matrix", "n", 1)) == (5, 21)
    assert document.mark(("jobs", 0, "seed")) == (3, 5)  # a missing field: where its job starts
    assert document.mark(("jobs", 0), key=True) == (3, 5)  # a list item has no key: its value's place
    assert (document.mark(("name",)), document.mark(())) == ((1, 1), (1, 1))
    assert Document(data=None).mark(("a",)) == (1, 1)


@pytest.mark.parametrize(
    ("text", "data"),
    [
        ('ratio: "1:1"\nflag: "on"\nn: "010"\n', {"ratio": "1:1", "flag": "on", "n": "010"}),  # quoted: text
        ("flag: true\nother: False\n", {"flag": True, "other": False}),
        ("n: 10\nx: 0.5\nnone: null\nzero: 0\n", {"n": 10, "x": 0.5, "none": None, "zero": 0}),
        ("1: one\n", {1: "one"}),
        ("base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  x: 3\n", {"base": {"x": 1, "y": 2}, "c": {"x": 3, "y": 2}}),
        ("base: &b [1, 2]\nc: *b\n", {"base": [1, 2], "c": [1, 2]}),
    ],
)
def test_what_yaml_reads_as_its_author_meant_it_is_kept(text: str, data: object, libyaml: bool) -> None:
    document, found = parse(text, libyaml)
    assert (document.data, found) == (data, [])


@pytest.mark.parametrize(
    ("text", "data", "problem"),
    [
        ("a: 1\nb: 2\na: 3\n", {"a": 1, "b": 2}, "campaign.yaml:3:1: duplicate key 'a' (first defined on line 1)"),
        ("base: &b {x: 1}\nc:\n  <<: *b\n  y: 3\n  y: 4\n", {"base": {"x": 1}, "c": {"x": 1, "y": 3}},
         "campaign.yaml:5:3: c: duplicate key 'y' (first defined on line 4)"),
        ("flag: on\n", {"flag": None},
         'campaign.yaml:1:7: flag: YAML read on as the boolean true; write true or false, or quote it: "on"'),
        ("jobs:\n  - {id: a, overwrite: No}\n", {"jobs": [{"id": "a", "overwrite": None}]},
         'campaign.yaml:2:24: jobs[0].overwrite: YAML read No as the boolean false; write true or false, or quote it: "No"'),
        ("ratio: 1:1\n", {"ratio": None}, 'campaign.yaml:1:8: ratio: YAML read 1:1 as the number 61 (base-60); quote it: "1:1"'),
        ("n: 010\n", {"n": None}, 'campaign.yaml:1:4: n: YAML read 010 as the octal number 8; write 8, or quote it: "010"'),
        ("n: .nan\n", {"n": None},
         'campaign.yaml:1:4: n: YAML read .nan as not-a-number, which no field accepts; quote it: ".nan"'),
        ("d: 2024-01-01\n", {"d": None},
         'campaign.yaml:1:4: d: YAML read 2024-01-01 as a date, which a manifest cannot hold; quote it: "2024-01-01"'),
        ("b: !!binary aGVsbG8=\n", {"b": None},
         'campaign.yaml:1:4: b: YAML read aGVsbG8= as binary data, which a manifest cannot hold; quote it: "aGVsbG8="'),
        ('p: "a\\0b"\n', {"p": None}, "campaign.yaml:1:4: p: text holds a NUL character (at character 2), which no field can carry"),
        ('p: "ab\\ud800"\n', {"p": None},
         "campaign.yaml:1:4: p: text holds a lone surrogate \\ud800 (at character 3), which no field can carry"),
        ("n: " + "9" * 5000 + "\n", {"n": None}, "campaign.yaml:1:4: n: not a usable number: Exceeds the limit (4300 digits)"
         " for integer string conversion: value has 5000 digits"),
        ("yes: 1\nb: 2\n", {"b": 2}, 'campaign.yaml:1:1: YAML read yes as the boolean true; write true or false, or quote it: "yes"'),
        ("true: 1\n", {}, "campaign.yaml:1:1: mapping keys must be text or whole numbers"),
        ("1.5: x\n", {}, "campaign.yaml:1:1: mapping keys must be text or whole numbers"),
        ("? [a, b]\n: 1\n", {}, "campaign.yaml:1:3: mapping keys must be text or whole numbers"),
        ("b: !!bool .5\n", {"b": None}, "campaign.yaml:1:4: b: YAML cannot read '.5' as !!bool; remove the tag"),
        ("d: !!timestamp soon\n", {"d": None}, "campaign.yaml:1:4: d: YAML cannot read 'soon' as !!timestamp; remove the tag"),
        ("n: !!float ''\n", {"n": None}, "campaign.yaml:1:4: n: YAML cannot read '' as !!float; remove the tag"),
    ],
)  # fmt: skip
def test_what_yaml_would_change_silently_is_a_located_problem(
    text: str, data: object, problem: str, libyaml: bool
) -> None:
    document, found = parse(text, libyaml)
    assert (document.data, [str(one) for one in found]) == (data, [problem])


def test_every_problem_in_a_file_is_listed_not_only_the_first(libyaml: bool) -> None:
    assert problems("a: on\nb: 010\na: 1\n", libyaml) == [
        'campaign.yaml:1:4: a: YAML read on as the boolean true; write true or false, or quote it: "on"',
        'campaign.yaml:2:4: b: YAML read 010 as the octal number 8; write 8, or quote it: "010"',
        "campaign.yaml:3:1: duplicate key 'a' (first defined on line 1)",
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "campaign.yaml:1:1: the file is empty"),
        ("# nothing here\n", "campaign.yaml:1:1: the file is empty"),
        ("a: [1, 2\n", "campaign.yaml:2:1: YAML syntax error: while parsing a flow sequence, expected ',' or ']',"
         " but got '<stream end>'"),
        ("a: 1\n---\nb: 2\n", "campaign.yaml:2:1: YAML syntax error: expected a single document in the stream,"
         " but found another document"),
        ("x: !!python/object:os.system ls\n",
         "campaign.yaml:1:4: YAML syntax error: tags such as !!python/object are not allowed in a manifest"),
        ("x: !!python/name:os.system\n",
         "campaign.yaml:1:4: YAML syntax error: tags such as !!python/object are not allowed in a manifest"),
        ("a: !!set {x, y}\n", "campaign.yaml:1:4: YAML syntax error: tags such as !!python/object are not allowed in a manifest"),
        ("a: 1\nb: x\x07y\n",
         "campaign.yaml:2:5: character U+0007 is not allowed in YAML (remove it, or write it as an escape)"),
    ],
)  # fmt: skip
def test_a_file_that_is_not_plain_yaml_is_one_located_problem_and_no_data(
    text: str, problem: str, libyaml: bool
) -> None:
    document, found = parse(text, libyaml)
    assert (document.data, [str(one) for one in found]) == (None, [problem])


def test_an_alias_bomb_is_refused_before_it_is_expanded(libyaml: bool) -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for name, previous in zip("bcdefgh", "abcdefg", strict=True):  # 10**8 values once expanded
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 10) + "]")
    document, found = parse("\n".join(lines) + "\n", libyaml)
    assert document.data is None
    assert [one.message for one in found] == [
        "more than 200,000 values after expanding aliases (an alias bomb?)"
    ]
    assert found[0].line >= 1  # located at the value that passed the bound


@pytest.mark.parametrize(("depth", "column"), [(70, 68), (5000, None)])  # the second passes Python's stack
def test_deep_nesting_is_refused(depth: int, column: int | None, libyaml: bool) -> None:
    document, found = parse("a: " + "[" * depth + "]" * depth + "\n", libyaml)
    assert (document.data, [one.message for one in found]) == (None, ["nested more than 64 levels deep"])
    assert found[0].line == 1 and (column is None or found[0].column == column)


def test_sixty_four_levels_are_fine(libyaml: bool) -> None:
    document, found = parse("a: " + "[" * 63 + "1" + "]" * 63 + "\n", libyaml)
    assert found == [] and document.data is not None


def test_a_file_over_the_size_limit_is_refused_unread(libyaml: bool) -> None:
    text = "a: " + "x" * MAX_FILE_BYTES + "\n"
    assert problems(text, libyaml) == [
        f"campaign.yaml: file is {len(text):,} bytes; the limit is {MAX_FILE_BYTES:,} (split the campaign)"
    ]
    assert problems("a: " + "x" * (MAX_FILE_BYTES - 4) + "\n", libyaml) == []


@pytest.mark.parametrize(
    ("path", "text"),
    [(("jobs", 1, "prompt"), "jobs[1].prompt"), ((), ""), ((0, "a"), "[0].a"), (("a", 0, 1), "a[0][1]"),
     (("matrix", "scene"), "matrix.scene")],
)  # fmt: skip
def test_a_path_reads_as_it_is_written_in_python(path: tuple[str | int, ...], text: str) -> None:
    assert format_path(path) == text


@pytest.mark.parametrize(
    ("index", "place"),
    [(0, (1, 1)), (1, (1, 2)), (3, (2, 1)), (4, (2, 2)), (7, (3, 2)), (8, (3, 3)), (2, (1, 3))],
)
def test_a_character_index_is_a_line_and_column_from_one(index: int, place: tuple[int, int]) -> None:
    assert text_position("ab\ncd\nef", index) == place


def reading(text: str, libyaml: bool) -> tuple[Any, ...]:
    document, found = parse(text, libyaml)
    return document.data, document.marks, document.key_marks, [str(problem) for problem in found]


needs_libyaml = pytest.mark.skipif(not LIBYAML, reason="PyYAML is built without libyaml here")


@needs_libyaml
@pytest.mark.parametrize("path", sorted((REPO / "manifests").glob("*.yaml")), ids=lambda path: path.name)
def test_libyaml_reads_the_example_manifests_as_pyyaml_does(path: Path) -> None:
    text = path.read_text("utf-8")
    assert read_with_libyaml(text, file=FILE) is not None  # not declined: the fast path is taken
    assert reading(text, True) == reading(text, False)


@needs_libyaml
@pytest.mark.parametrize(
    "text",
    [
        "script: Tired of dull skin? Try it!\nratio: ['1:1', '4:5']\nmatrix: {scene: [a, b]}\n",
        'prompt: "Buy now ! {{ x }} #1 at 100% ?"\nempty:\nitems:\n  -\n  - {a: 1}\n',
        "a: &x [1, {b: 2}]\nc:\n  <<: {d: 3}\n  e: *x\n",
    ],
)
def test_libyaml_reads_what_it_reads_as_pyyaml_does(text: str) -> None:
    assert read_with_libyaml(text, file=FILE) is not None
    assert reading(text, True) == reading(text, False)


@pytest.mark.parametrize(
    "text",
    [
        "a: 1\nb:\ton\n",  # PyYAML refuses the tab; libyaml reads on
        "a\ufeff: \n",  # a byte-order mark past the start: the empty value one column on
        "a: !\nb: 1\n",  # a bare `!`: text to libyaml, null to PyYAML
        "a: [ton?er]\n",  # `?` in a flow collection: an error to PyYAML
        "a: >#\n x\n",  # a comment right after a block scalar's indicator
        "a: {name: , b: 1}\n",  # an empty value in a flow mapping: one column on
        "a: {name: # a comment\n  , b: 1}\n",  # ... or a line on
        "a: [name: ]\n",
        "c:\n  <<: {x: , y: 1}\n",  # ... merged into a block mapping
        "a: [!,x]\n",  # PyYAML reads the tag `!,x]`, libyaml an empty value tagged `!`
        "&a [[*a, !, x]]\n",  # ... seen before the alias's recursion passes the bound of depth
        "%YAML 1.1#\n---\na: 1\n",  # a directive PyYAML refuses
        "version: 1\n? a",  # no final line break: libyaml adds one, and the empty value moves a line on
    ],
)  # fmt: skip
def test_what_libyaml_reads_unlike_pyyaml_is_read_by_pyyaml(text: str) -> None:
    assert read_with_libyaml(text, file=FILE) is None  # declined: PyYAML reads it
    assert reading(text, True) == reading(text, False)
    if LIBYAML:  # each case is one libyaml does read differently (if that changes, so may the rule)
        assert raw(yaml.CSafeLoader, text) != raw(yaml.SafeLoader, text)


def raw(loader: Any, text: str) -> Any:
    """PyYAML's or libyaml's nodes, as (tag, line, column, value) trees, or the error's name."""

    seen: set[int] = set()

    def tree(node: Any) -> Any:
        if isinstance(node, tuple):  # a mapping's (key, value)
            return [tree(one) for one in node]
        if id(node) in seen:  # an alias (of a node that may hold itself)
            return "*"
        seen.add(id(node))
        value = node.value if isinstance(node.value, str) else [tree(one) for one in node.value]
        return node.tag, node.start_mark.line, node.start_mark.column, value

    try:
        return tree(loader(text).get_single_node())
    except yaml.YAMLError as error:
        return type(error).__name__


PIECES = [
    "-", ":", " ", "  ", "\n", "\n  ", "\n- ", "[", "]", "{", "}", ",", "?", "#", "&a", "*a", "!", "!!str", "|",
    ">", "'", '"', "%", "@", "`", "\t", "\r\n", "\r", "x", "1", ".", "<<", "...", "---", "on", "1:1", "010", "\\",
    "\\n", "é", "😀", "\u2028", "\x85", "\ufeff", "~", "null", "\x07", "\\ud800", "9" * 30,
]  # fmt: skip


def mutated(rng: random.Random, text: str) -> str:
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(text) + 1)
        cut = rng.choice([0, 0, 1, rng.randint(1, 6)])
        text = text[:at] + rng.choice(PIECES) * rng.choice([1, 1, 1, 2]) + text[at + cut :]
    return text


@needs_libyaml
def test_libyaml_and_pyyaml_read_mutated_manifests_alike() -> None:
    rng = random.Random(13)
    examples = [path.read_text("utf-8") for path in sorted((REPO / "manifests").glob("*.yaml"))]
    read_by_libyaml = 0
    for _ in range(300):
        text = mutated(rng, rng.choice(examples))
        read_by_libyaml += read_with_libyaml(text, file=FILE) is not None
        assert reading(text, True) == reading(text, False), text
    assert read_by_libyaml > 75  # the fast path was tried, not declined every time
