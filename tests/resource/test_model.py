from __future__ import annotations

import contextlib
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kiln._sqlite import SQLiteDatabase
from kiln.errors import HTTPError
from kiln.resource import UUID4, Slug
from kiln.resource.model import (
    JSON,
    JSON_PATCH,
    MERGE_PATCH,
    Change,
    Model,
    NotModified,
    Page,
    Preconditions,
    apply_patch,
    response_data,
)
from kiln.resource.query import QueryError, encode_token, pagination_context, parse_query
from kiln.resource.schema import Schema
from kiln.resource.unit_of_work import CONFLICT_ATTEMPTS, run
from kiln.storage import WriteConflict
from kiln.storage.memory import MemoryStorage
from kiln.storage.sqlite import SQLiteStorage

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": ["string", "null"]},
        "size": {"type": "integer"},
        "edible": {"type": "boolean"},
        "author": {"type": "object"},
        "tags": {},
        "title": {},
        "labels": {},
    },
    "additionalProperties": False,
}


@contextlib.contextmanager
def open_storage(kind, path=":memory:"):
    if kind == "memory":
        yield MemoryStorage()
        return
    storage = SQLiteStorage(SQLiteDatabase(path))
    storage.initialize_schema()
    try:
        yield storage
    finally:
        storage.close()


@pytest.fixture(params=["memory", "sqlite"])
def storage(request, tmp_path):
    with open_storage(request.param, str(tmp_path / "kiln.sqlite")) as rv:
        yield rv


def make_model(
    storage,
    schema=None,
    *,
    generator=Slug,
    name="mushroom",
    parent="",
    unique=(),
    readonly=(),
    process=None,
    unit=None,
):
    made = generator()
    return Model(
        storage=storage,
        resource_name=name,
        parent_id=parent,
        schema=Schema.compile(schema, name),
        id_generator=made,
        id_pattern=made.pattern,
        unique_fields=tuple(unique),
        readonly_fields=tuple(readonly),
        process_record=process,
        unit=unit,
    )


@pytest.fixture
def model(storage):
    return make_model(storage, SCHEMA, unique=("name",), readonly=("edible",))


def query(*params, **kwargs):
    return parse_query(params, is_known_field=lambda field: True, **kwargs)


def raises_http(status, errno=None):
    class Checker:
        def __enter__(self):
            self.raises = pytest.raises(HTTPError)
            self.info = self.raises.__enter__()
            return self.info

        def __exit__(self, *exc):
            handled = self.raises.__exit__(*exc)
            assert self.info.value.status == status, self.info.value.body
            if errno is not None:
                assert self.info.value.errno == errno
            return handled

    return Checker()


def stamp(record):
    return record["last_modified"]


# -- create ------------------------------------------------------------------


def test_create_generates_an_id_and_records_the_change(storage):
    model = make_model(storage, generator=UUID4)
    record, created = model.create({"name": "a"})
    assert created
    assert UUID4().match(record["id"])
    assert record == {"id": record["id"], "last_modified": stamp(record), "name": "a"}
    assert model.changes == [Change("create", record, None)]
    assert model.timestamp() == stamp(record)


def test_create_keeps_a_given_id(model):
    record, created = model.create({"id": "amanita", "name": "a"})
    assert (record["id"], created) == ("amanita", True)
    assert model.get("amanita") == record


def test_create_with_an_existing_id_answers_the_existing_record_unchanged(model):
    existing, _ = model.create({"id": "a", "name": "first"})
    record, created = model.create({"id": "a", "name": "second"})
    assert (record, created) == (existing, False)
    assert model.get("a")["name"] == "first"
    assert len(model.changes) == 1


@pytest.mark.parametrize("object_id", [3.14, 12, "a b", "", "-a", "a\n", None])
def test_create_with_an_invalid_id_is_400(model, object_id):
    if object_id is None:
        assert model.create({"id": None})[1]  # no id: one is generated
        return
    with raises_http(400, 107) as info:
        model.create({"id": object_id})
    assert info.value.details[0]["location"] == "path"


def test_create_with_a_unique_value_held_answers_the_holder(model):
    holder, _ = model.create({"name": "boletus"})
    record, created = model.create({"name": "boletus", "size": 3})
    assert (record, created) == (holder, False)
    with raises_http(412, 114) as info:
        model.create({"name": "boletus"}, Preconditions(if_none_match="*"))
    assert info.value.details == {"existing": holder}


def test_unique_fields_ignore_nulls(model):
    assert model.create({"name": None})[1]
    assert model.create({"name": None})[1]


def test_create_with_if_none_match_star_on_an_existing_id_is_412(model):
    existing, _ = model.create({"id": "a"})
    with raises_http(412, 114) as info:
        model.create({"id": "a"}, Preconditions(if_none_match="*"))
    assert info.value.details == {"existing": existing}


def test_a_tombstone_does_not_count_as_existing_on_create(model):
    model.create({"id": "a", "size": 1})
    model.delete("a")
    record, created = model.create({"id": "a", "size": 2}, Preconditions(if_none_match="*"))
    assert created
    assert record["size"] == 2


def test_create_with_if_match_checks_the_collection_timestamp(model):
    first, _ = model.create({"name": "a"})
    assert model.create({"name": "b"}, Preconditions(if_match=stamp(first)))[1]
    with raises_http(412, 114) as info:
        model.create({"name": "c"}, Preconditions(if_match=stamp(first)))
    assert info.value.details == {}


def test_create_with_if_match_and_an_id_checks_that_record_or_the_collection(model):
    existing, _ = model.create({"id": "a"})
    model.create({"id": "b"})
    assert model.create({"id": "a"}, Preconditions(if_match=stamp(existing))) == (existing, False)
    with raises_http(412):
        model.create({"id": "a"}, Preconditions(if_match=stamp(existing) - 1))
    with raises_http(412) as info:
        model.create({"id": "new"}, Preconditions(if_match=stamp(existing)))
    assert info.value.details == {}
    assert model.create({"id": "new"}, Preconditions(if_match=model.timestamp()))[1]


def test_create_validates_the_record(model):
    with raises_http(400, 107) as info:
        model.create({"name": 3, "color": "red"})
    assert [d["name"] for d in info.value.details] == ["data.color", "data.name"]
    assert info.value.message == "data.color in body: This field is not allowed."
    assert model.storage.list_all("mushroom", "") == []


def test_create_keeps_a_forced_last_modified_later_than_the_collection(model):
    record, _ = model.create({"last_modified": 2_000_000_000_000})
    assert stamp(record) == 2_000_000_000_000
    assert model.timestamp() == 2_000_000_000_000


def test_process_record_sees_new_and_old_on_create_and_update(storage):
    seen = []

    def process(new, old):
        seen.append((dict(new), old))
        return {**new, "size": len(seen)}

    model = make_model(storage, process=process)
    record, _ = model.create({"id": "a", "name": "x"})
    assert record["size"] == 1
    assert seen[0] == ({"name": "x", "id": "a"}, None) or seen[0] == ({"name": "x"}, None)
    replaced, _ = model.replace("a", {"name": "y"})
    assert replaced["size"] == 2
    assert seen[1][1] == record
    patched, _ = model.patch("a", {"name": "z"})
    assert patched["size"] == 3
    assert seen[2][1] == replaced


# -- page --------------------------------------------------------------------


def test_page_returns_a_token_only_when_more_records_follow(model):
    for size in range(3):
        model.create({"size": size})
    first = model.page(query(("_sort", "size"), ("_limit", "2")))
    assert [r["size"] for r in first.records] == [0, 1]
    assert first.next_token is not None
    assert first.timestamp == model.timestamp()
    second = model.page(query(("_sort", "size"), ("_limit", "2"), ("_token", first.next_token)))
    assert [r["size"] for r in second.records] == [2]
    assert second.next_token is None
    exact = model.page(query(("_sort", "size"), ("_limit", "3")))
    assert exact.next_token is None


def test_page_without_limit_returns_everything(model):
    for size in range(3):
        model.create({"size": size})
    from kiln.resource.query import Query

    assert isinstance(model.page(Query()), Page)
    assert len(model.page(Query()).records) == 3


def test_page_honours_collection_preconditions(model):
    record, _ = model.create({})
    with pytest.raises(NotModified) as info:
        model.page(query(), Preconditions(if_none_match=stamp(record)))
    assert info.value.timestamp == stamp(record)
    assert model.page(query(), Preconditions(if_none_match=stamp(record) - 1)).records
    with raises_http(412, 114):
        model.page(query(), Preconditions(if_match=stamp(record) - 1))
    assert model.page(query(), Preconditions(if_match=stamp(record))).records == [record]


def test_page_lists_tombstones_only_when_filtering_on_last_modified(model):
    model.create({"id": "a"})
    model.create({"id": "b"})
    tombstone = model.delete("a")
    assert [r["id"] for r in model.page(query()).records] == ["b"]
    since = model.page(query(("_since", "0"))).records
    assert tombstone in since
    assert len(since) == 2


@pytest.mark.parametrize(
    "elsewhere",
    [
        {"name": "champignon"},
        {"parent": "/buckets/b"},
        {"params": [("size", "1")]},
        {"params": [("_sort", "-size")]},
    ],
)
def test_a_token_of_another_collection_filter_or_sort_is_a_query_error(storage, elsewhere):
    origin = make_model(storage)
    other = make_model(
        storage, name=elsewhere.get("name", "mushroom"), parent=elsewhere.get("parent", "")
    )
    for model in {id(origin): origin, id(other): other}.values():
        for _ in range(3):
            model.create({"size": 1})
    token = origin.page(query(("_limit", "1"))).next_token
    params = elsewhere.get("params", [])
    with pytest.raises(QueryError, match="another collection, filter or sort"):
        other.page(query(*params, ("_limit", "1"), ("_token", token)))


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.sampled_from([0.5, -1.5, 2.0])
    | st.sampled_from(["", "a", "B", "é", "a b"])
)
field_values = json_scalars | st.lists(st.integers(0, 2), max_size=2) | st.just({"x": 1})
records = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "a": field_values,
            "b": st.integers(0, 2),
            "n": st.fixed_dictionaries({}, optional={"c": json_scalars}),
        },
    ),
    max_size=12,
)
sorts = st.lists(
    st.sampled_from(
        ["a", "-a", "b", "-b", "n.c", "-n.c", "id", "-id", "last_modified", "-last_modified"]
    ),
    max_size=3,
    unique=True,
)


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["memory", "sqlite"]),
    records,
    sorts,
    st.integers(1, 5),
    st.sampled_from([[], [("b", "1")], [("has_a", "true")], [("not_b", "0")]]),
)
def test_following_tokens_returns_every_record_exactly_once_in_order(
    kind, data, sort, size, filters
):
    with open_storage(kind) as storage:
        model = make_model(storage)
        for item in data:
            model.create(item)
        params = [*filters, ("_sort", ",".join(sort))] if sort else list(filters)
        expected = model.page(query(*params)).records
        seen = []
        token = None
        for _ in range(len(data) + 2):
            extra = [("_token", token)] if token else []
            page = model.page(query(*params, ("_limit", str(size)), *extra))
            assert len(page.records) <= size
            seen.extend(page.records)
            token = page.next_token
            if token is None:
                break
        assert token is None
        assert seen == expected
        assert len({r["id"] for r in seen}) == len(seen) == model.count(query(*filters))


def test_count_counts_live_matching_records(model):
    model.create({"id": "a", "size": 1})
    model.create({"id": "b", "size": 2})
    model.create({"id": "c", "size": 2})
    model.delete("c")
    assert model.count(query()) == 2
    assert model.count(query(("size", "2"))) == 1


# -- get ---------------------------------------------------------------------


def test_get_of_a_missing_record_is_404_errno_110(model):
    with raises_http(404, 110) as info:
        model.get("nope")
    assert info.value.details == {"id": "nope"}


def test_get_of_a_deleted_record_is_404(model):
    model.create({"id": "a"})
    model.delete("a")
    with raises_http(404, 110):
        model.get("a")


def test_get_of_an_invalid_id_is_400(model):
    with raises_http(400, 107):
        model.get("not valid")


def test_get_with_if_none_match_answers_not_modified(model):
    record, _ = model.create({"id": "a"})
    for match in (stamp(record), stamp(record) + 1, "*"):
        with pytest.raises(NotModified) as info:
            model.get("a", Preconditions(if_none_match=match))
        assert info.value.timestamp == stamp(record)
    assert model.get("a", Preconditions(if_none_match=stamp(record) - 1)) == record


def test_get_with_a_stale_if_match_is_412(model):
    record, _ = model.create({"id": "a"})
    assert model.get("a", Preconditions(if_match=stamp(record))) == record
    with raises_http(412, 114) as info:
        model.get("a", Preconditions(if_match=stamp(record) + 1))
    assert info.value.details == {"existing": record}
    with raises_http(412, 114) as info:
        model.get("missing", Preconditions(if_match=stamp(record)))
    assert info.value.details == {}


# -- replace -----------------------------------------------------------------


def test_replace_creates_then_replaces(model):
    created, is_new = model.replace("a", {"name": "x", "size": 1})
    assert is_new
    replaced, is_new = model.replace("a", {"name": "y"})
    assert not is_new
    assert replaced == {"id": "a", "last_modified": stamp(replaced), "name": "y"}
    assert stamp(replaced) > stamp(created)
    assert model.changes == [Change("create", created, None), Change("update", replaced, created)]


def test_replace_of_a_tombstone_recreates_it(model):
    model.create({"id": "a"})
    model.delete("a")
    record, created = model.replace("a", {"size": 1}, Preconditions(if_none_match="*"))
    assert created
    assert model.changes[-1].action == "create"
    assert [r for r in model.page(query(("_since", "0"))).records if r["id"] == "a"] == [record]


def test_replace_with_if_none_match_star_on_an_existing_record_is_412(model):
    existing, _ = model.replace("a", {})
    with raises_http(412, 114) as info:
        model.replace("a", {"size": 1}, Preconditions(if_none_match="*"))
    assert info.value.details == {"existing": existing}


def test_replace_with_if_match(model):
    with raises_http(412):
        model.replace("a", {}, Preconditions(if_match=1))
    existing, _ = model.replace("a", {})
    with raises_http(412):
        model.replace("a", {}, Preconditions(if_match=stamp(existing) - 1))
    record, created = model.replace("a", {"size": 2}, Preconditions(if_match=stamp(existing)))
    assert (record["size"], created) == (2, False)


def test_replace_with_another_id_in_the_body_is_400(model):
    with raises_http(400, 107) as info:
        model.replace("a", {"id": "b"})
    assert info.value.message == "Record id does not match existing record."
    assert model.replace("a", {"id": "a"})[1]


def test_replace_refuses_to_change_readonly_fields(model):
    model.replace("a", {"edible": True})
    with raises_http(400, 107) as info:
        model.replace("a", {"edible": False})
    assert info.value.message == "Cannot modify edible."
    assert info.value.details[0]["name"] == "data.edible"
    assert model.replace("a", {"edible": True, "size": 1})[0]["size"] == 1


def test_replace_breaking_a_unique_field_is_409(model):
    holder, _ = model.replace("a", {"name": "x"})
    with raises_http(409, 122) as info:
        model.replace("b", {"name": "x"})
    assert info.value.details == {"field": "name", "existing": holder}


def test_replace_ignores_a_forced_timestamp_not_after_the_record(model):
    existing, _ = model.replace("a", {})
    record, _ = model.replace("a", {"last_modified": stamp(existing) - 10})
    assert stamp(record) > stamp(existing)
    forced, _ = model.replace("a", {"last_modified": stamp(record) + 1000})
    assert stamp(forced) == stamp(record) + 1000


# -- patch -------------------------------------------------------------------


@pytest.fixture
def mushroom(model):
    record, _ = model.create(
        {"id": "a", "name": "x", "author": {"name": "ann", "age": 3}, "tags": ["a", "b"]}
    )
    return record


def test_json_patch_replaces_top_level_values(model, mushroom):
    record, old = model.patch("a", {"author": {"name": "bo"}, "size": 2}, JSON)
    assert old == mushroom
    assert record["author"] == {"name": "bo"}
    assert record["size"] == 2
    assert record["tags"] == ["a", "b"]
    assert stamp(record) > stamp(mushroom)
    assert model.changes[-1] == Change("update", record, mushroom)


def test_merge_patch_merges_nested_objects_and_removes_nulls(model, mushroom):
    record, _ = model.patch(
        "a", {"author": {"age": None, "city": "x"}, "tags": ["c"], "name": None}, MERGE_PATCH
    )
    assert record["author"] == {"name": "ann", "city": "x"}
    assert record["tags"] == ["c"]
    assert "name" not in record


def test_merge_patch_replaces_a_non_object_with_an_object(model, mushroom):
    record, _ = model.patch("a", {"tags": {"x": {"y": 1, "z": None}}}, MERGE_PATCH)
    assert record["tags"] == {"x": {"y": 1}}


@pytest.mark.parametrize(
    ("operations", "changes"),
    [
        ([{"op": "add", "path": "/data/size", "value": 3}], {"size": 3}),
        (
            [{"op": "replace", "path": "/data/author/name", "value": "bo"}],
            {"author": {"name": "bo", "age": 3}},
        ),
        ([{"op": "remove", "path": "/data/tags/0"}], {"tags": ["b"]}),
        ([{"op": "add", "path": "/data/tags/-", "value": "c"}], {"tags": ["a", "b", "c"]}),
        (
            [
                {"op": "test", "path": "/data/name", "value": "x"},
                {"op": "add", "path": "/data/size", "value": 1},
            ],
            {"size": 1},
        ),
        (
            [{"op": "move", "from": "/data/name", "path": "/data/title"}],
            {"name": None, "title": "x"},
        ),
        ([{"op": "copy", "from": "/data/tags", "path": "/data/labels"}], {"labels": ["a", "b"]}),
        (
            [{"op": "replace", "path": "/data", "value": {"name": "new"}}],
            {"name": "new", "author": None, "tags": None},
        ),
    ],
)
def test_json_patch_applies_rfc_6902_operations_on_data(model, mushroom, operations, changes):
    record, _ = model.patch("a", operations, JSON_PATCH)
    expected = {**mushroom, **changes}
    expected = {k: v for k, v in expected.items() if v is not None}
    assert {k: v for k, v in record.items() if k != "last_modified"} == {
        k: v for k, v in expected.items() if k != "last_modified"
    }


@pytest.mark.parametrize(
    "operations",
    [
        {"op": "add"},
        [["add"]],
        [{"op": "add", "path": "/permissions/read", "value": []}],
        [{"op": "add", "path": "/datas", "value": 1}],
        [{"op": "add", "path": "/data~1x", "value": 1}],
        [{"op": "add", "path": 3, "value": 1}],
        [{"op": "move", "from": "/other", "path": "/data/x"}],
        [{"op": "test", "path": "/data/name", "value": "other"}],
        [{"op": "remove", "path": "/data/missing"}],
        [{"op": "replace", "path": "/data/author/none/deeper", "value": 1}],
        [{"op": "frobnicate", "path": "/data/name"}],
        [{"op": ["add"], "path": "/data/name"}],
        [{"path": "/data/name"}],
        [{"op": "add", "path": "/data/name"}],
        [{"op": "remove", "path": "/data"}],
        [{"op": "replace", "path": "/data", "value": [1]}],
        [{"op": "add", "path": "/data/tags/9", "value": 1}],
    ],
)
def test_a_json_patch_that_does_not_apply_is_400(model, mushroom, operations):
    with raises_http(400, 107) as info:
        model.patch("a", operations, JSON_PATCH)
    assert info.value.details[0]["location"] == "body"
    assert model.get("a") == mushroom


@pytest.mark.parametrize("media_type", [JSON, MERGE_PATCH])
@pytest.mark.parametrize("body", [[1], "x", None])
def test_an_object_patch_that_is_not_an_object_is_400(model, mushroom, media_type, body):
    with raises_http(400, 107) as info:
        model.patch("a", body, media_type)
    assert info.value.message == "data must be an object."


@pytest.mark.parametrize(
    ("body", "media_type"),
    [
        ({"name": "x"}, JSON),
        ({}, JSON),
        ({"last_modified": 1}, JSON),
        ({"missing": None}, MERGE_PATCH),
        ({"author": {"name": "ann"}}, MERGE_PATCH),
        ([{"op": "test", "path": "/data/name", "value": "x"}], JSON_PATCH),
        ([], JSON_PATCH),
    ],
)
def test_a_patch_that_changes_nothing_keeps_the_timestamp_and_records_no_change(
    model, mushroom, body, media_type
):
    changes = list(model.changes)
    record, old = model.patch("a", body, media_type)
    assert record == old == mushroom
    assert model.timestamp() == stamp(mushroom)
    assert model.changes == changes


@pytest.mark.parametrize(("before", "after"), [(1, True), (0, False), (True, 1.0)])
def test_a_patch_changing_a_value_to_an_equal_python_value_of_another_type_is_written(
    storage, before, after
):
    model = make_model(storage)
    model.create({"id": "a", "v": before})
    record, _ = model.patch("a", {"v": after})
    assert type(record["v"]) is type(after)
    assert type(model.get("a")["v"]) is type(after)


def test_patch_keeps_a_forced_last_modified_later_than_the_record(model, mushroom):
    forced = stamp(mushroom) + 1000
    record, _ = model.patch("a", {"size": 1, "last_modified": forced})
    assert stamp(record) == forced


def test_patch_of_a_missing_record_is_404_or_412_with_if_match(model):
    with raises_http(404, 110):
        model.patch("nope", {"size": 1})
    with raises_http(412, 114):
        model.patch("nope", {"size": 1}, preconditions=Preconditions(if_match=1))


def test_patch_with_a_stale_if_match_is_412(model, mushroom):
    with raises_http(412, 114) as info:
        model.patch("a", {"size": 1}, preconditions=Preconditions(if_match=stamp(mushroom) - 1))
    assert info.value.details == {"existing": mushroom}
    record, _ = model.patch("a", {"size": 1}, preconditions=Preconditions(if_match=stamp(mushroom)))
    assert record["size"] == 1


@pytest.mark.parametrize(
    ("body", "media_type"),
    [
        ({"id": "b"}, JSON),
        ({"id": "b"}, MERGE_PATCH),
        ([{"op": "replace", "path": "/data/id", "value": "b"}], JSON_PATCH),
    ],
)
def test_patch_changing_the_id_is_400(model, mushroom, body, media_type):
    with raises_http(400, 107) as info:
        model.patch("a", body, media_type)
    assert info.value.message == "Record id does not match existing record."


def test_patch_removing_the_id_keeps_it(model, mushroom):
    record, _ = model.patch("a", {"id": None, "size": 1}, MERGE_PATCH)
    assert record["id"] == "a"


def test_patch_validates_the_merged_record_and_readonly_fields(model, mushroom):
    with raises_http(400, 107):
        model.patch("a", {"size": "big"})
    with raises_http(400, 107) as info:
        model.patch("a", {"edible": True})
    assert info.value.message == "Cannot modify edible."


# -- response_data -----------------------------------------------------------


def test_response_behavior_full_answers_the_record():
    record = {"id": "a", "last_modified": 1, "x": 1, "y": 2}
    assert response_data("full", record, {"x": 1}, {}) is record


def test_response_behavior_light_answers_the_fields_sent():
    record = {"id": "a", "last_modified": 1, "x": 1, "y": 2}
    assert response_data("light", record, {"x": 1, "gone": None}, {}) == {"x": 1}


def test_response_behavior_diff_answers_sent_fields_the_server_changed():
    record = {"id": "a", "last_modified": 1, "x": 2, "y": 3, "z": None}
    assert response_data("diff", record, {"x": 1, "y": 3}, {}) == {"x": 2}


def test_response_behavior_diff_leaves_out_fields_not_sent():
    record = {"id": "a", "last_modified": 1, "x": 1, "untouched": "kept"}
    assert response_data("diff", record, {"x": 1}, {}) == {}


def test_response_behavior_diff_answers_a_value_the_server_changed_to_another_type():
    record = {"id": "a", "last_modified": 1, "x": True}
    assert response_data("diff", record, {"x": 1}, {}) == {"x": True}


# -- delete ------------------------------------------------------------------


def test_delete_leaves_a_tombstone_and_records_the_change(model, mushroom):
    tombstone = model.delete("a")
    assert tombstone == {"id": "a", "last_modified": stamp(tombstone), "deleted": True}
    assert stamp(tombstone) > stamp(mushroom)
    assert model.changes[-1] == Change("delete", tombstone, mushroom)
    with raises_http(404, 110):
        model.delete("a")


def test_delete_of_a_missing_record_is_404_or_412_with_if_match(model):
    with raises_http(404, 110):
        model.delete("nope")
    with raises_http(412, 114):
        model.delete("nope", Preconditions(if_match=1))


def test_delete_with_if_match(model, mushroom):
    with raises_http(412, 114) as info:
        model.delete("a", Preconditions(if_match=stamp(mushroom) + 1))
    assert info.value.details == {"existing": mushroom}
    assert model.delete("a", Preconditions(if_match=stamp(mushroom)))["deleted"]


def test_delete_keeps_a_forced_last_modified_only_after_the_record(model, mushroom):
    later = model.delete("a", last_modified=stamp(mushroom) + 500)
    assert stamp(later) == stamp(mushroom) + 500
    record, _ = model.create({"id": "b"})
    ignored = model.delete("b", last_modified=stamp(record) - 1)
    assert stamp(ignored) > stamp(record)


def test_delete_all_deletes_the_matching_records(model):
    kept, _ = model.create({"id": "a", "size": 1})
    doomed = [model.create({"id": i, "size": 2})[0] for i in "bc"]
    tombstones = model.delete_all(query(("size", "2")))
    assert sorted(t["id"] for t in tombstones) == ["b", "c"]
    assert all(t["deleted"] for t in tombstones)
    assert model.page(query()).records == [kept]
    deletions = [c for c in model.changes if c.action == "delete"]
    assert sorted((c.new["id"], c.old["id"]) for c in deletions) == [("b", "b"), ("c", "c")]
    assert {c.old["id"]: c.old for c in deletions} == {r["id"]: r for r in doomed}


def test_delete_all_checks_if_match_against_the_collection(model, mushroom):
    with raises_http(412, 114):
        model.delete_all(query(), Preconditions(if_match=stamp(mushroom) - 1))
    assert [
        t["id"] for t in model.delete_all(query(), Preconditions(if_match=stamp(mushroom)))
    ] == ["a"]


# -- races -------------------------------------------------------------------


class Interleaved(MemoryStorage):
    """A memory storage where another writer changes record ``a`` just before
    the next ``times`` flushes."""

    def __init__(self, times=1, change=None):
        super().__init__()
        self.times = times
        self.change = change or (
            lambda storage: MemoryStorage.update(storage, "mushroom", "", "a", {"size": 99})
        )

    def apply(self, writes, *, commit=False):
        if self.times:
            self.times -= 1
            # Another writer, committing in a thread (and transaction) of its own.
            writer = threading.Thread(target=self.change, args=(self,))
            writer.start()
            writer.join()
        return super().apply(writes, commit=commit)


def in_unit(storage, work):
    return run(
        storage, None, lambda unit: work(make_model(storage, unit=unit)), transient_retries=0
    )


def test_a_patch_that_loses_a_race_runs_again_on_the_new_record():
    storage = Interleaved()
    MemoryStorage.create(storage, "mushroom", "", {"id": "a", "size": 1, "name": "x"})
    record, old = in_unit(storage, lambda model: model.patch("a", {"name": "y"}))
    assert (record["size"], record["name"], old["size"]) == (99, "y", 99)
    assert storage.get("mushroom", "", "a") == record


def test_a_patch_with_if_match_that_loses_a_race_is_412():
    storage = Interleaved()
    created = MemoryStorage.create(storage, "mushroom", "", {"id": "a", "size": 1})
    with raises_http(412, 114) as info:
        in_unit(
            storage,
            lambda model: model.patch(
                "a", {"size": 2}, preconditions=Preconditions(if_match=stamp(created))
            ),
        )
    assert info.value.details["existing"]["size"] == 99


def test_a_record_that_keeps_changing_is_409_after_every_attempt():
    storage = Interleaved(times=CONFLICT_ATTEMPTS)
    MemoryStorage.create(storage, "mushroom", "", {"id": "a", "size": 1})
    with raises_http(409, 122):
        in_unit(storage, lambda model: model.replace("a", {"size": 2}))
    assert storage.times == 0


def test_a_record_created_meanwhile_is_replaced_by_the_next_attempt():
    storage = Interleaved(
        change=lambda s: MemoryStorage.create(s, "mushroom", "", {"id": "a", "size": 7})
    )
    record, created = in_unit(storage, lambda model: model.replace("a", {"size": 2}))
    assert (record["size"], created) == (2, False)


def test_a_delete_whose_record_vanished_meanwhile_is_404():
    storage = Interleaved(change=lambda s: MemoryStorage.delete(s, "mushroom", "", "a"))
    MemoryStorage.create(storage, "mushroom", "", {"id": "a"})
    with raises_http(404, 110):
        in_unit(storage, lambda model: model.delete("a"))


def test_a_model_on_its_own_writes_at_once_and_leaves_conflicts_to_its_caller():
    storage = Interleaved()
    MemoryStorage.create(storage, "mushroom", "", {"id": "a", "size": 1})
    model = make_model(storage)
    with pytest.raises(WriteConflict):
        model.patch("a", {"size": 2})
    assert storage.get("mushroom", "", "a")["size"] == 99


# -- apply_patch -------------------------------------------------------------


def test_apply_patch_never_mutates_the_existing_record():
    existing = {"a": {"b": [1]}}
    apply_patch(existing, {"a": {"c": 1}}, MERGE_PATCH)
    apply_patch(existing, [{"op": "add", "path": "/data/a/b/-", "value": 2}], JSON_PATCH)
    patched = apply_patch(existing, {"x": 1}, JSON)
    patched["a"]["b"].append(3)
    assert existing == {"a": {"b": [1]}}


forged_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=3),
    lambda children: (
        st.lists(children, max_size=2) | st.dictionaries(st.text(max_size=2), children, max_size=2)
    ),
    max_leaves=4,
)


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(["memory", "sqlite"]),
    st.dictionaries(st.sampled_from(["a", "n", "id", "last_modified"]), forged_values),
    st.sampled_from([[], [("_sort", "a")], [("_sort", "-n.c")]]),
)
def test_a_forged_token_with_any_values_pages_without_error(kind, last, params):
    with open_storage(kind) as storage:
        model = make_model(storage)
        model.create({"a": 1, "n": {"c": "x"}})
        model.create({"a": "b"})
        sorting = query(*params).sorting
        token = encode_token(last, sorting, pagination_context("mushroom", "", (), sorting))
        page = model.page(query(*params, ("_limit", "1"), ("_token", token)))
        assert len(page.records) <= 1
