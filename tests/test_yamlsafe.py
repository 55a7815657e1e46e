"""yamlsafe: plain data with every value's place in the file, and a located problem for whatever
PyYAML would silently change, duplicate or expand without bound."""

from __future__ import annotations

import pytest

from sume_batch.yamlsafe import MAX_FILE_BYTES, Document, format_path, parse_yaml, text_position

FILE = "campaign.yaml"


def problems(text: str) -> list[str]:
    return [str(problem) for problem in parse_yaml(text, file=FILE)[1]]


def test_plain_data_is_read_with_the_place_of_every_value_and_key() -> None:
    document, found = parse_yaml(
        'version: 1\njobs:\n  - id: a\n    prompt: "hi"\n    matrix: {n: [1, 2]}\n', file=FILE
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
def test_what_yaml_reads_as_its_author_meant_it_is_kept(text: str, data: object) -> None:
    document, found = parse_yaml(text, file=FILE)
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
    ],
)  # fmt: skip
def test_what_yaml_would_change_silently_is_a_located_problem(text: str, data: object, problem: str) -> None:
    document, found = parse_yaml(text, file=FILE)
    assert (document.data, [str(one) for one in found]) == (data, [problem])


def test_every_problem_in_a_file_is_listed_not_only_the_first() -> None:
    assert problems("a: on\nb: 010\na: 1\n") == [
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
def test_a_file_that_is_not_plain_yaml_is_one_located_problem_and_no_data(text: str, problem: str) -> None:
    document, found = parse_yaml(text, file=FILE)
    assert (document.data, [str(one) for one in found]) == (None, [problem])


def test_an_alias_bomb_is_refused_before_it_is_expanded() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for name, previous in zip("bcdefgh", "abcdefg", strict=True):  # 10**8 values once expanded
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 10) + "]")
    document, found = parse_yaml("\n".join(lines) + "\n", file=FILE)
    assert document.data is None
    assert [one.message for one in found] == [
        "more than 200,000 values after expanding aliases (an alias bomb?)"
    ]
    assert found[0].line >= 1  # located at the value that passed the bound


@pytest.mark.parametrize(("depth", "column"), [(70, 68), (5000, None)])  # the second passes Python's stack
def test_deep_nesting_is_refused(depth: int, column: int | None) -> None:
    document, found = parse_yaml("a: " + "[" * depth + "]" * depth + "\n", file=FILE)
    assert (document.data, [one.message for one in found]) == (None, ["nested more than 64 levels deep"])
    assert found[0].line == 1 and (column is None or found[0].column == column)


def test_sixty_four_levels_are_fine() -> None:
    document, found = parse_yaml("a: " + "[" * 63 + "1" + "]" * 63 + "\n", file=FILE)
    assert found == [] and document.data is not None


def test_a_file_over_the_size_limit_is_refused_unread() -> None:
    text = "a: " + "x" * MAX_FILE_BYTES + "\n"
    assert problems(text) == [
        f"campaign.yaml: file is {len(text):,} bytes; the limit is {MAX_FILE_BYTES:,} (split the campaign)"
    ]
    assert problems("a: " + "x" * (MAX_FILE_BYTES - 4) + "\n") == []


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
