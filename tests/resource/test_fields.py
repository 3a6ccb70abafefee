from __future__ import annotations

from tests.resource.conftest import assert_error, create


def test_fields_select_dotted_fields_on_lists_and_records(caller, mushrooms):
    rv = caller.both("GET", "/mushrooms?_fields=size,author.name&name=Death Cap")
    record = mushrooms[3]
    expected = {
        "id": record["id"],
        "last_modified": record["last_modified"],
        "size": 7,
        "author": {"name": "bo"},
    }
    assert rv.data == [expected]
    assert (
        caller.both("GET", f"/mushrooms/{record['id']}?_fields=size,author.name").data == expected
    )


def test_fields_on_a_schemaless_resource_leave_unknown_fields_out(caller):
    record = create(caller, "/notes", {"a": 1})
    rv = caller.both("GET", f"/notes/{record['id']}?_fields=nope")
    assert rv.data == {"id": record["id"], "last_modified": record["last_modified"]}


def test_fields_naming_an_unknown_root_of_a_strict_schema_answer_400(caller):
    record = create(caller, "/stricts", {"title": "t"})
    assert_error(caller.both("GET", f"/stricts/{record['id']}?_fields=nope"), 400, 107)
