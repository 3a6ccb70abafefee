from __future__ import annotations

import logging

import pytest

import kiln
from kiln.docs import init_app, install, openapi_document
from tests.docs.conftest import example_config, get_json

SAMPLE_ROUTES = (
    "/things/search",
    "/things/1",
    "/broken",
    "/more-broken",
    "/not-a-model",
    "/bad-models",
    "/no-module",
    "/import-error",
    "/missing-dependency",
    "/no-attribute",
    "/undocumented",
    "/blank",
    "/typed/1.5/a",
)


def apis(body):
    return {api["path"]: api["operations"] for api in body["apis"]}


# --------------------------------------------------------------------------
# Clay's /_docs
# --------------------------------------------------------------------------


def test_clays_docs_have_clays_shape(sample_app):
    body = get_json(sample_app, "/_docs")
    assert body["apiVersion"] == "0.2"
    assert body["swaggerVersion"] == "1.2"
    assert body["basePath"] == ""  # no http_host nor trusted_hosts: relative
    assert body["resourcePath"] == "/"
    paths = [api["path"] for api in body["apis"]]
    assert paths == sorted(paths)
    assert "/_docs" in paths
    assert "/static/<path:filename>" not in paths


def test_clays_docs_base_path_comes_from_the_setting_or_the_request(make_docs_app):
    app = make_docs_app(docs={"base_path": "https://api.example.com"})
    assert get_json(app, "/_docs")["basePath"] == "https://api.example.com"
    app = make_docs_app(http_scheme="https", http_host="svc.example.com")
    assert get_json(app, "/_docs")["basePath"] == "https://svc.example.com"


def test_the_manuals_example_is_documented_with_required_and_its_model(sample_app):
    body = get_json(sample_app, "/_docs")
    (search,) = apis(body)["/things/search"]
    assert search["method"] == "GET"
    assert search["nickname"] == "search"
    assert search["summary"] == "Search for things"
    assert search["notes"].startswith("This is an example")
    keywords, limit = search["parameters"]
    assert keywords == {
        "name": "keywords",
        "description": "A whitespace delimited list of keywords to be included in the search. "
        "The implicit boolean AND is applied to all terms.",
        "required": True,
        "dataType": "string",
        "type": "primitive",
        "allowMultiple": False,
        "paramType": "query",
    }
    assert limit["required"] is False
    assert search["responseMessages"] == search["responseMessage"]
    assert [m["code"] for m in search["responseMessages"]] == [200, 400, 404]
    assert search["responseClass"] == "tests.docs.things.protocol.SearchResults"
    model = body["models"]["tests.docs.things.protocol.SearchResults"]
    assert model["id"] == "tests.docs.things.protocol.SearchResults"
    assert model["required"] == ["count", "results"]  # not nested under properties (Clay's bug)
    assert model["properties"]["results"]["items"] == {
        "$ref": "tests.docs.things.protocol.SearchResult"
    }
    assert "tests.docs.things.protocol.SearchResult" in body["models"]


def test_every_directive_appears_in_clays_docs(sample_app):
    (create,) = apis(get_json(sample_app, "/_docs"))["/things/<int:thing_id>"]
    kinds = [(p["name"], p["paramType"], p["type"], p["dataType"]) for p in create["parameters"]]
    assert kinds == [
        ("thing_id", "path", "primitive", "string"),
        ("colour", "form", "primitive", "string"),
        ("size", "form", "primitive", "integer"),
        ("label", "body", "primitive", "string"),
        ("extra", "body", "complex", "object"),
        ("Authorization", "header", "primitive", "string"),
    ]
    assert create["responseClass"] == "tests.docs.things.deep.models.Other"


def test_operations_come_in_a_fixed_order(sample_app):
    operations = apis(get_json(sample_app, "/_docs"))["/broken"]
    assert [op["method"] for op in operations] == ["GET", "POST", "DELETE"]


def test_undocumented_views_say_so(sample_app):
    operations = apis(get_json(sample_app, "/_docs"))
    for path in ("/undocumented", "/blank"):
        (op,) = operations[path]
        assert (op["summary"], op["notes"]) == ("Undocumented", "Undocumented")
        assert op["parameters"] == []
        assert op["responseMessages"] == []
    (rtype_only,) = operations["/no-module"]
    assert (rtype_only["summary"], rtype_only["notes"]) == ("Undocumented", "")


def test_malformed_docstrings_are_warnings_never_errors(sample_app):
    body = get_json(sample_app, "/_docs")
    operations = apis(body)
    for path in (
        "/broken",
        "/more-broken",
        "/not-a-model",
        "/no-module",
        "/import-error",
        "/missing-dependency",
        "/no-attribute",
    ):
        assert operations[path][0]["warnings"], path
        assert "responseClass" not in operations[path][0] or path == "/more-broken"
    assert '/broken: line 4: metadata {"required": tru} is not valid JSON' in "\n".join(
        body["warnings"]
    )
    assert any(w.startswith("model tests.docs.things.protocol.Dangling") for w in body["warnings"])


def test_resource_endpoints_point_to_the_openapi_document(example_app):
    operations = apis(get_json(example_app, "/_docs"))
    collection = operations["/v1/mushrooms"]
    assert [op["method"] for op in collection] == ["GET", "POST", "DELETE"]
    assert collection[0]["summary"] == "The mushroom collection: records."
    assert "/v<N>/__api__" in collection[0]["notes"]
    (get, _put, _patch, _delete) = operations["/v1/mushrooms/<id>"]
    assert get["summary"] == "The mushroom record: one record."
    assert "/v1/batch" in operations


def test_the_sample_routes_really_answer(sample_app):
    client = sample_app.test_client()
    for path in SAMPLE_ROUTES:
        method = "POST" if path == "/things/1" else "GET"
        assert client.open(path, method=method).status_code < 300, path


# --------------------------------------------------------------------------
# The OpenAPI view
# --------------------------------------------------------------------------


def test_the_documents_server_is_the_services_absolute_url(make_docs_app):
    app = make_docs_app(http_scheme="https", http_host="svc.example.com")
    assert get_json(app, "/v1/__api__")["servers"] == [{"url": "https://svc.example.com"}]
    assert get_json(app, "/v1/__api__", base_url="http://localhost/mount")["servers"] == [
        {"url": "https://svc.example.com/mount"}
    ]


def test_the_document_is_built_once_then_again_after_a_reload(example_app):
    first = openapi_document(example_app)
    assert openapi_document(example_app) is first
    from kiln.application import kiln_config

    kiln_config(example_app).set("mushroom.record_delete_enabled", False)
    second = openapi_document(example_app)
    assert second is not first
    assert "delete" not in second["paths"]["/v1/mushrooms/{id}"]
    assert "delete" in get_json(example_app, "/v1/__api__")["paths"]["/v1/mushrooms"]


def test_warnings_are_logged_when_the_document_is_built(sample_app, caplog):
    with caplog.at_level(logging.WARNING, logger="kiln.docs"):
        get_json(sample_app, "/v1/__api__")
        get_json(sample_app, "/v1/__api__")
    messages = [r.getMessage() for r in caplog.records if r.name == "kiln.docs"]
    assert messages
    assert len(messages) == len(set(messages))  # built once: logged once


# --------------------------------------------------------------------------
# Enabling
# --------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/_docs", "/v1/__api__", "/docs", "/docs/assets/kiln-docs.js"])
def test_docs_enabled_false_turns_everything_off(tmp_path, path):
    app = kiln.create_app(
        example_config(tmp_path, docs={"enabled": False}), configure_logging=False
    )
    response = app.test_client().get(path)
    assert response.status_code == 404
    assert response.json["errno"] == 111
    assert response.json["message"] == "API documentation is disabled here."


def test_install_alone_serves_the_document_and_the_page_but_not_clays_docs(tmp_path):
    tree = example_config(tmp_path)
    tree["views"] = ["examples.mushrooms.views", "tests.docs.install_only"]
    app = kiln.create_app(tree, configure_logging=False)
    client = app.test_client()
    assert client.get("/v1/__api__").status_code == 200
    assert client.get("/docs").status_code == 200
    assert client.get("/_docs").status_code == 404


def test_installing_twice_changes_nothing(example_app):
    rules = len(list(example_app.url_map.iter_rules()))
    install(example_app)
    init_app(example_app)
    assert len(list(example_app.url_map.iter_rules())) == rules


# --------------------------------------------------------------------------
# The page and its files
# --------------------------------------------------------------------------


def test_the_page_loads_swagger_ui_from_the_service(make_docs_app):
    app = make_docs_app(project={"name": "<Mush & Room>"})
    response = app.test_client().get("/docs", base_url="http://localhost/mount")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "<title>&lt;Mush &amp; Room&gt; — API documentation</title>" in page
    assert 'data-spec="/mount/v1/__api__"' in page
    assert 'src="/mount/docs/assets/swagger-ui-bundle.js"' in page
    assert "http" not in page.replace("http-equiv", "")  # nothing from elsewhere


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
        ("swagger-ui.css", "text/css; charset=utf-8"),
        ("favicon-32x32.png", "image/png"),
        ("kiln-docs.js", "text/javascript; charset=utf-8"),
    ],
)
def test_the_pages_files_are_served_with_their_content_types(example_app, name, content_type):
    response = example_app.test_client().get(f"/docs/assets/{name}")
    try:
        assert response.status_code == 200
        assert response.headers["Content-Type"] == content_type
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert len(response.data) > 100
    finally:
        response.close()


@pytest.mark.parametrize("name", ["index.html", "..%2F__init__.py", "swagger-ui.js"])
def test_other_files_are_not_served(example_app, name):
    response = example_app.test_client().get(f"/docs/assets/{name}")
    assert response.status_code == 404
    assert response.json["errno"] == 111
