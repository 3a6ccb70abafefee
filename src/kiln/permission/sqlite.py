"""Permissions in SQLite tables, by default in the storage's file.

Layout (schema version 1, ``kiln/migrations/sqlite/permission``)::

    user_principals(user_id, principal)
        PRIMARY KEY (user_id, principal)             user_principals(user_id)
        INDEX (principal, user_id)                   remove_principal(principal)
    access_control_entries(object_id, permission, principal)
        PRIMARY KEY (object_id, permission, principal)   one object's ACEs, check_permission
        INDEX (principal, permission, object_id)         principals_accessible_objects

Every value is a bound parameter; the SQL text is assembled only from
constant fragments of this module and depends on the *number* of
principals and bound pairs, never on their content. Lists of principals
are bound as ``IN (?, ...)`` in chunks of :data:`MAX_PRINCIPALS_PER_QUERY`
(not as JSON: SQLite's JSON functions cut strings at ``\\u0000``).

A pattern (``/buckets/*/collections/*``) is answered with the index on
``(principal, permission, object_id)``: the literal prefix before the first
``*`` becomes an ``object_id`` range, the pattern becomes a ``GLOB`` (with
``?`` and ``[`` escaped as ``[?]`` and ``[[]``) and the number of ``/`` must
be equal, so ``*`` cannot cross ``/``. SQLite stops ``GLOB`` at a NUL
character, so ids containing NUL skip the ``GLOB`` term; every row is then
checked with :func:`kiln.permission.match_object_id`, which is exact.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from kiln._sql import SQLBackend
from kiln._sqlite import SQLiteDatabase
from kiln.permission import (
    PermissionBase,
    match_object_id,
    principal_set,
)

__all__ = ["SQLitePermission", "glob_escape", "load", "prefix_range"]

# About the ``noqa: S608`` below: SQL text is assembled only from constant
# fragments of this module and ``?`` placeholders; every value is bound.

#: Principals bound per query (SQLite limits the number of parameters).
MAX_PRINCIPALS_PER_QUERY = 500

_ACE = "access_control_entries"
_SLASHES = "length(CAST(object_id AS BLOB)) - length(CAST(replace(object_id, '/', '') AS BLOB))"
_GLOB = "(instr(object_id, char(0)) > 0 OR object_id GLOB ?)"


def _placeholders(count: int) -> str:
    return ", ".join("?" * count)


def _chunks(values: set[str]) -> Iterator[list[str]]:
    ordered = sorted(values)
    for start in range(0, len(ordered), MAX_PRINCIPALS_PER_QUERY):
        yield ordered[start : start + MAX_PRINCIPALS_PER_QUERY]


def glob_escape(pattern: str) -> str:
    """``pattern`` as a SQLite ``GLOB``: ``*`` stays, ``?`` and ``[`` become literal."""
    return pattern.replace("[", "[[]").replace("?", "[?]")


def prefix_range(prefix: str) -> tuple[str, str | None]:
    """``(low, high)`` bounding every string that starts with ``prefix``
    (``low <= s < high``, in code point order, which is UTF-8 byte order);
    ``high`` is ``None`` when no string bounds them."""
    stem = prefix.rstrip("\U0010ffff")
    if not stem:
        return prefix, None
    following = ord(stem[-1]) + 1
    if 0xD800 <= following <= 0xDFFF:  # surrogates cannot be stored: skip them
        following = 0xE000
    return prefix, stem[:-1] + chr(following)


class SQLitePermission(SQLBackend[SQLiteDatabase], PermissionBase):
    """Permission tables in a SQLite database.

    Settings (read by :func:`kiln.permission.load_permission`):
    ``permission.url`` (default: ``storage.url``), ``storage.busy_timeout_seconds``.
    """

    component = "permission"
    heartbeat_table = _ACE

    def __init__(self, database: SQLiteDatabase | str = "kiln.sqlite") -> None:
        if isinstance(database, str):
            database = SQLiteDatabase.shared(database)
        self.database = database

    # -- lifecycle (initialize_schema, heartbeat, close, transaction: SQLBackend)

    def flush(self) -> None:
        db = self.database
        with db.transaction() as conn:
            db.begin_write(conn)
            conn.execute("DELETE FROM user_principals")
            conn.execute(f"DELETE FROM {_ACE}")  # noqa: S608

    def _write(self, statement: str, rows: Sequence[Sequence[str]]) -> None:
        db = self.database
        with db.transaction() as conn:
            db.begin_write(conn)
            conn.executemany(statement, rows)

    def _read(self, statement: str, params: Sequence[str]) -> list[tuple[str, ...]]:
        with self.database.transaction() as conn:
            rows: list[tuple[str, ...]] = conn.execute(statement, params).fetchall()
        return rows

    # -- user principals -----------------------------------------------

    def add_user_principal(self, user_id: str, principal: str) -> None:
        self._write(
            "INSERT INTO user_principals (user_id, principal) VALUES (?, ?) ON CONFLICT DO NOTHING",
            [(user_id, principal)],
        )

    def remove_user_principal(self, user_id: str, principal: str) -> None:
        self._write(
            "DELETE FROM user_principals WHERE user_id = ? AND principal = ?",
            [(user_id, principal)],
        )

    def remove_principal(self, principal: str) -> None:
        self._write("DELETE FROM user_principals WHERE principal = ?", [(principal,)])

    def user_principals(self, user_id: str) -> set[str]:
        rows = self._read("SELECT principal FROM user_principals WHERE user_id = ?", [user_id])
        return {row[0] for row in rows}

    # -- access control entries ----------------------------------------

    def add_principal_to_ace(self, object_id: str, permission: str, principal: str) -> None:
        self._write(
            f"INSERT INTO {_ACE} (object_id, permission, principal) VALUES (?, ?, ?)"  # noqa: S608
            " ON CONFLICT DO NOTHING",
            [(object_id, permission, principal)],
        )

    def remove_principal_from_ace(self, object_id: str, permission: str, principal: str) -> None:
        self._write(
            f"DELETE FROM {_ACE} WHERE object_id = ? AND permission = ? AND principal = ?",  # noqa: S608
            [(object_id, permission, principal)],
        )

    def object_permission_principals(self, object_id: str, permission: str) -> set[str]:
        rows = self._read(
            f"SELECT principal FROM {_ACE} WHERE object_id = ? AND permission = ?",  # noqa: S608
            [object_id, permission],
        )
        return {row[0] for row in rows}

    def _holders(self, pairs: set[tuple[str, str]]) -> set[str]:
        ordered = sorted(pairs)
        params = [value for pair in ordered for value in pair]
        rows = self._read(
            f"WITH bound (object_id, permission) AS (VALUES {_placeholders_pairs(len(ordered))})"  # noqa: S608
            f" SELECT DISTINCT a.principal FROM bound CROSS JOIN {_ACE} AS a"
            " ON a.object_id = bound.object_id AND a.permission = bound.permission",
            params,
        )
        return {row[0] for row in rows}

    def _accessible_objects(
        self, principals: set[str], permission: str, patterns: set[tuple[str, str]] | None
    ) -> set[str]:
        rv: set[str] = set()
        with self.database.transaction() as conn:
            for chunk in _chunks(principals):
                in_principals = f"principal IN ({_placeholders(len(chunk))})"
                if patterns is None:
                    rows = conn.execute(
                        f"SELECT DISTINCT object_id FROM {_ACE}"  # noqa: S608
                        f" WHERE {in_principals} AND permission = ?",
                        [*chunk, permission],
                    )
                    rv.update(row[0] for row in rows)
                    continue
                for pattern, perm in patterns:
                    rv.update(_matching_objects(conn, in_principals, chunk, pattern, perm))
        return rv

    def _holds_any(self, principals: set[str], pairs: set[tuple[str, str]]) -> bool:
        ordered = sorted(pairs)
        pair_params = [value for pair in ordered for value in pair]
        with self.database.transaction() as conn:
            for chunk in _chunks(principals):
                row = conn.execute(
                    "WITH bound (object_id, permission) AS"  # noqa: S608
                    f" (VALUES {_placeholders_pairs(len(ordered))})"
                    f" SELECT 1 FROM bound CROSS JOIN {_ACE} AS a"
                    " ON a.object_id = bound.object_id AND a.permission = bound.permission"
                    f" WHERE a.principal IN ({_placeholders(len(chunk))}) LIMIT 1",
                    [*pair_params, *chunk],
                ).fetchone()
                if row is not None:
                    return True
        return False

    def _permissions_of(self, object_id: str, selected: set[str] | None) -> dict[str, set[str]]:
        rows = self._read(
            f"SELECT permission, principal FROM {_ACE} WHERE object_id = ?",  # noqa: S608
            [object_id],
        )
        rv: dict[str, set[str]] = {}
        for perm, principal in rows:
            if selected is None or perm in selected:
                rv.setdefault(perm, set()).add(principal)
        return rv

    def objects_permissions(self, object_ids: Iterable[str]) -> dict[str, dict[str, set[str]]]:
        rv: dict[str, dict[str, set[str]]] = {
            object_id: {} for object_id in principal_set(object_ids, "object_ids")
        }
        with self.database.transaction() as conn:
            for chunk in _chunks(set(rv)):
                rows = conn.execute(
                    f"SELECT object_id, permission, principal FROM {_ACE}"  # noqa: S608
                    f" WHERE object_id IN ({_placeholders(len(chunk))})",
                    chunk,
                )
                for object_id, perm, principal in rows:
                    rv[object_id].setdefault(perm, set()).add(principal)
        return rv

    def _replace_permissions(self, object_id: str, replacements: dict[str, set[str]]) -> None:
        db = self.database
        with db.transaction() as conn:
            db.begin_write(conn)
            for perm, principals in replacements.items():
                conn.execute(
                    f"DELETE FROM {_ACE} WHERE object_id = ? AND permission = ?",  # noqa: S608
                    (object_id, perm),
                )
                conn.executemany(
                    f"INSERT INTO {_ACE} (object_id, permission, principal)"  # noqa: S608
                    " VALUES (?, ?, ?)",
                    [(object_id, perm, principal) for principal in sorted(principals)],
                )

    def delete_object_permissions(self, *object_ids: str) -> None:
        if object_ids:
            self._write(
                f"DELETE FROM {_ACE} WHERE object_id = ?",  # noqa: S608
                [(object_id,) for object_id in set(object_ids)],
            )


def _placeholders_pairs(count: int) -> str:
    return ", ".join(["(?, ?)"] * count)


def _matching_objects(
    conn: sqlite3.Connection, in_principals: str, principals: list[str], pattern: str, perm: str
) -> Iterator[str]:
    """The object ids matching ``pattern`` on which ``principals`` hold ``perm``."""
    if "*" not in pattern:
        rows = conn.execute(
            f"SELECT object_id FROM {_ACE}"  # noqa: S608
            f" WHERE object_id = ? AND permission = ? AND {in_principals} LIMIT 1",
            [pattern, perm, *principals],
        )
        yield from (row[0] for row in rows)
        return
    low, high = prefix_range(pattern.split("*", 1)[0])
    upper = "" if high is None else " AND object_id < ?"
    rows = conn.execute(
        f"SELECT DISTINCT object_id FROM {_ACE}"  # noqa: S608
        f" WHERE {in_principals} AND permission = ? AND object_id >= ?{upper}"
        f" AND {_GLOB} AND {_SLASHES} = ?",
        [
            *principals,
            perm,
            low,
            *([] if high is None else [high]),
            glob_escape(pattern),
            pattern.count("/"),
        ],
    )
    yield from (row[0] for row in rows if match_object_id(pattern, row[0]))


def load(config: Any) -> SQLitePermission:
    """The backend of ``permission.backend = "sqlite"``: ``permission.url`` (default:
    ``storage.url``); it shares the storage's units of work on the same file."""
    url = config.setting("permission.url") or config.setting("storage.url")
    database = SQLiteDatabase.shared(
        url, busy_timeout=float(config.setting("storage.busy_timeout_seconds"))
    )
    return SQLitePermission(database)
