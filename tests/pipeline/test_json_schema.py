"""The JSON Schema subset of tool parameters: checking schemas, validating arguments."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.json_schema import SchemaViolation, check_schema, validate

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 5, "description": "who"},
        "size": {"type": "string", "enum": ["s", "m", "l"]},
        "count": {"type": "integer", "minimum": 1, "maximum": 10},
        "price": {"type": ["number", "null"]},
        "gift": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string", "pattern": "^#"}, "maxItems": 2},
        "address": {
            "type": "object",
            "properties": {"zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
            "required": ["zip"],
        },
    },
    "required": ["name"],
    "additionalProperties": False,
}


def test_the_schema_itself_is_accepted() -> None:
    check_schema(SCHEMA)


def test_valid_arguments_pass() -> None:
    validate(
        {"name": "Ann", "size": "m", "count": 3.0, "price": None, "gift": False,
         "tags": ["#a", "#b"], "address": {"zip": "94107", "extra": 1}},
        SCHEMA,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ([], "arguments: expected object"),
        ({}, "name: required"),
        ({"name": ""}, "name: shorter than 1"),
        ({"name": "Annabel"}, "name: longer than 5"),
        ({"name": "A", "size": "xl"}, "size: must be one of ['s', 'm', 'l']"),
        ({"name": "A", "count": True}, "count: expected integer"),
        ({"name": "A", "count": 2.5}, "count: expected integer"),
        ({"name": "A", "count": 0}, "count: must be at least 1"),
        ({"name": "A", "count": 11}, "count: must be at most 10"),
        ({"name": "A", "price": "3"}, "price: expected number or null"),
        ({"name": "A", "gift": 1}, "gift: expected boolean"),
        ({"name": "A", "tags": ["#a", "b"]}, "tags[1]: does not match ^#"),
        ({"name": "A", "tags": ["#a", "#b", "#c"]}, "tags: more than 2 items"),
        ({"name": "A", "address": {}}, "address.zip: required"),
        ({"name": "A", "address": {"zip": "9410"}}, "address.zip: does not match"),
        ({"name": "A", "colour": "red"}, "colour: not an allowed property"),
    ],
)
def test_violations_name_the_place(arguments: Any, message: str) -> None:
    with pytest.raises(SchemaViolation) as raised:
        validate(arguments, SCHEMA)
    assert str(raised.value).startswith(message)


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ("object", "parameters must be a JSON schema object"),
        ({"anyOf": []}, "parameters: unsupported JSON schema keyword(s) ['anyOf']"),
        ({"type": "dict"}, "parameters.type: 'dict' is not one of"),
        ({"properties": {"a": {"type": "str"}}}, "parameters.properties.a.type"),
        ({"properties": []}, "parameters.properties must be an object"),
        ({"required": "a"}, "parameters.required must be a list"),
        ({"additionalProperties": {}}, "parameters.additionalProperties must be true or false"),
        ({"items": {"$ref": "#/x"}}, "parameters.items: unsupported"),
        ({"enum": []}, "parameters.enum must be a non-empty list"),
        ({"pattern": "(["}, "parameters.pattern is not a valid regular expression"),
        ({"maxLength": -1}, "parameters.maxLength must be a non-negative integer"),
        ({"minimum": "0"}, "parameters.minimum must be a number"),
    ],
)
def test_unsupported_or_broken_schemas_are_refused(schema: Any, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        check_schema(schema)
    assert str(raised.value).startswith(message)
