"""Storage in PostgreSQL (psycopg 3, a pool per process): the production backend.

Layout (schema version 1; see ``docs/storage.md`` for the reasons)::

    records(resource_name, parent_id, id, last_modified, deleted, data JSONB)
        PRIMARY KEY (resource_name, parent_id, id)         get, ORDER BY id
        INDEX (resource_name, parent_id, last_modified)    _since, ORDER BY last_modified
    timestamps(resource_name, parent_id, last_modified)    PRIMARY KEY (resource_name, parent_id)
    kiln_casefold(text)                                     LIKE, case-insensitively
    schema_versions(component, version)

Text columns use the ``"C"`` collation: ids compare by code point (UTF-8
bytes), as the contract wants, and the B-trees compare bytes. ``data`` is
the record without ``id`` and ``last_modified`` (they are columns); a
tombstone is the same row with ``deleted`` and ``data = {"deleted": true}``.

Writes. Every write first locks its collection's ``timestamps`` row
(``SELECT ... FOR UPDATE``), then reads what it checks (the record for
``if_match`` and unicity, which sees every commit made before the lock was
granted), then writes the record and the new collection timestamp
``max(now, current + 1)`` in one statement. The lock is held until the
unit of work ends, so the writers of one collection take turns: timestamps
are unique and increase in commit order (a ``_since`` follower never misses
a record), ``if_match`` is a true compare-and-swap, and two creates of one
id cannot both succeed -- without a single unique-violation or
serialization error to retry. A contract error (``UnicityError``, ...) is
raised before anything is written. Round trips of a write: the ``BEGIN``,
lock and read share one pipeline, the write is one statement, then the
commit.

Reads. One statement each; filters and sorts compile to SQL over
``data #> path`` with the path bound as a ``text[]`` parameter, and every
value is bound too: the SQL text depends only on the *shape* of a query
(operators and value types), so psycopg prepares it once per connection.
Values of different JSON types order as the contract says (a rank, then
numbers as ``numeric``, strings in ``"C"`` collation, arrays and objects
by their JSON text). Keyset pages on ``last_modified`` or ``id`` also get
the bound all their rules imply (:func:`implied_bound`), so the index scan
starts at the page. Lists never count.

Read replicas. With ``storage.read_urls``, the reads of a request the
views route to a replica (:meth:`PostgreSQLStorage.route_request`) --
:meth:`~PostgreSQLStorage.get`, :meth:`~PostgreSQLStorage.list_all`,
:meth:`~PostgreSQLStorage.count_all`,
:meth:`~PostgreSQLStorage.collection_timestamp` and
:meth:`~PostgreSQLStorage.snapshot` -- run the same SQL on the replica
(:meth:`~kiln._postgresql.PostgreSQLDatabase.reader`); a collection or
record timestamp older than what the client has seen sends the request to
the primary (:meth:`~kiln._postgresql.PostgreSQLDatabase.require_fresh`).
Writes, and reads inside a unit of work that writes, use the primary.

PostgreSQL cannot store the character U+0000 in ``jsonb`` or ``text``:
creating or updating a record holding it raises :class:`BackendError`;
filters with it match what the contract says (nothing stored holds it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from decimal import Decimal
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from kiln._postgresql import (
    Migration,
    PostgreSQLDatabase,
    database_for,
    load_migrations,
    replicas_for,
)
from kiln.exceptions import BackendError
from kiln.storage import (
    Filter,
    Operator,
    PreconditionFailed,
    Record,
    RecordNotFoundError,
    Sort,
    StorageBase,
    UnicityError,
)
from kiln.storage._python_filters import (
    MISSING,
    RANK_ARRAY,
    RANK_NUMBER,
    RANK_OBJECT,
    RANK_STRING,
    get_path,
    is_number,
    type_rank,
)

if TYPE_CHECKING:
    from psycopg import Connection, Cursor

__all__ = ["PostgreSQLStorage", "load"]

T = TypeVar("T")

# About the ``noqa: S608`` below: SQL text is assembled only from constant
# fragments of this module and ``%(name)s`` placeholders; every value, and
# every user-given field name (as a JSON path), is a bound parameter.

#: ``str.casefold`` as well as PostgreSQL can: ICU's full case mappings
#: (``ß`` and ``ẞ`` fold to ``ss``, ``İ`` to ``i̇``, a final sigma to a sigma).
CASEFOLD_ICU = (
    "CREATE OR REPLACE FUNCTION kiln_casefold(value text) RETURNS text"
    " LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE"
    " AS $$ SELECT replace(lower(upper(lower(value COLLATE \"und-x-icu\"))), 'ς', 'σ') $$"  # noqa: RUF001
)
#: Without ICU, the database collation's ``lower()``.
CASEFOLD_PLAIN = (
    "CREATE OR REPLACE FUNCTION kiln_casefold(value text) RETURNS text"
    " LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$ SELECT lower(value) $$"
)


def migrations(icu: bool) -> tuple[Migration, ...]:
    """The numbered migrations of the storage schema (``kiln/migrations/postgresql/
    storage``); version 1 first creates ``kiln_casefold`` for the server
    (``icu``: it has ICU collations)."""
    casefold = ("create function kiln_casefold", CASEFOLD_ICU if icu else CASEFOLD_PLAIN)
    return load_migrations(
        resources.files("kiln.migrations").joinpath("postgresql", "storage"), {1: [casefold]}
    )


_TOMBSTONE_DATA = '{"deleted": true}'
_IN_COLLECTION = "resource_name = %(resource)s AND parent_id = %(parent)s"
_NOW_MS = "floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint"

_SELECT_ONE = (
    "SELECT last_modified, deleted, data FROM records"  # noqa: S608
    f" WHERE {_IN_COLLECTION} AND id = %(id)s"
)
_SELECT_TIMESTAMP = f"SELECT last_modified FROM timestamps WHERE {_IN_COLLECTION}"  # noqa: S608
_LOCK = (
    f"SELECT last_modified, {_NOW_MS} FROM timestamps"  # noqa: S608
    f" WHERE {_IN_COLLECTION} FOR UPDATE"
)
_ADD_TIMESTAMP = (
    "INSERT INTO timestamps (resource_name, parent_id, last_modified)"
    " VALUES (%(resource)s, %(parent)s, 0) ON CONFLICT DO NOTHING"
)
_SET_TIMESTAMP = (
    "UPDATE timestamps SET last_modified = %(collection)s"  # noqa: S608
    f" WHERE {_IN_COLLECTION}"
)
_STORE = (
    f"WITH stamp AS ({_SET_TIMESTAMP})"  # noqa: S608
    " INSERT INTO records (resource_name, parent_id, id, last_modified, deleted, data)"
    " VALUES (%(resource)s, %(parent)s, %(id)s, %(timestamp)s, false, %(data)s::jsonb)"
    " ON CONFLICT (resource_name, parent_id, id) DO UPDATE SET"
    " last_modified = excluded.last_modified, deleted = false, data = excluded.data"
    " RETURNING data"
)
_BURY = (
    f"WITH stamp AS ({_SET_TIMESTAMP})"  # noqa: S608
    f" UPDATE records SET deleted = true, last_modified = buried.timestamp,"
    f" data = '{_TOMBSTONE_DATA}'"
    " FROM unnest(%(ids)s::text[], %(timestamps)s::bigint[]) AS buried(id, timestamp)"
    f" WHERE {_IN_COLLECTION} AND records.id = buried.id"
)

# -- filters and sorts to SQL --------------------------------------------------

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


def _json(value: Any) -> str:
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
        return "{" + ", ".join(f"{_json(k)}: {jsonb_text(value[k])}" for k in keys) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(jsonb_text(item) for item in value) + "]"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "null"  # as orjson writes it
        text = format(Decimal(repr(value)), "f")
        return text[1:] if text.startswith("-") and not Decimal(text) else text
    return _json(value)


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
    kept = [_json(v) for v in values if not unmatchable(v)]
    if not kept:
        return "false"
    if len(kept) == 1:
        return f"COALESCE({field.x} = {params.bind(kept[0])}::jsonb, false)"
    return f"COALESCE({field.x} = ANY({params.bind(kept)}::jsonb[]), false)"


def like_pattern(pattern: str) -> str:
    """``pattern`` (``*`` wildcards, else a substring) as a SQL ``LIKE`` pattern."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    escaped = escaped.replace("*", "%")
    return escaped if "*" in pattern else f"%{escaped}%"


def _like(field: _Field, value: Any, params: Params) -> str:
    if not isinstance(value, str) or "\x00" in value or field.column == "last_modified":
        return "false"
    pattern = f"kiln_casefold({params.bind(like_pattern(value))})"
    if field.column is not None:
        return f"kiln_casefold(id) LIKE {pattern}"
    return (
        f"CASE WHEN {field.type_is(_IS_STRING)}"
        f" THEN kiln_casefold({field.x} #>> '{{}}') LIKE {pattern} ELSE false END"
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
            wanted = params.bind(_json(values))
            return f"COALESCE({is_array} AND {field.x} @> {wanted}::jsonb, false)"
        wanted = params.bind([_json(v) for v in values])
        return (
            f"CASE WHEN {is_array} THEN NOT EXISTS (SELECT 1 FROM unnest({wanted}::jsonb[])"  # noqa: S608
            f" AS wanted(v) WHERE NOT EXISTS (SELECT 1 FROM jsonb_array_elements({field.x})"
            " AS item(v) WHERE item.v = wanted.v)) ELSE false END"
        )
    kept = [_json(v) for v in values if not unmatchable(v)]
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


def compile_filter(filter_: Filter, params: Params, *, total_order: bool = False) -> str:
    """One filter as a SQL condition (never NULL), its values bound in ``params``."""
    field_name, value, operator = filter_
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
    filters: Sequence[Filter], pagination_rules: Sequence[Sequence[Filter]], params: Params
) -> str:
    """The conditions after the collection's, each starting with `` AND``."""
    sql = "".join(f" AND {compile_filter(f, params)}" for f in filters)
    if pagination_rules:
        bound = implied_bound(pagination_rules)
        if bound is not None:
            sql += f" AND {compile_filter(bound, params, total_order=True)}"
        rules = [
            " AND ".join(compile_filter(f, params, total_order=True) for f in rule) or "true"
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


def compile_order(sorting: Sequence[Sort], params: Params) -> str:
    if not sorting:
        return ""
    terms = []
    for sort in sorting:
        direction = "DESC" if sort.direction < 0 else "ASC"
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


def list_query(
    resource_name: str,
    parent_id: str,
    *,
    filters: Sequence[Filter] = (),
    sorting: Sequence[Sort] = (),
    pagination_rules: Sequence[Sequence[Filter]] = (),
    limit: int | None = None,
    include_deleted: bool = False,
) -> tuple[str, Params]:
    """The statement :meth:`PostgreSQLStorage.list_all` runs, and its parameters."""
    params = Params(resource=resource_name, parent=parent_id)
    live = "" if include_deleted else " AND NOT deleted"
    where = compile_where(filters, pagination_rules, params)
    order = compile_order(sorting, params)
    bound = params.bind(None if limit is None else max(limit, 0))
    sql = (
        "SELECT id, last_modified, data FROM records"  # noqa: S608
        f" WHERE {_IN_COLLECTION}{live}{where}{order} LIMIT {bound}"
    )
    return sql, params


# -- the backend ---------------------------------------------------------------


def _forced(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _next_timestamp(current: int, now: int, forced: int | None, floor: int | None) -> int:
    """The timestamp of the next change; ``forced`` is kept when above ``floor``
    (the record's, else the collection's)."""
    if forced is not None and forced > (current if floor is None else floor):
        return forced
    return max(now, current + 1)


def _record(object_id: str, last_modified: int, data: Record) -> Record:
    data["id"] = object_id
    data["last_modified"] = last_modified
    return data


def _storable(*texts: str) -> bool:
    return not any("\x00" in text for text in texts)


class PostgreSQLStorage(StorageBase):
    """Storage in a PostgreSQL database.

    Settings (read by :func:`kiln.storage.load_storage`): ``storage.url``
    (``postgresql://user:password@host:5432/dbname``), ``storage.pool_size``,
    ``storage.pool_timeout_seconds``, ``storage.connect_timeout_seconds``,
    ``storage.statement_timeout_ms``; for read replicas ``storage.read_urls``,
    ``storage.replica_max_lag_seconds``, ``storage.replica_check_seconds``,
    ``storage.replica_retry_seconds``, ``storage.read_your_writes_seconds``.

    :param database: a :class:`~kiln._postgresql.PostgreSQLDatabase`, or a URL
        (then the process-wide shared database for that URL).
    """

    def __init__(self, database: PostgreSQLDatabase | str) -> None:
        if isinstance(database, str):
            database = PostgreSQLDatabase.shared(database)
        self.database = database

    # -- lifecycle -----------------------------------------------------

    def initialize_schema(self, dry_run: bool = False) -> list[str]:
        db = self.database
        with db.transaction() as conn:
            encoding, icu = db.execute(
                conn,
                "SELECT current_setting('server_encoding'),"
                " EXISTS (SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu')",
            ).fetchone() or ("", False)
        if encoding != "UTF8":
            raise BackendError(
                f"PostgreSQL database {db.name} uses the encoding {encoding}; kiln stores "
                "JSON and needs UTF8. Create the database with ENCODING 'UTF8'."
            )
        return db.install_schema("storage", migrations(icu), dry_run=dry_run)

    def flush(self) -> None:
        db = self.database
        with db.transaction() as conn:
            db.begin_write(conn)
            db.pipeline(conn, ("DELETE FROM records", None), ("DELETE FROM timestamps", None))

    def heartbeat(self) -> bool:
        try:
            with self.database.transaction() as conn:
                self.database.execute(conn, "SELECT 1 FROM timestamps LIMIT 1").fetchall()
        except Exception:
            return False
        return True

    def close(self) -> None:
        self.database.close()

    def transaction(self) -> Any:
        return self.database.transaction()

    def snapshot(self) -> Any:
        return self.database.reader().snapshot()

    def route_request(
        self,
        work: Callable[[], T],
        *,
        method: str,
        if_match: bool,
        resource_name: str,
        user_id: str | None,
        seen: int | None,
    ) -> T:
        """Run a request's unit of work ``work``, its reads on a read replica
        when it may (:meth:`kiln._postgresql.PostgreSQLDatabase.route`).

        ``method`` is the request's, ``if_match`` whether it has ``If-Match``,
        ``user_id`` the caller's (None: anonymous), ``seen`` the newest
        timestamp of ``resource_name`` the client sent (``If-None-Match``,
        ``_since``, ``_before``).
        """
        return self.database.route(
            work,
            method=method,
            if_match=if_match,
            resource_name=resource_name,
            user_id=user_id,
            seen=seen,
        )

    # -- helpers -------------------------------------------------------

    def _lock(
        self,
        conn: Connection[Any],
        resource_name: str,
        parent_id: str,
        then: tuple[str, Params],
    ) -> tuple[int, int, Cursor[Any]]:
        """Lock the collection; return its timestamp, the time, and the cursor of
        ``then`` (a read run right after the lock was granted)."""
        db = self.database
        db.begin_write(conn)
        keys = {"resource": resource_name, "parent": parent_id}
        lock, after = db.pipeline(conn, (_LOCK, keys), (then[0], then[1].values))
        row = lock.fetchone()
        if row is None:
            _, lock, after = db.pipeline(
                conn, (_ADD_TIMESTAMP, keys), (_LOCK, keys), (then[0], then[1].values)
            )
            row = lock.fetchone()
        assert row is not None
        return int(row[0]), int(row[1]), after

    def _check_unique(
        self,
        conn: Connection[Any],
        resource_name: str,
        parent_id: str,
        record: Record,
        object_id: str,
        unique_fields: Sequence[str],
    ) -> None:
        for field in unique_fields:
            value = get_path(record, field)
            if value is MISSING or value is None:
                continue
            params = Params(resource=resource_name, parent=parent_id, id=object_id)
            condition = compile_filter(Filter(field, value, Operator.EQ), params)
            row = self.database.execute(
                conn,
                "SELECT id, last_modified, data FROM records"  # noqa: S608
                f" WHERE {_IN_COLLECTION} AND NOT deleted AND id <> %(id)s AND {condition}"
                " LIMIT 1",
                params.values,
            ).fetchone()
            if row is not None:
                raise UnicityError(field, _record(*row))

    @staticmethod
    def _data(record: Record) -> str:
        return _json({k: v for k, v in record.items() if k not in ("id", "last_modified")})

    def _store(
        self,
        conn: Connection[Any],
        keys: dict[str, Any],
        data: str,
        timestamp: int,
        collection: int,
    ) -> Record:
        import psycopg

        try:
            row = self.database.execute(
                conn,
                _STORE,
                {**keys, "data": data, "timestamp": timestamp, "collection": collection},
            ).fetchone()
        except psycopg.errors.UntranslatableCharacter as exc:
            raise BackendError(
                "PostgreSQL cannot store the character U+0000 (\\u0000) in a JSON string; "
                "remove it from the record.",
                original=exc,
            ) from exc
        assert row is not None
        return _record(keys["id"], timestamp, row[0])

    @staticmethod
    def _refuse_unstorable(*texts: str) -> None:
        if not _storable(*texts):
            raise BackendError(
                "PostgreSQL cannot store the character U+0000 in a resource name, parent "
                "id or record id."
            )

    # -- timestamps ----------------------------------------------------

    def collection_timestamp(self, resource_name: str, parent_id: str) -> int:
        if not _storable(resource_name, parent_id):
            return 0
        db = self.database.reader()
        with db.transaction() as conn:
            row = db.execute(
                conn, _SELECT_TIMESTAMP, {"resource": resource_name, "parent": parent_id}
            ).fetchone()
        timestamp = int(row[0]) if row is not None else 0
        if db is not self.database:
            self.database.require_fresh(resource_name, timestamp)
        return timestamp

    # -- single records ------------------------------------------------

    def create(
        self,
        resource_name: str,
        parent_id: str,
        record: Record,
        *,
        id_generator: Callable[[], str] | None = None,
        unique_fields: Sequence[str] = (),
    ) -> Record:
        object_id = self.new_id(record, id_generator)
        self._refuse_unstorable(resource_name, parent_id, object_id)
        data = self._data(record)
        keys = {"resource": resource_name, "parent": parent_id, "id": object_id}
        with self.database.transaction() as conn:
            current, now, cursor = self._lock(
                conn, resource_name, parent_id, (_SELECT_ONE, Params(**keys))
            )
            row = cursor.fetchone()
            if row is not None and not row[1]:
                raise UnicityError("id", _record(object_id, row[0], row[2]))
            self._check_unique(conn, resource_name, parent_id, record, object_id, unique_fields)
            timestamp = _next_timestamp(current, now, _forced(record.get("last_modified")), None)
            return self._store(conn, keys, data, timestamp, max(current, timestamp))

    def get(self, resource_name: str, parent_id: str, object_id: str) -> Record:
        if not _storable(resource_name, parent_id, object_id):
            raise RecordNotFoundError(object_id)
        db = self.database.reader()
        keys = {"resource": resource_name, "parent": parent_id, "id": object_id}
        with db.transaction() as conn:
            row = db.execute(conn, _SELECT_ONE, keys).fetchone()
        if db is not self.database:
            # A tombstone's timestamp counts: it is the record's latest change.
            self.database.require_fresh(resource_name, 0 if row is None else int(row[0]))
        if row is None or row[1]:
            raise RecordNotFoundError(object_id)
        return _record(object_id, row[0], row[2])

    def update(
        self,
        resource_name: str,
        parent_id: str,
        object_id: str,
        record: Record,
        *,
        if_match: int | None = None,
        unique_fields: Sequence[str] = (),
    ) -> Record:
        self._refuse_unstorable(resource_name, parent_id, object_id)
        data = self._data(record)
        keys = {"resource": resource_name, "parent": parent_id, "id": object_id}
        with self.database.transaction() as conn:
            current, now, cursor = self._lock(
                conn, resource_name, parent_id, (_SELECT_ONE, Params(**keys))
            )
            row = cursor.fetchone()
            if row is not None and row[1]:
                row = None  # a tombstone: no live record
            if if_match is not None and (row is None or row[0] != if_match):
                raise PreconditionFailed(
                    None if row is None else _record(object_id, row[0], row[2])
                )
            self._check_unique(conn, resource_name, parent_id, record, object_id, unique_fields)
            forced = _forced(record.get("last_modified"))
            timestamp = _next_timestamp(current, now, forced, None if row is None else row[0])
            return self._store(conn, keys, data, timestamp, max(current, timestamp))

    def delete(
        self,
        resource_name: str,
        parent_id: str,
        object_id: str,
        *,
        if_match: int | None = None,
        last_modified: int | None = None,
    ) -> Record:
        if not _storable(resource_name, parent_id, object_id):
            if if_match is not None:
                raise PreconditionFailed(None)
            raise RecordNotFoundError(object_id)
        keys = {"resource": resource_name, "parent": parent_id, "id": object_id}
        with self.database.transaction() as conn:
            current, now, cursor = self._lock(
                conn, resource_name, parent_id, (_SELECT_ONE, Params(**keys))
            )
            row = cursor.fetchone()
            if row is None or row[1]:
                if if_match is not None:
                    raise PreconditionFailed(None)
                raise RecordNotFoundError(object_id)
            if if_match is not None and row[0] != if_match:
                raise PreconditionFailed(_record(object_id, row[0], row[2]))
            timestamp = _next_timestamp(current, now, _forced(last_modified), row[0])
            self._bury(conn, resource_name, parent_id, [object_id], [timestamp], current)
            return {"id": object_id, "last_modified": timestamp, "deleted": True}

    def _bury(
        self,
        conn: Connection[Any],
        resource_name: str,
        parent_id: str,
        ids: list[str],
        timestamps: list[int],
        current: int,
    ) -> None:
        self.database.execute(
            conn,
            _BURY,
            {
                "resource": resource_name,
                "parent": parent_id,
                "ids": ids,
                "timestamps": timestamps,
                "collection": max(current, *timestamps),
            },
        )

    # -- many records --------------------------------------------------

    def list_all(
        self,
        resource_name: str,
        parent_id: str,
        *,
        filters: Sequence[Filter] = (),
        sorting: Sequence[Sort] = (),
        pagination_rules: Sequence[Sequence[Filter]] = (),
        limit: int | None = None,
        include_deleted: bool = False,
    ) -> list[Record]:
        if not _storable(resource_name, parent_id):
            return []
        sql, params = list_query(
            resource_name,
            parent_id,
            filters=filters,
            sorting=sorting,
            pagination_rules=pagination_rules,
            limit=limit,
            include_deleted=include_deleted,
        )
        db = self.database.reader()
        with db.transaction() as conn:
            rows = db.execute(conn, sql, params.values).fetchall()
        return [_record(*row) for row in rows]

    def count_all(
        self, resource_name: str, parent_id: str, *, filters: Sequence[Filter] = ()
    ) -> int:
        if not _storable(resource_name, parent_id):
            return 0
        params = Params(resource=resource_name, parent=parent_id)
        where = compile_where(filters, (), params)
        sql = f"SELECT count(*) FROM records WHERE {_IN_COLLECTION} AND NOT deleted{where}"  # noqa: S608
        db = self.database.reader()
        with db.transaction() as conn:
            row = db.execute(conn, sql, params.values).fetchone()
        return int(row[0]) if row is not None else 0

    def delete_all(
        self,
        resource_name: str,
        parent_id: str,
        *,
        filters: Sequence[Filter] = (),
        sorting: Sequence[Sort] = (),
        limit: int | None = None,
    ) -> list[Record]:
        if not _storable(resource_name, parent_id):
            return []
        params = Params(resource=resource_name, parent=parent_id)
        where = compile_where(filters, (), params)
        order = compile_order(sorting, params)
        bound = params.bind(None if limit is None else max(limit, 0))
        sql = (
            "SELECT id FROM records"  # noqa: S608
            f" WHERE {_IN_COLLECTION} AND NOT deleted{where}{order} LIMIT {bound}"
        )
        with self.database.transaction() as conn:
            current, now, cursor = self._lock(conn, resource_name, parent_id, (sql, params))
            ids = [row[0] for row in cursor.fetchall()]
            if not ids:
                return []
            first = max(now, current + 1)
            timestamps = list(range(first, first + len(ids)))
            self._bury(conn, resource_name, parent_id, ids, timestamps, current)
        return [
            {"id": object_id, "last_modified": timestamp, "deleted": True}
            for object_id, timestamp in zip(ids, timestamps, strict=True)
        ]

    def purge_deleted(
        self, resource_name: str, parent_id: str, *, before: int | None = None
    ) -> int:
        if not _storable(resource_name, parent_id):
            return 0
        sql = f"DELETE FROM records WHERE {_IN_COLLECTION} AND deleted"  # noqa: S608
        params: dict[str, Any] = {"resource": resource_name, "parent": parent_id}
        if before is not None:
            sql += " AND last_modified < %(before)s"
            params["before"] = before
        db = self.database
        with db.transaction() as conn:
            db.begin_write(conn)
            return db.execute(conn, sql, params).rowcount


def load(config: Any) -> PostgreSQLStorage:
    """The backend of ``storage.backend = "postgresql"``.

    Reads ``storage.url``, the pool settings and the read replicas' (see
    :class:`PostgreSQLStorage`).
    """
    database = database_for(config, config.setting("storage.url"))
    replicas_for(config, database)
    return PostgreSQLStorage(database)
