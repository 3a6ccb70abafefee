from __future__ import annotations

import pytest
from openapi_spec_validator import validate

import kiln
from kiln.auth import AuthenticationPolicy
from kiln.docs.openapi import ApiInfo, ResourceEndpoints, Route, _under, build_openapi
from kiln.resource import registrations
from tests.docs.conftest import SECRET, example_config, get_json

API = "/v1/__api__"


def names(parameters):
    return [p.get("name") or p["$ref"].rsplit("/", 1)[-1] for p in parameters]


class BearerPolicy(AuthenticationPolicy):
    name = "bearer"

    def __init__(self, config):
        pass

    def authenticated_userid(self, headers):
        return None

    def openapi_security_scheme(self):
        return {"type": "http", "scheme": "bearer"}


class SilentPolicy(BearerPolicy):
    name = "silent"

    def openapi_security_scheme(self):
        return super(BearerPolicy, self).openapi_security_scheme()


# --------------------------------------------------------------------------
# The documents validate
# --------------------------------------------------------------------------


def test_the_example_services_document_is_valid_openapi_3_1(example_app):
    document = get_json(example_app, API)
    validate(document)
    assert document["openapi"] == "3.1.0"
    assert document["info"]["title"] == "mushrooms"
    assert "x-kiln-warnings" not in document


def test_a_service_with_nested_schemaless_private_and_shareable_resources_is_valid(sample_app):
    document = get_json(sample_app, API)
    validate(document)
    paths = document["paths"]
    assert "/v1/shelves/{shelf_id}/boxes/{box_id}/items/{id}" in paths
    assert "/v1/notes" in paths


@pytest.mark.parametrize(
    "settings",
    [
        {"readonly": True},
        {"auth": {"policies": ["accounts"]}},
        {"auth": {"policies": ["tests.docs.test_openapi.BearerPolicy"]}},
        {"mushroom": {"record_get_enabled": False, "collection_post_enabled": False}},
    ],
)
def test_the_document_stays_valid_under_other_settings(tmp_path, settings):
    app = kiln.create_app(example_config(tmp_path, **settings), configure_logging=False)
    document = get_json(app, API)
    validate(document)
    assert document["openapi"].startswith("3.1")


# --------------------------------------------------------------------------
# Resources
# --------------------------------------------------------------------------


def test_a_resource_has_its_collection_and_record_operations(example_app):
    paths = get_json(example_app, API)["paths"]
    assert sorted(paths["/v1/mushrooms"]) == ["delete", "get", "head", "post"]
    assert sorted(paths["/v1/mushrooms/{id}"]) == [
        "delete",
        "get",
        "head",
        "parameters",
        "patch",
        "put",
    ]
    assert paths["/v1/mushrooms/{id}"]["get"]["operationId"] == "mushroom_get"
    (id_parameter,) = paths["/v1/mushrooms/{id}"]["parameters"]
    assert id_parameter["required"] is True
    assert id_parameter["schema"]["pattern"].startswith("^[0-9a-f]{8}")


def test_the_list_has_filters_sort_limit_token_fields_since_and_before(example_app):
    get = get_json(example_app, API)["paths"]["/v1/mushrooms"]["get"]
    parameters = names(get["parameters"])
    for expected in (
        "name",
        "not_name",
        "in_name",
        "exclude_name",
        "min_cap_cm",
        "gt_cap_cm",
        "like_name",
        "has_edible",
        "contains_tags",
        "contains_any_tags",
        "last_modified",
        "gt_last_modified",
        "_sort",
        "_fields",
        "Limit",
        "Token",
        "Since",
        "Before",
        "To",
        "IfMatch",
        "IfNoneMatch",
    ):
        assert expected in parameters
    assert "like_edible" not in parameters  # booleans are not strings
    assert "min_tags" not in parameters  # nor arrays numbers
    assert "has_id" not in parameters  # reserved fields are always present
    by_name = {p.get("name"): p for p in get["parameters"]}
    assert by_name["edible"]["schema"] == {"type": "boolean"}
    assert by_name["in_cap_cm"]["schema"] == {"type": "array", "items": {"type": "number"}}
    assert by_name["in_cap_cm"]["explode"] is False
    assert "-cap_cm" in by_name["_sort"]["schema"]["items"]["enum"]
    assert by_name["_fields"]["schema"]["items"]["enum"] == [
        "id",
        "last_modified",
        "cap_cm",
        "edible",
        "name",
        "tags",
    ]
    assert by_name["contains_tags"]["content"]["application/json"]["schema"]["type"] == "array"
    assert "filters" not in by_name  # a closed schema names every field


def test_list_responses_have_etag_next_page_and_total_records_headers(example_app):
    document = get_json(example_app, API)
    responses = document["paths"]["/v1/mushrooms"]["get"]["responses"]
    headers = responses["200"]["headers"]
    assert headers["ETag"]["required"] is True
    assert set(headers) == {"ETag", "Last-Modified", "Next-Page", "Total-Records"}
    assert responses["304"] == {"$ref": "#/components/responses/NotModified"}
    assert responses["default"] == {"$ref": "#/components/responses/Error"}
    assert responses["412"] == {"$ref": "#/components/responses/PreconditionFailed"}
    head = document["paths"]["/v1/mushrooms"]["head"]["responses"]["200"]
    assert "Total-Records" in head["headers"]
    assert "content" not in head


def test_records_are_the_resources_schema_with_kilns_fields(example_app):
    schemas = get_json(example_app, API)["components"]["schemas"]
    record = schemas["Mushroom"]
    assert record["required"] == ["id", "last_modified"]  # _fields may trim the rest
    assert record["additionalProperties"] is False
    assert set(record["properties"]) == {
        "name",
        "edible",
        "cap_cm",
        "tags",
        "id",
        "last_modified",
        "deleted",
    }
    assert schemas["MushroomInput"]["required"] == ["name"]
    assert "deleted" not in schemas["MushroomInput"]["properties"]
    assert "required" not in schemas["MushroomChanges"]
    assert "required" not in schemas["MushroomFields"]
    assert record["description"].startswith("A mushroom species")


def test_writes_have_bodies_in_the_data_envelope(example_app):
    paths = get_json(example_app, API)["paths"]
    post = paths["/v1/mushrooms"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["data"] == {"$ref": "#/components/schemas/MushroomInput"}
    assert body["additionalProperties"] is False
    assert set(post["responses"]) >= {"200", "201", "400", "409", "412", "415"}
    patch = paths["/v1/mushrooms/{id}"]["patch"]
    assert set(patch["requestBody"]["content"]) == {
        "application/json",
        "application/merge-patch+json",
        "application/json-patch+json",
    }
    assert "ResponseBehavior" in names(patch["parameters"])
    assert patch["responses"]["200"]["content"]["application/json"]["schema"]["properties"][
        "data"
    ] == {"$ref": "#/components/schemas/MushroomFields"}
    delete = paths["/v1/mushrooms/{id}"]["delete"]
    assert names(delete["parameters"]) == ["last_modified", "IfMatch"]


def test_creates_link_to_the_record_and_to_nested_collections(example_app):
    paths = get_json(example_app, API)["paths"]
    links = paths["/v1/mushrooms"]["post"]["responses"]["201"]["links"]
    assert links["mushroom_get"]["parameters"] == {"id": "$response.body#/data/id"}
    assert links["sighting_list"]["parameters"] == {"mushroom_id": "$response.body#/data/id"}
    nested = paths["/v1/mushrooms/{mushroom_id}/sightings"]["post"]["responses"]["201"]["links"]
    assert nested["sighting_delete"]["parameters"] == {
        "mushroom_id": "$request.path.mushroom_id",
        "id": "$response.body#/data/id",
    }


def test_nested_resources_answer_404_for_a_missing_parent(example_app):
    paths = get_json(example_app, API)["paths"]
    assert "404" in paths["/v1/mushrooms/{mushroom_id}/sightings"]["get"]["responses"]
    assert "404" not in paths["/v1/mushrooms"]["get"]["responses"]


def test_the_batch_endpoint_and_the_error_envelope_are_described(example_app):
    document = get_json(example_app, API)
    batch = document["paths"]["/v1/batch"]["post"]
    assert batch["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/KilnBatch"
    }
    schemas = document["components"]["schemas"]
    assert schemas["KilnBatch"]["properties"]["requests"]["maxItems"] == 25
    assert schemas["KilnError"]["required"] == ["code", "errno", "error"]


def test_open_and_schemaless_resources_take_any_filter(sample_app):
    paths = get_json(sample_app, API)["paths"]
    for path in ("/v1/shelves/{shelf_id}/boxes", "/v1/sensors"):
        parameters = {p.get("name"): p for p in paths[path]["get"]["parameters"]}
        assert parameters["filters"]["schema"]["type"] == "object"
        assert "enum" not in parameters["_sort"]["schema"]["items"]


def test_field_types_choose_the_filters(sample_app):
    parameters = names(
        get_json(sample_app, API)["paths"]["/v1/shelves/{shelf_id}/boxes/{box_id}/items"]["get"][
            "parameters"
        ]
    )
    assert "contains_tags" in parameters
    assert "tags" not in parameters
    assert "has_dims" in parameters
    assert "dims" not in parameters
    assert "like_dims" not in parameters
    assert "like_kind" in parameters
    assert "contains_kind" in parameters


def test_private_resources_require_credentials_and_shareable_ones_carry_permissions(sample_app):
    document = get_json(sample_app, API)
    assert document["components"]["securitySchemes"]["basicauth"]["scheme"] == "basic"
    assert document["security"] == [{}, {"basicauth": []}]
    paths = document["paths"]
    assert paths["/v1/notes"]["get"]["security"] == [{"basicauth": []}]
    assert "security" not in paths["/v1/shelves"]["get"]
    assert "401" in paths["/v1/shelves"]["get"]["responses"]
    body = paths["/v1/shelves"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["permissions"] == {"$ref": "#/components/schemas/KilnPermissions"}
    assert "permissions" in paths["/v1/shelves/{id}"]["patch"]["description"]


def test_resource_schemas_keep_their_definitions_in_their_own_component(sample_app):
    schemas = get_json(sample_app, API)["components"]["schemas"]
    assert schemas["Pet"]["properties"]["owner"] == {"$ref": "#/components/schemas/Pet/$defs/Owner"}
    assert schemas["PetInput"]["properties"]["owner"] == {
        "$ref": "#/components/schemas/PetInput/$defs/Owner"
    }
    assert "required" not in schemas["Pet"]["$defs"]["Owner"]  # responses may be partial
    assert schemas["PetInput"]["$defs"]["Owner"]["required"] == ["name"]
    reading = schemas["Reading"]
    assert "$id" not in reading
    assert "dependentRequired" not in reading
    assert reading["properties"]["value"]["anyOf"][1] == {
        "$ref": "#/components/schemas/Reading/$defs/Missing"
    }
    assert schemas["ReadingInput"]["dependentRequired"] == {"value": ["anything"]}


def test_a_resource_named_like_a_kiln_schema_gets_another_name(sample_app):
    document = get_json(sample_app, API)
    assert "KilnErrorResource" in document["components"]["schemas"]
    assert document["components"]["schemas"]["KilnError"]["required"] == ["code", "errno", "error"]
    assert sorted(document["paths"]["/v1/kiln-errors"]) == ["get", "post"]
    assert sorted(document["paths"]["/v1/kiln-errors/{id}"]) == ["delete", "get", "parameters"]


def test_readonly_services_document_reads_only(tmp_path):
    app = kiln.create_app(example_config(tmp_path, readonly=True), configure_logging=False)
    paths = get_json(app, API)["paths"]
    assert sorted(paths["/v1/mushrooms"]) == ["get", "head"]
    assert sorted(paths["/v1/mushrooms/{id}"]) == ["get", "head", "parameters"]


def test_an_endpoint_with_every_method_disabled_is_left_out(tmp_path):
    sighting = {f"collection_{verb}_enabled": False for verb in ("get", "post", "delete")}
    app = kiln.create_app(
        example_config(tmp_path, sighting=sighting, mushroom={"collection_get_enabled": False}),
        configure_logging=False,
    )
    paths = get_json(app, API)["paths"]
    assert "/v1/mushrooms/{mushroom_id}/sightings" not in paths
    assert "/v1/mushrooms/{mushroom_id}/sightings/{id}" in paths
    assert sorted(paths["/v1/mushrooms"]) == ["delete", "post"]


@pytest.mark.parametrize(
    ("child", "parent", "mapping"),
    [
        ("/a/<a_id>/b", "/a/<id>", {"a_id": "id"}),
        ("/a/<x>/b/<y>/c", "/a/<p>/b/<id>", {"x": "p", "y": "id"}),
        ("/a/<a_id>/b", "/c/<id>", None),
        ("/a/b/c", "/a/<id>", None),
        ("/a/<a_id>/b/c", "/a/<id>", None),
    ],
)
def test_a_collection_is_under_a_record_when_its_path_continues_it(child, parent, mapping):
    assert _under(child, parent) == mapping


def test_disabled_endpoints_are_left_out(tmp_path):
    disabled = {f"record_{verb}_enabled": False for verb in ("get", "put", "patch", "delete")}
    app = kiln.create_app(
        example_config(tmp_path, mushroom={**disabled, "collection_delete_enabled": False}),
        configure_logging=False,
    )
    paths = get_json(app, API)["paths"]
    assert "/v1/mushrooms/{id}" not in paths
    assert sorted(paths["/v1/mushrooms"]) == ["get", "head", "post"]
    links = paths["/v1/mushrooms"]["post"]["responses"]["201"]["links"]
    assert sorted(links) == [
        "sighting_count",
        "sighting_create",
        "sighting_delete_all",
        "sighting_list",
    ]
    assert "sighting_list" in paths["/v1/mushrooms/{mushroom_id}/sightings"]["get"]["operationId"]


# --------------------------------------------------------------------------
# Security schemes
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policies", "schemes"),
    [
        ([], None),
        (["accounts"], {"account": "basic"}),
        (
            ["tests.docs.test_openapi.BearerPolicy", "tests.docs.test_openapi.SilentPolicy"],
            {"bearer": "bearer"},
        ),
    ],
)
def test_security_schemes_come_from_the_authentication_policies(tmp_path, policies, schemes):
    app = kiln.create_app(
        example_config(tmp_path, auth={"policies": policies, "userid_hmac_secret": SECRET}),
        configure_logging=False,
    )
    document = get_json(app, API)
    found = document.get("components", {}).get("securitySchemes")
    if schemes is None:
        assert found is None
        assert "security" not in document
    else:
        assert {name: scheme["scheme"] for name, scheme in found.items()} == schemes


# --------------------------------------------------------------------------
# Plain routes
# --------------------------------------------------------------------------


def test_plain_routes_are_described_from_their_docstrings(sample_app):
    paths = get_json(sample_app, API)["paths"]
    search = paths["/things/search"]["get"]
    assert search["summary"] == "Search for things"
    assert search["description"].startswith("This is an example of a search endpoint")
    keywords, limit = search["parameters"]
    assert (keywords["name"], keywords["in"], keywords["required"]) == ("keywords", "query", True)
    assert limit["required"] is False
    assert search["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/tests.docs.things.protocol.SearchResults"
    }
    assert "content" not in search["responses"]["404"]
    assert search["responses"]["default"] == {"$ref": "#/components/responses/Error"}


def test_forms_bodies_headers_and_path_converters_are_described(sample_app):
    paths = get_json(sample_app, API)["paths"]
    create = paths["/things/{thing_id}"]["post"]
    thing_id, authorization = create["parameters"]
    assert thing_id == {
        "name": "thing_id",
        "in": "path",
        "required": True,
        "description": "Which thing.",
        "schema": {"type": "integer"},
    }
    assert authorization["in"] == "header"
    content = create["requestBody"]["content"]
    form = content["application/x-www-form-urlencoded"]["schema"]
    assert form["required"] == ["colour"]
    assert form["properties"]["size"]["type"] == "integer"
    body = content["application/json"]["schema"]
    assert body["properties"]["label"]["description"] == "A label, continued on an indented line."
    assert body["properties"]["extra"]["type"] == "object"
    assert "required" not in body
    assert create["requestBody"]["required"] is True
    assert "201" in create["responses"]
    assert "200" not in create["responses"]
    typed = paths["/typed/{number}/{kind}"]["get"]
    number, kind, flag, count = typed["parameters"]
    assert number["schema"] == {"type": "number"}
    assert kind["schema"] == {"type": "string"}
    assert flag["schema"] == {"type": "boolean"}
    assert count["schema"] == {"type": "integer"}
    assert set(typed["responses"]) == {"302", "default"}


def test_undocumented_routes_still_appear(sample_app):
    paths = get_json(sample_app, API)["paths"]
    assert paths["/undocumented"]["get"]["responses"]["200"] == {"description": "Success."}
    assert "summary" not in paths["/blank"]["get"]


def test_docstring_problems_are_warnings_in_the_document(sample_app):
    document = get_json(sample_app, API)
    warnings = document["x-kiln-warnings"]
    assert (
        "GET POST DELETE /broken: line 3: ':query' lacks its closing ':'; write ':query "
        "keywords: A missing colon'." in warnings
    )
    assert any(w.startswith("GET /no-module: ':rtype: things.protocol") for w in warnings)
    assert any(w.startswith("model tests.docs.things.protocol.Dangling:") for w in warnings)
    broken = document["paths"]["/broken"]
    assert broken["get"]["operationId"] == "broken_get"
    assert broken["post"]["x-kiln-warnings"] == broken["get"]["x-kiln-warnings"]
    assert "content" not in document["paths"]["/not-a-model"]["get"]["responses"]["200"]


def test_the_manuals_models_become_components(sample_app):
    schemas = get_json(sample_app, API)["components"]["schemas"]
    results = schemas["tests.docs.things.protocol.SearchResults"]
    assert results["properties"]["results"]["items"] == {
        "$ref": "#/components/schemas/tests.docs.things.protocol.SearchResult"
    }


# --------------------------------------------------------------------------
# The builder alone
# --------------------------------------------------------------------------


def test_the_builder_needs_no_app():
    document = build_openapi(
        ApiInfo(title="t", version="1", prefix="/v2", batch=False),
        [Route("/only-head", "x", ("HEAD", "OPTIONS")), Route("/a", "kiln.a", ("GET",), "A.")],
    )
    validate(document)
    assert document["paths"] == {
        "/a": {
            "get": {
                "tags": ["service"],
                "operationId": "kiln_a",
                "summary": "A.",
                "responses": {
                    "200": {"description": "Success."},
                    "default": {"$ref": "#/components/responses/Error"},
                },
            }
        }
    }
    assert "externalDocs" not in document
    assert "description" not in document["info"]


def test_operation_ids_stay_unique():
    document = build_openapi(
        ApiInfo(title="t", version="1", prefix="/v1", batch=False),
        [Route("/a", "x.y", ("GET",)), Route("/b", "x_y", ("GET",)), Route("/c", "!!", ("GET",))],
    )
    ids = sorted(item["get"]["operationId"] for item in document["paths"].values())
    assert ids == ["route", "x_y", "x_y_2"]


def test_resources_given_to_the_builder_are_described():
    mushroom = registrations("examples.mushrooms.views")[0]
    document = build_openapi(
        ApiInfo(title="t", version="1", prefix="/v1", batch=False, docs_url="https://d"),
        resources=[ResourceEndpoints(mushroom, ("GET", "POST"), ())],
    )
    validate(document)
    assert list(document["paths"]) == ["/v1/mushrooms"]
    assert "links" not in document["paths"]["/v1/mushrooms"]["post"]["responses"]["201"]
    assert document["externalDocs"] == {"url": "https://d"}
