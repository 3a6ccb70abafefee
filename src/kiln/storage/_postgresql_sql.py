"""PostgreSQL storage's filters and sorts, compiled to SQL (pure: no I/O).

A field is a column (``id``, ``last_modified``) or ``data #> path`` with
the path bound as a ``text[]`` parameter; every value is bound too, so the
SQL text depends only on the *shape* of a query (operators and value
types) and psycopg prepares it once per connection. Values of different
JSON types order as the contract says: a rank, then numbers as
``numeric``, strings in ``"C"`` collation, arrays and objects by their JSON
text (:func:`jsonb_text`). Keyset pages on ``last_modified`` or ``id`` also
get the bound all their rules imply (:func:`implied_bound`), so the index
scan starts at the page. Every condition is true or false, never ``NULL``.

PostgreSQL cannot store U+0000 in ``jsonb`` or ``text``: a value holding it
equals nothing stored (:func:`unmatchable`), and comparisons with it are
rewritten without it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import orjson

from kiln._sql import like_pattern
from kiln.storage import Filter, Operator, Sort
from kiln.storage._python_filters import (
    RANK_ARRAY,
    RANK_NUMBER,
    RANK_OBJECT,
    RANK_STRING,
    is_number,
    type_rank,
)

__all__ = [
    "Params",
    "compile_filter",
    "compile_order",
    "compile_where",
    "dump_json",
    "implied_bound",
    "jsonb_text",
    "like_pattern",
    "unmatchable",
]

# About the ``noqa: S608`` below: SQL text is assembled only from constant
# fragments of this module and ``%(name)s`` placeholders; every value, and
# every user-given field name (as a JSON path), is a bound parameter.

_SQL_OPERATORS = {Operator.LT: "<", Operator.GT: ">", Operator.MIN: ">=", Operator.MAX: "<="}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_IS_NUMBER, _IS_STRING, _IS_ARRAY = "= 'number'", "= 'string'", "= 'array'"
_IS_CONTAINER = "IN ('array', 'object')"


class Params:
    """The named parameters of one statement; the SQL refers to ``%(name)s``."""

    __slots__ = ("values",)

    def __init__(self, **values: Any) -> None:
        self.values: dict[str, Any] = values

    def bind(self, value: Any) -> str:
        name = f"v{len(self.values)}"
        self.values[name] = value
        return f"%({name})s"


class _Field:
    """How one dotted field reads in SQL: a column, or ``data #> path``."""

    __slots__ = ("column", "rank", "x")

    def __init__(self, name: str, params: Params) -> None:
        self.column: str | None = None
        self.rank = 0
        self.x = ""
        if name in ("id", "last_modified"):
            self.column = name
            self.rank = RANK_STRING if name == "id" else RANK_NUMBER
            return
        keys = name.split(".")
        if any("\x00" in key for key in keys):
            self.x = "NULL::jsonb"  # no stored key holds U+0000: always missing
            return
        x = f"data #> {params.bind(keys)}::text[]"
        # ``#>`` indexes arrays with keys such as "0" or " -1"; a dotted field
        # only ever goes into objects, so such a key needs an object above it.
        guards = [
            f"jsonb_typeof(data #> {params.bind(keys[:i])}::text[]) = 'object'"
            for i in range(1, len(keys))
            if any(c.isdigit() for c in keys[i])
        ]
        if guards:
            x = f"CASE WHEN {' AND '.join(guards)} THEN {x} END"
        self.x = f"({x})"

    def type_is(self, kinds: str) -> str:
        return f"jsonb_typeof({self.x}) {kinds}"

    def rank_sql(self) -> str:
        x = self.x
        return (
            f"CASE jsonb_typeof({x}) WHEN 'null' THEN 0"
            f" WHEN 'boolean' THEN CASE WHEN {x} = 'true'::jsonb THEN 2 ELSE 1 END"
            " WHEN 'number' THEN 3 WHEN 'string' THEN 4 WHEN 'array' THEN 5"
            " WHEN 'object' THEN 6 ELSE 7 END"
        )

    def number(self) -> str:
        return f"({self.x})::numeric"

    def string(self) -> str:
        return f"({self.x} #>> '{{}}') COLLATE \"C\""

    def json_text(self) -> str:
        return f'({self.x})::text COLLATE "C"'


def unmatchable(value: Any) -> bool:
    """Whether ``value`` equals nothing PostgreSQL stores: it holds U+0000 in a
    string (keys included), or a float that JSON cannot spell (``nan``, ``inf``)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list):
        return any(unmatchable(item) for item in value)
    if isinstance(value, dict):
        return any(unmatchable(key) or unmatchable(item) for key, item in value.items())
    return False


def dump_json(value: Any) -> str:
    """``value`` as compact JSON text (integers beyond 64 bits included)."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        # Integers beyond 64 bits: PostgreSQL's numeric holds them.
        return json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"))


def _numeric(value: int | float) -> str:
    return str(value) if isinstance(value, int) else repr(value)


def jsonb_text(value: Any) -> str:
    """The text PostgreSQL prints for ``value`` as ``jsonb`` (keys by length,
    then bytes; ``", "`` and ``": "``; numbers without exponent). Arrays and
    objects sort by it, and keyset pagination compares with it."""
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: (len(k.encode()), k.encode()))
        return "{" + ", ".join(f"{dump_json(k)}: {jsonb_text(value[k])}" for k in keys) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(jsonb_text(item) for item in value) + "]"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "null"  # as orjson writes it
        text = format(Decimal(repr(value)), "f")
        return text[1:] if text.startswith("-") and not Decimal(text) else text
    return dump_json(value)


def _without_nul(operator: Operator, value: str) -> tuple[Operator, str]:
    """A comparison with ``value`` as one with no U+0000, for strings without it:
    below ``p + "\\0..."`` means at most ``p``, above means above ``p``."""
    position = value.find("\x00")
    if position < 0:
        return operator, value
    if operator in (Operator.LT, Operator.MAX):
        return Operator.MAX, value[:position]
    return Operator.GT, value[:position]


def _is_nan(value: int | float) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _last_modified_compare(operator: Operator, value: int | float, params: Params) -> str:
    """``last_modified <op> value`` against the ``bigint`` column (and its index)."""
    below = operator in (Operator.LT, Operator.MAX)
    if isinstance(value, float):
        if math.isnan(value):
            return "false"
        if math.isinf(value):
            return "true" if below == (value > 0) else "false"
        value = math.floor(value) if operator in (Operator.GT, Operator.MAX) else math.ceil(value)
    if value > _INT64_MAX:
        return "true" if below else "false"
    if value < _INT64_MIN:
        return "false" if below else "true"
    return f"last_modified {_SQL_OPERATORS[operator]} {params.bind(value)}::bigint"


def _as_bigint(value: Any) -> int | None:
    """``value`` as a ``bigint`` it equals, if any (``2.0`` is ``2``; ``2.5`` none)."""
    if not is_number(value) or (isinstance(value, float) and not value.is_integer()):
        return None
    number = int(value)
    return number if _INT64_MIN <= number <= _INT64_MAX else None


def _column_values(field: _Field, values: list[Any]) -> list[Any]:
    """The values a column can equal (of its type, storable)."""
    if field.column == "id":
        return [v for v in values if isinstance(v, str) and "\x00" not in v]
    return [number for number in map(_as_bigint, values) if number is not None]


def _equal(field: _Field, value: Any, params: Params) -> str:
    """Never NULL."""
    return _one_of(field, [value], params)


def _one_of(field: _Field, values: list[Any], params: Params) -> str:
    """Never NULL."""
    if field.column is not None:
        kept = _column_values(field, values)
        kind = "text" if field.column == "id" else "bigint"
        if not kept:
            return "false"
        if len(kept) == 1:
            return f"{field.column} = {params.bind(kept[0])}::{kind}"
        return f"{field.column} = ANY({params.bind(kept)}::{kind}[])"
    kept = [dump_json(v) for v in values if not unmatchable(v)]
    if not kept:
        return "false"
    if len(kept) == 1:
        return f"COALESCE({field.x} = {params.bind(kept[0])}::jsonb, false)"
    return f"COALESCE({field.x} = ANY({params.bind(kept)}::jsonb[]), false)"


def _like(field: _Field, value: Any, params: Params) -> str:
    if not isinstance(value, str) or "\x00" in value or field.column == "last_modified":
        return "false"
    if field.column is not None:
        return _like_text("id", value, params)
    matches = _like_text(f"({field.x} #>> '{{}}')", value, params)
    return f"CASE WHEN {field.type_is(_IS_STRING)} THEN {matches} ELSE false END"


def _like_text(text: str, value: str, params: Params) -> str:
    """``text`` matches ``value`` case-insensitively. An ASCII text (most are)
    is lowered byte by byte (``COLLATE "C"``) and matched against the pattern
    Python casefolded; only other texts go through ``kiln_casefold``, whose
    ICU case mappings cost several times more."""
    return (
        f"CASE WHEN octet_length({text}) = char_length({text})"
        f' THEN lower({text} COLLATE "C") LIKE {params.bind(like_pattern(value.casefold()))}'
        f" ELSE kiln_casefold({text}) LIKE kiln_casefold({params.bind(like_pattern(value))})"
        " END"
    )


def _contains(field: _Field, value: Any, operator: Operator, params: Params) -> str:
    values = _as_list(value)
    if field.column is not None:
        return "false"
    is_array = field.type_is(_IS_ARRAY)
    if operator is Operator.CONTAINS:
        if any(unmatchable(v) for v in values):
            return "false"
        if all(type_rank(v) < RANK_ARRAY for v in values):
            # For scalars, jsonb containment is exactly element equality.
            wanted = params.bind(dump_json(values))
            return f"COALESCE({is_array} AND {field.x} @> {wanted}::jsonb, false)"
        wanted = params.bind([dump_json(v) for v in values])
        return (
            f"CASE WHEN {is_array} THEN NOT EXISTS (SELECT 1 FROM unnest({wanted}::jsonb[])"  # noqa: S608
            f" AS wanted(v) WHERE NOT EXISTS (SELECT 1 FROM jsonb_array_elements({field.x})"
            " AS item(v) WHERE item.v = wanted.v)) ELSE false END"
        )
    kept = [dump_json(v) for v in values if not unmatchable(v)]
    if not kept:
        return "false"
    return (
        f"CASE WHEN {is_array} THEN EXISTS (SELECT 1 FROM jsonb_array_elements({field.x})"  # noqa: S608
        f" AS item(v) WHERE item.v = ANY({params.bind(kept)}::jsonb[])) ELSE false END"
    )


def _compare_class(field: _Field, value: Any, operator: Operator, params: Params) -> str:
    """``LT GT MIN MAX`` in filters: within the value's type class."""
    rank = type_rank(value)
    if rank == RANK_NUMBER:
        if field.column == "last_modified":
            return _last_modified_compare(operator, value, params)
        if field.column is not None or _is_nan(value):
            return "false"
        return (
            f"CASE WHEN {field.type_is(_IS_NUMBER)} THEN {field.number()}"
            f" {_SQL_OPERATORS[operator]} {params.bind(_numeric(value))}::numeric ELSE false END"
        )
    if rank == RANK_STRING:
        operator, value = _without_nul(operator, value)
        symbol = _SQL_OPERATORS[operator]
        if field.column == "id":
            return f"id {symbol} {params.bind(value)}::text"
        if field.column is not None:
            return "false"
        return (
            f"CASE WHEN {field.type_is(_IS_STRING)} THEN {field.string()}"
            f" {symbol} {params.bind(value)}::text ELSE false END"
        )
    return "false"


def _compare_total(field: _Field, value: Any, operator: Operator, params: Params) -> str:
    """``LT GT MIN MAX`` in pagination rules: on the total sort order."""
    rank = type_rank(value)
    if rank == RANK_STRING:
        operator, value = _without_nul(operator, value)
    symbol = _SQL_OPERATORS[operator]
    strict = ">" if operator in (Operator.GT, Operator.MIN) else "<"
    if field.column is not None:
        if rank != field.rank:
            return "true" if _ordered(field.rank, symbol, rank) else "false"
        if field.column == "last_modified":
            return _last_modified_compare(operator, value, params)
        return f"id {symbol} {params.bind(value)}::text"
    if rank == RANK_NUMBER:
        kinds = _IS_NUMBER
        # As in Python, no number is below, above or equal to nan.
        typed = (
            "false"
            if _is_nan(value)
            else f"{field.number()} {symbol} {params.bind(_numeric(value))}::numeric"
        )
    elif rank == RANK_STRING:
        kinds, typed = _IS_STRING, f"{field.string()} {symbol} {params.bind(value)}::text"
    elif rank in (RANK_ARRAY, RANK_OBJECT):
        kinds = _IS_ARRAY if rank == RANK_ARRAY else "= 'object'"
        typed = f"{field.json_text()} {symbol} {params.bind(jsonb_text(value))}::text"
    else:
        return f"({field.rank_sql()}) {symbol} {rank}"
    otherwise = f"({field.rank_sql()}) {strict} {rank}"
    return f"CASE WHEN {field.type_is(kinds)} THEN {typed} ELSE {otherwise} END"


def _ordered(left: int, symbol: str, right: int) -> bool:
    return {"<": left < right, ">": left > right, "<=": left <= right, ">=": left >= right}[symbol]


def compile_filter(
    filter_: Filter,
    params: Params,
    *,
    total_order: bool = False,
    typed: Mapping[str, str] | None = None,
) -> str:
    """One filter as a SQL condition (never NULL), its values bound in ``params``.

    ``typed`` gives the one JSON type of some top-level fields (an index's):
    conditions on them are written as the index reads them (they may then be
    NULL where the field is missing, which ``WHERE`` and the ``OR`` of
    pagination rules read as false).
    """
    field_name, value, operator = filter_
    kind = typed.get(field_name) if typed else None
    if kind is not None:
        condition = typed_condition(field_name, kind, value, operator, params, total_order)
        if condition is not None:
            return condition
    field = _Field(field_name, params)
    if operator is Operator.EQ:
        return _equal(field, value, params)
    if operator is Operator.NOT:
        return f"NOT {_equal(field, value, params)}"
    if operator is Operator.IN:
        return _one_of(field, _as_list(value), params)
    if operator is Operator.EXCLUDE:
        return f"NOT {_one_of(field, _as_list(value), params)}"
    if operator is Operator.HAS:
        if field.column is not None:
            return "true" if value else "false"
        return f"{field.x} IS {'NOT NULL' if value else 'NULL'}"
    if operator is Operator.LIKE:
        return _like(field, value, params)
    if operator is Operator.CONTAINS or operator is Operator.CONTAINS_ANY:
        return _contains(field, value, operator, params)
    if total_order:
        return _compare_total(field, value, operator, params)
    return _compare_class(field, value, operator, params)


def compile_where(
    filters: Sequence[Filter],
    pagination_rules: Sequence[Sequence[Filter]],
    params: Params,
    typed: Mapping[str, str] | None = None,
) -> str:
    """The conditions after the collection's, each starting with `` AND``."""
    sql = "".join(f" AND {compile_filter(f, params, typed=typed)}" for f in filters)
    if pagination_rules:
        bound = implied_bound(pagination_rules)
        if bound is not None:
            sql += f" AND {compile_filter(bound, params, total_order=True)}"
        rules = [
            " AND ".join(compile_filter(f, params, total_order=True, typed=typed) for f in rule)
            or "true"
            for rule in pagination_rules
        ]
        sql += " AND ((" + ") OR (".join(rules) + "))"
    return sql


def implied_bound(pagination_rules: Sequence[Sequence[Filter]]) -> Filter | None:
    """A condition on ``id`` or ``last_modified`` that every rule implies, if any.

    Keyset rules on ``[last_modified desc, id]`` read ``lm < v OR (lm = v AND
    id > x)``: an index cannot start its scan at ``v`` from that ``OR``, and
    would read every row of the previous pages. Their first filters all
    imply ``lm <= v``; said once more, outside the ``OR``, it bounds the scan.
    """
    firsts = [rule[0] for rule in pagination_rules if rule]
    if len(firsts) != len(pagination_rules):
        return None
    field, value = firsts[0].field, firsts[0].value
    if field not in ("id", "last_modified") or any(
        f.field != field or type(f.value) is not type(value) or f.value != value for f in firsts
    ):
        return None
    operators = {f.operator for f in firsts}
    if operators <= {Operator.EQ, Operator.GT, Operator.MIN}:
        return Filter(field, value, Operator.MIN)
    if operators <= {Operator.EQ, Operator.LT, Operator.MAX}:
        return Filter(field, value, Operator.MAX)
    return None


def compile_order(
    sorting: Sequence[Sort], params: Params, typed: Mapping[str, str] | None = None
) -> str:
    if not sorting:
        return ""
    terms = []
    for sort in sorting:
        direction = "DESC" if sort.direction < 0 else "ASC"
        kind = typed.get(sort.field) if typed else None
        if kind is not None:
            # One type: its own order is the contract's, missing last (first descending).
            terms.append(f"{typed_expression(sort.field, kind)} {direction}")
            continue
        field = _Field(sort.field, params)
        if field.column is not None:
            terms.append(f"{field.column} {direction}")
            continue
        terms += [
            f"{field.rank_sql()} {direction}",
            f"CASE WHEN {field.type_is(_IS_NUMBER)} THEN {field.number()} END {direction}",
            f"CASE WHEN {field.type_is(_IS_STRING)} THEN {field.string()} END {direction}",
            f"CASE WHEN {field.type_is(_IS_CONTAINER)} THEN {field.json_text()} END {direction}",
        ]
    return " ORDER BY " + ", ".join(terms)


# -- fields of one type (an index's) -----------------------------------------------

_TYPED_OPERATORS = {Operator.LT: "<", Operator.GT: ">", Operator.MIN: ">=", Operator.MAX: "<="}


def sql_literal(text: str) -> str:
    """``text`` as a SQL string literal (for names from declarations, never values)."""
    return "'" + text.replace("'", "''") + "'"


def typed_expression(name: str, kind: str) -> str:
    """How an index reads top-level field ``name`` of JSON type ``kind``: the
    ``jsonb`` value (numbers and booleans compare in their own order), or a
    string's text in ``"C"`` collation (code points)."""
    if kind == "string":
        return f'((data ->> {sql_literal(name)}) COLLATE "C")'
    return f"(data -> {sql_literal(name)})"


def _typed_value(kind: str, value: Any, params: Params) -> str | None:
    """``value`` bound for a comparison with a field of type ``kind``, or ``None``
    when it is not of that type's class (numbers: finite ones)."""
    if kind == "string":
        if isinstance(value, str) and "\x00" not in value:
            return f"{params.bind(value)}::text"
        return None
    if kind == "boolean":
        return f"{params.bind(dump_json(value))}::jsonb" if isinstance(value, bool) else None
    if is_number(value) and not (isinstance(value, float) and not math.isfinite(value)):
        return f"{params.bind(dump_json(value))}::jsonb"
    return None


def typed_condition(
    name: str, kind: str, value: Any, operator: Operator, params: Params, total_order: bool
) -> str | None:
    """A condition on a field of one type, as its index reads it; ``None`` when
    the general compilation must be used (this operator, this value)."""
    x = typed_expression(name, kind)
    if operator is Operator.HAS:
        return f"{x} IS {'NOT NULL' if value else 'NULL'}"
    bound = _typed_value(kind, value, params)
    if operator is Operator.EQ:
        return f"{x} = {bound}" if bound is not None else None
    symbol = _TYPED_OPERATORS.get(operator)
    if symbol is None or bound is None:
        return None
    if not total_order:
        # Comparisons match values of the value's class: never booleans.
        return f"{x} {symbol} {bound}" if kind != "boolean" else "false"
    if operator in (Operator.GT, Operator.MIN):
        return f"({x} {symbol} {bound} OR {x} IS NULL)"  # a missing field sorts last
    return f"{x} {symbol} {bound}"
