from __future__ import annotations

import pytest

from kiln.errors import HTTPError
from kiln.exceptions import TransientBackendError
from kiln.permission.memory import MemoryPermission
from kiln.permission.redis import RedisPermission
from kiln.resource import Slug
from kiln.resource.model import Change, Model
from kiln.resource.query import parse_query
from kiln.resource.schema import Schema
from kiln.resource.unit_of_work import (
    CONFLICT_ATTEMPTS,
    EventSource,
    ReplacePermissions,
    UnitOfWork,
    current_unit,
    run,
    using,
)
from kiln.storage import ABSENT, Write, WriteConflict
from kiln.storage.memory import MemoryStorage
from kiln.storage.redis import RedisStorage


def model_in(unit, name="mushroom", parent="", payload=None):
    ids = Slug()
    return Model(
        storage=unit.storage,
        resource_name=name,
        parent_id=parent,
        schema=Schema.compile(None, name),
        id_generator=ids,
        id_pattern=ids.pattern,
        unit=unit,
        payload=payload or {"uri": f"/{name}s", "collection_uri": f"/{name}s"},
    )


@pytest.fixture
def storage():
    return MemoryStorage()


def test_writes_wait_for_the_flush_and_get_their_timestamp_there(storage):
    unit = UnitOfWork(storage, None)
    record, created = model_in(unit).create({"id": "a", "size": 1})
    assert created
    assert record["last_modified"] == 0
    assert storage.list_all("mushroom", "") == []
    unit.flush(commit=True)
    assert record["last_modified"] == storage.get("mushroom", "", "a")["last_modified"] > 0


def test_reading_a_collection_with_staged_writes_flushes_them_first(storage):
    unit = UnitOfWork(storage, None)
    model_in(unit).create({"id": "a"})
    model_in(unit, "note").page(_query())
    assert model_in(unit).find("b") is None
    assert unit.flushes == 0  # another collection, another record: nothing to flush
    assert model_in(unit).find("a")["id"] == "a"
    assert unit.flushes == 1
    model_in(unit).create({"id": "b"})
    assert sorted(r["id"] for r in model_in(unit).page(_query()).records) == ["a", "b"]
    assert unit.flushes == 2


def test_reading_permissions_flushes_only_the_changes_of_those_objects():
    unit = UnitOfWork(None, MemoryPermission())
    unit.stage_permissions(["/a"], lambda backend: backend.add_principal_to_ace("/a", "read", "u"))
    unit.reading_permissions(["/b"])
    assert unit.flushes == 0
    unit.reading_permissions(["/a", "/c"])
    assert unit.flushes == 1
    assert unit.permission.object_permissions("/a") == {"read": {"u"}}


def test_reading_any_permission_flushes_every_staged_change():
    unit = UnitOfWork(None, MemoryPermission())
    unit.reading_permissions(None)
    assert unit.flushes == 0
    unit.stage_permissions(["/a"], lambda backend: backend.add_principal_to_ace("/a", "read", "u"))
    unit.reading_permissions(None)
    assert unit.flushes == 1


def test_a_failed_sub_request_drops_what_it_staged(storage):
    unit = UnitOfWork(storage, MemoryPermission())
    model_in(unit).create({"id": "kept"})
    mark = unit.mark()
    model_in(unit).create({"id": "dropped"})
    unit.stage_permissions(["/x"], lambda backend: backend.add_principal_to_ace("/x", "read", "u"))
    unit.discard(mark)
    assert unit.pending
    unit.flush(commit=True)
    assert [r["id"] for r in storage.list_all("mushroom", "")] == ["kept"]
    assert unit.permission.object_permissions("/x") == {}


def test_a_flush_of_earlier_writes_inside_a_sub_request_can_still_be_undone(storage):
    unit = UnitOfWork(storage, None)
    model_in(unit).create({"id": "earlier"})
    mark = unit.mark()
    model_in(unit).page(_query())  # flushes "earlier", which is not the sub-request's
    model_in(unit).create({"id": "mine"})
    unit.discard(mark)
    unit.flush()
    assert [r["id"] for r in storage.list_all("mushroom", "")] == ["earlier"]


def test_undoing_writes_that_were_flushed_is_refused(storage):
    unit = UnitOfWork(storage, None)
    mark = unit.mark()
    model_in(unit).create({"id": "mine"})
    unit.flush()
    with pytest.raises(RuntimeError, match="cannot be undone"):
        unit.discard(mark)


def test_events_merge_the_applied_changes_per_collection_and_action(storage):
    unit = UnitOfWork(storage, None)
    first = model_in(
        unit, payload={"uri": "/mushrooms/a", "collection_uri": "/mushrooms", "mushroom_id": "a"}
    )
    first.create({"id": "a"})
    second = model_in(
        unit, payload={"uri": "/mushrooms/b", "collection_uri": "/mushrooms", "mushroom_id": "b"}
    )
    second.create({"id": "b"})
    unit.flush(commit=True)
    (event,) = unit.events()
    assert event.payload["action"] == "create"
    assert event.payload["uri"] == "/mushrooms"
    assert "mushroom_id" not in event.payload
    assert [i["new"]["id"] for i in event.impacted_records] == ["a", "b"]
    assert event.payload["timestamp"] == max(
        i["new"]["last_modified"] for i in event.impacted_records
    )


def test_a_change_without_a_source_sends_no_event(storage):
    unit = UnitOfWork(storage, None)
    write = Write("mushroom", "", "a", {}, ABSENT)
    result = {"id": "a", "last_modified": 0}
    unit.stage(write, result, Change("create", result, None), None)
    unit.flush()
    assert unit.events() == []


class Flaky(MemoryStorage):
    """Fails the next ``failures`` flushes with ``error``."""

    def __init__(self, error, failures):
        super().__init__()
        self.error = error
        self.failures = failures
        self.calls = 0

    def apply(self, writes, *, commit=False):
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise self.error
        return super().apply(writes, commit=commit)


def create_a(unit):
    return model_in(unit).create({"id": "a"})[0]


def test_a_unit_the_database_aborted_runs_again_then_gives_up(storage):
    flaky = Flaky(TransientBackendError("deadlock"), 2)
    assert run(flaky, None, create_a, transient_retries=2)["id"] == "a"
    assert flaky.calls == 3
    flaky = Flaky(TransientBackendError("deadlock"), 5)
    with pytest.raises(TransientBackendError):
        run(flaky, None, create_a, transient_retries=2)
    assert flaky.calls == 3


def test_a_unit_whose_writes_keep_conflicting_is_409():
    flaky = Flaky(WriteConflict(0), CONFLICT_ATTEMPTS + 5)
    with pytest.raises(HTTPError) as info:
        run(flaky, None, create_a, transient_retries=0)
    assert (info.value.status, info.value.errno) == (409, 122)
    assert flaky.calls == CONFLICT_ATTEMPTS


def test_without_transactions_a_unit_runs_again_only_if_no_earlier_flush_stays():
    flaky = Flaky(WriteConflict(1), 1)
    flaky.supports_transactions = False
    assert run(flaky, None, create_a, transient_retries=0)["id"] == "a"
    assert flaky.calls == 2
    flaky = Flaky(WriteConflict(0), 0)
    flaky.supports_transactions = False

    def flushes_early(unit):
        model_in(unit, "note").create({"id": "n"})
        unit.flush()
        flaky.failures = 1
        return create_a(unit)

    with pytest.raises(HTTPError) as info:
        run(flaky, None, flushes_early, transient_retries=0)
    assert info.value.status == 409
    assert flaky.calls == 2


def _creates_abc_while_a_rival_takes_c(storage, rival, runs, flush_early=False):
    def work(unit):
        runs.append(len(runs))
        model = model_in(unit)
        created = [model.create({"id": "a", "run": len(runs)})[1]]
        if flush_early:
            model.page(_query())
        created.append(model.create({"id": "b", "run": len(runs)})[1])
        created.append(model.create({"id": "c", "run": len(runs)})[1])
        if len(runs) == 1:
            rival.create("mushroom", "", {"id": "c", "rival": True})
        return created

    return run(storage, None, work, transient_retries=0)


def test_a_unit_whose_only_flush_conflicted_on_redis_runs_again_on_what_it_left(
    redis_connection, closing
):
    storage = closing(RedisStorage(redis_connection.url))
    runs = []
    assert _creates_abc_while_a_rival_takes_c(storage, storage, runs) == [True, True, False]
    assert runs == [0, 1]
    records = {r["id"]: r for r in storage.list_all("mushroom", "")}
    assert (records["a"]["run"], records["b"]["run"], records["c"]["rival"]) == (2, 2, True)


def test_a_unit_that_flushed_before_its_conflict_on_redis_is_409_and_keeps_that_flush(
    redis_connection, closing
):
    storage = closing(RedisStorage(redis_connection.url))
    runs = []
    with pytest.raises(HTTPError) as info:
        _creates_abc_while_a_rival_takes_c(storage, storage, runs, flush_early=True)
    assert info.value.status == 409
    assert runs == [0]
    assert sorted(r["id"] for r in storage.list_all("mushroom", "")) == ["a", "c"]


def test_events_reach_notify_after_the_commit(storage):
    seen = []
    run(storage, None, create_a, transient_retries=0, notify=seen.append)
    ((event,),) = seen
    assert event.payload["action"] == "create"
    run(storage, None, lambda unit: None, transient_retries=0, notify=seen.append)
    assert len(seen) == 1


def test_a_unit_can_be_made_current(storage):
    unit = UnitOfWork(storage, None)
    assert current_unit() is None
    with using(unit):
        assert current_unit() is unit
    assert current_unit() is None


def test_an_event_source_names_the_collection():
    source = EventSource("mushroom", "", {"uri": "/mushrooms"})
    assert (source.resource_name, source.parent_id) == ("mushroom", "")


def _query():
    return parse_query([], is_known_field=lambda field: True)


def test_permission_answers_are_kept_until_a_change_to_their_objects_is_staged():
    unit = UnitOfWork(None, MemoryPermission())
    unit.remember("a", True, ["/buckets/b"])
    unit.remember("b", False, ["/buckets/c"])
    assert (unit.remembered("a"), unit.remembered("b"), unit.remembered("c", "none")) == (
        True,
        False,
        "none",
    )
    unit.stage_permissions(["/buckets/b"], lambda backend: None)
    assert unit.remembered("a") is None
    assert unit.remembered("b") is False


def test_without_permission_transactions_a_conflicting_flush_changes_no_permission(
    redis_connection, closing
):
    storage = closing(RedisStorage(redis_connection.url))
    permission = closing(RedisPermission(redis_connection.url))
    permission.replace_object_permissions("/mushrooms/a", {"write": {"alice"}})

    def delete_a_and_its_permissions(unit):
        unit.stage_permissions(
            ["/mushrooms/a"], ReplacePermissions("/mushrooms/a", {"write": set()})
        )
        return model_in(unit).delete("a")

    with pytest.raises(HTTPError) as info:
        run(
            storage,
            permission,
            delete_a_and_its_permissions,
            transient_retries=0,
            blind_deletes=True,
        )
    assert info.value.status == 404
    assert permission.object_permissions("/mushrooms/a") == {"write": {"alice"}}
    run(storage, permission, create_a, transient_retries=0)
    run(storage, permission, delete_a_and_its_permissions, transient_retries=0)
    assert permission.object_permissions("/mushrooms/a") == {}


def test_an_unread_delete_that_misses_answers_404_at_once(storage):
    def delete_a(unit):
        return model_in(unit).delete("a")

    counting = Flaky(None, 0)
    with pytest.raises(HTTPError) as info:
        run(counting, None, delete_a, transient_retries=0, blind_deletes=True)
    assert (info.value.status, info.value.errno) == (404, 110)
    assert counting.calls == 1
    run(counting, None, create_a, transient_retries=0)
    tombstone = run(counting, None, delete_a, transient_retries=0, blind_deletes=True)
    assert tombstone["deleted"] is True
    assert tombstone["last_modified"] > 0
    assert counting.list_all("mushroom", "", include_deleted=True) == [tombstone]


def test_permission_changes_are_made_in_order_with_runs_of_replacements_together():
    calls = []

    class Recording(MemoryPermission):
        def replace_objects_permissions(self, changes):
            calls.append(sorted(changes))
            super().replace_objects_permissions(changes)

    permission = Recording()
    unit = UnitOfWork(None, permission)
    unit.stage_permissions(["/a"], ReplacePermissions("/a", {"write": {"alice"}}))
    unit.stage_permissions(["/b"], ReplacePermissions("/b", {"read": {"bob"}}))
    unit.stage_permissions(["/a"], ReplacePermissions("/a", {"read": {"carol"}}))
    unit.stage_permissions(["/a"], lambda backend: backend.add_principal_to_ace("/a", "write", "x"))
    unit.stage_permissions(["/a"], ReplacePermissions("/a", {"write": {"dave"}}))
    unit.flush()
    assert calls == [["/a", "/b"], ["/a"]]
    assert permission.object_permissions("/a") == {"read": {"carol"}, "write": {"dave"}}
    assert permission.object_permissions("/b") == {"read": {"bob"}}


def test_each_new_run_is_heard_with_its_reason():
    heard = []
    assert run(
        Flaky(WriteConflict(0), 1), None, create_a, transient_retries=0, on_retry=heard.append
    )
    deadlock = TransientBackendError("deadlock")
    assert run(Flaky(deadlock, 1), None, create_a, transient_retries=1, on_retry=heard.append)
    assert heard == ["conflict", "transient"]
