"""render: a field is rendered in Jinja2's immutable sandbox, keeps its type when it is one
expression, and is refused, before it allocates, past its bounds of size, steps and time."""

from __future__ import annotations

from typing import Any

import jinja2
import pytest
from jinja2.exceptions import SecurityError

from sume_batch.manifest import Limits
from sume_batch.render import BoundError, Guard, Renderer, TemplateFailure, size_of

VARIABLES = {"n": 3, "scene": "beach", "items": [1, 2], "campaign": "launch"}


def render(source: Any, limits: Limits | None = None) -> Any:
    renderer = Renderer(limits)
    return renderer.render_field(source, renderer.variables(VARIABLES))


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ("plain text", "plain text"),
        ("{{ n }}", 3),  # one expression: its value, not its text
        ("  {{ n }}\n", 3),
        ("{{ items }}", [1, 2]),
        ("{{ n > 2 }}", True),
        ("{{ none }}", None),
        ("{{ n }}{{ n }}", "33"),
        ("a {{ n }}", "a 3"),
        ("{{ scene | upper }}-{{ campaign }}", "BEACH-launch"),
        ("{% for i in items %}{{ i }},{% endfor %}", "1,2,"),
        ("{{ range(3) | join('/') }}", "0/1/2"),  # Jinja's globals are there
        ("{{ '%s-%03d' | format(scene, n) }}", "beach-003"),
        ("{{ '{}x{}'.format(n, n) }}", "3x3"),
        (["{{ n }}", {"k": "{{ scene }}"}, 5, None], [3, {"k": "beach"}, 5, None]),  # deep, others untouched
        (7, 7),
    ],
)
def test_a_field_renders_against_its_variables(source: Any, value: Any) -> None:
    assert render(source) == value


def test_an_undefined_variable_is_an_error_naming_it() -> None:
    with pytest.raises(jinja2.UndefinedError, match="'scnee' is undefined"):
        render("{{ scnee }}")
    with pytest.raises(jinja2.UndefinedError, match="'scnee' is undefined"):
        render("a {{ scnee }}")


def test_a_syntax_error_is_a_template_failure() -> None:
    with pytest.raises(TemplateFailure) as caught:
        render("{{ n + }}")
    assert str(caught.value) == "template syntax error: unexpected 'end of template'"


@pytest.mark.parametrize(
    "source", ["{{ ''.__class__ }}", "{{ items.append(3) }}", "{{ cycler.__init__.__globals__ }}"]
)
def test_the_sandbox_is_immutable_and_closed(source: str) -> None:
    with pytest.raises(SecurityError):
        render(source)
    assert VARIABLES["items"] == [1, 2]


SIZE = "more than 100,000 characters or items; raise templates.size if you mean it"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ 'x' * 200000 }}", f"repeating a value would build {SIZE}"),
        ("{{ [0] * 100001 }}", f"repeating a value would build {SIZE}"),
        ("{{ ('x' * 50000) ~ ('x' * 50001) }}", f"the template builds a value of {SIZE}"),
        ("{{ ('x' * 60000) + ('x' * 60000) }}", f"the template builds a value of {SIZE}"),
        ("{{ range(10) | join('x' * 20000) }}", f"the join filter would build {SIZE}"),
        ("{{ 'ab' | center(1000000) }}", f"the center filter would build {SIZE}"),
        ("{{ 'x' | indent(200000) }}", f"the indent filter would build {SIZE}"),
        ("{{ 'x' | replace('x', 'y' * 200000) }}", f"repeating a value would build {SIZE}"),
        ("{{ [1, 2, 3] | batch(10 ** 8) | list }}", f"the batch filter would build {SIZE}"),
        ("{{ 'ab'.center(10 ** 9) }}", f"str.center() would build {SIZE}"),
        ("{{ lipsum(n=100000) }}", f"lipsum() would build {SIZE}"),
        ("{% for i in range(50) %}{{ 'y' * 3000 }}{% endfor %}", f"the template writes {SIZE}"),
        ("{{ 2 ** 100000 }}", "2 ** 100000 is a number of more than 4,200 digits"),
        ("{{ (10 ** 3000) * (10 ** 3000) }}", "the product is a number of more than 4,200 digits"),
        ("{{ '%100001s' % 'a' }}", "a format width of 100,001 is above the limit of 100,000"),
        ("{{ '%.999999f' % 1 }}", "a format width of 999,999 is above the limit of 100,000"),
        ("{{ '%*s' % (5, 'a') }}", "a '*' width in % formatting is not allowed in templates"),
        ("{{ '%999999d' | format(1) }}", "a format width of 999,999 is above the limit of 100,000"),
        ("{{ '{:>999999}'.format('a') }}", "a format width of 999,999 is above the limit of 100,000"),
        ("{{ '{:{}}'.format('a', 5) }}", "nested format fields ({:{}}) are not allowed in templates"),
    ],
)
def test_a_value_past_the_size_bound_is_refused(source: str, message: str) -> None:
    with pytest.raises(BoundError) as caught:
        render(source)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("source", "size"),
    [
        ("{{ 'x' * 99999 }}", 99_999),
        ("{{ 'x' * 100000 }}", 100_000),
        ("{{ ('x' * 50000) ~ ('x' * 50000) }}", 100_000),
        ("{{ '%100000s' % 'a' }}", 100_000),
        ("{% for i in range(33) %}{{ 'y' * 3000 }}{% endfor %}", 99_000),
    ],
)
def test_a_value_at_the_size_bound_is_made(source: str, size: int) -> None:
    assert len(render(source)) == size


def test_the_bounds_are_the_manifests_to_raise() -> None:
    assert len(render("{{ 'x' * 200000 }}", Limits(size=300_000))) == 200_000
    with pytest.raises(BoundError) as caught:
        render("{{ 'x' * 200 }}", Limits(size=100))
    assert str(caught.value) == (
        "repeating a value would build more than 100 characters or items; raise templates.size if you mean it"
    )


def test_a_render_past_its_steps_is_refused_and_the_next_starts_afresh() -> None:
    renderer = Renderer(Limits(steps=100))
    variables = renderer.variables(VARIABLES)
    with pytest.raises(BoundError) as caught:
        renderer.render_field("{% for i in range(101) %}{% endfor %}", variables)
    assert str(caught.value) == (
        "the template took more than 100 steps (loop iterations, calls, filters and operators);"
        " raise templates.steps if you mean it"
    )
    for _ in range(3):  # each field's steps are its own
        assert renderer.render_field("{% for i in range(90) %}{% endfor %}done", variables) == "done"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_one_render_past_its_seconds_is_refused() -> None:
    clock = Clock()
    guard = Guard(Limits(seconds=1.0), clock=clock)
    guard.begin()
    guard.tick()  # the first step reads the clock: the render starts
    clock.now = 1.5
    for _ in range(31):
        guard.tick()  # the clock is read every 32 steps (the 1st, the 33rd, ...), not at every one
    with pytest.raises(BoundError) as caught:
        guard.tick()
    assert str(caught.value) == "the template ran for more than 1 s; raise templates.seconds if you mean it"


def test_every_render_together_is_bounded_too() -> None:
    clock = Clock()
    guard = Guard(Limits(seconds=1.0, total_seconds=2.0), clock=clock)
    message = (
        "the campaign's templates ran for more than 2 s in all; raise templates.total_seconds if you mean it"
    )
    for _ in range(2):  # two renders of 0.9 s each: within both bounds
        guard.begin()
        guard.tick()
        clock.now += 0.9
        guard.end()
    guard.begin()
    guard.tick()
    clock.now += 0.3
    with pytest.raises(BoundError, match="in all") as caught:
        guard.end()
    assert str(caught.value) == message
    with pytest.raises(BoundError) as refused:
        guard.begin()  # no render starts once the campaign's time is spent
    assert str(refused.value) == message


@pytest.mark.parametrize(
    ("value", "size"),
    [("abc", 3), (b"ab", 2), (7, 1), (None, 1), ([1, "ab"], 4), ({"k": "vv"}, 4), ((), 1), (range(5), 5),
     ({"a": [1, {"b": "cc"}]}, 8)],
)  # fmt: skip
def test_a_values_size_counts_characters_items_and_digits_deep(value: Any, size: int) -> None:
    assert size_of(value, cap=1000) == size


def test_a_size_stops_counting_past_its_cap() -> None:
    nested: list[Any] = ["x" * 10]
    for _ in range(30):  # 2**30 strings if counted whole
        nested = [nested, nested]
    assert 100 < size_of(nested, cap=100) < 200
