from __future__ import annotations

import re

import pytest

from kiln import resource
from kiln.exceptions import StartupError
from kiln.resource import (
    UUID4,
    IdGenerator,
    Registration,
    RequestContext,
    Resource,
    Slug,
    register,
    registrations,
)

MODULE = __name__


@pytest.fixture(autouse=True)
def _empty_registry():
    resource._REGISTRY.pop(MODULE, None)
    yield
    resource._REGISTRY.pop(MODULE, None)


def declare(cls_name="Mushroom", attributes=None, **options):
    cls = type(cls_name, (Resource,), {"__module__": MODULE, **(attributes or {})})
    return register(**options)(cls)


def only_registration():
    (rv,) = registrations(MODULE)
    return rv


def test_all_lists_every_public_name():
    public = {
        name
        for name, value in vars(resource).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == "kiln.resource"
    }
    assert public - {"R"} == set(resource.__all__) - {"COLLECTION_METHODS", "RECORD_METHODS"}


@pytest.mark.parametrize(
    ("options", "attributes", "name"),
    [
        ({"name": "champignon"}, {"name": "ignored"}, "champignon"),
        ({}, {"name": "fungus"}, "fungus"),
        ({}, {}, "mushroom"),
    ],
)
def test_the_name_is_explicit_else_the_name_attribute_else_the_lowercase_class_name(
    options, attributes, name
):
    cls = declare("Mushroom", attributes, **options)
    registration = only_registration()
    assert registration.name == name
    assert registration.cls is cls
    assert registration.module == MODULE


def test_default_paths_and_methods():
    declare()
    registration = only_registration()
    assert registration.collection_path == "/mushrooms"
    assert registration.record_path == "/mushrooms/<id>"
    assert registration.collection_methods == ("GET", "HEAD", "POST", "DELETE")
    assert registration.record_methods == ("GET", "HEAD", "PUT", "PATCH", "DELETE")
    assert isinstance(registration.id_generator, UUID4)
    assert registration.schema.schemaless


def test_path_variables_become_flask_variables():
    declare(
        "Record",
        collection_path="/buckets/{bucket_id}/collections/{collection_id}/records",
    )
    registration = only_registration()
    assert (
        registration.collection_path == "/buckets/<bucket_id>/collections/<collection_id>/records"
    )
    assert registration.record_path == (
        "/buckets/<bucket_id>/collections/<collection_id>/records/<id>"
    )


def test_an_explicit_record_path_is_used():
    declare(collection_path="/fungi", record_path="/fungus/{id}", record_methods=("GET",))
    registration = only_registration()
    assert (registration.collection_path, registration.record_path) == ("/fungi", "/fungus/<id>")
    assert registration.record_methods == ("GET",)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"collection_path": "mushrooms"}, "must start with '/'"),
        ({"record_path": "mushrooms/{id}"}, "must start with '/'"),
        ({"record_path": "/mushrooms/{key}"}, "record_path must contain '{id}'"),
        ({"collection_path": "/m/{id}/s"}, "collection_path may not contain '{id}'"),
        ({"collection_path": "/b/{bucket-id}/m"}, "write path variables as {name}"),
        ({"collection_path": "/b/<bucket_id>/m"}, "write path variables as {name}"),
        ({"collection_path": "/b/{bucket_id/m"}, "write path variables as {name}"),
        ({"collection_path": "/b/{b}/c/{b}/m"}, "names a path variable twice"),
    ],
)
def test_invalid_paths_are_startup_errors(options, message):
    with pytest.raises(StartupError, match=re.escape(message)):
        declare(**options)
    assert registrations(MODULE) == []


@pytest.mark.parametrize(
    "options",
    [
        {"collection_methods": ("GET", "PUT")},
        {"record_methods": ("get",)},
        {"record_methods": ("GET", "POST")},
    ],
)
def test_unknown_methods_are_startup_errors(options):
    with pytest.raises(StartupError, match="unknown methods"):
        declare(**options)


def test_methods_given_as_a_string_are_a_startup_error():
    with pytest.raises(StartupError, match="not the string 'GET'"):
        declare(collection_methods="GET")


def test_an_invalid_schema_is_a_startup_error_naming_the_resource():
    with pytest.raises(StartupError, match="Resource 'mushroom': its schema"):
        declare(attributes={"schema": {"type": 3}})


def test_the_schema_is_compiled_at_registration():
    declare(attributes={"schema": {"type": "object", "properties": {"a": {}}}})
    assert only_registration().schema.properties == {"a"}


def test_uuid4_makes_lowercase_uuids_and_accepts_only_them():
    generator = UUID4()
    made = {generator() for _ in range(20)}
    assert len(made) == 20
    assert all(generator.match(i) for i in made)
    assert not generator.match("3F2504E0-4F89-41D3-9A0C-0305E82C3301")
    assert not generator.match("hello")
    assert not generator.match(f"{generator()}\n")


@pytest.mark.parametrize(
    ("object_id", "valid"),
    [
        ("hello-world", True),
        ("a", True),
        ("A_1", True),
        ("-a", False),
        ("_a", False),
        ("", False),
        ("a b", False),
        ("a/b", False),
        ("abc\n", False),
        ("3.14", False),
        ("é", False),
    ],
)
def test_slug_accepts_readable_ids(object_id, valid):
    assert Slug().match(object_id) is valid


def test_slug_makes_ids_it_accepts():
    generator = Slug()
    assert generator.match(generator())


def test_the_pattern_given_to_models_refuses_a_trailing_newline():
    assert Slug().pattern.match("abc\n") is None
    assert Slug().pattern.match("abc")


def test_a_generator_whose_ids_its_regexp_refuses_is_a_startup_error():
    class Sequential(IdGenerator):
        regexp = r"^[0-9]+$"

        def __call__(self):
            return "id-1"

    with pytest.raises(StartupError, match=r"Sequential made the id 'id-1', which its own regexp"):
        declare(attributes={"id_generator": Sequential})


def test_a_custom_generator_is_instantiated_per_registration():
    class Counter(IdGenerator):
        regexp = r"^[0-9]+$"
        count = 0

        def __call__(self):
            Counter.count += 1
            return str(Counter.count)

    declare(attributes={"id_generator": Counter})
    registration = only_registration()
    assert isinstance(registration.id_generator, Counter)
    assert registration.id_generator.match(registration.id_generator())


@pytest.mark.parametrize(
    ("path", "parent_id"),
    [
        ({"id": "x"}, ""),
        ({}, ""),
        ({"bucket_id": "b1", "id": "x"}, "/buckets/b1"),
        ({"bucket_id": "b1", "collection_id": "c1", "id": "x"}, "/buckets/b1/collections/c1"),
        ({"bucket_id": "b1", "collection_id": "c1"}, "/buckets/b1/collections/c1"),
        ({"owner": "o"}, "/owners/o"),
    ],
)
def test_the_parent_id_of_nested_resources_comes_from_the_path(path, parent_id):
    assert Resource().get_parent_id(RequestContext(path)) == parent_id


def test_process_record_returns_the_record_by_default():
    new = {"a": 1}
    assert Resource().process_record(new, None) is new


def test_the_same_class_under_two_names_keeps_both():
    cls = declare()
    register(name="champignon")(cls)
    assert [r.name for r in registrations(MODULE)] == ["mushroom", "champignon"]
    assert {r.cls for r in registrations(MODULE)} == {cls}


def test_registering_a_name_again_replaces_it():
    declare(collection_path="/old")
    declare(collection_path="/new")
    registration = only_registration()
    assert registration.collection_path == "/new"
    assert isinstance(registration, Registration)


def test_registrations_are_in_declaration_order_and_a_copy():
    declare("Beta")
    declare("Alpha")
    listed = registrations(MODULE)
    assert [r.name for r in listed] == ["beta", "alpha"]
    listed.clear()
    assert len(registrations(MODULE)) == 2
    assert registrations("no.such.module") == []


def test_register_returns_the_class_unchanged():
    cls = type("Thing", (Resource,), {"__module__": MODULE})
    assert register()(cls) is cls


TYPED_SCHEMA = {
    "type": "object",
    "properties": {
        "edible": {"type": "boolean"},
        "size": {"type": ["number"]},
        "name": {"type": "string"},
        "tags": {"type": "array"},
        "either": {"type": ["string", "null"]},
    },
}


def test_indexes_name_typed_fields_with_their_directions():
    declare(attributes={"schema": TYPED_SCHEMA, "indexes": (("edible", "-size"), ("name",))})
    (first, second) = only_registration().indexes
    assert first.resource_name == "mushroom"
    assert [(f.field, f.type, f.direction) for f in first.fields] == [
        ("edible", "boolean", 1),
        ("size", "number", -1),
    ]
    assert [(f.field, f.type) for f in second.fields] == [("name", "string")]
    assert first.name.startswith("kiln_mushroom_aedible_dsize_")
    assert first.name != second.name


@pytest.mark.parametrize(
    ("indexes", "message"),
    [
        ("edible", "indexes is a tuple of field tuples"),
        (("edible",), "each index is a non-empty tuple of fields"),
        (((),), "each index is a non-empty tuple of fields"),
        ((("tags",),), "the indexed field 'tags' must be a top-level property"),
        ((("either",),), "the indexed field 'either'"),
        ((("author.name",),), "the indexed field 'author.name'"),
        ((("missing",),), "the indexed field 'missing'"),
        (((3,),), "the indexed field 3"),
    ],
)
def test_an_index_on_a_field_without_one_scalar_type_is_refused(indexes, message):
    with pytest.raises(StartupError, match=re.escape(message)):
        declare(attributes={"schema": TYPED_SCHEMA, "indexes": indexes})


def test_a_schemaless_resource_has_no_typed_field_to_index():
    with pytest.raises(StartupError, match="the indexed field 'size'"):
        declare(attributes={"indexes": (("size",),)})
