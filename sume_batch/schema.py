"""The campaign JSON Schema, and its violations as located problems a person can act on.

The schema ships with the package; `manifest` validates a campaign (and a `--pricing` file) with
it, and `expand` validates each rendered field against its kind's own part of it.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator, Mapping
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

from sume_batch.errors import Problem
from sume_batch.yamlsafe import Document, format_path


@cache
def campaign_schema() -> dict[str, Any]:
    """The campaign JSON Schema, read from the package (it ships with the code)."""
    text = resources.files("sume_batch").joinpath("schemas/campaign.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def schema_problems(data: Any, document: Document, file: str) -> Iterator[Problem]:
    """Every JSON Schema violation, located and phrased for a person."""
    validator = jsonschema.Draft202012Validator(campaign_schema())
    problems = (
        problem for error in validator.iter_errors(data) for problem in describe_error(error, document, file)
    )
    yield from dict.fromkeys(problems)  # a job that is not a mapping fails each type's branch alike


def describe_error(error: jsonschema.ValidationError, document: Document, file: str) -> Iterator[Problem]:
    error = innermost(error)
    path = tuple(error.absolute_path)
    if error.validator in ("additionalProperties", "unevaluatedProperties"):
        known = sorted(known_keys(_schema_of(error)))
        instance: Mapping[str, Any] = error.instance  # type: ignore[assignment]  # these keywords see objects
        for key in sorted(set(instance) - set(known), key=str):
            line, column = document.mark((*path, key), key=True)
            yield Problem(file, line, column, format_path((*path, key)), unknown_key_message(str(key), known))
        return
    line, column = document.mark(path)
    yield Problem(file, line, column, format_path(path), error_message(error))


def unknown_key_message(key: str, known: list[str]) -> str:
    guesses = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"did you mean {guesses[0]!r}?" if guesses else "expected one of " + ", ".join(known)
    return f"unknown key {key!r} ({hint})"


def known_keys(schema: Mapping[str, Any]) -> set[str]:
    """Property names a (sub)schema allows, following local `$ref`s and `allOf`."""
    keys = set(schema.get("properties", {}))
    for part in schema.get("allOf", []):
        keys |= known_keys(part)
    if "$ref" in schema:
        keys |= known_keys(campaign_schema()["$defs"][schema["$ref"].rsplit("/", 1)[1]])
    return keys


def innermost(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """For `anyOf: [strict, template]` fields, the strict branch's own error says what is wrong."""
    while error.validator == "anyOf" and "x-message" not in _schema_of(error):
        strict = [sub for sub in error.context or () if sub.relative_schema_path[0] == 0]
        if not strict:
            break
        error = strict[0]
    return error


def error_message(error: jsonschema.ValidationError) -> str:  # noqa: PLR0911 - one case per keyword
    error = innermost(error)
    schema, value = _schema_of(error), error.instance
    if error.validator in ("pattern", "anyOf") and "x-message" in schema:
        return f"{schema['x-message']}, got {value!r}"
    if error.validator == "required":
        return f"missing required key {error.message.split(' is a required')[0]}"
    if error.validator in ("enum", "const"):
        allowed: list[Any] = error.validator_value if error.validator == "enum" else [error.validator_value]  # type: ignore[assignment]
        return f"{value!r} is not one of " + ", ".join(repr(option) for option in allowed)
    if error.validator == "type":
        return f"expected {_type_name(error.validator_value)}, got {_type_name(type_of(value))} {value!r}"
    if error.validator in ("minimum", "exclusiveMinimum"):
        return f"{value!r} is below the minimum of {error.validator_value}"
    if error.validator == "maximum":
        return f"{value!r} is above the maximum of {error.validator_value}"
    if error.validator == "minLength":
        return "must not be empty"
    if error.validator == "minItems":
        return f"needs at least {error.validator_value} item{'s' if error.validator_value != 1 else ''}"
    if error.validator == "uniqueItems":
        return "has duplicate items"
    return str(error.message)


def _schema_of(error: jsonschema.ValidationError) -> Mapping[str, Any]:
    return error.schema if isinstance(error.schema, Mapping) else {}


def type_of(value: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _type_name(name: Any) -> str:
    if isinstance(name, list):
        return " or ".join(_type_name(one) for one in name)
    return {"object": "a mapping", "array": "a list", "integer": "an integer"}.get(name, f"a {name}")
