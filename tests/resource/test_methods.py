from __future__ import annotations

import pytest

from tests.resource.conftest import Caller, assert_error, create, new_id


@pytest.mark.parametrize(
    ("setting", "method", "path"),
    [
        ("collection_get_enabled", "GET", "/notes"),
        ("collection_get_enabled", "HEAD", "/notes"),
        ("collection_post_enabled", "POST", "/notes"),
        ("record_patch_enabled", "PATCH", "/notes/{id}"),
        ("record_delete_enabled", "DELETE", "/notes/{id}"),
    ],
)
def test_a_disabled_endpoint_answers_405(build_app, mode, setting, method, path):
    app = build_app({"note": {setting: False}})
    call = Caller(app.test_client(), mode)
    record = create(Caller(build_app().test_client(), "direct"), "/notes", {})
    body = {"data": {}} if method in ("POST", "PATCH") else None
    args = (body,) if body is not None else ()
    rv = call(method, path.format(id=record["id"]), *args)
    assert rv.status == 405
    if method != "HEAD":
        assert rv.body["errno"] == 115
    assert call("GET", f"/notes/{record['id']}").status == 404


def test_readonly_refuses_writes_and_serves_reads(build_app, mode):
    call = Caller(build_app({"readonly": True}).test_client(), mode)
    for method, path in [
        ("POST", "/notes"),
        ("PUT", f"/notes/{new_id()}"),
        ("PATCH", f"/notes/{new_id()}"),
        ("DELETE", f"/notes/{new_id()}"),
        ("DELETE", "/notes"),
    ]:
        body = ({"data": {}},) if method in ("POST", "PUT", "PATCH") else ()
        assert_error(call(method, path, *body), 405, 115)
    assert call("GET", "/notes").status == 200
    assert call("HEAD", "/notes").status == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [("DELETE", "/reports"), ("PUT", "/reports/{id}"), ("DELETE", "/reports/{id}")],
)
def test_restricted_methods_answer_405_with_allow(call, method, path):
    rv = call(method, path.format(id=new_id()), *(({"data": {}},) if method == "PUT" else ()))
    assert_error(rv, 405, 115)
    allowed = {m.strip() for m in rv.headers["Allow"].split(",")}
    assert allowed >= {"GET", "HEAD"}
    assert "DELETE" not in allowed


def test_restricted_methods_still_serve_the_others(call):
    created = call("POST", "/reports", {"data": {"a": 1}})
    assert created.status == 201
    assert call("GET", f"/reports/{created.data['id']}").data == created.data
