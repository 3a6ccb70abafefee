"""SQLite storage's filters and sorts, compiled to SQL (pure: no I/O).

A field is a column (``id``, ``last_modified``) or JSON functions over the
record's ``data``: ``json_type`` and ``json_extract`` with the JSON path
bound as a parameter, or kiln's own ``kiln_json_type`` and
``kiln_json_extract`` (registered on every connection by
:mod:`kiln._sqlite`) for keys SQLite's paths cannot spell. The SQL text
depends only on the *shape* of a query (operators and value types), so
:mod:`sqlite3`'s statement cache serves repeated queries. Values of
different JSON types order as the contract says: a rank first, then the
value. Every condition is ``0`` or ``1``, never ``NULL``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from kiln._sql import like_pattern
from kiln._sqlite import to_sql_number
from kiln.storage import Filter, Operator, Sort
from kiln.storage._python_filters import (
    RANK_ARRAY,
    RANK_NUMBER,
    RANK_OBJECT,
    RANK_STRING,
    is_number,
    type_rank,
)

__all__ = ["Params", "compile_filter", "compile_order", "compile_where", "eval_rank"]

# About the ``noqa: S608`` below: SQL text is assembled only from constant
# fragments of this module; every value, and every user-given field name
# (as a JSON path), is a bound parameter.

_RANK = (
    "CASE {t} WHEN 'null' THEN 0 WHEN 'false' THEN 1 WHEN 'true' THEN 2"
    " WHEN 'integer' THEN 3 WHEN 'real' THEN 3 WHEN 'text' THEN 4"
    " WHEN 'array' THEN 5 WHEN 'object' THEN 6 ELSE 7 END"
)
_SQL_OPERATORS = {Operator.LT: "<", Operator.GT: ">", Operator.MIN: ">=", Operator.MAX: "<="}
_JSON_TYPES = {None: "'null'", True: "'true'", False: "'false'"}

Params = list[Any]


class _Field:
    """How one dotted field reads in SQL: a column, or JSON functions over ``data``."""

    __slots__ = ("column", "extract_fn", "path", "rank", "type_fn")

    def __init__(self, field: str) -> None:
        self.column: str | None = None
        self.rank = 0
        if field in ("id", "last_modified"):
            self.column = field
            self.rank = RANK_STRING if field == "id" else RANK_NUMBER
        keys = field.split(".")
        if all(key and '"' not in key and "\\" not in key and key.isprintable() for key in keys):
            # Each key quoted: dots, brackets, $ and quotes other than " are literal.
            self.path = "$" + "".join(f'."{key}"' for key in keys)
            self.type_fn, self.extract_fn = "json_type", "json_extract"
        else:
            # SQLite paths cannot spell these keys: walk the JSON in Python.
            self.path = orjson.dumps(keys).decode()
            self.type_fn, self.extract_fn = "kiln_json_type", "kiln_json_extract"

    def type(self, params: Params) -> str:
        params.append(self.path)
        return f"{self.type_fn}(data, ?)"

    def extract(self, params: Params) -> str:
        params.append(self.path)
        return f"{self.extract_fn}(data, ?)"


def _bind(value: Any) -> Any:
    return to_sql_number(value) if is_number(value) else value


def _equal(field: _Field, value: Any, params: Params) -> str:
    if field.column is not None:
        if type_rank(value) != field.rank:
            return "0"
        params.append(_bind(value))
        return f"{field.column} = ?"
    if value is None or isinstance(value, bool):
        return f"{field.type(params)} = {_JSON_TYPES[value]}"
    if is_number(value):
        sql = f"({field.type(params)} IN ('integer', 'real') AND {field.extract(params)} = ?)"
        params.append(_bind(value))
        return sql
    if isinstance(value, str):
        sql = f"({field.type(params)} = 'text' AND {field.extract(params)} = ?)"
        params.append(value)
        return sql
    kind = "'array'" if isinstance(value, list) else "'object'"
    sql = f"({field.type(params)} = {kind} AND kiln_json_equal({field.extract(params)}, ?))"
    params.append(orjson.dumps(value).decode())
    return sql


def _one_of(field: _Field, values: list[Any], params: Params) -> str:
    if field.column is not None:
        kept = [_bind(v) for v in values if type_rank(v) == field.rank]
        if not kept:
            return "0"
        params.extend(kept)
        return f"{field.column} IN ({', '.join('?' * len(kept))})"
    return "(" + (" OR ".join(_equal(field, v, params) for v in values) or "0") + ")"


def _compare_class(field: _Field, value: Any, operator: Operator, params: Params) -> str:
    symbol = _SQL_OPERATORS[operator]
    rank = type_rank(value)
    if rank not in (RANK_NUMBER, RANK_STRING):
        return "0"
    if field.column is not None:
        if rank != field.rank:
            return "0"
        params.append(_bind(value))
        return f"{field.column} {symbol} ?"
    kinds = "IN ('integer', 'real')" if rank == RANK_NUMBER else "= 'text'"
    sql = f"({field.type(params)} {kinds} AND {field.extract(params)} {symbol} ?)"
    params.append(_bind(value))
    return sql


def _compare_total(field: _Field, value: Any, operator: Operator, params: Params) -> str:
    symbol = _SQL_OPERATORS[operator]
    rank = type_rank(value)
    strict = ">" if operator in (Operator.GT, Operator.MIN) else "<"
    if field.column is not None:
        if rank != field.rank:
            return "1" if eval_rank(field.rank, symbol, rank) else "0"
        params.append(_bind(value))
        return f"{field.column} {symbol} ?"
    field_rank = _RANK.format(t=field.type(params))
    if rank in (RANK_NUMBER, RANK_STRING, RANK_ARRAY, RANK_OBJECT):
        container = rank in (RANK_ARRAY, RANK_OBJECT)
        bound = orjson.dumps(value).decode() if container else _bind(value)
        sql = (
            f"({field_rank} {strict} {rank} OR ({_RANK.format(t=field.type(params))} = {rank}"
            f" AND {field.extract(params)} {symbol} ?))"
        )
        params.append(bound)
        return sql
    return f"{field_rank} {symbol} {rank}"


def eval_rank(left: int, symbol: str, right: int) -> bool:
    return {"<": left < right, ">": left > right, "<=": left <= right, ">=": left >= right}[symbol]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def compile_filter(filter_: Filter, params: Params, *, total_order: bool = False) -> str:
    """One filter as a SQL condition (never NULL), its parameters appended to ``params``."""
    field_name, value, operator = filter_
    field = _Field(field_name)
    if operator is Operator.EQ:
        return f"IFNULL({_equal(field, value, params)}, 0)"
    if operator is Operator.NOT:
        return f"NOT IFNULL({_equal(field, value, params)}, 0)"
    if operator is Operator.IN:
        return f"IFNULL({_one_of(field, _as_list(value), params)}, 0)"
    if operator is Operator.EXCLUDE:
        return f"NOT IFNULL({_one_of(field, _as_list(value), params)}, 0)"
    if operator is Operator.HAS:
        if field.column is not None:
            return "1" if value else "0"
        return f"{field.type(params)} IS {'NOT NULL' if value else 'NULL'}"
    if operator is Operator.LIKE:
        if not isinstance(value, str) or field.column == "last_modified":
            return "0"
        if field.column is not None:
            return _like(field.column, [], value, params)
        sql = f"IFNULL({field.type(params)} = 'text' AND "
        return sql + _like(f"{field.extract_fn}(data, ?)", [field.path], value, params) + ", 0)"
    if operator is Operator.CONTAINS or operator is Operator.CONTAINS_ANY:
        if field.column is not None:
            return "0"
        every = 1 if operator is Operator.CONTAINS else 0
        sql = (
            f"IFNULL({field.type(params)} = 'array'"
            f" AND kiln_contains({field.extract(params)}, ?, {every}), 0)"
        )
        params.append(orjson.dumps(_as_list(value)).decode())
        return sql
    if total_order:
        return f"IFNULL({_compare_total(field, value, operator, params)}, 0)"
    return f"IFNULL({_compare_class(field, value, operator, params)}, 0)"


def _like(text: str, text_params: list[Any], value: str, params: Params) -> str:
    """``text`` (SQL whose parameters are ``text_params``) matches ``value``
    case-insensitively, as :func:`~kiln.storage._python_filters.glob_match`
    says. An ASCII text (most are: as many bytes as characters) goes through
    SQLite's own ``LIKE``, case-insensitive for ASCII, with the pattern
    Python casefolded, for the same answer at C speed; only other texts call
    ``kiln_like`` (``str.casefold`` in Python, row by row)."""
    params.extend(text_params * 3)
    params.append(like_pattern(value.casefold()))
    params.extend(text_params)
    params.append(value)
    return (
        f"CASE WHEN length(CAST({text} AS BLOB)) = length({text})"
        f" THEN {text} LIKE ? ESCAPE '\\' ELSE kiln_like({text}, ?) END"
    )


def compile_where(
    filters: Sequence[Filter],
    pagination_rules: Sequence[Sequence[Filter]],
    params: Params,
) -> str:
    """The conditions after the collection's, each starting with `` AND``."""
    sql = "".join(f" AND {compile_filter(f, params)}" for f in filters)
    if pagination_rules:
        rules = [
            " AND ".join(compile_filter(f, params, total_order=True) for f in rule) or "1"
            for rule in pagination_rules
        ]
        sql += " AND ((" + ") OR (".join(rules) + "))"
    return sql


def compile_order(sorting: Sequence[Sort], params: Params) -> str:
    if not sorting:
        return ""
    terms = []
    for sort in sorting:
        direction = "DESC" if sort.direction < 0 else "ASC"
        field = _Field(sort.field)
        if field.column is not None:
            terms.append(f"{field.column} {direction}")
        else:
            terms.append(f"{_RANK.format(t=field.type(params))} {direction}")
            terms.append(f"{field.extract(params)} {direction}")
    return " ORDER BY " + ", ".join(terms)
