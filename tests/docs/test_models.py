from __future__ import annotations

import importlib

import pytest

from kiln.docs._models import Models, resolve_object
from tests.docs.things import protocol
from tests.docs.things.deep import models as deep

THINGS = "tests.docs.things"


def test_a_name_two_packages_down_resolves_unlike_clay():
    assert resolve_object(f"{THINGS}.deep.models.Other") is deep.Other


def test_attributes_after_the_module_are_followed():
    assert resolve_object(f"{THINGS}.deep.models.Pet.model_json_schema") == (
        deep.Pet.model_json_schema
    )


@pytest.mark.parametrize(
    ("dotted", "problem"),
    [
        ("notdotted", "is not a dotted name"),
        ("a..b", "is not a dotted name"),
        ("kiln_docs_no_such.module.Thing", "no module 'kiln_docs_no_such' can be imported"),
        (f"{THINGS}.protocol.Nothing", "'tests.docs.things.protocol' has no attribute 'Nothing'"),
        (f"{THINGS}.broken.Model", "RuntimeError: this module cannot be imported"),
        (f"{THINGS}.needs_missing.Model", "No module named 'kiln_docs_tests_no_such_module'"),
    ],
)
def test_what_cannot_be_resolved_says_why(dotted, problem):
    with pytest.raises(LookupError, match=problem.replace(".", r"\.").replace("(", r"\(")):
        resolve_object(dotted)


def test_a_module_not_found_without_a_name_is_skipped():
    def importer(name):
        if name == "pkg":
            return protocol
        raise ModuleNotFoundError("no name given")

    assert resolve_object("pkg.SearchResult.copy", importer)() == protocol.SearchResult


def test_the_manuals_models_resolve_with_their_references_beside_them():
    models = Models()
    assert models.reference(f"{THINGS}.protocol.SearchResults") == (
        f"#/components/schemas/{THINGS}.protocol.SearchResults"
    )
    results = models.schemas[f"{THINGS}.protocol.SearchResults"]
    assert results["title"] == "SearchResults"
    assert "id" not in results
    assert results["properties"]["results"]["items"] == {
        "$ref": f"#/components/schemas/{THINGS}.protocol.SearchResult"
    }
    assert models.schemas[f"{THINGS}.protocol.SearchResult"]["required"] == ["name", "rank", "link"]
    assert models.warnings == []


def test_clays_flavour_keeps_ids_and_refers_by_dotted_name():
    models = Models(ref_prefix="")
    assert (
        models.reference(f"{THINGS}.protocol.SearchResults") == f"{THINGS}.protocol.SearchResults"
    )
    results = models.schemas[f"{THINGS}.protocol.SearchResults"]
    assert results["id"] == "SearchResults"
    assert results["properties"]["results"]["items"] == {"$ref": f"{THINGS}.protocol.SearchResult"}


def test_a_mapping_of_properties_becomes_an_object_schema():
    models = Models()
    models.reference(f"{THINGS}.protocol.Greeting")
    assert models.schemas[f"{THINGS}.protocol.Greeting"] == {
        "type": "object",
        "properties": {"greeting": {"type": "string"}, "shouting": {"type": "boolean"}},
    }


def test_a_pydantic_like_model_gives_its_schema_with_pointers_moved_into_its_component():
    models = Models()
    models.reference(f"{THINGS}.deep.models.Other")
    pet = models.schemas[f"{THINGS}.deep.models.Pet"]
    assert pet["properties"]["owner"] == {
        "$ref": f"#/components/schemas/{THINGS}.deep.models.Pet/$defs/Owner"
    }


def test_an_unresolvable_reference_inside_a_model_is_unconstrained_and_warned():
    models = Models()
    assert models.reference(f"{THINGS}.protocol.Dangling") is not None
    nxt = models.schemas[f"{THINGS}.protocol.Dangling"]["properties"]["next"]
    assert "$ref" not in nxt
    assert "cannot be resolved" in nxt["description"]
    assert models.warnings == [
        f"model {THINGS}.protocol.Dangling: '$ref {THINGS}.protocol.Nowhere' cannot be "
        f"resolved: '{THINGS}.protocol' has no attribute 'Nowhere'."
    ]


def test_an_object_that_is_no_model_is_a_problem_remembered():
    models = Models()
    assert models.reference(f"{THINGS}.protocol.NOT_A_MODEL") is None
    assert "names an object of type int" in models.problems[f"{THINGS}.protocol.NOT_A_MODEL"]
    assert models.reference(f"{THINGS}.protocol.NOT_A_MODEL") is None


def test_a_model_is_resolved_once():
    calls = []

    def importer(name):
        calls.append(name)
        return importlib.import_module(name)

    models = Models(importer=importer)
    models.reference(f"{THINGS}.protocol.SearchResult")
    models.reference(f"{THINGS}.protocol.SearchResult")
    assert calls == [f"{THINGS}.protocol"]


def test_a_self_referencing_model_resolves(monkeypatch):
    monkeypatch.setattr(
        protocol,
        "Tree",
        {"type": "object", "properties": {"child": {"$ref": "Tree"}}},
        raising=False,
    )
    models = Models()
    models.reference(f"{THINGS}.protocol.Tree")
    assert models.schemas[f"{THINGS}.protocol.Tree"]["properties"]["child"] == {
        "$ref": f"#/components/schemas/{THINGS}.protocol.Tree"
    }


def test_an_empty_dict_is_a_schema_accepting_anything(monkeypatch):
    monkeypatch.setattr(protocol, "Anything", {}, raising=False)
    models = Models()
    models.reference(f"{THINGS}.protocol.Anything")
    assert models.schemas[f"{THINGS}.protocol.Anything"] == {}
