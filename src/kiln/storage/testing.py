"""The storage contract suite: every backend runs it unchanged.

Subclass :class:`StorageContract` in a test module and override its
``backend`` fixture with a fresh, empty backend::

    class TestSQLiteStorage(StorageContract):
        @pytest.fixture
        def backend(self, tmp_path):
            return SQLiteStorage(SQLiteDatabase(str(tmp_path / "db.sqlite")))

Optionally override ``broken_backend`` with a backend whose engine fails
(the driver-failure tests skip otherwise). A backend without a capability
declares it (``supports_transactions = False``) and the matching tests skip.
The fixtures every suite shares, and the lifecycle tests, come from
:class:`kiln._contract.BackendContract`. Needs ``pytest`` and ``hypothesis``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kiln._contract import BackendContract, property_settings
from kiln.exceptions import BackendError
from kiln.storage import (
    ABSENT,
    LIVE,
    MAX_FILTER_VALUES,
    MAX_FILTERS,
    MAX_SORT_FIELDS,
    Filter,
    Operator,
    PreconditionFailed,
    Record,
    RecordNotFoundError,
    Sort,
    StorageBase,
    UnicityError,
    Write,
    WriteConflict,
    keyset_rules,
)
from kiln.storage._python_filters import glob_match, select, sort_records

__all__ = ["HOSTILE_KEYS", "HOSTILE_STRINGS", "StorageContract", "keyset_rules", "run_threads"]

R = "mushroom"
P = "basicauth:alice"

#: Strings that break naive SQL, LIKE, JSON paths or regular expressions.
HOSTILE_STRINGS = (
    "",
    "'",
    '"',
    "\\",
    "%",
    "_",
    "*",
    "$",
    "[0]",
    "a.b",
    "'; DROP TABLE records; --",
    '"]) OR 1=1 --',
    "100%_*",
    "\\%\\_",
    "$.a[0]",
    "(.*)+$",
    "ünïcødé ß İ",
    "emoji 🍄 \u2028 \t \n",
    "x" * 10_000,
)
#: Field names (single keys) that must work in filters and sorts.
HOSTILE_KEYS = ("a b", "é", "'", '"', "\\", "%", "_", "*", "$", "[0]", "k'\"\\$[]%_*", "🍄")


def run_threads(count: int, target: Callable[[int], Any]) -> list[Any]:
    """Run ``target(i)`` in ``count`` threads released together; return results or exceptions."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = target(index)
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


class _Boom(Exception):
    """Raised by the tests to abort a unit of work."""


def _ids(records: list[Record]) -> list[str]:
    return [r["id"] for r in records]


#: Records with one field ``v`` of every type, for the filter tables.
TYPED: dict[str, Any] = {
    "int1": 1,
    "float1": 1.0,
    "float15": 1.5,
    "neg": -3,
    "str1": "1",
    "strA": "Apple",
    "strb": "banana",
    "true": True,
    "false": False,
    "null": None,
    "list": [1, "a", True],
    "list0": [],
    "obj": {"k": 1},
}
_ALL = frozenset([*TYPED, "missing", "nested"])


def _typed(*ids: str) -> set[str]:
    return set(ids)


FILTER_CASES: list[tuple[Operator, Any, AbstractSet[str]]] = [
    (Operator.EQ, 1, _typed("int1", "float1")),
    (Operator.EQ, 1.0, _typed("int1", "float1")),
    (Operator.EQ, "1", _typed("str1")),
    (Operator.EQ, True, _typed("true")),
    (Operator.EQ, False, _typed("false")),
    (Operator.EQ, 0, set()),
    (Operator.EQ, None, _typed("null")),
    (Operator.EQ, [1, "a", True], _typed("list")),
    (Operator.EQ, [1, "a", 1], set()),
    (Operator.EQ, {"k": 1}, _typed("obj")),
    (Operator.EQ, {"k": True}, set()),
    (Operator.NOT, 1, _ALL - {"int1", "float1"}),
    (Operator.NOT, None, _ALL - {"null"}),
    (Operator.NOT, True, _ALL - {"true"}),
    (Operator.LT, 1.5, _typed("int1", "float1", "neg")),
    (Operator.GT, 1, _typed("float15")),
    (Operator.MIN, 1, _typed("int1", "float1", "float15")),
    (Operator.MAX, 1, _typed("int1", "float1", "neg")),
    (Operator.GT, "1", _typed("strA", "strb")),
    (Operator.LT, "b", _typed("str1", "strA")),
    (Operator.MIN, "Apple", _typed("strA", "strb")),
    (Operator.MAX, "Apple", _typed("str1", "strA")),
    (Operator.GT, False, set()),
    (Operator.LT, None, set()),
    (Operator.GT, [0], set()),
    (Operator.IN, [1, "banana", None], _typed("int1", "float1", "strb", "null")),
    (Operator.IN, [], set()),
    (Operator.IN, "Apple", _typed("strA")),
    (Operator.EXCLUDE, [1, "banana", None], _ALL - {"int1", "float1", "strb", "null"}),
    (Operator.EXCLUDE, [], _ALL),
    (Operator.HAS, True, _ALL - {"missing"}),
    (Operator.HAS, False, {"missing"}),
    (Operator.LIKE, "AN", _typed("strb")),
    (Operator.LIKE, "a*", _typed("strA")),
    (Operator.LIKE, "*a", _typed("strb")),
    (Operator.LIKE, "b*n*a", _typed("strb")),
    (Operator.LIKE, "*", _typed("str1", "strA", "strb")),
    (Operator.LIKE, "", _typed("str1", "strA", "strb")),
    (Operator.LIKE, "%", set()),
    (Operator.LIKE, "b*x*a", set()),
    (Operator.LIKE, "_pple", set()),
    (Operator.LIKE, 1, set()),
    (Operator.CONTAINS, [1, "a"], _typed("list")),
    (Operator.CONTAINS, [1, "b"], set()),
    (Operator.CONTAINS, [], _typed("list", "list0")),
    (Operator.CONTAINS, True, _typed("list")),
    (Operator.CONTAINS, [1.0], _typed("list")),
    (Operator.CONTAINS_ANY, ["x", "a"], _typed("list")),
    (Operator.CONTAINS_ANY, [], set()),
    (Operator.CONTAINS_ANY, [None], set()),
]

#: Ascending order of the TYPED values (ties by id), missing last.
TYPED_ASCENDING = [
    "null",
    "false",
    "true",
    "neg",
    "float1",
    "int1",
    "float15",
    "str1",
    "strA",
    "strb",
    "list",
    "list0",
    "obj",
    "nested",
    "missing",
]

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([0.5, 1.0, -2.5]),
    st.sampled_from(["", "a", "A", "b", "é", "ab", "%", "*"]),
)
_values = st.one_of(
    _scalars,
    st.lists(_scalars, max_size=2),
    st.dictionaries(st.sampled_from(["x", "y"]), _scalars, max_size=2),
)
_FIELDS = ("a", "b", "c.d")


@st.composite
def _records(draw: st.DrawFn) -> Record:
    record: Record = {}
    for name in ("a", "b"):
        if draw(st.booleans()):
            record[name] = draw(_values)
    if draw(st.booleans()):
        record["c"] = {"d": draw(_scalars)} if draw(st.booleans()) else draw(_scalars)
    return record


_filters = st.builds(
    Filter,
    st.sampled_from(_FIELDS),
    _values,
    st.sampled_from(list(Operator)),
)


class StorageContract(BackendContract):
    """The storage contract, as pytest tests; override :meth:`backend`.

    ``container_text`` is the text by which the backend orders arrays and
    objects (compact JSON in key order by default; a backend that prints
    JSON its own way, as PostgreSQL's ``jsonb``, sets its own).
    """

    container_text: staticmethod[[Any], bytes] = staticmethod(orjson.dumps)

    @pytest.fixture
    def storage(self, ready: StorageBase) -> StorageBase:
        return ready

    # -- lifecycle -----------------------------------------------------

    def test_flush_removes_records_tombstones_and_timestamps(self, storage: StorageBase) -> None:
        storage.create(R, P, {"id": "a"})
        storage.create(R, P, {"id": "b"})
        storage.delete(R, P, "b")
        storage.flush()
        assert storage.list_all(R, P, include_deleted=True) == []
        assert storage.collection_timestamp(R, P) == 0

    # -- create / get --------------------------------------------------

    def test_create_assigns_an_id_and_a_timestamp(self, storage: StorageBase) -> None:
        record = storage.create(R, P, {"name": "morel"})
        assert isinstance(record["id"], str)
        assert record["id"]
        assert isinstance(record["last_modified"], int)
        assert storage.get(R, P, record["id"]) == record

    def test_create_keeps_the_given_id(self, storage: StorageBase) -> None:
        record = storage.create(R, P, {"id": "morel", "name": "m"})
        assert record["id"] == "morel"
        assert storage.get(R, P, "morel")["name"] == "m"

    def test_create_uses_the_id_generator(self, storage: StorageBase) -> None:
        ids = iter(["g1", "g2"])
        first = storage.create(R, P, {}, id_generator=lambda: next(ids))
        second = storage.create(R, P, {}, id_generator=lambda: next(ids))
        assert (first["id"], second["id"]) == ("g1", "g2")

    def test_create_never_mutates_its_input_and_returns_fresh_dicts(
        self, storage: StorageBase
    ) -> None:
        given = {"tags": ["a"], "nested": {"x": 1}}
        record = storage.create(R, P, given)
        assert given == {"tags": ["a"], "nested": {"x": 1}}
        record["tags"].append("b")
        fetched = storage.get(R, P, record["id"])
        assert fetched["tags"] == ["a"]
        fetched["nested"]["x"] = 2
        assert storage.list_all(R, P)[0]["nested"] == {"x": 1}

    def test_create_of_an_existing_id_raises_unicity_error_with_the_record(
        self, storage: StorageBase
    ) -> None:
        existing = storage.create(R, P, {"id": "a", "n": 1})
        with pytest.raises(UnicityError) as info:
            storage.create(R, P, {"id": "a", "n": 2})
        assert info.value.field == "id"
        assert info.value.existing == existing
        assert storage.get(R, P, "a") == existing

    def test_create_keeps_json_types(self, storage: StorageBase) -> None:
        data = {"i": 1, "f": 1.5, "whole": 2.0, "s": "x", "b": False, "n": None, "l": [1, [2]]}
        record = storage.create(R, P, dict(data))
        fetched = storage.get(R, P, record["id"])
        for key, value in data.items():
            assert fetched[key] == value
            assert type(fetched[key]) is type(value)

    def test_get_of_an_unknown_id_raises_not_found(self, storage: StorageBase) -> None:
        with pytest.raises(RecordNotFoundError) as info:
            storage.get(R, P, "nope")
        assert info.value.object_id == "nope"

    # -- update --------------------------------------------------------

    def test_update_replaces_the_record_and_bumps_its_timestamp(self, storage: StorageBase) -> None:
        created = storage.create(R, P, {"id": "a", "old": 1})
        updated = storage.update(R, P, "a", {"new": 2})
        assert updated == {"id": "a", "new": 2, "last_modified": updated["last_modified"]}
        assert updated["last_modified"] > created["last_modified"]
        assert storage.get(R, P, "a") == updated
        assert storage.collection_timestamp(R, P) == updated["last_modified"]

    def test_update_creates_a_missing_record(self, storage: StorageBase) -> None:
        record = storage.update(R, P, "fresh", {"n": 1})
        assert storage.get(R, P, "fresh") == record

    def test_update_with_the_current_timestamp_succeeds(self, storage: StorageBase) -> None:
        created = storage.create(R, P, {"id": "a"})
        updated = storage.update(R, P, "a", {"n": 1}, if_match=created["last_modified"])
        assert updated["n"] == 1

    def test_update_with_a_stale_timestamp_raises_precondition_failed(
        self, storage: StorageBase
    ) -> None:
        created = storage.create(R, P, {"id": "a"})
        current = storage.update(R, P, "a", {"n": 1})
        with pytest.raises(PreconditionFailed) as info:
            storage.update(R, P, "a", {"n": 2}, if_match=created["last_modified"])
        assert info.value.existing == current
        assert storage.get(R, P, "a") == current

    def test_update_with_if_match_of_a_missing_record_fails_with_none(
        self, storage: StorageBase
    ) -> None:
        with pytest.raises(PreconditionFailed) as info:
            storage.update(R, P, "ghost", {}, if_match=1)
        assert info.value.existing is None
        with pytest.raises(RecordNotFoundError):
            storage.get(R, P, "ghost")

    # -- delete --------------------------------------------------------

    def test_delete_returns_and_keeps_a_tombstone(self, storage: StorageBase) -> None:
        created = storage.create(R, P, {"id": "a", "secret": "x"})
        tombstone = storage.delete(R, P, "a")
        assert tombstone == {
            "id": "a",
            "last_modified": tombstone["last_modified"],
            "deleted": True,
        }
        assert tombstone["last_modified"] > created["last_modified"]
        assert storage.collection_timestamp(R, P) == tombstone["last_modified"]
        with pytest.raises(RecordNotFoundError):
            storage.get(R, P, "a")
        assert storage.list_all(R, P) == []
        assert storage.list_all(R, P, include_deleted=True) == [tombstone]

    def test_delete_of_a_missing_or_deleted_record_raises_not_found(
        self, storage: StorageBase
    ) -> None:
        with pytest.raises(RecordNotFoundError):
            storage.delete(R, P, "nope")
        storage.create(R, P, {"id": "a"})
        storage.delete(R, P, "a")
        with pytest.raises(RecordNotFoundError):
            storage.delete(R, P, "a")

    def test_delete_with_a_stale_timestamp_raises_precondition_failed(
        self, storage: StorageBase
    ) -> None:
        created = storage.create(R, P, {"id": "a"})
        with pytest.raises(PreconditionFailed) as info:
            storage.delete(R, P, "a", if_match=created["last_modified"] - 1)
        assert info.value.existing == created
        tombstone = storage.delete(R, P, "a", if_match=created["last_modified"])
        assert tombstone["deleted"] is True
        with pytest.raises(PreconditionFailed) as info:
            storage.delete(R, P, "a", if_match=tombstone["last_modified"])
        assert info.value.existing is None

    # -- unique fields -------------------------------------------------

    def test_unique_fields_refuse_a_second_holder(self, storage: StorageBase) -> None:
        first = storage.create(R, P, {"email": "a@x", "n": None}, unique_fields=["email", "n"])
        with pytest.raises(UnicityError) as info:
            storage.create(R, P, {"email": "a@x"}, unique_fields=["email"])
        assert info.value.field == "email"
        assert info.value.existing == first
        other = storage.create(R, P, {"email": "b@x", "n": None}, unique_fields=["email", "n"])
        with pytest.raises(UnicityError):
            storage.update(R, P, other["id"], {"email": "a@x"}, unique_fields=["email"])
        same = storage.update(R, P, first["id"], {"email": "a@x", "v": 2}, unique_fields=["email"])
        assert same["v"] == 2

    def test_unique_fields_compare_json_values_and_ignore_tombstones(
        self, storage: StorageBase
    ) -> None:
        storage.create(R, P, {"id": "a", "n": 1, "o": {"k": [1]}})
        with pytest.raises(UnicityError):
            storage.create(R, P, {"n": 1.0}, unique_fields=["n"])
        with pytest.raises(UnicityError):
            storage.create(R, P, {"o": {"k": [1]}}, unique_fields=["o.k"])
        storage.create(R, P, {"n": "1"}, unique_fields=["n"])
        storage.create(R, P, {"n": True}, unique_fields=["n"])
        storage.delete(R, P, "a")
        storage.create(R, P, {"n": 1}, unique_fields=["n"])

    # -- timestamps ----------------------------------------------------

    def test_collection_timestamp_of_a_never_written_collection_is_zero(
        self, storage: StorageBase
    ) -> None:
        assert storage.collection_timestamp(R, "never") == 0
        assert storage.collection_timestamp(R, "never") == 0
        assert storage.list_all(R, "never", include_deleted=True) == []

    def test_timestamps_strictly_increase_and_the_collection_follows(
        self, storage: StorageBase
    ) -> None:
        stamps = [storage.create(R, P, {})["last_modified"] for _ in range(30)]
        assert stamps == sorted(set(stamps))
        assert storage.collection_timestamp(R, P) == stamps[-1]
        assert abs(stamps[0] - time.time() * 1000) < 60_000

    def test_create_keeps_a_forced_timestamp_above_the_collection(
        self, storage: StorageBase
    ) -> None:
        current = storage.create(R, P, {})["last_modified"]
        forced = storage.create(R, P, {"id": "f", "last_modified": current + 1000})
        assert forced["last_modified"] == current + 1000
        assert storage.collection_timestamp(R, P) == current + 1000
        ignored = storage.create(R, P, {"id": "g", "last_modified": 10})
        assert ignored["last_modified"] > current + 1000

    def test_update_and_delete_keep_a_forced_timestamp_above_the_record(
        self, storage: StorageBase
    ) -> None:
        record = storage.create(R, P, {"id": "a"})
        stale = storage.update(R, P, "a", {"last_modified": 5})
        assert stale["last_modified"] > record["last_modified"]
        forced = storage.update(R, P, "a", {"last_modified": stale["last_modified"] + 500})
        assert forced["last_modified"] == stale["last_modified"] + 500
        assert storage.collection_timestamp(R, P) == forced["last_modified"]
        tombstone = storage.delete(R, P, "a", last_modified=forced["last_modified"] + 500)
        assert tombstone["last_modified"] == forced["last_modified"] + 500
        storage.create(R, P, {"id": "b"})
        bumped = storage.delete(R, P, "b", last_modified=1)
        assert bumped["last_modified"] > tombstone["last_modified"]

    # -- tombstones ----------------------------------------------------

    def test_recreating_a_deleted_record_removes_its_tombstone(self, storage: StorageBase) -> None:
        storage.create(R, P, {"id": "a"})
        storage.delete(R, P, "a")
        again = storage.create(R, P, {"id": "a", "n": 1})
        assert storage.list_all(R, P, include_deleted=True) == [again]
        storage.delete(R, P, "a")
        upserted = storage.update(R, P, "a", {"n": 2})
        assert storage.list_all(R, P, include_deleted=True) == [upserted]

    def test_tombstones_see_other_fields_as_missing(self, storage: StorageBase) -> None:
        storage.create(R, P, {"id": "a", "n": 1})
        storage.create(R, P, {"id": "b", "n": 1})
        storage.delete(R, P, "b")
        found = storage.list_all(R, P, filters=[Filter("n", 1)], include_deleted=True)
        assert _ids(found) == ["a"]
        found = storage.list_all(
            R, P, filters=[Filter("n", False, Operator.HAS)], include_deleted=True
        )
        assert _ids(found) == ["b"]
        found = storage.list_all(R, P, filters=[Filter("deleted", True)], include_deleted=True)
        assert _ids(found) == ["b"]
        assert storage.count_all(R, P) == 1

    def test_purge_deleted_drops_tombstones_before_a_timestamp(self, storage: StorageBase) -> None:
        stamps = []
        for object_id in "abcd":
            storage.create(R, P, {"id": object_id})
            stamps.append(storage.delete(R, P, object_id)["last_modified"])
        storage.create(R, P, {"id": "live"})
        assert storage.purge_deleted(R, P, before=stamps[2]) == 2
        left = storage.list_all(R, P, include_deleted=True, sorting=[Sort("id", 1)])
        assert _ids(left) == ["c", "d", "live"]
        assert storage.purge_deleted(R, P) == 2
        assert _ids(storage.list_all(R, P, include_deleted=True)) == ["live"]
        assert storage.purge_deleted(R, "never") == 0

    # -- list / count / delete_all ------------------------------------

    def test_list_all_honours_limit(self, storage: StorageBase) -> None:
        for n in range(5):
            storage.create(R, P, {"id": f"r{n}", "n": n})
        assert _ids(storage.list_all(R, P, sorting=[Sort("n", -1)], limit=2)) == ["r4", "r3"]
        assert storage.list_all(R, P, limit=0) == []
        assert len(storage.list_all(R, P)) == 5

    def test_count_all_counts_matching_live_records(self, storage: StorageBase) -> None:
        for n in range(6):
            storage.create(R, P, {"id": f"r{n}", "n": n})
        storage.delete(R, P, "r5")
        assert storage.count_all(R, P) == 5
        assert storage.count_all(R, P, filters=[Filter("n", 2, Operator.MIN)]) == 3
        assert storage.count_all(R, "other") == 0

    def test_delete_all_deletes_matching_records_each_with_its_timestamp(
        self, storage: StorageBase
    ) -> None:
        for n in range(5):
            storage.create(R, P, {"id": f"r{n}", "n": n})
        tombstones = storage.delete_all(R, P, filters=[Filter("n", 3, Operator.LT)])
        assert sorted(_ids(tombstones)) == ["r0", "r1", "r2"]
        stamps = [t["last_modified"] for t in tombstones]
        assert len(set(stamps)) == 3
        assert all(t["deleted"] is True for t in tombstones)
        assert storage.collection_timestamp(R, P) == max(stamps)
        assert _ids(storage.list_all(R, P, sorting=[Sort("id", 1)])) == ["r3", "r4"]
        assert len(storage.list_all(R, P, include_deleted=True)) == 5

    def test_delete_all_with_sorting_and_limit_picks_the_first(self, storage: StorageBase) -> None:
        for n in range(5):
            storage.create(R, P, {"id": f"r{n}", "n": n})
        tombstones = storage.delete_all(R, P, sorting=[Sort("n", -1)], limit=2)
        assert sorted(_ids(tombstones)) == ["r3", "r4"]
        assert storage.delete_all(R, "empty") == []

    # -- descendants (cascades) ---------------------------------------

    def test_list_descendants_finds_live_records_below_parents_in_any_resource(
        self, storage: StorageBase
    ) -> None:
        tree = [
            ("collection", "/buckets/b1", "c1"),
            ("collection", "/buckets/b1", "c2"),
            ("group", "/buckets/b1", "g1"),
            ("record", "/buckets/b1/collections/c1", "r1"),
            ("record", "/buckets/b1/collections/c1", "r2"),
            ("collection", "/buckets/b10", "not-below"),
            ("collection", "/buckets/b2", "other"),
            ("collection", "", "top"),
            ("record", "/buckets/b1x/collections/c1", "sibling-prefix"),
            # Characters sorting before "/" and after "0", right after the ancestor.
            ("record", "/buckets/b1-x/collections/c1", "dash-sibling"),
            ("record", "/buckets/b1 /collections/c1", "space-sibling"),
            ("record", "/buckets/b1\u00e9/collections/c1", "accented-sibling"),
        ]
        for resource_name, parent_id, object_id in tree:
            storage.create(resource_name, parent_id, {"id": object_id})
        storage.delete("collection", "/buckets/b1", "c2")
        assert storage.list_descendants(["/buckets/b1"]) == [
            ("collection", "/buckets/b1", "c1"),
            ("group", "/buckets/b1", "g1"),
            ("record", "/buckets/b1/collections/c1", "r1"),
            ("record", "/buckets/b1/collections/c1", "r2"),
        ]
        assert storage.list_descendants(["/buckets/b1/collections/c1", "/buckets/b2"]) == [
            ("collection", "/buckets/b2", "other"),
            ("record", "/buckets/b1/collections/c1", "r1"),
            ("record", "/buckets/b1/collections/c1", "r2"),
        ]
        # Ancestors below one another: each record once.
        assert storage.list_descendants(["/buckets/b1/collections/c1", "/buckets/b1"]) == [
            ("collection", "/buckets/b1", "c1"),
            ("group", "/buckets/b1", "g1"),
            ("record", "/buckets/b1/collections/c1", "r1"),
            ("record", "/buckets/b1/collections/c1", "r2"),
        ]
        assert storage.list_descendants(["/buckets/nope"]) == []
        assert storage.list_descendants([""]) == []
        assert storage.list_descendants([]) == []

    @pytest.mark.parametrize("hostile", [s for s in HOSTILE_STRINGS if s][:16])
    def test_list_descendants_takes_parent_ids_literally(
        self, storage: StorageBase, hostile: str
    ) -> None:
        parent = f"/p/{hostile}"
        storage.create(R, parent, {"id": "child"})
        storage.create(R, f"{parent}/kids/x", {"id": "grandchild"})
        storage.create(R, "/p/other", {"id": "stranger"})
        assert storage.list_descendants([parent]) == [
            (R, parent, "child"),
            (R, f"{parent}/kids/x", "grandchild"),
        ]

    def test_a_cascade_is_one_apply_of_live_deletes(self, storage: StorageBase) -> None:
        storage.create("bucket", "", {"id": "b1"})
        storage.create("collection", "/buckets/b1", {"id": "c1"})
        storage.create("record", "/buckets/b1/collections/c1", {"id": "r1"})
        before = storage.collection_timestamp("record", "/buckets/b1/collections/c1")
        writes = [Write("bucket", "", "b1", None, LIVE)] + [
            Write(name, parent, object_id, None, LIVE)
            for name, parent, object_id in storage.list_descendants(["/buckets/b1"])
        ]
        stamps = storage.apply(writes)
        assert len(stamps) == 3
        assert storage.list_descendants(["/buckets/b1"]) == []
        tombstones = storage.list_all("record", "/buckets/b1/collections/c1", include_deleted=True)
        assert tombstones == [{"id": "r1", "last_modified": stamps[2], "deleted": True}]
        assert storage.collection_timestamp("record", "/buckets/b1/collections/c1") > before

    # -- isolation -----------------------------------------------------

    @pytest.mark.parametrize(("resource", "parent"), [(R, "bob"), ("other", P)])
    def test_collections_never_see_each_other(
        self, storage: StorageBase, resource: str, parent: str
    ) -> None:
        storage.create(R, P, {"id": "a", "n": 1})
        storage.create(R, P, {"id": "b", "n": 2})
        storage.delete(R, P, "b")
        stamp = storage.collection_timestamp(R, P)
        assert storage.collection_timestamp(resource, parent) == 0
        assert storage.list_all(resource, parent, include_deleted=True) == []
        rules = [[Filter("n", 0, Operator.GT)], [Filter("id", "", Operator.GT)]]
        assert storage.list_all(resource, parent, pagination_rules=rules) == []
        assert storage.count_all(resource, parent) == 0
        with pytest.raises(RecordNotFoundError):
            storage.get(resource, parent, "a")
        with pytest.raises(RecordNotFoundError):
            storage.delete(resource, parent, "a")
        own = storage.create(resource, parent, {"id": "a", "n": 9})
        assert storage.get(R, P, "a")["n"] == 1
        assert storage.delete_all(resource, parent) == [
            {
                "id": "a",
                "last_modified": storage.collection_timestamp(resource, parent),
                "deleted": True,
            }
        ]
        assert own["id"] == "a"
        assert storage.purge_deleted(resource, parent) == 1
        assert _ids(storage.list_all(R, P, include_deleted=True, sorting=[Sort("id", 1)])) == [
            "a",
            "b",
        ]
        assert storage.collection_timestamp(R, P) == stamp

    def test_a_parent_prefix_is_not_a_parent(self, storage: StorageBase) -> None:
        storage.create(R, "/buckets/b1", {"id": "a"})
        assert storage.list_all(R, "/buckets/b") == []
        assert storage.list_all(R, "/buckets/b1/collections") == []
        assert storage.list_all(R + "s", "/buckets/b1") == []

    # -- filters -------------------------------------------------------

    @pytest.fixture
    def typed(self, storage: StorageBase) -> StorageBase:
        for object_id, value in TYPED.items():
            storage.create(R, P, {"id": object_id, "v": value})
        storage.create(R, P, {"id": "missing", "other": 1})
        storage.create(R, P, {"id": "nested", "v": {"w": {"x": 2}}})
        return storage

    @pytest.mark.parametrize(("operator", "value", "expected"), FILTER_CASES)
    def test_filter_operators_follow_the_contract(
        self, typed: StorageBase, operator: Operator, value: Any, expected: AbstractSet[str]
    ) -> None:
        found = typed.list_all(R, P, filters=[Filter("v", value, operator)])
        assert set(_ids(found)) == expected
        assert typed.count_all(R, P, filters=[Filter("v", value, operator)]) == len(expected)

    @pytest.mark.parametrize(
        ("filter_", "expected"),
        [
            (Filter("v.w.x", 2), {"nested"}),
            (Filter("v.w.x", 1, Operator.GT), {"nested"}),
            (Filter("v.w", {"x": 2}), {"nested"}),
            (Filter("v.k", 1), {"obj"}),
            (Filter("v.w.x", True, Operator.HAS), {"nested"}),
            (Filter("v.w.x.y", True, Operator.HAS), set()),
            (Filter("v.0", 1), set()),
            (Filter("id", "strA"), {"strA"}),
            (Filter("id", ["strA", "neg", 3], Operator.IN), {"strA", "neg"}),
            (Filter("id", "str", Operator.LIKE), {"str1", "strA", "strb"}),
            (Filter("id", "STR*1", Operator.LIKE), {"str1"}),
            (
                Filter("id", "s", Operator.LT),
                {
                    "false",
                    "float1",
                    "float15",
                    "int1",
                    "list",
                    "list0",
                    "missing",
                    "neg",
                    "nested",
                    "null",
                    "obj",
                },
            ),
            (Filter("id", 3, Operator.GT), set()),
            (Filter("id", [3], Operator.IN), set()),
            (Filter("id", True, Operator.HAS), _ALL),
            (Filter("id", ["x"], Operator.CONTAINS), set()),
            (Filter("last_modified", "x"), set()),
            (Filter("last_modified", 0, Operator.LT), set()),
            (Filter("last_modified", 0, Operator.GT), _ALL),
            (Filter("last_modified", "1", Operator.LIKE), set()),
            (Filter("last_modified", [0], Operator.IN), set()),
            (Filter("last_modified", False, Operator.HAS), set()),
        ],
    )
    def test_filters_reach_nested_and_reserved_fields(
        self, typed: StorageBase, filter_: Filter, expected: set[str]
    ) -> None:
        assert set(_ids(typed.list_all(R, P, filters=[filter_]))) == expected

    def test_filters_combine_with_and(self, typed: StorageBase) -> None:
        found = typed.list_all(
            R, P, filters=[Filter("v", 0, Operator.GT), Filter("v", 1.5, Operator.NOT)]
        )
        assert set(_ids(found)) == {"int1", "float1"}

    def test_the_largest_query_the_limits_allow_runs(self, storage: StorageBase) -> None:
        storage.create(R, P, {"id": "a", "v": 0, "t": ["x"]})
        storage.create(R, P, {"id": "b", "v": 1, "t": ["y"]})
        values = list(range(MAX_FILTER_VALUES))
        operators = [Operator.IN, Operator.EXCLUDE, Operator.CONTAINS_ANY, Operator.LIKE]
        filters = []
        for index in range(MAX_FILTERS):
            operator = operators[index % len(operators)]
            if operator is Operator.IN:
                filters.append(Filter("v", values, operator))
            elif operator is Operator.EXCLUDE:
                filters.append(Filter("v", [-1 - i for i in values], operator))
            elif operator is Operator.CONTAINS_ANY:
                filters.append(Filter("t", ["x", "y", *map(str, values[2:])], operator))
            else:
                filters.append(Filter("id", "*", operator))
        # The sort fields a request may name, then the two kiln always appends.
        sorting = [Sort(f"s{i}", 1 if i % 2 else -1) for i in range(MAX_SORT_FIELDS)]
        sorting += [Sort("last_modified", -1), Sort("id", 1)]
        found = storage.list_all(R, P, filters=filters, sorting=sorting)
        assert sorted(_ids(found)) == ["a", "b"]
        assert storage.count_all(R, P, filters=filters) == 2
        assert self._paginate(storage, filters, sorting, 1) == found

    def test_like_is_case_insensitive_beyond_ascii(self, storage: StorageBase) -> None:
        storage.create(R, P, {"id": "a", "t": "ÉCOLE Straße"})
        storage.create(R, P, {"id": "b", "t": "ecole"})
        assert _ids(storage.list_all(R, P, filters=[Filter("t", "école", Operator.LIKE)])) == ["a"]
        assert _ids(storage.list_all(R, P, filters=[Filter("t", "*STRASSE", Operator.LIKE)])) == [
            "a"
        ]

    def test_like_answers_as_casefold_does_on_ascii_and_other_texts(
        self, storage: StorageBase
    ) -> None:
        # SQL backends match ASCII texts with the engine's own LIKE, others as
        # Python's str.casefold does: both must give glob_match's answers.
        texts = [
            "strasse",
            "STRASSE",
            "Straße",
            "100%_\\x",
            "100 x",
            "kelvin",
            "\u212aelvin",
            "caf\u00e9",
            "CAFE",
            "a_b",
            "axb",
        ]
        for index, text in enumerate(texts):
            storage.create(R, P, {"id": f"t{index}", "t": text})
        patterns = ["strasse", "STRAẞE", "ß", "100%_\\*", "%", "_", "KELVIN", "k*n", "É", "a_b"]
        patterns += ["", "*", "CAF*", "*\\*"]
        for pattern in patterns:
            expected = {f"t{i}" for i, text in enumerate(texts) if glob_match(text, pattern)}
            found = storage.list_all(R, P, filters=[Filter("t", pattern, Operator.LIKE)])
            assert set(_ids(found)) == expected, pattern
            by_id = storage.list_all(R, P, filters=[Filter("id", pattern, Operator.LIKE)])
            assert set(_ids(by_id)) == {
                i for i in _ids(storage.list_all(R, P)) if glob_match(i, pattern)
            }

    def test_like_with_many_wildcards_stays_fast(self, storage: StorageBase) -> None:
        storage.create(R, P, {"id": "a", "t": "a" * 5000})
        started = time.monotonic()
        found = storage.list_all(R, P, filters=[Filter("t", "*a" * 40 + "*b", Operator.LIKE)])
        assert found == []
        assert time.monotonic() - started < 2

    @pytest.mark.parametrize("value", HOSTILE_STRINGS, ids=range(len(HOSTILE_STRINGS)))
    def test_hostile_values_match_only_themselves(self, storage: StorageBase, value: str) -> None:
        storage.create(R, P, {"id": "target", "v": value, "tags": [value]})
        storage.create(R, P, {"id": "other", "v": "plain", "tags": ["plain"]})
        storage.create(R, P, {"id": "none"})

        def ids(*filters: Filter) -> set[str]:
            return set(_ids(storage.list_all(R, P, filters=list(filters))))

        assert ids(Filter("v", value)) == {"target"}
        assert ids(Filter("v", value, Operator.NOT)) == {"other", "none"}
        assert ids(Filter("v", [value], Operator.IN)) == {"target"}
        assert ids(Filter("tags", [value], Operator.CONTAINS)) == {"target"}
        assert ids(Filter("v", value, Operator.MIN)) == {"target"} | (
            {"other"} if value <= "plain" else set()
        )
        expected = {"target"} | ({"other"} if glob_match("plain", value) else set())
        assert ids(Filter("v", value, Operator.LIKE)) == expected
        assert ids(Filter("v", value + "*", Operator.LIKE)) == expected
        assert storage.get(R, P, "target")["v"] == value

    @pytest.mark.parametrize("key", HOSTILE_KEYS, ids=range(len(HOSTILE_KEYS)))
    def test_hostile_field_names_filter_and_sort(self, storage: StorageBase, key: str) -> None:
        storage.create(R, P, {"id": "a", key: 2, "n": {key: "x"}})
        storage.create(R, P, {"id": "b", key: 1})
        storage.create(R, P, {"id": "c", "other": 3})

        def ids(*filters: Filter, sorting: list[Sort] | None = None) -> list[str]:
            return _ids(storage.list_all(R, P, filters=list(filters), sorting=sorting or []))

        assert ids(Filter(key, 2)) == ["a"]
        assert ids(Filter(f"n.{key}", "X", Operator.LIKE)) == ["a"]
        assert sorted(ids(Filter(key, 1, Operator.MIN))) == ["a", "b"]
        assert ids(Filter(key, False, Operator.HAS)) == ["c"]
        assert ids(sorting=[Sort(key, 1)]) == ["b", "a", "c"]
        assert ids(sorting=[Sort(key, -1)]) == ["c", "a", "b"]
        rules = keyset_rules([Sort(key, 1), Sort("id", 1)], {"id": "b", key: 1})
        assert _ids(storage.list_all(R, P, sorting=[Sort(key, 1)], pagination_rules=rules)) == [
            "a",
            "c",
        ]

    def test_unicode_values_compare_by_code_point(self, storage: StorageBase) -> None:
        for object_id, value in [("z", "z"), ("e", "é"), ("E", "É"), ("m", "🍄"), ("a", "a")]:
            storage.create(R, P, {"id": object_id, "v": value})
        assert _ids(storage.list_all(R, P, sorting=[Sort("v", 1)])) == ["a", "z", "E", "e", "m"]
        assert set(_ids(storage.list_all(R, P, filters=[Filter("v", "z", Operator.GT)]))) == {
            "E",
            "e",
            "m",
        }

    # -- sorting -------------------------------------------------------

    def test_sorting_orders_types_then_values_with_missing_last(self, typed: StorageBase) -> None:
        ascending = typed.list_all(R, P, sorting=[Sort("v", 1), Sort("id", 1)])
        assert _ids(ascending) == TYPED_ASCENDING
        descending = typed.list_all(R, P, sorting=[Sort("v", -1), Sort("id", -1)])
        assert _ids(descending) == list(reversed(_ids(ascending)))
        assert _ids(descending)[0] == "missing"

    def test_sorting_breaks_ties_with_the_next_field(self, storage: StorageBase) -> None:
        for object_id, group, n in [("a", 1, 3), ("b", 2, 1), ("c", 1, 1), ("d", 2, 2)]:
            storage.create(R, P, {"id": object_id, "g": group, "n": n})
        found = storage.list_all(R, P, sorting=[Sort("g", -1), Sort("n", 1)])
        assert _ids(found) == ["b", "d", "c", "a"]
        by_time = storage.list_all(R, P, sorting=[Sort("last_modified", -1)])
        assert _ids(by_time) == ["d", "c", "b", "a"]
        by_id = storage.list_all(R, P, sorting=[Sort("id", -1)], limit=3)
        assert _ids(by_id) == ["d", "c", "b"]

    # -- keyset pagination ---------------------------------------------

    def test_keyset_rules_follow_cliquet(self) -> None:
        rules = keyset_rules([Sort("a", 1), Sort("b", -1), Sort("id", 1)], {"a": 1, "id": "x"})
        assert rules == [
            [Filter("a", 1, Operator.GT)],
            [Filter("a", 1), Filter("b", True, Operator.HAS)],
            [Filter("a", 1), Filter("b", False, Operator.HAS), Filter("id", "x", Operator.GT)],
        ]

    def test_pagination_rules_compare_reserved_fields_on_the_total_order(
        self, typed: StorageBase
    ) -> None:
        def ids(rule: Filter) -> set[str]:
            return set(_ids(typed.list_all(R, P, pagination_rules=[[rule]])))

        assert ids(Filter("id", 5, Operator.GT)) == _ALL
        assert ids(Filter("id", 5, Operator.MAX)) == set()
        assert ids(Filter("last_modified", "x", Operator.LT)) == _ALL
        assert ids(Filter("last_modified", None, Operator.MIN)) == _ALL
        assert ids(Filter("v", None, Operator.MIN)) == _ALL

    def _paginate(
        self,
        storage: StorageBase,
        filters: list[Filter],
        sorting: list[Sort],
        page_size: int,
    ) -> list[Record]:
        seen: list[Record] = []
        rules: list[list[Filter]] = []
        for _ in range(1000):
            page = storage.list_all(
                R, P, filters=filters, sorting=sorting, pagination_rules=rules, limit=page_size
            )
            seen.extend(page)
            if len(page) < page_size:
                return seen
            rules = keyset_rules(sorting, page[-1])
        raise AssertionError("pagination did not end")  # pragma: no cover

    @property_settings(40)
    @given(
        records=st.lists(_records(), max_size=14),
        filters=st.lists(_filters, max_size=2),
        sort_fields=st.lists(
            st.tuples(st.sampled_from(_FIELDS), st.sampled_from([1, -1])), max_size=3
        ),
        tie_breaker=st.sampled_from([Sort("id", 1), Sort("id", -1), Sort("last_modified", -1)]),
        page_size=st.integers(1, 5),
        deleted=st.sets(st.integers(0, 13), max_size=3),
    )
    def test_keyset_pagination_returns_every_match_once_in_order(
        self,
        storage: StorageBase,
        records: list[Record],
        filters: list[Filter],
        sort_fields: list[tuple[str, int]],
        tie_breaker: Sort,
        page_size: int,
        deleted: set[int],
    ) -> None:
        storage.flush()
        stored = [
            storage.create(R, P, {**record, "id": f"r{i:02d}"}) for i, record in enumerate(records)
        ]
        storage.create(R, "other", {"id": "r00", "a": 1})
        for index in deleted:
            if index < len(stored):
                storage.delete(R, P, stored[index]["id"])
        live = [r for i, r in enumerate(stored) if i not in deleted]
        sorting = [Sort(field, direction) for field, direction in sort_fields] + [tie_breaker]
        expected = select(live, filters)
        sort_records(expected, sorting, self.container_text)

        assert storage.list_all(R, P, filters=filters, sorting=sorting) == expected
        assert self._paginate(storage, filters, sorting, page_size) == expected

    def test_objects_sort_and_paginate_by_the_backends_json_text(
        self, storage: StorageBase
    ) -> None:
        storage.flush()
        stored = [
            storage.create(R, P, {"id": "r0", "b": {"x": None}}),
            storage.create(R, P, {"id": "r1", "b": {"y": None, "x": None}}),
            storage.create(R, P, {"id": "r2", "b": {"ab": 1}}),
            storage.create(R, P, {"id": "r3", "b": [1, {"y": 2, "x": 1}]}),
        ]
        sorting = [Sort("b", 1), Sort("id", 1)]
        expected = list(stored)
        sort_records(expected, sorting, self.container_text)
        assert storage.list_all(R, P, sorting=sorting) == expected
        assert self._paginate(storage, [], sorting, 1) == expected

    def test_since_pagination_includes_tombstones(self, storage: StorageBase) -> None:
        for n in range(6):
            storage.create(R, P, {"id": f"r{n}"})
        storage.delete(R, P, "r2")
        since = Filter("last_modified", 0, Operator.GT)
        sorting = [Sort("last_modified", 1)]
        pages = []
        rules: list[list[Filter]] = []
        while True:
            page = storage.list_all(
                R,
                P,
                filters=[since],
                sorting=sorting,
                pagination_rules=rules,
                limit=2,
                include_deleted=True,
            )
            if not page:
                break
            pages.append(_ids(page))
            rules = keyset_rules(sorting, page[-1])
        assert pages == [["r0", "r1"], ["r3", "r4"], ["r5", "r2"]]

    # -- transactions --------------------------------------------------

    def test_a_transaction_commits_when_its_block_ends(self, transactional: StorageBase) -> None:
        with transactional.transaction():
            created = transactional.create(R, P, {"id": "a"})
            assert transactional.get(R, P, "a") == created
            assert transactional.collection_timestamp(R, P) == created["last_modified"]
        assert transactional.get(R, P, "a") == created

    def test_a_failing_transaction_leaves_nothing(self, transactional: StorageBase) -> None:
        kept = transactional.create(R, P, {"id": "kept", "n": 1})
        stamp = transactional.collection_timestamp(R, P)

        def fail() -> None:
            with transactional.transaction():
                transactional.create(R, P, {"id": "a"})
                transactional.update(R, P, "kept", {"n": 2})
                transactional.create(R, "elsewhere", {"id": "b"})
                transactional.delete_all(R, P)
                transactional.purge_deleted(R, P)
                raise _Boom

        with pytest.raises(_Boom):
            fail()
        assert transactional.list_all(R, P, include_deleted=True) == [kept]
        assert transactional.collection_timestamp(R, P) == stamp
        assert transactional.collection_timestamp(R, "elsewhere") == 0
        assert transactional.list_all(R, "elsewhere", include_deleted=True) == []

    def test_nested_transactions_join_the_outermost(self, transactional: StorageBase) -> None:

        def fail() -> None:
            with transactional.transaction():
                with transactional.transaction():
                    transactional.create(R, P, {"id": "inner"})
                assert transactional.get(R, P, "inner")["id"] == "inner"
                raise _Boom

        with pytest.raises(_Boom):
            fail()
        assert transactional.list_all(R, P) == []

    def test_a_contract_error_inside_a_transaction_writes_nothing_and_goes_on(
        self, transactional: StorageBase
    ) -> None:
        transactional.create(R, P, {"id": "a"})
        with transactional.transaction():
            with pytest.raises(UnicityError):
                transactional.create(R, P, {"id": "a"})
            with pytest.raises(PreconditionFailed):
                transactional.update(R, P, "a", {}, if_match=1)
            transactional.create(R, P, {"id": "b"})
        assert sorted(_ids(transactional.list_all(R, P))) == ["a", "b"]

    def test_other_threads_never_see_uncommitted_writes(self, transactional: StorageBase) -> None:
        seen: list[int] = []
        reader = threading.Thread(target=lambda: seen.append(len(transactional.list_all(R, P))))
        with transactional.transaction():
            transactional.create(R, P, {"id": "a"})
            reader.start()
            reader.join(0.3)
            # The reader either saw the committed state or waits for the commit.
            assert seen in ([], [0])
        reader.join()
        assert seen in ([0], [1])
        assert len(transactional.list_all(R, P)) == 1

    # -- concurrency ---------------------------------------------------

    # Single operations are atomic on every backend, transactions or not.

    def test_concurrent_conditional_updates_let_exactly_one_win(self, storage: StorageBase) -> None:
        created = storage.create(R, P, {"id": "a", "n": 0})

        def write(index: int) -> Record:
            return storage.update(R, P, "a", {"n": index}, if_match=created["last_modified"])

        results = run_threads(8, write)
        winners = [r for r in results if isinstance(r, dict)]
        assert len(winners) == 1
        assert all(isinstance(r, PreconditionFailed) for r in results if r not in winners)
        assert storage.get(R, P, "a") == winners[0]

    def test_concurrent_conditional_deletes_let_exactly_one_win(self, storage: StorageBase) -> None:
        created = storage.create(R, P, {"id": "a"})
        results = run_threads(
            6, lambda i: storage.delete(R, P, "a", if_match=created["last_modified"])
        )
        assert sum(isinstance(r, dict) for r in results) == 1
        assert all(isinstance(r, dict | PreconditionFailed) for r in results)

    def test_concurrent_creates_of_one_id_let_exactly_one_win(self, storage: StorageBase) -> None:
        results = run_threads(8, lambda i: storage.create(R, P, {"id": "same", "n": i}))
        winners = [r for r in results if isinstance(r, dict)]
        assert len(winners) == 1
        assert all(isinstance(r, UnicityError) for r in results if r not in winners)
        assert storage.get(R, P, "same") == winners[0]

    def test_concurrent_writers_get_unique_increasing_timestamps_and_no_error(
        self, storage: StorageBase
    ) -> None:
        def write(index: int) -> list[int]:
            stamps = []
            for n in range(15):
                record = storage.create(R, P, {"w": index, "n": n})
                stamps.append(record["last_modified"])
                if n % 5 == 0:
                    stamps.append(storage.update(R, P, record["id"], {})["last_modified"])
            return stamps

        results = run_threads(6, write)
        assert not [r for r in results if isinstance(r, Exception)]
        stamps = [stamp for per_thread in results for stamp in per_thread]
        assert len(set(stamps)) == len(stamps)
        for per_thread in results:
            assert per_thread == sorted(per_thread)
        assert storage.collection_timestamp(R, P) == max(stamps)

    def test_a_since_follower_never_misses_a_record_behind_a_slow_transaction(
        self, transactional: StorageBase
    ) -> None:
        created: list[str] = []
        created_lock = threading.Lock()
        done = threading.Event()

        def remember(record: Record) -> None:
            with created_lock:
                created.append(record["id"])

        def slow_writer() -> None:
            for _ in range(3):
                with transactional.transaction():
                    first = transactional.create(R, P, {"slow": True})
                    time.sleep(0.08)
                    second = transactional.create(R, P, {"slow": True})
                remember(first)
                remember(second)

        def fast_writer(index: int) -> None:
            for n in range(12):
                remember(transactional.create(R, P, {"fast": index, "n": n}))
                if n % 4 == 0:
                    victim = transactional.create(R, P, {"doomed": True})
                    transactional.delete(R, P, victim["id"])
                    remember(victim)
                time.sleep(0.005)

        seen: dict[str, int] = {}
        problems: list[str] = []

        def follow() -> None:
            since = 0
            while True:
                finished = done.is_set()
                page = transactional.list_all(
                    R,
                    P,
                    filters=[Filter("last_modified", since, Operator.GT)],
                    sorting=[Sort("last_modified", 1)],
                    include_deleted=True,
                )
                problems.extend(r["id"] for r in page if r["last_modified"] <= since)
                seen.update((r["id"], r["last_modified"]) for r in page)
                if page:
                    since = page[-1]["last_modified"]
                if finished:
                    return
                time.sleep(0.002)

        follower = threading.Thread(target=follow)
        follower.start()
        writers = [threading.Thread(target=slow_writer)] + [
            threading.Thread(target=fast_writer, args=(i,)) for i in range(3)
        ]
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join()
        done.set()
        follower.join()
        assert problems == []
        assert set(created) <= set(seen)

    def test_get_records_reads_each_live_record_in_the_order_asked(
        self, storage: StorageBase
    ) -> None:
        a = storage.create(R, P, {"id": "a", "n": 1})
        b = storage.create(R, "other", {"id": "b"})
        storage.create(R, P, {"id": "gone"})
        storage.delete(R, P, "gone")
        keys = [
            (R, "other", "b"),
            (R, P, "missing"),
            (R, P, "gone"),
            (R, P, "a"),
            (R, "other", "a"),
        ]
        assert storage.get_records(keys) == [b, None, None, a, None]
        assert storage.get_records([]) == []

    # -- units of work: apply ---------------------------------------------

    def test_apply_makes_its_writes_in_order_and_returns_their_timestamps(
        self, storage: StorageBase
    ) -> None:
        old = storage.create(R, P, {"id": "old", "n": 0})
        doomed = storage.create(R, P, {"id": "doomed"})
        stamps = storage.apply(
            [
                Write(R, P, "new", {"n": 1, "id": "ignored", "last_modified": 1}, ABSENT),
                Write(R, P, "old", {"n": 2}, old["last_modified"]),
                Write(R, P, "doomed", None, doomed["last_modified"]),
            ]
        )
        assert len(stamps) == 3
        assert stamps == sorted(stamps)
        assert len(set(stamps)) == 3
        assert stamps[0] > doomed["last_modified"]
        assert storage.get(R, P, "new") == {"id": "new", "last_modified": stamps[0], "n": 1}
        assert storage.get(R, P, "old") == {"id": "old", "last_modified": stamps[1], "n": 2}
        with pytest.raises(RecordNotFoundError):
            storage.get(R, P, "doomed")
        tombstones = storage.list_all(R, P, include_deleted=True, filters=[Filter("deleted", True)])
        assert tombstones == [{"id": "doomed", "last_modified": stamps[2], "deleted": True}]
        assert storage.collection_timestamp(R, P) == stamps[2]

    def test_apply_spans_collections(self, storage: StorageBase) -> None:
        a, b = storage.apply([Write(R, P, "a", {}, ABSENT), Write(R, "other", "b", {}, ABSENT)])
        assert storage.collection_timestamp(R, P) == a
        assert storage.collection_timestamp(R, "other") == b
        assert _ids(storage.list_all(R, "other")) == ["b"]

    def test_apply_of_nothing_writes_nothing(self, storage: StorageBase) -> None:
        assert storage.apply([]) == []
        assert storage.collection_timestamp(R, P) == 0

    def test_apply_recreates_a_deleted_record(self, storage: StorageBase) -> None:
        storage.create(R, P, {"id": "a"})
        tombstone = storage.delete(R, P, "a")
        (stamp,) = storage.apply([Write(R, P, "a", {"n": 1}, ABSENT)])
        assert stamp > tombstone["last_modified"]
        assert storage.get(R, P, "a")["n"] == 1

    @pytest.mark.parametrize("case", ["create-live", "stale-update", "update-gone", "delete-gone"])
    def test_apply_refuses_a_write_that_finds_the_record_other_than_expected(
        self, storage: StorageBase, case: str
    ) -> None:
        live = storage.create(R, P, {"id": "live", "n": 0})
        storage.create(R, P, {"id": "gone"})
        gone = storage.delete(R, P, "gone")
        write = {
            "create-live": Write(R, P, "live", {"n": 1}, ABSENT),
            "stale-update": Write(R, P, "live", {"n": 1}, live["last_modified"] - 1),
            "update-gone": Write(R, P, "gone", {"n": 1}, gone["last_modified"]),
            "delete-gone": Write(R, P, "gone", None, gone["last_modified"]),
        }[case]
        with pytest.raises(WriteConflict) as info:
            storage.apply([write])
        assert info.value.index == 0
        assert storage.get(R, P, "live") == live
        assert storage.collection_timestamp(R, P) == gone["last_modified"]

    def test_apply_of_many_creates_stamps_them_in_order(self, storage: StorageBase) -> None:
        storage.create(R, P, {"id": "before"})
        writes = [Write(R, P, f"r{i}", {"i": i}, ABSENT) for i in range(5)]
        stamps = storage.apply(writes)
        assert stamps == sorted(stamps)
        assert len(set(stamps)) == 5
        assert [storage.get(R, P, f"r{i}")["last_modified"] for i in range(5)] == stamps
        with pytest.raises(WriteConflict) as info:
            storage.apply([Write(R, P, "x", {}, ABSENT), Write(R, P, "x", {}, ABSENT)])
        assert info.value.index == 1

    def test_apply_of_a_delete_expecting_a_live_record_takes_whatever_version(
        self, storage: StorageBase
    ) -> None:
        storage.create(R, P, {"id": "a"})
        storage.update(R, P, "a", {"n": 2})
        (stamp,) = storage.apply([Write(R, P, "a", None, LIVE)])
        assert storage.list_all(R, P, include_deleted=True) == [
            {"id": "a", "last_modified": stamp, "deleted": True}
        ]
        with pytest.raises(WriteConflict):
            storage.apply([Write(R, P, "a", None, LIVE)])
        with pytest.raises(WriteConflict):
            storage.apply([Write(R, P, "never", None, LIVE)])
        with pytest.raises(ValueError, match="Only a delete may expect LIVE"):
            storage.apply([Write(R, P, "a", {}, LIVE)])

    def test_apply_refuses_a_delete_that_expects_no_record(self, storage: StorageBase) -> None:
        with pytest.raises(ValueError, match="ABSENT"):
            storage.apply([Write(R, P, "a", None, ABSENT)])

    def test_apply_that_conflicts_applies_none_of_its_writes(
        self, transactional: StorageBase
    ) -> None:
        live = transactional.create(R, P, {"id": "live"})
        with pytest.raises(WriteConflict) as info:
            transactional.apply(
                [
                    Write(R, P, "first", {}, ABSENT),
                    Write(R, "other", "second", {}, ABSENT),
                    Write(R, P, "live", {"n": 1}, ABSENT),
                ]
            )
        assert info.value.index == 2
        assert _ids(transactional.list_all(R, P)) == ["live"]
        assert transactional.list_all(R, "other") == []
        assert transactional.collection_timestamp(R, P) == live["last_modified"]
        assert transactional.collection_timestamp(R, "other") == 0

    def test_apply_checks_unique_fields_against_the_collection_and_its_own_writes(
        self, storage: StorageBase
    ) -> None:
        storage.create(R, P, {"id": "a", "name": "taken"})
        with pytest.raises(WriteConflict):
            storage.apply([Write(R, P, "b", {"name": "taken"}, ABSENT, ("name",))])
        with pytest.raises(WriteConflict) as info:
            storage.apply(
                [
                    Write(R, P, "c", {"name": "new"}, ABSENT, ("name",)),
                    Write(R, P, "d", {"name": "new"}, ABSENT, ("name",)),
                ]
            )
        assert info.value.index == 1
        (stamp,) = storage.apply([Write(R, P, "e", {"name": None}, ABSENT, ("name",))])
        assert storage.get(R, P, "e")["last_modified"] == stamp

    def test_apply_keeps_forced_timestamps_as_create_update_and_delete_do(
        self, storage: StorageBase
    ) -> None:
        current = storage.create(R, P, {"id": "a"})["last_modified"]
        high = current + 1_000_000
        stamps = storage.apply(
            [
                Write(R, P, "b", {}, ABSENT, forced=high),
                Write(R, P, "a", {"n": 1}, current, forced=current + 10),
            ]
        )
        assert stamps == [high, current + 10]
        assert storage.collection_timestamp(R, P) == high
        # Not later than the record's: a new timestamp instead.
        (stamp,) = storage.apply([Write(R, P, "a", None, current + 10, forced=current)])
        assert stamp > high

    def test_apply_joins_the_transaction_and_may_end_it(self, transactional: StorageBase) -> None:
        with transactional.transaction():
            transactional.create(R, P, {"id": "a"})
            transactional.apply([Write(R, P, "b", {}, ABSENT)], commit=True)
        assert _ids(transactional.list_all(R, P, sorting=[Sort("id", 1)])) == ["a", "b"]

    def test_list_page_reads_the_records_with_their_collection_timestamp(
        self, storage: StorageBase
    ) -> None:
        assert storage.list_page(R, P) == ([], 0)
        first = storage.create(R, P, {"id": "a", "n": 1})
        second = storage.create(R, P, {"id": "b", "n": 2})
        records, timestamp = storage.list_page(
            R, P, filters=[Filter("n", 1, Operator.GT)], sorting=[Sort("id", 1)], limit=5
        )
        assert (records, timestamp) == ([second], second["last_modified"])
        records, timestamp = storage.list_page(R, P, filters=[Filter("n", 9)])
        assert (records, timestamp) == ([], second["last_modified"])
        assert first["last_modified"] < timestamp

    def test_concurrent_applies_let_exactly_one_compare_and_swap_win(
        self, storage: StorageBase
    ) -> None:
        created = storage.create(R, P, {"id": "a", "n": 0})

        def write(index: int) -> list[int]:
            return storage.apply([Write(R, P, "a", {"n": index}, created["last_modified"])])

        results = run_threads(8, write)
        winners = [r for r in results if isinstance(r, list)]
        assert len(winners) == 1
        assert all(isinstance(r, WriteConflict) for r in results if r not in winners)
        assert storage.get(R, P, "a")["last_modified"] == winners[0][0]

    def test_concurrent_applies_get_unique_timestamps_in_commit_order(
        self, storage: StorageBase
    ) -> None:
        def write(index: int) -> list[int]:
            stamps: list[int] = []
            for n in range(10):
                stamps += storage.apply(
                    [Write(R, P, f"{index}-{n}-{k}", {"w": index}, ABSENT) for k in range(3)]
                )
            return stamps

        results = run_threads(6, write)
        assert not [r for r in results if isinstance(r, Exception)]
        stamps = [stamp for per_thread in results for stamp in per_thread]
        assert len(set(stamps)) == len(stamps) == 180
        for per_thread in results:
            assert per_thread == sorted(per_thread)
        assert storage.collection_timestamp(R, P) == max(stamps)

    # -- failures ------------------------------------------------------

    def test_engine_failures_surface_as_backend_error(self, broken_backend: StorageBase) -> None:
        with pytest.raises(BackendError):
            broken_backend.initialize_schema()
        with pytest.raises(BackendError):
            broken_backend.create(R, P, {})
        with pytest.raises(BackendError):
            broken_backend.list_all(R, P)
        assert broken_backend.heartbeat() is False
