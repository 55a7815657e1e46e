"""Safe YAML reading for manifests: plain data only, every node's line and column kept.

PyYAML's `safe_load` silently keeps the last of two duplicate keys and expands aliases without
limit; here a duplicate key is a located error, and an alias bomb or an oversized file is refused
before it can eat memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from sume_batch.errors import Problem

MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_NODES = 200_000  # nodes built after alias expansion; a real manifest has a few thousand

Path = tuple[str | int, ...]
_PLAIN_TAGS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}


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
    def __init__(self, loader: yaml.SafeLoader, file: str) -> None:
        self.loader = loader
        self.file = file
        self.nodes = 0
        self.document = Document(data=None)
        self.problems: list[Problem] = []

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _TooBig(node)
        self.document.marks[path] = _position(node)
        if node.tag not in _PLAIN_TAGS and not isinstance(node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(
                None, None, f"could not determine a constructor for the tag {node.tag!r}", node.start_mark
            )
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, index)) for index, item in enumerate(node.value)]
        return self.loader.construct_object(node, deep=True)

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[Any, Any]:
        self.loader.flatten_mapping(node)  # resolves `<<: *anchor` merge keys
        result: dict[Any, Any] = {}
        merged_nodes: set[int] = getattr(node, "merged_keys", set())
        from_merge: set[Any] = set()  # keys a `<<` merge supplied, which the mapping's own keys override
        for key_node, value_node in node.value:
            key = self.loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int):
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


class _TooBig(Exception):
    def __init__(self, node: yaml.Node) -> None:
        self.node = node


class _Loader(yaml.SafeLoader):
    """A SafeLoader that remembers which merged (`<<`) keys it added, so they may be overridden."""

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        own = {id(key) for key, _ in node.value}
        super().flatten_mapping(node)
        node.merged_keys = {id(key) for key, _ in node.value if id(key) not in own}  # type: ignore[attr-defined]


def _position(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def format_path(path: Path) -> str:
    """`("jobs", 1, "prompt")` → `jobs[1].prompt`."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def parse_yaml(text: str, *, file: str) -> tuple[Document, list[Problem]]:
    """Parse one YAML document into plain data with marks; problems are returned, not raised."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_FILE_BYTES:
        message = f"file is {size:,} bytes; the limit is {MAX_FILE_BYTES:,} (split the campaign)"
        return Document(data=None), [Problem(file, 0, 0, "", message)]
    loader = _Loader(text)
    builder = _Builder(loader, file)
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
        line, column = _position(error.node)
        message = f"more than {MAX_NODES:,} values after expanding aliases (an alias bomb?)"
        return Document(data=None), [Problem(file, line, column, "", message)]
    finally:
        loader.dispose()
    return builder.document, builder.problems


def _syntax_problem(error: yaml.MarkedYAMLError, file: str) -> Problem:
    mark = error.problem_mark or error.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    what = error.problem or "not valid YAML"
    if error.context:
        what = f"{error.context}, {what}"
    if "could not determine a constructor" in what or "python/" in what:
        what = "tags such as !!python/object are not allowed in a manifest"
    return Problem(file, line, column, "", f"YAML syntax error: {what}")
