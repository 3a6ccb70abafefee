from __future__ import annotations

import pytest

from kiln import database


def test_a_row_written_through_the_app(client, db_transaction):
    response = client.post("/user/create", data={"email": "carol@example.com"})
    assert response.status_code == 201
    userid = response.get_json()["id"]
    assert client.get(f"/user/{userid}").get_json() == {"email": "carol@example.com"}


def test_is_gone_in_the_next_test(db_transaction):
    with database.read as db:
        assert db.execute("SELECT COUNT(*) FROM users").fetchone() == (0,)


def test_load_fixtures_inserts_rows_in_the_transaction(load_fixtures, client):
    loaded = load_fixtures("alice", "bob")
    assert loaded["alice"] == [{"id": 1, "email": "alice@example.com"}]
    assert client.get("/user/2").get_json() == {"email": "bob@example.com"}


def test_fixtures_are_gone_in_the_next_test(db_transaction):
    assert db_transaction.execute("SELECT COUNT(*) FROM users").fetchone() == (0,)


def test_a_project_can_add_fixture_loaders(load_fixtures):
    assert load_fixtures("answer") == {"answer": 42}


@pytest.mark.kiln_fixtures("bob")
def test_the_marker_loads_fixtures(client):
    assert client.get("/user/2").get_json() == {"email": "bob@example.com"}


class TestWithFixtures:
    fixtures = ("alice", "burnt-toast", "nobody")
    nobody = "taken"

    def test_class_fixtures_are_loaded_and_set_on_the_test(self, client):
        assert self.alice == [{"id": 1, "email": "alice@example.com"}]
        assert self.nobody == "taken"
        assert client.get("/user/3").get_json() == {"email": "burnt@example.com"}

    @pytest.mark.kiln_fixtures("bob")
    def test_a_marker_adds_to_the_class_fixtures(self, client):
        assert client.get("/user/1").status_code == 200
        assert client.get("/user/2").status_code == 200
