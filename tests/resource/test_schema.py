from __future__ import annotations

import pytest

from kiln.exceptions import StartupError
from kiln.resource.schema import Schema

MUSHROOM = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "size": {"type": "integer", "minimum": 0},
        "author": {
            "type": "object",
            "properties": {"name": {"type": "string"}},
            "required": ["name"],
        },
    },
    "required": ["name"],
    "additionalProperties": False,
}


class PydanticLike:
    @classmethod
    def model_json_schema(cls):
        return {
            "type": "object",
            "properties": {"title": {"type": "string"}},
            "required": ["title"],
            "additionalProperties": False,
        }


def detail(name, description):
    return {"location": "body", "name": name, "description": description}


def test_a_dict_schema_validates_records():
    schema = Schema.compile(MUSHROOM, "mushroom")
    assert not schema.schemaless
    assert schema.validate({"name": "Amanita", "size": 3}) == []
    assert schema.json_schema == MUSHROOM


def test_a_class_with_model_json_schema_is_a_schema():
    schema = Schema.compile(PydanticLike, "book")
    assert schema.validate({"title": "Dune"}) == []
    assert schema.validate({}) == [detail("data.title", "This field is required.")]
    assert schema.properties == {"title"}


def test_none_is_schemaless():
    schema = Schema.compile(None, "note")
    assert schema.schemaless
    assert schema.validate({"anything": [1, {"goes": None}]}) == []
    assert schema.is_known_field("whatever.below")


@pytest.mark.parametrize(
    "declared",
    [
        {"type": 12},
        {"type": object},
        {"properties": 3},
        {"$schema": "http://example.com/not-a-draft"},
        {"$ref": "#/nowhere"},
        {"type": "string", "pattern": "("},
        {1: 2},
    ],
)
def test_an_invalid_schema_is_a_one_line_startup_error(declared):
    with pytest.raises(StartupError) as info:
        Schema.compile(declared, "mushroom")
    message = str(info.value)
    assert message.startswith("Resource 'mushroom': its schema is not valid JSON Schema: ")
    assert "\n" not in message


@pytest.mark.parametrize("declared", [42, "schema", ["type"], PydanticLike()])
def test_a_schema_of_another_kind_is_a_startup_error(declared):
    if isinstance(declared, PydanticLike):  # an instance quacks like its class
        assert Schema.compile(declared, "x").properties == {"title"}
        return
    with pytest.raises(
        StartupError, match="must be a JSON Schema dict, a pydantic model class or None"
    ):
        Schema.compile(declared, "mushroom")


def test_validate_reports_every_error_sorted_by_field():
    schema = Schema.compile(MUSHROOM, "mushroom")
    details = schema.validate({"size": -1, "author": {}, "color": "red", "zone": 1})
    assert details == [
        detail("data.author.name", "This field is required."),
        detail("data.color", "This field is not allowed."),
        detail("data.name", "This field is required."),
        detail("data.size", "-1 is less than the minimum of 0"),
        detail("data.zone", "This field is not allowed."),
    ]


def test_validation_order_does_not_depend_on_key_order():
    schema = Schema.compile(MUSHROOM, "mushroom")
    one = schema.validate({"zone": 1, "color": "red", "size": "big"})
    other = schema.validate({"size": "big", "color": "red", "zone": 1})
    assert one == other
    assert [d["name"] for d in one] == ["data.color", "data.name", "data.size", "data.zone"]


def test_nested_errors_name_their_path():
    schema = Schema.compile(
        {
            "type": "object",
            "properties": {
                "a": {"type": "object", "properties": {"b": {"type": "string"}}},
                "tags": {"type": "array", "items": {"type": "string"}},
            },
        },
        "x",
    )
    assert schema.validate({"a": {"b": 1}, "tags": ["ok", 2]}) == [
        detail("data.a.b", '1 is not of type "string"'),
        detail("data.tags.1", '2 is not of type "string"'),
    ]


@pytest.mark.parametrize(
    "declared",
    [
        {"type": "object", "additionalProperties": False},
        {"type": "object", "properties": {}, "additionalProperties": False},
        {"type": "object", "unevaluatedProperties": False},
        {"allOf": [{"type": "object", "additionalProperties": False}]},
    ],
)
def test_every_unknown_field_is_one_detail(declared):
    schema = Schema.compile(declared, "x")
    assert schema.validate({"x": 1, "y": 2}) == [
        detail("data.x", "This field is not allowed."),
        detail("data.y", "This field is not allowed."),
    ]


def test_unknown_fields_of_nested_closed_objects_are_named():
    schema = Schema.compile(
        {
            "type": "object",
            "properties": {"b": {"type": "object", "additionalProperties": False}},
            "$defs": {"unused": {"additionalProperties": False}},
        },
        "x",
    )
    assert schema.validate({"b": {"x": 1, "y": [2]}}) == [
        detail("data.b.x", "This field is not allowed."),
        detail("data.b.y", "This field is not allowed."),
    ]


def test_a_property_named_like_a_keyword_is_left_alone():
    schema = Schema.compile(
        {
            "type": "object",
            "properties": {"additionalProperties": {"type": "boolean"}},
            "additionalProperties": False,
        },
        "x",
    )
    assert schema.validate({"additionalProperties": False}) == []
    assert schema.validate({"properties": 1}) == [
        detail("data.properties", "This field is not allowed.")
    ]


def test_reserved_fields_are_never_validated():
    schema = Schema.compile(MUSHROOM, "mushroom")
    record = {"name": "x", "id": 3, "last_modified": "yesterday", "deleted": "no"}
    assert schema.validate(record) == []


def test_duplicate_errors_are_reported_once():
    schema = Schema.compile(
        {"allOf": [{"type": "object", "required": ["a"]}, {"type": "object", "required": ["a"]}]},
        "x",
    )
    assert schema.validate({}) == [detail("data.a", "This field is required.")]


def test_an_error_on_the_whole_record_is_named_data():
    schema = Schema.compile({"type": "object", "minProperties": 2}, "x")
    assert [d["name"] for d in schema.validate({"a": 1})] == ["data"]


@pytest.mark.parametrize(
    ("declared", "field", "known"),
    [
        (MUSHROOM, "id", True),
        (MUSHROOM, "last_modified", True),
        (MUSHROOM, "deleted", True),
        (MUSHROOM, "name", True),
        (MUSHROOM, "author.name", True),
        (MUSHROOM, "author.anything", True),
        (MUSHROOM, "color", False),
        (MUSHROOM, "color.hue", False),
        ({"type": "object", "properties": {"a": {}}}, "color", True),
        ({"type": "object", "additionalProperties": {"type": "string"}}, "color", True),
        ({"type": "object", "unevaluatedProperties": False, "properties": {"a": {}}}, "b", False),
        ({"type": "object", "unevaluatedProperties": False, "properties": {"a": {}}}, "a.x", True),
        (
            {"type": "object", "patternProperties": {"^x_": {}}, "additionalProperties": False},
            "x_color",
            True,
        ),
        (
            {"type": "object", "patternProperties": {"^x_": {}}, "additionalProperties": False},
            "color",
            False,
        ),
        (
            {
                "type": "object",
                "patternProperties": {"^\\p{L}+$": {}},
                "additionalProperties": False,
            },
            "color",
            False,
        ),
        (None, "color.hue", True),
    ],
)
def test_is_known_field(declared, field, known):
    assert Schema.compile(declared, "x").is_known_field(field) is known
