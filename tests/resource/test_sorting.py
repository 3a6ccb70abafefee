from __future__ import annotations

import pytest

from tests.resource.conftest import assert_error


def test_default_order_is_newest_first(caller, mushrooms):
    rv = caller.both("GET", "/mushrooms")
    assert [r["id"] for r in rv.data] == [r["id"] for r in reversed(mushrooms)]


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("size", ["amanita", "chanterelle", "Death Cap", "boletus"]),
        ("-size", ["boletus", "Death Cap", "chanterelle", "amanita"]),
        ("-edible,size", ["chanterelle", "boletus", "amanita", "Death Cap"]),
        ("edible,-size", ["Death Cap", "amanita", "boletus", "chanterelle"]),
        ("author.name", ["chanterelle", "Death Cap", "boletus", "amanita"]),
        ("last_modified", ["amanita", "boletus", "chanterelle", "Death Cap"]),
    ],
)
def test_sort_orders_by_the_given_fields(caller, mushrooms, sort, expected):
    assert [r["name"] for r in caller.both("GET", f"/mushrooms?_sort={sort}").data] == expected


def test_an_unknown_sort_field_answers_400_when_not_allowed(caller):
    assert_error(caller.both("GET", "/stricts?_sort=-nope"), 400, 107)
    assert_error(caller.both("GET", "/mushrooms?_sort=no;pe"), 400, 107)
