from __future__ import annotations

import flask
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.exceptions import BadRequest, HTTPException, Unauthorized
from werkzeug.routing import RequestRedirect

from kiln import create_app
from kiln.config import Configuration
from kiln.errors import ERRORS, HTTPError, error_body, http_error, json_response
from kiln.exceptions import BackendError

ENVELOPE_KEYS = {"code", "errno", "error", "message", "info", "details"}


def init_app(app):
    @app.route("/v1/boom", methods=["GET"])
    def boom():
        raise ZeroDivisionError("secret internals: password=hunter2")

    @app.route("/v1/backend", methods=["GET"])
    def backend():
        raise BackendError("connection refused", original=OSError("db down"))

    @app.route("/v1/backend-bare", methods=["GET"])
    def backend_bare():
        raise BackendError()

    @app.route("/v1/precondition", methods=["GET"])
    def precondition():
        raise HTTPError(
            412,
            ERRORS.MODIFIED_MEANWHILE,
            "Resource was modified meanwhile.",
            details={"existing": {"id": "a"}},
            headers={"ETag": '"123"'},
        )

    @app.route("/v1/werkzeug/<int:code>", methods=["GET"])
    def werkzeug_abort(code):
        flask.abort(code)

    @app.route("/v1/unauthorized", methods=["GET"])
    def unauthorized():
        raise Unauthorized(www_authenticate=None)

    @app.route("/v1/bad", methods=["GET"])
    def bad():
        raise BadRequest("<p>Missing <b>thing</b>.</p>")

    @app.route("/v1/moved", methods=["GET"])
    def moved():
        raise RequestRedirect("/v1/elsewhere")

    @app.route("/v1/echo", methods=["POST"])
    def echo():
        return {"size": len(flask.request.get_data())}


@pytest.fixture
def client():
    app = create_app(
        Configuration.from_mapping(
            {
                "views": [__name__],
                "retry_after_seconds": 7,
                "error_info_link": "https://help.example/errors",
                "request": {"max_body_bytes": 1000},
            }
        ),
        configure_logging=False,
    )
    return app.test_client()


def assert_envelope(response, code, errno):
    assert response.status_code == code
    assert response.mimetype == "application/json"
    body = response.json
    assert set(body) <= ENVELOPE_KEYS
    assert body["code"] == code
    assert body["errno"] == errno
    return body


def test_an_unexpected_exception_is_a_500_envelope_without_internals(client, caplog):
    response = client.get("/v1/boom")
    body = assert_envelope(response, 500, 999)
    assert body == {
        "code": 500,
        "errno": 999,
        "error": "Internal Server Error",
        "message": "A programmatic error occured, developers have been informed.",
        "info": "https://help.example/errors",
    }
    text = response.get_data(as_text=True)
    assert "Traceback" not in text
    assert "hunter2" not in text
    assert "ZeroDivisionError" in caplog.text


@pytest.mark.parametrize(
    ("tree", "info"),
    [
        ({"project": {"docs": "https://bakery.example/help"}}, "https://bakery.example/help"),
        (
            {"project": {"docs": "https://bakery.example/help"}, "error_info_link": "mailto:x@y"},
            "mailto:x@y",
        ),
        ({}, None),
    ],
)
def test_a_500_links_the_services_own_help_or_nothing(tree, info):
    app = create_app(
        Configuration.from_mapping({"views": [__name__], **tree}), configure_logging=False
    )
    body = app.test_client().get("/v1/boom").json
    assert body.get("info") == info
    assert "github.com" not in str(body)


def test_a_backend_error_is_503_with_retry_after(client, caplog):
    response = client.get("/v1/backend")
    body = assert_envelope(response, 503, 201)
    assert response.headers["Retry-After"] == "7"
    assert "db down" not in response.get_data(as_text=True)
    assert body["message"].startswith("Service temporary unavailable")
    assert "connection refused" in caplog.text
    assert "OSError: db down" in caplog.text


def test_a_backend_error_without_a_cause_logs_no_traceback(client, caplog):
    assert_envelope(client.get("/v1/backend-bare"), 503, 201)
    assert "Traceback" not in caplog.text


def test_http_error_carries_details_and_headers(client):
    response = client.get("/v1/precondition")
    body = assert_envelope(response, 412, 114)
    assert body["details"] == {"existing": {"id": "a"}}
    assert response.headers["ETag"] == '"123"'


@pytest.mark.parametrize(
    ("code", "errno"),
    [
        (400, 107),
        (401, 104),
        (403, 121),
        (404, 111),
        (406, 107),
        (409, 122),
        (410, 202),
        (411, 112),
        (412, 114),
        (415, 107),
        (418, 999),
        (429, 117),
        (431, 107),
        (501, 999),
        (503, 201),
    ],
)
def test_werkzeug_errors_become_envelopes(client, code, errno):
    response = client.get(f"/v1/werkzeug/{code}")
    body = assert_envelope(response, code, errno)
    assert "<" not in body.get("message", "")
    if code == 503:
        assert response.headers["Retry-After"] == "7"


def test_html_in_werkzeug_descriptions_is_stripped(client):
    body = assert_envelope(client.get("/v1/bad"), 400, 107)
    assert body["message"] == "Missing thing."


def test_an_exception_without_a_description_has_no_message(client):
    body = assert_envelope(client.get("/v1/unauthorized"), 401, 104)
    assert body["error"] == "Unauthorized"


def test_a_redirect_raised_by_a_view_stays_a_redirect(client):
    response = client.get("/v1/moved")
    assert response.status_code == 308
    assert response.headers["Location"].endswith("/v1/elsewhere")


def test_405_lists_the_allowed_methods(client):
    response = client.delete("/v1/")
    assert_envelope(response, 405, 115)
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}


def test_a_body_over_the_limit_is_413(client):
    response = client.post("/v1/echo", data=b"x" * 1001)
    body = assert_envelope(response, 413, 113)
    assert body["message"] == "The request body is too large."
    assert client.post("/v1/echo", data=b"x" * 1000).json == {"size": 1000}


def test_error_body_leaves_out_absent_fields():
    assert error_body(404) == {"code": 404, "errno": 111, "error": "Not Found"}
    assert error_body(599, message="m", info="i", details=[]) == {
        "code": 599,
        "errno": 999,
        "error": "Unknown Error",
        "message": "m",
        "info": "i",
        "details": [],
    }


def test_http_error_builds_without_raising():
    error = http_error(409, message="Conflict of field name on record a")
    assert isinstance(error, HTTPError)
    assert error.body == {
        "code": 409,
        "errno": 122,
        "error": "Conflict",
        "message": "Conflict of field name on record a",
    }
    assert str(error) == "Conflict of field name on record a"
    assert str(HTTPError(418)) == "I'm a teapot"


def test_json_response_sets_headers():
    app = create_app({}, configure_logging=False)
    with app.app_context():
        response = json_response({"a": 1}, 201, {"X-A": "b"})
    assert response.status_code == 201
    assert response.headers["X-A"] == "b"
    assert response.get_data() == b'{"a":1}'


METHODS = st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "BREW"])
PATHS = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40).map(
    lambda text: "/" + text
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(method=METHODS, path=PATHS, query=st.text(max_size=30))
def test_any_method_path_and_query_gets_no_5xx_and_errors_are_envelopes(
    client, method, path, query
):
    response = client.open(
        "/",
        method=method,
        environ_overrides={
            "PATH_INFO": path.encode().decode("latin-1"),
            "QUERY_STRING": query.encode().decode("latin-1"),
        },
    )
    failing_on_purpose = ("/v1/boom", "/v1/backend", "/v1/werkzeug/5")
    assert response.status_code < 500 or path.startswith(failing_on_purpose)
    if response.status_code >= 400 and method != "HEAD":
        assert set(response.json) <= ENVELOPE_KEYS
        assert response.json["code"] == response.status_code


class NotModifiedHere(HTTPException):
    code = 304


class Teapot(HTTPException):
    code = 418
    description = None


def test_a_non_error_http_exception_keeps_its_status():
    app = create_app({}, configure_logging=False)
    app.add_url_rule("/v1/nm", "nm", lambda: (_ for _ in ()).throw(NotModifiedHere()))
    app.add_url_rule("/v1/tea", "tea", lambda: (_ for _ in ()).throw(Teapot()))
    client = app.test_client()
    assert client.get("/v1/nm").status_code == 304
    body = assert_envelope(client.get("/v1/tea"), 418, 999)
    assert "message" not in body


def test_the_body_limit_follows_a_config_change():
    config = Configuration.from_mapping({"views": [__name__], "request": {"max_body_bytes": 10}})
    client = create_app(config, configure_logging=False).test_client()
    assert client.post("/v1/echo", data=b"x" * 11).status_code == 413
    config.set("request.max_body_bytes", 20)
    assert client.post("/v1/echo", data=b"x" * 11).json == {"size": 11}
