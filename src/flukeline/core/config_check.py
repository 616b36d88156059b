"""Short config error messages: the key path and the problem, instead of the schema dump that a
plain JSON-schema validation error prints (several kilobytes for a mistyped key)."""

from __future__ import annotations

import os

import yaml
from jsonschema import Draft202012Validator


def _key_path(path) -> str:
    return ".".join(str(part) for part in path) or "(top level)"


def _describe(error) -> str:
    where = _key_path(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        keys = ", ".join(f"{where}.{key}" if error.absolute_path else key for key in unknown)
        hint = f" (known keys here: {', '.join(allowed)})" if allowed else ""
        return f"unknown key {keys}{hint}"
    if error.validator in ("oneOf", "anyOf"):
        choices = " or ".join(_choice(option) for option in error.validator_value)
        return f"{where}: {error.instance!r} is not {choices}"
    return f"{where}: {error.message}"


def _choice(schema: dict) -> str:
    """One alternative of a oneOf, in words: 'auto', 'a number from -1 to 1', ..."""
    if "const" in schema:
        return repr(schema["const"])
    if "enum" in schema:
        return "one of " + ", ".join(map(repr, schema["enum"]))
    kind = {
        "number": "a number",
        "integer": "an integer",
        "string": "a string",
        "boolean": "true/false",
        "array": "a list",
        "object": "a mapping",
        "null": "null",
    }.get(schema.get("type"), "a value")
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    if low is not None and high is not None:
        return f"{kind} from {low} to {high}"
    if low is not None:
        return f"{kind} >= {low}"
    if high is not None:
        return f"{kind} <= {high}"
    return kind


def config_problems(config: dict, schema_path: str | os.PathLike) -> list[str]:
    """One line per schema violation in `config`, sorted by key path; empty when it is valid."""
    with open(schema_path, encoding="utf-8") as handle:
        schema = yaml.safe_load(handle)
    validator = Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda error: [str(p) for p in error.absolute_path])
    return [_describe(error) for error in errors]
