"""Template rendering for the expand stage: Jinja2's immutable sandbox, bounded in size, steps and time.

A manifest may come from a pull request, so a template is hostile until rendered (issue 11, item 8).
Bounds hold by an invariant: every value a render builds is measured (`size_of`: characters, items
and digits, deep) and refused above `Limits.size`. Operations whose output is linear in their input
(`~`, `+`, most filters, literals) are checked after; operations that can amplify (`*`, `**`, `%`
widths, `center(10**9)`, `join`, `lipsum(n=…)`) are checked before they allocate. Loop iterations,
calls, filters and operators each count a step; the clock is read every 32 steps, so a render with
no loops or calls pays almost nothing. Everything a render writes counts toward the same size.
Text with no template syntax never reaches Jinja2; a compiled template's renders share one context.
"""

from __future__ import annotations

import re
import string
import time
from collections import ChainMap
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial, wraps
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum
from jinja2.visitor import NodeTransformer

from sume_batch.manifest import Limits

MAX_INT_BITS = 14_000  # about 4,200 digits: Python refuses to print an int of more than 4,300
SINGLE_EXPRESSION = re.compile(r"\s*\{\{(?P<expression>(?:(?!\{\{|\}\}).)*)\}\}\s*", re.DOTALL)
PERCENT_FIELD = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
# Filters whose output can be much larger than their input: checked before they run.
AMPLIFYING = frozenset(["batch", "center", "format", "indent", "join", "replace", "slice", "wordwrap"])


class TemplateFailure(Exception):
    """A template that cannot be rendered; the message is for a person."""


class BoundError(TemplateFailure):
    """A render passed one of its bounds."""


def size_of(value: Any, cap: int) -> int:
    """Characters, items and digits in `value`, deep; counting stops once past `cap`."""
    if type(value) is str:
        return len(value)
    total, stack = 0, [value]
    while stack and total <= cap:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, list | tuple | set | frozenset):
            total += 1
            stack.extend(item)
        elif isinstance(item, dict):
            total += 1
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, range):
            total += len(item)
        else:
            total += 1
    return total


class Guard:
    """The bounds of one expansion: steps and size per render, seconds per render and in all."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.thread_time) -> None:
        """`clock` is the CPU time of this thread by default: the bound is on what a render computes,
        not on how busy the machine is (a loaded CI runner must not refuse a manifest it accepts idle)."""
        self.limits, self.clock = limits, clock
        self.steps = self.written = self.built = 0
        self.started: float | None = None
        self.last = self.spent = 0.0

    def begin(self) -> None:
        if self.spent > self.limits.total_seconds:
            raise self._total_error()
        self.steps = self.written = self.built = 0
        self.started = None

    def end(self) -> None:
        if self.started is not None:
            self._read_clock()

    def tick(self) -> None:
        self.steps += 1
        if self.steps > self.limits.steps:
            raise BoundError(
                f"the template took more than {self.limits.steps:,} steps (loop iterations, calls, "
                "filters and operators); raise templates.steps if you mean it"
            )
        if self.steps & 31 == 1:
            self._read_clock()

    def _read_clock(self) -> None:
        now = self.clock()
        if self.started is None:
            self.started = self.last = now
            return
        self.spent += now - self.last
        self.last = now
        if now - self.started > self.limits.seconds:
            raise BoundError(
                f"the template ran for more than {self.limits.seconds:g} s; "
                "raise templates.seconds if you mean it"
            )
        if self.spent > self.limits.total_seconds:
            raise self._total_error()

    def _total_error(self) -> BoundError:
        return BoundError(
            f"the campaign's templates ran for more than {self.limits.total_seconds:g} s in all; "
            "raise templates.total_seconds if you mean it"
        )

    def checked(self, value: Any) -> Any:
        """`value`, if it is within the size bound."""
        if type(value) is str:  # the common case, first: this runs once per filter, call and operator
            size = len(value)
        elif isinstance(value, int | float | bool | None):
            return value
        else:
            size = size_of(value, self.limits.size)
        if size > self.limits.size:
            raise BoundError(self._too_big("builds a value of"))
        self.built += size  # what a render builds in all, freed or not: ten times the bound
        if self.built > 10 * self.limits.size:
            raise BoundError(self._too_big("builds, in all, ten times"))
        return value

    def write(self, value: Any) -> Any:
        """`finalize`: each `{{ … }}` a render writes counts, wherever it writes it."""
        self.written += len(value) if type(value) is str else size_of(value, self.limits.size)
        if self.written > self.limits.size:
            raise BoundError(self._too_big("writes"))
        return value

    def join(self, parts: Iterable[str]) -> str:
        """`concat`, for the output and every block buffer: measured before it is joined (a loop
        can repeat one constant piece without allocating; the joined text would)."""
        pieces = list(parts)
        if len(pieces) > 1 and sum(map(len, pieces)) > self.limits.size:
            raise BoundError(self._too_big("writes"))
        return "".join(pieces)

    def growth(self, what: str, first: Any, rest: Iterable[Any]) -> None:
        """Refuse, before it runs, a call whose output could pass the size bound: at most the
        first argument's size, plus that times the other arguments' sizes, plus any whole numbers."""
        cap = self.limits.size
        base = len(first) if type(first) is str else size_of(first, cap)
        bound = base
        for value in rest:
            kind = type(value)
            if kind is str:
                bound += (base + 1) * len(value)
            elif kind is int:
                bound += abs(value)
            elif kind not in (float, bool, type(None)):
                bound += (base + 1) * size_of(value, cap)
            if bound > cap:
                limit = f"more than {cap:,} characters or items; raise templates.size if you mean it"
                raise BoundError(f"{what} would build {limit}")

    def loop(self, iterable: Iterable[Any]) -> Iterator[Any]:
        for item in iterable:
            self.tick()
            yield item

    def _too_big(self, verb: str) -> str:
        limit = f"{self.limits.size:,} characters or items"
        return f"the template {verb} more than {limit}; raise templates.size if you mean it"


class _Wrap(NodeTransformer):
    """Route every loop and every built value through the guard (filters named `_guard_*`)."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)  # in place: a For stays a For
        node.iter = _filter(node.iter, "_guard_loop")
        return node

    def visit_Tuple(self, node: nodes.Tuple) -> nodes.Node:
        self.generic_visit(node)
        return _filter(node, "_guard_value") if node.ctx == "load" else node

    def _checked(self, node: nodes.Node) -> nodes.Node:
        return _filter(self.generic_visit(node), "_guard_value")

    visit_List = visit_Dict = visit_Concat = _checked


def _filter(node: nodes.Node, name: str) -> nodes.Filter:
    return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox (no `list.append`), every operator, call and filter guarded."""

    intercepted_binops = frozenset(["+", "-", "*", "/", "//", "%", "**"])

    def __init__(self, guard: Guard, *, statements: bool = True) -> None:
        # Only a template with statements ({% for %}, macros, blocks) can write without bound: it
        # gets the counting `finalize` and `concat`; one without is bounded by its source.
        super().__init__(
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
            finalize=(lambda value: guard.write(no_method(value))) if statements else no_method,
        )
        self.guard = guard
        if statements:
            self.concat = guard.join  # type: ignore[method-assign]  # generated code reads environment.concat
        self.filters = {name: _guarded_filter(guard, name, func) for name, func in self.filters.items()}
        self.filters["_guard_loop"] = guard.loop
        self.filters["_guard_value"] = guard.checked
        self.globals["lipsum"] = partial(_lipsum, guard)

    def getattr(self, obj: Any, attribute: str) -> Any:
        """A mapping's key before its method: `{{ product.items }}` reads a data row's `items`
        column, not `dict.items` (whose text would hold a memory address and change every run)."""
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def _generate(self, source: nodes.Template, *args: Any, **kwargs: Any) -> str:
        # The one hook that sees both templates and compile_expression's trees before code generation.
        return super()._generate(_Wrap().visit(source), *args, **kwargs)

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        self.guard.tick()
        _check_operands(self.guard, operator, left, right)
        return self.guard.checked(super().call_binop(context, operator, left, right))

    def call(__self, __context: jinja2.runtime.Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        __self.guard.tick()  # `__self`, `__context`, `__obj`: Jinja's signature
        owner = getattr(getattr(__obj, "__wrapped__", __obj), "__self__", None)  # str.format is wrapped
        if isinstance(owner, str | bytes):
            __self.guard.growth(
                f"{type(owner).__name__}.{__obj.__name__}()", owner, [*args, *kwargs.values()]
            )
        return __self.guard.checked(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        formatter = super().wrap_str_format(value)
        if formatter is not None:  # `'{:>999999999}'.format` is refused as soon as it is looked up
            for _, _, spec, _ in string.Formatter().parse(value.__self__):
                _check_width(self.guard, spec or "", "{")
        return formatter


def _check_operands(guard: Guard, operator: str, left: Any, right: Any) -> None:
    integers = isinstance(left, int) and isinstance(right, int)
    if operator == "**" and integers and right > 0 and left.bit_length() * right > MAX_INT_BITS:
        raise BoundError(
            f"{left!r:.20} ** {right} is a number of more than {MAX_INT_BITS * 3 // 10:,} digits"
        )
    if operator == "*" and integers and left.bit_length() + right.bit_length() > MAX_INT_BITS:
        raise BoundError(f"the product is a number of more than {MAX_INT_BITS * 3 // 10:,} digits")
    if operator == "*" and not integers:
        for sequence, count in ((left, right), (right, left)):
            if isinstance(count, int) and not isinstance(sequence, int | float):
                guard.growth("repeating a value", "", [count * size_of(sequence, guard.limits.size)])
    if operator == "%" and isinstance(left, str):
        _check_width(guard, left, "%")


def _check_width(guard: Guard, text: str, style: str) -> None:
    """Refuse `%*s`, `{:{}}` and any width or precision above the size bound before formatting."""
    if style == "{":
        fields = [(width, None) for width in re.findall(r"\d+", text)]
        if "{" in text:
            raise BoundError("nested format fields ({:{}}) are not allowed in templates")
    else:
        fields = PERCENT_FIELD.findall(text)
    for width, precision in fields:
        for number in (width, precision):
            if number == "*":
                raise BoundError("a '*' width in % formatting is not allowed in templates")
            if number and int(number) > guard.limits.size:
                raise BoundError(
                    f"a format width of {int(number):,} is above the limit of {guard.limits.size:,}"
                )


def _guarded_filter(guard: Guard, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0  # a context or environment first

    @wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        guard.tick()
        return guard.checked(func(*args, **kwargs))

    @wraps(func)
    def amplifying(*args: Any, **kwargs: Any) -> Any:
        guard.tick()
        if len(args) > skip:
            first = args[skip]
            if not isinstance(first, str | list | tuple | dict | range) and isinstance(first, Iterable):
                first = guard.checked(list(first))  # a generator (from map, select…) has no size yet
                args = (*args[:skip], first, *args[skip + 1 :])
            if name == "format" and isinstance(first, str):
                _check_width(guard, first, "%")
            guard.growth(f"the {name} filter", first, [*args[skip + 1 :], *kwargs.values()])
        return guard.checked(func(*args, **kwargs))

    return amplifying if name in AMPLIFYING else guarded


def _lipsum(guard: Guard, n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    guard.tick()  # `min`, `max`: Jinja's names
    guard.growth("lipsum()", None, [10 * n * max])  # about ten characters a word
    text: str = guard.checked(generate_lorem_ipsum(n, html, min, max))
    return text


def is_plain(text: str) -> bool:
    """Text Jinja2 gives back as it is: no `{{`, `{%`, `{#`, nor (with a brace) a CR, which it makes LF."""
    return "{" not in text or not ("{{" in text or "{%" in text or "{#" in text or "\r" in text)


class Renderer:
    """Renders field values against a variant's variables; compiled templates are cached."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.guard = Guard(limits or Limits())
        self.env = BoundedSandbox(self.guard)
        self.plain = BoundedSandbox(self.guard, statements=False)  # for templates without {% … %}
        self.templates: dict[str, Callable[[Mapping[str, Any]], Any]] = {}

    def render_field(self, value: Any, context: Mapping[str, Any]) -> Any:
        """One field of one variant: the guard's per-render bounds start afresh."""
        if isinstance(value, str) and is_plain(value):
            return value
        self.guard.begin()
        try:
            return self.render(value, context)
        finally:
            if self.guard.started is not None:  # the clock was read: this render ticked
                self.guard.end()

    def render(self, value: Any, context: Mapping[str, Any]) -> Any:
        if isinstance(value, str):
            if is_plain(value):
                return value
            compiled = self.templates.get(value) or self.templates.setdefault(value, self._compile(value))
            return compiled(context)
        if isinstance(value, list):
            return [self.render(item, context) for item in value]
        if isinstance(value, dict):
            return {key: self.render(item, context) for key, item in value.items()}
        return value

    def _compile(self, source: str) -> Callable[[Mapping[str, Any]], Any]:
        env = self.env if "{%" in source else self.plain
        try:
            single = SINGLE_EXPRESSION.fullmatch(source)
            if single:
                expression = env.compile_expression(single["expression"], undefined_to_none=False)
                return _Compiled(expression._template, _evaluate)  # what TemplateExpression.__call__ does
            template = env.from_string(source)
        except jinja2.TemplateSyntaxError as error:
            raise TemplateFailure(f"template syntax error: {error.message}") from None
        return _Compiled(template, _render)

    def variables(self, *scopes: Mapping[str, Any]) -> dict[str, Any]:
        """The variables of one variant, later scopes winning, with Jinja's globals (range, …) first."""
        return dict(ChainMap(*reversed(scopes), self.env.globals))


class _Compiled:
    """A compiled template and the one Jinja2 context its renders share (one each cost more than most
    renders, issue 13): a render reads `parent` (the variant's variables) and writes only `vars` and
    `exported_vars`, emptied for the next; one that raises (in `{% autoescape %}`?) leaves none."""

    def __init__(self, template: jinja2.Template, run: Callable[[jinja2.Template, Context], Any]) -> None:
        self.template, self.run = template, run
        self.state: Context | None = None

    def __call__(self, variables: Mapping[str, Any]) -> Any:
        state, self.state = self.state, None
        if state is None:
            state = self.template.new_context(variables, shared=True)  # type: ignore[arg-type]
        else:
            state.parent, state.vars, state.exported_vars = variables, {}, set()  # type: ignore[assignment]
        result = self.run(self.template, state)
        self.state = state
        return result


def _render(template: jinja2.Template, state: Context) -> str:
    # Not Template.render: it copies the globals (a ChainMap) into a new dict each time (~45% of `plan`).
    return template.environment.concat(template.root_render_func(state))


def _evaluate(template: jinja2.Template, state: Context) -> Any:
    list(template.root_render_func(state))  # `{% set result = … %}`: it writes nothing
    value = state.vars["result"]
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    return template.environment.guard.checked(no_method(value))  # type: ignore[attr-defined]


def no_method(value: Any) -> Any:
    """A value a template writes, never a method or function: its text names a memory address, so
    a job's key would change on every run (`{{ product.copy }}` where no column is `copy`)."""
    if callable(value) and not isinstance(value, jinja2.Undefined | str):  # a str: a plan's stand-in
        name = getattr(value, "__name__", type(value).__name__)
        raise TemplateFailure(
            f"writes the method {name!r}, not a value: call it, or read a key as [{name!r}]"
        )
    return value
