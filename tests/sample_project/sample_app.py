from __future__ import annotations

from kiln.testing import TEST_USER


def test_the_app_is_built_from_the_test_config(app):
    assert app.extensions["kiln"].config.get("project.name") == "sample"


def test_the_client_calls_the_views_of_the_app(app, client):
    hello = client.get(app.extensions["kiln"].api_prefix + "/").get_json()
    assert hello["project_name"] == "sample"
    assert client.get("/__heartbeat__").get_json() == {"database": True}


def test_auth_headers_authenticate_the_test_user(client, auth_headers):
    assert client.get("/whoami", headers=auth_headers).get_json() == {"user": TEST_USER}
    assert client.get("/whoami").get_json() == {"user": None}
