"""Filtering and sorting of records in Python, shared by the memory backend
and Redis, and the reference the SQL backends must agree with.

The semantics are those of the :mod:`kiln.storage` module docstring:
``filters`` compare within a type class, ``pagination_rules`` compare on
the total sort order (missing last).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

import orjson

from kiln.storage import Filter, Operator, Record, Sort

__all__ = [
    "MISSING",
    "get_path",
    "glob_match",
    "json_equal",
    "matches",
    "sort_key",
    "sort_records",
    "type_rank",
]


class _Missing:
    """The value of a field a record does not have."""

    __slots__ = ()

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return "MISSING"


MISSING: Final = _Missing()

#: Rank of each JSON type in the sort order; a missing field ranks last.
RANK_NULL, RANK_FALSE, RANK_TRUE, RANK_NUMBER, RANK_STRING, RANK_ARRAY, RANK_OBJECT = range(7)
RANK_MISSING: Final = 7


def get_path(record: Any, field: str) -> Any:
    """The value at dotted ``field`` in ``record``, or :data:`MISSING`."""
    node = record
    for key in field.split("."):
        if isinstance(node, dict) and key in node:
            node = node[key]
        else:
            return MISSING
    return node


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def type_rank(value: Any) -> int:
    """Position of ``value``'s type in ``null < false < true < numbers < strings
    < arrays < objects < missing``."""
    if value is None:
        return RANK_NULL
    if value is True:
        return RANK_TRUE
    if value is False:
        return RANK_FALSE
    if isinstance(value, int | float):
        return RANK_NUMBER
    if isinstance(value, str):
        return RANK_STRING
    if isinstance(value, list):
        return RANK_ARRAY
    if isinstance(value, dict):
        return RANK_OBJECT
    return RANK_MISSING


def sort_key(value: Any, container_text: Callable[[Any], bytes] = orjson.dumps) -> tuple[int, Any]:
    """A key ordering values of any JSON type (and :data:`MISSING`) totally.

    Arrays and objects compare by their JSON text (UTF-8 bytes): by default
    the compact text, in key order, that SQLite returns and the memory and
    Redis backends compare; PostgreSQL compares its own ``jsonb`` text
    (``container_text``; see ``kiln.storage._postgresql_sql.jsonb_text``).
    """
    rank = type_rank(value)
    if rank in (RANK_NUMBER, RANK_STRING):
        return (rank, value)
    if rank in (RANK_ARRAY, RANK_OBJECT):
        return (rank, container_text(value))
    return (rank, 0)


def json_equal(left: Any, right: Any) -> bool:
    """JSON equality: types must match (``True != 1``), numbers compare by value."""
    if is_number(left):
        return is_number(right) and bool(left == right)
    if isinstance(left, list):
        return (
            isinstance(right, list)
            and len(left) == len(right)
            and all(json_equal(a, b) for a, b in zip(left, right, strict=True))
        )
    if isinstance(left, dict):
        return (
            isinstance(right, dict)
            and left.keys() == right.keys()
            and all(json_equal(v, right[k]) for k, v in left.items())
        )
    return type(left) is type(right) and bool(left == right)


def glob_match(text: str, pattern: str) -> bool:
    """Whether ``text`` matches ``pattern`` where ``*`` matches any run of
    characters; without ``*`` the pattern matches as a substring.

    Case-insensitive (``str.casefold`` on both sides). Linear-time segment
    search, never a regular expression, so no pattern can be slow.
    """
    text = text.casefold()
    pattern = pattern.casefold()
    if "*" not in pattern:
        return pattern in text
    first, *middle, last = pattern.split("*")
    if len(first) + len(last) > len(text) or not (text.startswith(first) and text.endswith(last)):
        return False
    position = len(first)
    end = len(text) - len(last)
    for part in middle:
        found = text.find(part, position, end)
        if found < 0:
            return False
        position = found + len(part)
    return True


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _compare_class(value: Any, operand: Any, operator: Operator) -> bool:
    """``LT GT MIN MAX`` in ``filters``: both numbers or both strings."""
    if is_number(operand):
        if not is_number(value):
            return False
    elif isinstance(operand, str):
        if not isinstance(value, str):
            return False
    else:
        return False
    return _ordered(value, operand, operator)


def _ordered(left: Any, right: Any, operator: Operator) -> bool:
    if operator is Operator.LT:
        return bool(left < right)
    if operator is Operator.GT:
        return bool(left > right)
    if operator is Operator.MIN:
        return bool(left >= right)
    return bool(left <= right)


def matches(record: Record, filter_: Filter, *, total_order: bool = False) -> bool:
    """Whether ``record`` matches ``filter_``.

    ``total_order`` gives ``LT GT MIN MAX`` the sort-order meaning used in
    pagination rules (values of any type, missing greatest).
    """
    field, operand, operator = filter_
    value = get_path(record, field)
    if operator is Operator.EQ:
        return value is not MISSING and json_equal(value, operand)
    if operator is Operator.NOT:
        return value is MISSING or not json_equal(value, operand)
    if operator is Operator.IN:
        return value is not MISSING and any(json_equal(value, o) for o in _as_list(operand))
    if operator is Operator.EXCLUDE:
        return value is MISSING or not any(json_equal(value, o) for o in _as_list(operand))
    if operator is Operator.HAS:
        return (value is not MISSING) is bool(operand)
    if operator is Operator.LIKE:
        return isinstance(value, str) and isinstance(operand, str) and glob_match(value, operand)
    if operator is Operator.CONTAINS or operator is Operator.CONTAINS_ANY:
        if not isinstance(value, list):
            return False
        wanted = (any(json_equal(v, o) for v in value) for o in _as_list(operand))
        return all(wanted) if operator is Operator.CONTAINS else any(wanted)
    if total_order:
        return _ordered(sort_key(value), sort_key(operand), operator)
    return _compare_class(value, operand, operator)


def matches_all(record: Record, filters: Iterable[Filter], *, total_order: bool = False) -> bool:
    return all(matches(record, f, total_order=total_order) for f in filters)


def select(
    records: Iterable[Record],
    filters: Sequence[Filter],
    pagination_rules: Sequence[Sequence[Filter]] = (),
) -> list[Record]:
    """The records matching every filter and, if any, at least one rule."""
    return [
        record
        for record in records
        if matches_all(record, filters)
        and (
            not pagination_rules
            or any(matches_all(record, rule, total_order=True) for rule in pagination_rules)
        )
    ]


def sort_records(
    records: list[Record],
    sorting: Sequence[Sort],
    container_text: Callable[[Any], bytes] = orjson.dumps,
) -> None:
    """Sort ``records`` in place by ``sorting`` (stable, per the total order;
    ``container_text`` as in :func:`sort_key`)."""
    for sort in reversed(sorting):
        field = sort.field
        records.sort(
            key=lambda r: sort_key(get_path(r, field), container_text),
            reverse=sort.direction < 0,
        )
