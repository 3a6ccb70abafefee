"""Parsing a collection's query string into filters, sorting and pagination.

Sans-IO: plain values in, plain values out; nothing here touches Flask.

=====================  ======================================================
``field=v``            equals; ``not_``, ``min_``, ``max_``, ``gt_``, ``lt_``
``in_f=a,b``           one of; ``exclude_f=a,b`` none of
``has_f=true``         present (``false``: absent)
``like_f=*abc*``       case-insensitive match, ``*`` wildcard
``contains_f=[...]``   array holds every value; ``contains_any_f`` at least one
``_since=ts``          ``last_modified > ts`` (tombstones included)
``_before=ts``         ``last_modified < ts`` (tombstones included)
``_sort=a,-b``         ascending ``a``, then descending ``b``
``_limit=n``           page size (capped by ``paginate.max_limit``)
``_token=...``         continue from a ``Next-Page`` link
``_fields=a,b.c``      partial records
=====================  ======================================================

Values are JSON-decoded when they parse as JSON, else taken as strings
(``?size=3`` is the number 3, ``?name=Amanita`` the string). Fields may be
dotted (``author.name``). Any other parameter starting with ``_`` is
ignored; a parameter given twice is a filter applied twice (AND), except
the ``_`` parameters, which may appear once.

A query is bounded (:class:`QueryLimits`, from the settings
``query.max_filters``, ``query.max_filter_values`` and
``query.max_sort_fields``): past a bound it is refused here, with a 400
naming the parameter, rather than failing in a backend (SQLite's expression
depth, PostgreSQL's target list) with a 503.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from kiln.storage import (
    MAX_FILTER_VALUES,
    MAX_FILTERS,
    MAX_SORT_FIELDS,
    Filter,
    Operator,
    Sort,
)

__all__ = [
    "PROCESS_TOKEN_KEY",
    "Query",
    "QueryError",
    "QueryLimits",
    "decode_token",
    "encode_token",
    "pagination_context",
    "parse_query",
    "token_key",
]

ID_FIELD = "id"
MODIFIED_FIELD = "last_modified"
DELETED_FIELD = "deleted"
RESERVED_FIELDS = frozenset({ID_FIELD, MODIFIED_FIELD, DELETED_FIELD})

#: Query-string prefixes, longest first so ``contains_any_`` wins over ``contains_``.
_PREFIXES = sorted((op for op in Operator if op is not Operator.EQ), key=lambda op: -len(op))
_FIELD = re.compile(r"^[\w-]+(\.[\w-]+)*$")
#: A sort item: an optional sign, then a field whose segments do not start with
#: ``-`` (``--a`` would otherwise read as descending on a field named ``-a``).
_SORT_ITEM = re.compile(r"^([-+]?)(\w[\w-]*(?:\.\w[\w-]*)*)$")
#: ASCII digits only: ``str.isdigit`` accepts ``²``, which ``int()`` refuses.
_INTEGER = re.compile(r"^-?[0-9]{1,19}$")
#: Timestamps are signed 64-bit integers in every backend.
_MAX_TIMESTAMP = 2**63 - 1
_SPECIAL = frozenset({"_since", "_before", "_to", "_sort", "_limit", "_token", "_fields"})
#: Version 2 tokens are sealed (AES-SIV); version 1 ones (before 0.1.0) were
#: readable base64 JSON and are refused.
TOKEN_VERSION = 2
#: The key of tokens when none is given: this process's own.
PROCESS_TOKEN_KEY = os.urandom(32)


class QueryError(ValueError):
    """One invalid query-string parameter; views answer 400 (errno 107)."""

    def __init__(self, name: str, description: str) -> None:
        self.name = name
        self.description = description
        super().__init__(f"{name} in querystring: {description}")


@dataclass(frozen=True)
class QueryLimits:
    """How large a query may be (the ``query.*`` settings)."""

    #: Filters in one request (``_since``/``_before`` count).
    max_filters: int = MAX_FILTERS
    #: Values in one ``in_``/``exclude_``/``contains_``/``contains_any_`` filter.
    max_filter_values: int = MAX_FILTER_VALUES
    #: Fields in ``_sort``.
    max_sort_fields: int = MAX_SORT_FIELDS


@dataclass(frozen=True)
class Query:
    """What a collection request asks for."""

    filters: tuple[Filter, ...] = ()
    sorting: tuple[Sort, ...] = ()
    limit: int | None = None
    token: dict[str, Any] | None = None
    fields: tuple[str, ...] | None = None
    include_deleted: bool = False
    deprecated: tuple[str, ...] = field(default=())


def decode_value(raw: str) -> Any:
    """A query-string value: JSON when it parses, else the string itself."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw


def _timestamp(name: str, raw: str) -> int:
    text = raw.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    if not _INTEGER.match(text) or abs(int(text)) > _MAX_TIMESTAMP:
        raise QueryError(name, f"must be an integer timestamp, got {raw!r}.")
    return int(text)


def _list_items(raw: str) -> list[tuple[Any, str]]:
    """``in_``/``exclude_`` items as ``(decoded, raw text)``: a JSON list, else ``a,b,c``."""
    value = decode_value(raw)
    if isinstance(value, list):
        return [
            (item, item if isinstance(item, str) else orjson.dumps(item).decode()) for item in value
        ]
    return [(decode_value(part), part) for part in raw.split(",")]


def _typed_for_field(name: str, field_name: str, value: Any, raw: str) -> Any:
    """Check reserved fields' value types (ids are strings, timestamps integers).

    A non-string id is taken as the text it was written as: ``id=1e2`` is
    the id ``"1e2"``, not the number 100.0 printed back as ``"100.0"``.
    """
    if field_name == MODIFIED_FIELD:
        if isinstance(value, str):
            return _timestamp(name, value)
        if isinstance(value, bool) or not isinstance(value, int) or abs(value) > _MAX_TIMESTAMP:
            raise QueryError(name, f"must be an integer timestamp, got {value!r}.")
    if field_name == ID_FIELD and not isinstance(value, str):
        return raw
    return value


def parse_filter(
    name: str,
    raw: str,
    is_known_field: Callable[[str], bool],
    max_values: int = MAX_FILTER_VALUES,
) -> Filter | None:
    """One ``<prefix_><field>=<value>`` parameter as a :class:`Filter`; None for ``_x``.

    A list of more than ``max_values`` values raises :class:`QueryError`.
    """
    if name.startswith("_"):
        return None
    operator = Operator.EQ
    field_name = name
    for prefix in _PREFIXES:
        if name.startswith(f"{prefix}_") and len(name) > len(prefix) + 1:
            operator = prefix
            field_name = name[len(prefix) + 1 :]
            break
    if not _FIELD.match(field_name):
        raise QueryError(name, f"{field_name!r} is not a valid field name.")
    if not is_known_field(field_name):
        raise QueryError(name, f"Unknown filter field {field_name!r}.")
    value: Any
    if operator in (Operator.IN, Operator.EXCLUDE):
        items = _list_items(raw)
        _check_values(name, len(items), max_values)
        value = [_typed_for_field(name, field_name, item, text) for item, text in items]
    elif operator in (Operator.CONTAINS, Operator.CONTAINS_ANY):
        decoded = decode_value(raw)
        value = decoded if isinstance(decoded, list) else [decoded]
        _check_values(name, len(value), max_values)
    elif operator is Operator.HAS:
        decoded = decode_value(raw)
        if decoded not in (True, False, 0, 1):
            raise QueryError(name, f"must be true or false, got {raw!r}.")
        value = bool(decoded)
    elif operator is Operator.LIKE:
        value = raw
    else:
        value = _typed_for_field(name, field_name, decode_value(raw), raw)
    return Filter(field_name, value, operator)


def _check_values(name: str, count: int, max_values: int) -> None:
    if count > max_values:
        raise QueryError(
            name,
            f"holds {count} values; at most {max_values} are allowed "
            "(setting query.max_filter_values).",
        )


def parse_sort(
    raw: str, is_known_field: Callable[[str], bool], max_fields: int = MAX_SORT_FIELDS
) -> list[Sort]:
    """``_sort=a,-b`` as sorts; an invalid or unknown field, or more than
    ``max_fields`` of them, raises :class:`QueryError`."""
    items = raw.split(",")
    if len(items) > max_fields:
        raise QueryError(
            "_sort",
            f"names {len(items)} fields; at most {max_fields} are allowed "
            "(setting query.max_sort_fields).",
        )
    sorting = []
    for item in items:
        item = item.strip()
        match = _SORT_ITEM.match(item)
        if not match:
            raise QueryError("_sort", f"{item!r} is not a field name (like 'name' or '-size').")
        sign, field_name = match.groups()
        if not is_known_field(field_name):
            raise QueryError("_sort", f"Unknown sort field {field_name!r}.")
        sorting.append(Sort(field_name, -1 if sign == "-" else 1))
    return sorting


def complete_sorting(sorting: Sequence[Sort]) -> tuple[Sort, ...]:
    """End ``sorting`` with ``last_modified`` (newest first) and ``id``: a total order.

    A field named twice keeps its first direction (the second could never
    break a tie).
    """
    rv: dict[str, Sort] = {}
    for sort in [*sorting, Sort(MODIFIED_FIELD, -1), Sort(ID_FIELD, 1)]:
        rv.setdefault(sort.field, sort)
    return tuple(rv.values())


def parse_query(
    params: Iterable[tuple[str, str]],
    *,
    is_known_field: Callable[[str], bool],
    is_known_root: Callable[[str], bool] | None = None,
    max_limit: int = 10_000,
    default_limit: int | None = None,
    limits: QueryLimits = QueryLimits(),
    token_key: bytes = PROCESS_TOKEN_KEY,
) -> Query:
    """Parse a collection's query string.

    :param params: ``(name, value)`` pairs, repeated names allowed.
    :param is_known_field: whether a (dotted) field may be filtered or sorted on.
    :param is_known_root: whether ``_fields`` may name a root field (default:
        ``is_known_field``); unknown roots of schemaless resources are just
        absent from the output.
    :param max_limit: ``paginate.max_limit``: the largest page.
    :param default_limit: ``paginate.by``: the page size without ``_limit``.
    :param limits: how many filters, values per filter and sort fields.
    :param token_key: the key ``_token`` values are sealed with (:func:`token_key`).
    :raises QueryError: the first invalid parameter, or the one past a limit.
    """
    filters: list[Filter] = []
    seen: set[str] = set()
    sorting: list[Sort] = []
    limit = default_limit
    token = None
    fields = None
    include_deleted = False
    deprecated: list[str] = []
    for name, raw in params:
        if name in _SPECIAL:
            if name in seen:
                raise QueryError(name, "may appear only once.")
            seen.add(name)
        if len(filters) == limits.max_filters and (
            name in ("_since", "_before", "_to") or not name.startswith("_")
        ):
            raise QueryError(
                name,
                f"is one filter too many: at most {limits.max_filters} are allowed "
                "(setting query.max_filters).",
            )
        if name in ("_since", "_before", "_to"):
            operator = Operator.GT if name == "_since" else Operator.LT
            filters.append(Filter(MODIFIED_FIELD, _timestamp(name, raw), operator))
            include_deleted = True
            if name == "_to":
                deprecated.append("_to")
        elif name == "_sort":
            sorting = parse_sort(raw, is_known_field, limits.max_sort_fields)
        elif name == "_limit":
            limit = _limit(raw)
        elif name == "_token":
            token = decode_token(raw, token_key)
        elif name == "_fields":
            fields = _fields(raw, is_known_root or is_known_field)
        else:
            parsed = parse_filter(name, raw, is_known_field, limits.max_filter_values)
            if parsed is None:
                continue
            filters.append(parsed)
            if parsed.field == MODIFIED_FIELD:
                include_deleted = True
    limit = max_limit if limit is None else min(limit, max_limit)
    return Query(
        filters=tuple(filters),
        sorting=complete_sorting(sorting),
        limit=limit,
        token=token,
        fields=fields,
        include_deleted=include_deleted,
        deprecated=tuple(deprecated),
    )


def _limit(raw: str) -> int:
    text = raw.strip()
    if not _INTEGER.match(text) or int(text) < 1:
        raise QueryError("_limit", f"must be a positive integer, got {raw!r}.")
    return int(text)


def _fields(raw: str, is_known_root: Callable[[str], bool]) -> tuple[str, ...]:
    names = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        if not _FIELD.match(item):
            raise QueryError("_fields", f"{item!r} is not a field name.")
        if not is_known_root(item.split(".")[0]):
            raise QueryError("_fields", f"Unknown field {item.split('.')[0]!r}.")
        names.append(item)
    return tuple(names)


# --------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------


def pagination_context(
    resource_name: str, parent_id: str, filters: Sequence[Filter], sorting: Sequence[Sort]
) -> str:
    """A digest of what a token is valid for; replaying it elsewhere is refused."""
    canonical = orjson.dumps(
        [
            resource_name,
            parent_id,
            # Sorted by their JSON text: values of different types do not compare.
            sorted(_canonical([f.field, f.operator.value, f.value]) for f in filters),
            [[s.field, s.direction] for s in sorting],
        ],
        option=orjson.OPT_SORT_KEYS,
        default=str,
    )
    return hashlib.sha256(canonical).hexdigest()[:32]


def _canonical(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str).decode()


def token_key(secret: str) -> bytes:
    """The key that seals ``_token`` values, derived from a deployment's ``secret``
    (so it is never the key of anything else the secret keys)."""
    return hmac.new(secret.encode("utf-8"), b"kiln pagination token", hashlib.sha256).digest()


@functools.lru_cache(maxsize=8)
def _cipher(key: bytes) -> AESSIV:
    return AESSIV(key)


def encode_token(
    last_record: dict[str, Any],
    sorting: Sequence[Sort],
    context: str,
    key: bytes = PROCESS_TOKEN_KEY,
) -> str:
    """An opaque ``_token`` that continues after ``last_record`` in ``sorting`` order.

    It holds the last record's sort values, so it is sealed with ``key``
    (AES-SIV, authenticated): field values never show in URLs or logs, and
    a token cannot be forged or altered. The sealing is deterministic (the
    same page gives the same token, alone or in a batch), which tells no
    more than that two tokens continue from the same place.
    """
    last = select_fields(last_record, [sort.field for sort in sorting])
    payload = orjson.dumps({"v": TOKEN_VERSION, "last": last, "ctx": context})
    sealed = _cipher(key).encrypt(payload, None)
    return base64.urlsafe_b64encode(sealed).decode().rstrip("=")


def decode_token(raw: str, key: bytes = PROCESS_TOKEN_KEY) -> dict[str, Any]:
    """The payload of a ``_token`` sealed with ``key``; anything else raises
    :class:`QueryError`: a malformed token, and one sealed by another secret
    or an older kiln, with a sentence saying to start again."""
    text = raw.strip()
    try:
        sealed = base64.urlsafe_b64decode((text + "=" * (-len(text) % 4)).encode("ascii"))
    except (ValueError, binascii.Error, UnicodeEncodeError):
        raise QueryError("_token", "has invalid content.") from None
    try:
        payload = orjson.loads(_cipher(key).decrypt(sealed, None))
    except (InvalidTag, ValueError):
        raise QueryError(
            "_token",
            "was not issued by this service (an older version, or another secret): "
            "start again without it.",
        ) from None
    if (
        not isinstance(payload, dict)
        or payload.get("v") != TOKEN_VERSION
        or not isinstance(payload.get("last"), dict)
        or not isinstance(payload.get("ctx"), str)
    ):
        raise QueryError("_token", "has invalid content.")
    return payload


_ABSENT = object()


def _pick(record: dict[str, Any], dotted: str) -> Any:
    node: Any = record
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _ABSENT
        node = node[part]
    return node


def select_fields(record: dict[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    """``record`` reduced to ``fields`` (dotted paths) plus the reserved fields."""
    rv: dict[str, Any] = {key: record[key] for key in RESERVED_FIELDS if key in record}
    for dotted in fields:
        value = _pick(record, dotted)
        if value is _ABSENT:
            continue
        parts = dotted.split(".")
        node = rv
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return rv
