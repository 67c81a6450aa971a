"""The small subset of JSON Schema that tool parameters use: checked in the agent file, then
enforced on every tool call the LLM makes.

Supported: `type` (object, string, number, integer, boolean, array, null; or a list of them),
`properties`, `required`, `additionalProperties` (boolean), `items`, `enum`, `pattern`,
`minLength`, `maxLength`, `minimum`, `maximum`, `minItems`, `maxItems`. Annotations
(`description`, `title`, `default`, `examples`, `format`, `$comment`) are allowed and not
enforced. Anything else is refused when the schema is checked, so that a keyword nobody
enforces never looks enforced.
"""

from __future__ import annotations

import re
from typing import Any

TYPES = frozenset({"object", "string", "number", "integer", "boolean", "array", "null"})
_ANNOTATIONS = frozenset({"description", "title", "default", "examples", "format", "$comment"})
_KEYWORDS = _ANNOTATIONS | {
    "type", "properties", "required", "additionalProperties", "items", "enum", "pattern",
    "minLength", "maxLength", "minimum", "maximum", "minItems", "maxItems",
}  # fmt: skip
_COUNTS = ("minLength", "maxLength", "minItems", "maxItems")


class SchemaViolation(ValueError):
    """A value does not match its schema; the message names where (`to`, `items[2]`)."""


def check_schema(schema: Any, where: str = "parameters") -> None:
    """Raise ValueError, naming the place, if `schema` is not a schema this module enforces."""
    if not isinstance(schema, dict):
        raise ValueError(f"{where} must be a JSON schema object")
    unknown = sorted(set(schema) - _KEYWORDS)
    if unknown:
        raise ValueError(f"{where}: unsupported JSON schema keyword(s) {unknown}")
    types = schema.get("type")
    for name in types if isinstance(types, list) else [types]:
        if name is not None and name not in TYPES:
            raise ValueError(f"{where}.type: {name!r} is not one of {sorted(TYPES)}")
    properties = schema.get("properties", {})
    if not isinstance(properties, dict):
        raise ValueError(f"{where}.properties must be an object")
    for key, sub in properties.items():
        check_schema(sub, f"{where}.properties.{key}")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise ValueError(f"{where}.required must be a list of property names")
    if not isinstance(schema.get("additionalProperties", True), bool):
        raise ValueError(f"{where}.additionalProperties must be true or false")
    if "items" in schema:
        check_schema(schema["items"], f"{where}.items")
    if "enum" in schema and not (isinstance(schema["enum"], list) and schema["enum"]):
        raise ValueError(f"{where}.enum must be a non-empty list")
    if "pattern" in schema:
        try:
            re.compile(schema["pattern"])
        except (re.error, TypeError) as exc:
            raise ValueError(f"{where}.pattern is not a valid regular expression: {exc}") from exc
    for key in _COUNTS:
        if key in schema and not (_is_integer(schema[key]) and schema[key] >= 0):
            raise ValueError(f"{where}.{key} must be a non-negative integer")
    for key in ("minimum", "maximum"):
        if key in schema and not _is_number(schema[key]):
            raise ValueError(f"{where}.{key} must be a number")


def validate(value: Any, schema: dict[str, Any], where: str = "") -> None:
    """Raise SchemaViolation at the first place `value` breaks a (checked) `schema`."""
    label = where or "arguments"
    types = schema.get("type")
    if types is not None:
        allowed = types if isinstance(types, list) else [types]
        if not any(_is_type(value, name) for name in allowed):
            raise SchemaViolation(f"{label}: expected {' or '.join(allowed)}")
    if "enum" in schema and value not in schema["enum"]:
        raise SchemaViolation(f"{label}: must be one of {schema['enum']}")
    if isinstance(value, str):
        _validate_string(value, schema, label)
    elif _is_number(value):
        if "minimum" in schema and value < schema["minimum"]:
            raise SchemaViolation(f"{label}: must be at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise SchemaViolation(f"{label}: must be at most {schema['maximum']}")
    elif isinstance(value, list):
        _validate_array(value, schema, where, label)
    elif isinstance(value, dict):
        _validate_object(value, schema, where)


def _validate_string(value: str, schema: dict[str, Any], label: str) -> None:
    if len(value) < schema.get("minLength", 0):
        raise SchemaViolation(f"{label}: shorter than {schema['minLength']} characters")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        raise SchemaViolation(f"{label}: longer than {schema['maxLength']} characters")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        raise SchemaViolation(f"{label}: does not match {schema['pattern']}")


def _validate_array(value: list[Any], schema: dict[str, Any], where: str, label: str) -> None:
    if len(value) < schema.get("minItems", 0):
        raise SchemaViolation(f"{label}: fewer than {schema['minItems']} items")
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        raise SchemaViolation(f"{label}: more than {schema['maxItems']} items")
    if "items" in schema:
        for i, item in enumerate(value):
            validate(item, schema["items"], f"{where or 'arguments'}[{i}]")


def _validate_object(value: dict[str, Any], schema: dict[str, Any], where: str) -> None:
    prefix = f"{where}." if where else ""
    for key in schema.get("required", []):
        if key not in value:
            raise SchemaViolation(f"{prefix}{key}: required")
    properties = schema.get("properties", {})
    if schema.get("additionalProperties", True) is False:
        extra = sorted(set(value) - set(properties))
        if extra:
            raise SchemaViolation(f"{prefix}{extra[0]}: not an allowed property")
    for key, sub in properties.items():
        if key in value:
            validate(value[key], sub, f"{prefix}{key}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    return _is_number(value) and float(value).is_integer()


def _is_type(value: Any, name: str) -> bool:
    match name:
        case "object":
            return isinstance(value, dict)
        case "array":
            return isinstance(value, list)
        case "string":
            return isinstance(value, str)
        case "boolean":
            return isinstance(value, bool)
        case "null":
            return value is None
        case "integer":
            return _is_integer(value)
        case _:
            return _is_number(value)
