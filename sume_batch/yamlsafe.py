"""Safe YAML reading for manifests: plain data only, every node's line and column kept.

PyYAML's `safe_load` silently keeps the last of two duplicate keys and expands aliases without
limit; here a duplicate key is a located error, and an alias bomb, deep nesting or an oversized file
is refused before it can eat memory or the stack. YAML 1.1 surprises (`1:1` read as 61, `on` as
true, `010` as 8) are located errors that say what YAML did and how to quote the value (issue 11).

libyaml's C parser and composer read a file ten times faster than PyYAML's pure-Python ones and keep
the same marks, but not for every file: for the few things they read differently (`_LIBYAML_DECLINES`)
and for any file libyaml refuses, the pure-Python reading is used, so data, marks and messages are
the same whichever reads the file (issue 13; tests/test_yamlsafe.py runs each case through both).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from sume_batch.errors import ManifestError, Problem

MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_NODES = 200_000  # nodes built after alias expansion; a real manifest has a few thousand
MAX_DEPTH = 64  # nesting levels; a real manifest has fewer than ten (and Python's stack is finite)

Path = tuple[str | int, ...]
_PLAIN_TAGS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}
_SCALAR_TYPES = (str, int, float, bool, type(None))
_UNSAFE_CHARACTER = re.compile("[\x00\ud800-\udfff]")
_TRUE_OR_FALSE = {"true", "false"}
# What libyaml reads unlike PyYAML, found by reading fuzzed manifests with both (libyaml 0.2.6); a
# file with any of these is read by PyYAML (`libyaml_declines`, `_placed_unlike_pyyaml`):
# - no line break at the end: libyaml adds one, placing a value at the very end a line on;
# - a tab (PyYAML refuses one after `key:`); a byte-order mark past the start (a column on);
# - `?` in a plain value inside a flow collection (`[a?b]` is an error to PyYAML);
# - `|#` or `>#` (PyYAML wants a space before the comment); a `%` directive (`%YAML 1.1#`);
# - an empty value in a flow collection (`{a: , b: 1}`, `{a: # c` ...): libyaml places it on the
#   next token, PyYAML right after the `:`;
# - an empty value tagged `!`: text to libyaml, null to PyYAML.
_LIBYAML_DECLINES = re.compile(r"[|>][-+0-9]*#|(?:^|[\r\n\x85\u2028\u2029])%")
_NULL_TAG = "tag:yaml.org,2002:null"


@dataclass
class Document:
    """Parsed YAML data plus where each value (and each mapping key) stood in the file."""

    data: Any
    marks: dict[Path, tuple[int, int]] = field(default_factory=dict)
    key_marks: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def mark(self, path: Path, *, key: bool = False) -> tuple[int, int]:
        """The (line, column) of `path`, or of its nearest ancestor that has one."""
        marks = self.key_marks if key else self.marks
        while path:
            if path in marks:
                return marks[path]
            if key and path in self.marks:
                return self.marks[path]
            path = path[:-1]
        return self.marks.get((), (1, 1))


class _Builder:
    def __init__(self, loader: _MergedKeys, file: str) -> None:
        self.loader = loader
        self.file = file
        self.nodes = 0
        self.document = Document(data=None)
        self.problems: list[Problem] = []

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _TooBig(node, f"more than {MAX_NODES:,} values after expanding aliases (an alias bomb?)")
        if len(path) > MAX_DEPTH:
            raise _TooBig(node, f"nested more than {MAX_DEPTH} levels deep")
        self.document.marks[path] = _position(node)
        if node.tag not in _PLAIN_TAGS and not isinstance(node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(
                None, None, f"could not determine a constructor for the tag {node.tag!r}", node.start_mark
            )
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, index)) for index, item in enumerate(node.value)]
        return self.scalar(node, path)

    def scalar(self, node: yaml.Node, path: Path) -> Any:
        """A plain value, or None with a located problem for what YAML would have silently changed."""
        try:
            value = self.loader.construct_object(node, deep=True)
        except ValueError as error:  # int('9' * 5000): Python refuses more than 4,300 digits
            self._problem(node, path, f"not a usable number: {str(error).split(';')[0]}")
            return None
        except (LookupError, AttributeError):  # a tag PyYAML cannot honour: `!!bool .5`, `!!float ""`
            tag = node.tag.rsplit(":", 1)[-1]
            self._problem(node, path, f"YAML cannot read {str(node.value)[:40]!r} as !!{tag}; remove the tag")
            return None
        message = scalar_problem(node, value) if isinstance(node, yaml.ScalarNode) else None
        if message:
            self._problem(node, path, message)
            return None
        return value

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[Any, Any]:
        self.loader.flatten_mapping(node)  # resolves `<<: *anchor` merge keys
        result: dict[Any, Any] = {}
        merged_nodes: set[int] = getattr(node, "merged_keys", set())
        from_merge: set[Any] = set()  # keys a `<<` merge supplied, which the mapping's own keys override
        for key_node, value_node in node.value:
            known = len(self.problems)
            key = self.scalar(key_node, path) if isinstance(key_node, yaml.ScalarNode) else None
            if len(self.problems) > known:
                continue  # scalar() said what YAML did to the key
            if not isinstance(key, str | int) or isinstance(key, bool):
                self._problem(key_node, path, "mapping keys must be text or whole numbers")
                continue
            if key in result and key not in from_merge:
                first_line = self.document.key_marks[(*path, key)][0]
                self._problem(key_node, path, f"duplicate key {key!r} (first defined on line {first_line})")
                continue
            if id(key_node) in merged_nodes:
                from_merge.add(key)
            else:
                from_merge.discard(key)
            self.document.key_marks[(*path, key)] = _position(key_node)
            result[key] = self.build(value_node, (*path, key))
        return result

    def _problem(self, node: yaml.Node, path: Path, message: str) -> None:
        line, column = _position(node)
        self.problems.append(Problem(self.file, line, column, format_path(path), message))


def scalar_problem(node: yaml.ScalarNode, value: Any) -> str | None:  # noqa: PLR0911 - one case per surprise
    """What YAML 1.1 did to a plain scalar that its author almost surely meant as text."""
    text, quote = str(node.value), f'quote it: "{node.value}"'
    plain = not node.style  # PyYAML's composer says None, libyaml's ""
    if isinstance(value, bool) and plain and text.lower() not in _TRUE_OR_FALSE:
        return f"YAML read {text} as the boolean {str(value).lower()}; write true or false, or {quote}"
    if isinstance(value, int | float) and not isinstance(value, bool) and plain and ":" in text:
        return f"YAML read {text} as the number {value:g} (base-60); {quote}"
    if isinstance(value, int) and plain and re.fullmatch(r"[-+]?0[0-7_]+", text):
        return f"YAML read {text} as the octal number {value}; write {value}, or {quote}"
    if isinstance(value, float) and math.isnan(value):
        return f"YAML read {text} as not-a-number, which no field accepts; {quote}"
    if not isinstance(value, _SCALAR_TYPES):
        what = {"timestamp": "a date", "binary": "binary data"}.get(node.tag.rsplit(":", 1)[-1], node.tag)
        return f"YAML read {text[:40]} as {what}, which a manifest cannot hold; {quote[:60]}"
    if isinstance(value, str) and _UNSAFE_CHARACTER.search(value):
        found = _UNSAFE_CHARACTER.search(value)
        assert found is not None
        what = "a NUL character" if found[0] == "\x00" else f"a lone surrogate \\u{ord(found[0]):04x}"
        return f"text holds {what} (at character {found.start() + 1}), which no field can carry"
    return None


class _TooBig(Exception):
    def __init__(self, node: yaml.Node, message: str) -> None:
        self.node = node
        self.message = message


class _MergedKeys(yaml.constructor.SafeConstructor):
    """Remembers which merged (`<<`) keys `flatten_mapping` added, so they may be overridden."""

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        own = {id(key) for key, _ in node.value}
        super().flatten_mapping(node)
        node.merged_keys = {id(key) for key, _ in node.value if id(key) not in own}  # type: ignore[attr-defined]


class _Loader(_MergedKeys, yaml.SafeLoader):
    """PyYAML's pure-Python reader, scanner, parser and composer: it reads every file."""


LIBYAML: bool = yaml.__with_libyaml__  # PyYAML built without libyaml has no CSafeLoader
if LIBYAML:

    class _CLoader(_MergedKeys, yaml.CSafeLoader):
        """libyaml's C parser and composer; PyYAML's resolver and constructor, as in `_Loader`."""


def _position(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def format_path(path: Path) -> str:
    """`("jobs", 1, "prompt")` → `jobs[1].prompt`."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def parse_yaml(text: str, *, file: str, libyaml: bool = LIBYAML) -> tuple[Document, list[Problem]]:
    """Parse one YAML document into plain data with marks; problems are returned, not raised.

    `libyaml` reads it with libyaml where that reads it as PyYAML does (see the module's docstring);
    the answer is the same either way."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_FILE_BYTES:
        message = f"file is {size:,} bytes; the limit is {MAX_FILE_BYTES:,} (split the campaign)"
        return Document(data=None), [Problem(file, 0, 0, "", message)]
    if libyaml:
        read = read_with_libyaml(text, file=file)
        if read is not None:
            return read
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as error:  # a control character: PyYAML checks the whole text first
        line, column = text_position(text, error.position)
        character = _code_point(error.character)
        message = f"character {character} is not allowed in YAML (remove it, or write it as an escape)"
        return Document(data=None), [Problem(file, line, column, "", message)]
    builder = _Builder(loader, file)
    try:
        return _compose(loader, builder, file)
    finally:
        loader.dispose()


def read_with_libyaml(text: str, *, file: str) -> tuple[Document, list[Problem]] | None:
    """`parse_yaml` by libyaml, or None for a file it declines: one it might read unlike PyYAML
    (`libyaml_declines`, `_placed_unlike_pyyaml`) and one it cannot read, whose messages PyYAML's
    reading words (libyaml's say the same things differently)."""
    if libyaml_declines(text):
        return None
    try:
        loader = _CLoader(text)
    except UnicodeEncodeError:  # a lone surrogate: PyYAML's reader names its place
        return None
    builder = _Builder(loader, file)
    try:
        root = loader.get_single_node()
        if root is None or _placed_unlike_pyyaml(root):
            return None
        builder.document.data = builder.build(root, ())
    except (yaml.YAMLError, RecursionError):
        return None
    except _TooBig as error:
        return Document(data=None), [Problem(file, *_position(error.node), "", error.message)]
    finally:
        loader.dispose()
    return builder.document, builder.problems


def libyaml_declines(text: str) -> bool:
    """Whether libyaml is missing, or might read `text` unlike PyYAML (see `_LIBYAML_DECLINES`)."""
    if not LIBYAML or not text.endswith("\n") or "\t" in text or "\ufeff" in text:
        return True
    return _LIBYAML_DECLINES.search(text) is not None


def _placed_unlike_pyyaml(root: yaml.Node) -> bool:
    """Whether libyaml's nodes hold an empty value it places (in a flow collection) or tags (`!`)
    unlike PyYAML, or a plain value with a `?` in a flow collection. Each node once in each
    context, so an alias bomb costs no more than its text."""
    seen: set[tuple[int, bool]] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, flow = stack.pop()
        if (id(node), flow) in seen:
            continue
        seen.add((id(node), flow))
        if isinstance(node, yaml.ScalarNode) and not node.style:
            if (node.value == "" and (flow or node.tag != _NULL_TAG)) or (flow and "?" in node.value):
                return True
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, bool(node.flow_style)) for item in node.value)
        elif isinstance(node, yaml.MappingNode):
            stack.extend((one, bool(node.flow_style)) for pair in node.value for one in pair)
    return False


def _compose(loader: _Loader, builder: _Builder, file: str) -> tuple[Document, list[Problem]]:
    try:
        root = loader.get_single_node()
        if root is None:
            return Document(data=None), [Problem(file, 1, 1, "", "the file is empty")]
        builder.document.data = builder.build(root, ())
    except yaml.MarkedYAMLError as error:
        return Document(data=None), [_syntax_problem(error, file)]
    except yaml.YAMLError as error:
        return Document(data=None), [Problem(file, 1, 1, "", f"not valid YAML: {error}")]
    except _TooBig as error:
        return Document(data=None), [Problem(file, *_position(error.node), "", error.message)]
    except RecursionError:  # the composer recurses once per level: `[[[[...` thousands deep
        mark = loader.get_mark()
        message = f"nested more than {MAX_DEPTH} levels deep"
        return Document(data=None), [Problem(file, mark.line + 1, mark.column + 1, "", message)]
    return builder.document, builder.problems


def text_position(text: str, index: int) -> tuple[int, int]:
    """The 1-based (line, column) of a character index."""
    line_start = text.rfind("\n", 0, index) + 1
    return text.count("\n", 0, index) + 1, index - line_start + 1


def _syntax_problem(error: yaml.MarkedYAMLError, file: str) -> Problem:
    mark = error.problem_mark or error.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    what = error.problem or "not valid YAML"
    if error.context:
        what = f"{error.context}, {what}"
    if "could not determine a constructor" in what or "python/" in what:
        what = "tags such as !!python/object are not allowed in a manifest"
    return Problem(file, line, column, "", f"YAML syntax error: {what}")


def _code_point(character: int | str) -> str:
    """`U+0007`: a character named so it cannot be mistaken for a digit (PyYAML gives an int)."""
    return f"U+{character if isinstance(character, int) else ord(character):04X}"


def decode_text(data: bytes, file: str) -> str:
    """UTF-8 (a BOM is fine); anything else is a located error naming the first bad byte."""
    for bom, name in ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\xfe\xff", "UTF-16"), (b"\xff\xfe", "UTF-16")):
        if data.startswith(bom):
            raise ManifestError([Problem(file, 0, 0, "", f"the file is {name} text; save it as UTF-8")])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        before = data[: error.start].decode("utf-8")
        line, column = text_position(before, len(before))
        message = f"not UTF-8 text (byte {error.start}: {data[error.start]:#04x}); save it as UTF-8"
        raise ManifestError([Problem(file, line, column, "", message)]) from None
