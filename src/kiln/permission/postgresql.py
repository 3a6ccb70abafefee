"""Permissions in PostgreSQL tables, by default in the storage's database.

Layout (schema version 1, ``kiln/migrations/postgresql/permission``)::

    user_principals(user_id, principal)
        PRIMARY KEY (user_id, principal)                 user_principals(user_id)
        INDEX (principal, user_id)                       remove_principal(principal)
    access_control_entries(object_id, permission, principal)
        PRIMARY KEY (object_id, permission, principal)   one object's ACEs, check_permission
        INDEX (principal, permission, object_id)         principals_accessible_objects

Every column is ``BYTEA`` holding the string's UTF-8 bytes: the contract
lets ids and principals hold any character, U+0000 included, which
PostgreSQL's ``text`` cannot store; and UTF-8 bytes order as code points,
so prefix ranges work on the B-trees. Lists of principals and of bound
``(object_id, permission)`` pairs are bound as arrays (``= ANY(%s)``,
``unnest``): one statement whatever their length, and the SQL text never
depends on their content.

A pattern (``/buckets/*/collections/*``) becomes, for the index on
``(principal, permission, object_id)``: the byte range of its literal prefix
(``prefix <= object_id < prefix || 0xFF``, 0xFF never occurring in UTF-8),
a ``LIKE`` where ``*`` is ``%`` and ``\\``, ``%``, ``_`` are escaped, and an
equal number of ``/`` -- so no ``*`` can cross one. All the pairs of one
call are answered by one statement.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kiln._postgresql import Params, PostgreSQLDatabase, database_for
from kiln._sql import SQLBackend
from kiln.permission import PermissionBase, principal_set

__all__ = [
    "PostgreSQLPermission",
    "decode",
    "encode",
    "like_pattern",
    "load",
    "pattern_query",
]

# ``noqa: S608``: the SQL joins constants of this module; values are bound.


_ACE = "access_control_entries"
_SLASHES = (
    "length(encode(a.object_id, 'escape'))"
    " - length(replace(encode(a.object_id, 'escape'), '/', ''))"
)
_BOUND = "unnest(%(objects)s::bytea[], %(permissions)s::bytea[]) AS bound(object_id, permission)"
_ON_BOUND = "a.object_id = bound.object_id AND a.permission = bound.permission"


def encode(text: str) -> bytes:
    """A string as stored: its UTF-8 bytes (lone surrogates kept)."""
    return text.encode("utf-8", "surrogatepass")


def decode(stored: bytes) -> str:
    return bytes(stored).decode("utf-8", "surrogatepass")


def like_pattern(pattern: str) -> bytes:
    """``pattern`` as a ``LIKE`` on bytes: ``*`` is ``%``, every other character literal."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return encode(escaped.replace("*", "%"))


def pattern_query(
    principals: list[bytes], patterns: list[tuple[str, str]]
) -> tuple[str, dict[str, Any]]:
    """The statement finding the objects matching ``(pattern, permission)`` pairs
    on which one of ``principals`` holds the pair's permission."""
    lows = [encode(pattern.split("*", 1)[0]) for pattern, _ in patterns]
    return (
        "SELECT DISTINCT a.object_id FROM unnest(%(permissions)s::bytea[],"  # noqa: S608
        " %(lows)s::bytea[], %(highs)s::bytea[], %(likes)s::bytea[], %(slashes)s::int[])"
        " AS q(permission, low, high, pattern, slashes)"
        f" JOIN {_ACE} AS a ON a.permission = q.permission"
        " AND a.object_id >= q.low AND a.object_id < q.high"
        f" AND a.object_id LIKE q.pattern AND {_SLASHES} = q.slashes"
        " WHERE a.principal = ANY(%(principals)s::bytea[])",
        {
            "principals": principals,
            "permissions": [encode(perm) for _, perm in patterns],
            "lows": lows,
            "highs": [low + b"\xff" for low in lows],
            "likes": [like_pattern(pattern) for pattern, _ in patterns],
            "slashes": [pattern.count("/") for pattern, _ in patterns],
        },
    )


class PostgreSQLPermission(SQLBackend[PostgreSQLDatabase], PermissionBase):
    """Permission tables in a PostgreSQL database.

    Settings (read by :func:`kiln.permission.load_permission`):
    ``permission.url`` (default: ``storage.url``; the same URL shares the
    storage's pool and units of work), ``storage.pool_size``,
    ``storage.pool_timeout_seconds``, ``storage.connect_timeout_seconds``,
    ``storage.statement_timeout_ms``.
    """

    component = "permission"
    heartbeat_table = _ACE

    def __init__(self, database: PostgreSQLDatabase | str) -> None:
        if isinstance(database, str):
            database = PostgreSQLDatabase.shared(database)
        self.database = database

    # -- lifecycle (initialize_schema, heartbeat, close, transaction: SQLBackend)

    def flush(self) -> None:
        self._write(("DELETE FROM user_principals", None), (f"DELETE FROM {_ACE}", None))  # noqa: S608

    def _write(self, *statements: tuple[str, Params]) -> None:
        # Nothing to read back: the statements travel with the unit of work's
        # next statement or its commit (the storage's flush), no round trip.
        db = self.database
        with db.transaction() as conn:
            db.defer(conn, *statements)

    def _read(self, statement: str, params: Params) -> list[tuple[Any, ...]]:
        db = self.database
        with db.transaction() as conn:
            rows: list[tuple[Any, ...]] = db.execute(conn, statement, params).fetchall()
        return rows

    def _column(self, statement: str, params: Params) -> set[str]:
        return {decode(row[0]) for row in self._read(statement, params)}

    # -- user principals -----------------------------------------------

    def add_user_principal(self, user_id: str, principal: str) -> None:
        self._write(
            (
                "INSERT INTO user_principals (user_id, principal) VALUES (%s, %s)"
                " ON CONFLICT DO NOTHING",
                (encode(user_id), encode(principal)),
            )
        )

    def remove_user_principal(self, user_id: str, principal: str) -> None:
        self._write(
            (
                "DELETE FROM user_principals WHERE user_id = %s AND principal = %s",
                (encode(user_id), encode(principal)),
            )
        )

    def remove_principal(self, principal: str) -> None:
        self._write(("DELETE FROM user_principals WHERE principal = %s", (encode(principal),)))

    def user_principals(self, user_id: str) -> set[str]:
        return self._column(
            "SELECT principal FROM user_principals WHERE user_id = %s", (encode(user_id),)
        )

    # -- access control entries ----------------------------------------

    def add_principal_to_ace(self, object_id: str, permission: str, principal: str) -> None:
        self._write(
            (
                f"INSERT INTO {_ACE} (object_id, permission, principal) VALUES (%s, %s, %s)"  # noqa: S608
                " ON CONFLICT DO NOTHING",
                (encode(object_id), encode(permission), encode(principal)),
            )
        )

    def remove_principal_from_ace(self, object_id: str, permission: str, principal: str) -> None:
        self._write(
            (
                f"DELETE FROM {_ACE}"  # noqa: S608
                " WHERE object_id = %s AND permission = %s AND principal = %s",
                (encode(object_id), encode(permission), encode(principal)),
            )
        )

    def object_permission_principals(self, object_id: str, permission: str) -> set[str]:
        return self._column(
            f"SELECT principal FROM {_ACE} WHERE object_id = %s AND permission = %s",  # noqa: S608
            (encode(object_id), encode(permission)),
        )

    @staticmethod
    def _pairs(pairs: set[tuple[str, str]]) -> dict[str, list[bytes]]:
        ordered = sorted(pairs)
        return {
            "objects": [encode(o) for o, _ in ordered],
            "permissions": [encode(p) for _, p in ordered],
        }

    def _holders(self, pairs: set[tuple[str, str]]) -> set[str]:
        return self._column(
            f"SELECT DISTINCT a.principal FROM {_BOUND} JOIN {_ACE} AS a ON {_ON_BOUND}",  # noqa: S608
            self._pairs(pairs),
        )

    def _accessible_objects(
        self, principals: set[str], permission: str, patterns: set[tuple[str, str]] | None
    ) -> set[str]:
        wanted = [encode(p) for p in sorted(principals)]
        if patterns is None:
            return self._column(
                f"SELECT DISTINCT object_id FROM {_ACE}"  # noqa: S608
                " WHERE principal = ANY(%(principals)s::bytea[]) AND permission = %(permission)s",
                {"principals": wanted, "permission": encode(permission)},
            )
        return self._column(*pattern_query(wanted, sorted(patterns)))

    def _holds_any(self, principals: set[str], pairs: set[tuple[str, str]]) -> bool:
        rows = self._read(
            f"SELECT 1 FROM {_BOUND} JOIN {_ACE} AS a ON {_ON_BOUND}"  # noqa: S608
            " WHERE a.principal = ANY(%(principals)s::bytea[]) LIMIT 1",
            {**self._pairs(pairs), "principals": [encode(p) for p in sorted(principals)]},
        )
        return bool(rows)

    def _permissions_of(self, object_id: str, selected: set[str] | None) -> dict[str, set[str]]:
        sql = f"SELECT permission, principal FROM {_ACE} WHERE object_id = %(object)s"  # noqa: S608
        params: dict[str, Any] = {"object": encode(object_id)}
        if selected is not None:
            sql += " AND permission = ANY(%(permissions)s::bytea[])"
            params["permissions"] = [encode(p) for p in sorted(selected)]
        rv: dict[str, set[str]] = {}
        for perm, principal in self._read(sql, params):
            rv.setdefault(decode(perm), set()).add(decode(principal))
        return rv

    def objects_permissions(self, object_ids: Iterable[str]) -> dict[str, dict[str, set[str]]]:
        rv: dict[str, dict[str, set[str]]] = {
            object_id: {} for object_id in principal_set(object_ids, "object_ids")
        }
        if not rv:
            return rv
        rows = self._read(
            f"SELECT object_id, permission, principal FROM {_ACE}"  # noqa: S608
            " WHERE object_id = ANY(%s::bytea[])",
            ([encode(o) for o in sorted(rv)],),
        )
        for object_id, perm, principal in rows:
            rv[decode(object_id)].setdefault(decode(perm), set()).add(decode(principal))
        return rv

    def objects_permissions_and_principals(
        self, object_ids: Iterable[str], user_id: str
    ) -> tuple[dict[str, dict[str, set[str]]], set[str]]:
        acls: dict[str, dict[str, set[str]]] = {
            object_id: {} for object_id in principal_set(object_ids, "object_ids")
        }
        # One statement: the ACEs of the objects, then the user's principals
        # (rows without an object).
        rows = self._read(
            f"SELECT object_id, permission, principal FROM {_ACE}"  # noqa: S608
            " WHERE object_id = ANY(%s::bytea[])"
            " UNION ALL SELECT NULL, NULL, principal FROM user_principals WHERE user_id = %s",
            ([encode(o) for o in sorted(acls)], encode(user_id)),
        )
        groups: set[str] = set()
        for object_id, perm, principal in rows:
            if object_id is None:
                groups.add(decode(principal))
            else:
                acls[decode(object_id)].setdefault(decode(perm), set()).add(decode(principal))
        return acls, groups

    def _replace_permissions(self, object_id: str, replacements: dict[str, set[str]]) -> None:
        self._replace_many({object_id: replacements})

    def _replace_many(self, changes: dict[str, dict[str, set[str]]]) -> None:
        cleared = [(o, perm) for o, replacements in changes.items() for perm in replacements]
        granted = [
            (o, perm, who)
            for o, replacements in changes.items()
            for perm, principals in replacements.items()
            for who in sorted(principals)
        ]
        # One statement: the ACEs of the cleared permissions that are not granted
        # again go, the granted ones not held yet come (those kept are untouched).
        self._write(
            (
                "WITH granted (object_id, permission, principal) AS ("  # noqa: S608
                " SELECT * FROM unnest(%(objects)s::bytea[], %(permissions)s::bytea[],"
                " %(principals)s::bytea[])),"
                " gone AS ("
                f" DELETE FROM {_ACE} AS a"
                " USING unnest(%(cleared_objects)s::bytea[], %(cleared_permissions)s::bytea[])"
                " AS cleared(object_id, permission)"
                " WHERE a.object_id = cleared.object_id AND a.permission = cleared.permission"
                " AND NOT EXISTS (SELECT 1 FROM granted AS g WHERE g.object_id = a.object_id"
                " AND g.permission = a.permission AND g.principal = a.principal))"
                f" INSERT INTO {_ACE} (object_id, permission, principal)"
                " SELECT object_id, permission, principal FROM granted ON CONFLICT DO NOTHING",
                {
                    "objects": [encode(o) for o, _, _ in granted],
                    "permissions": [encode(perm) for _, perm, _ in granted],
                    "principals": [encode(who) for _, _, who in granted],
                    "cleared_objects": [encode(o) for o, _ in cleared],
                    "cleared_permissions": [encode(perm) for _, perm in cleared],
                },
            ),
        )

    def delete_object_permissions(self, *object_ids: str) -> None:
        if object_ids:
            self._write(
                (
                    f"DELETE FROM {_ACE} WHERE object_id = ANY(%s::bytea[])",  # noqa: S608
                    ([encode(o) for o in sorted(set(object_ids))],),
                )
            )


def load(config: Any) -> PostgreSQLPermission:
    """The backend of ``permission.backend = "postgresql"``: ``permission.url``
    (default: ``storage.url``); on the storage's URL it shares its pool and
    units of work."""
    url = config.setting("permission.url") or config.setting("storage.url")
    return PostgreSQLPermission(database_for(config, url))
