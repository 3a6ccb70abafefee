"""Schema installation on PostgreSQL: :mod:`kiln.migrations`' numbered files,
recorded in ``schema_versions``.

:func:`install_schema` (``kiln migrate``, through each backend's
``initialize_schema``) applies a component's migrations above its recorded
version in one transaction. Processes installing at once take turns on an
advisory lock (:data:`SCHEMA_LOCK`), and the statements run without
``statement_timeout`` and unwatched by the monitor (a migration may rewrite
a large table).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kiln.migrations import Migration, plan

if TYPE_CHECKING:
    from psycopg import Connection

    from kiln._postgresql.database import PostgreSQLDatabase

__all__ = ["SCHEMA_LOCK", "install_schema", "installed_version"]

#: Key of the advisory lock serializing schema changes between processes.
SCHEMA_LOCK = 0x6B696C6E  # "kiln"

_SCHEMA_VERSIONS = (
    "CREATE TABLE IF NOT EXISTS schema_versions ("
    " component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
)


def install_schema(
    database: PostgreSQLDatabase,
    component: str,
    migrations: Sequence[Migration],
    *,
    dry_run: bool,
) -> list[str]:
    """See :meth:`kiln._postgresql.PostgreSQLDatabase.install_schema`."""
    with database.unwatched(), database.transaction() as conn:
        if not dry_run:
            database.begin_write(conn)
            database.pipeline(
                conn,
                ("SET LOCAL statement_timeout = 0", None),
                ("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,)),
            )
        installed = installed_version(database, conn, component)
        steps, pending = plan(
            component, migrations, installed, f"PostgreSQL database {database.name}"
        )
        if dry_run or not pending:
            return steps
        database.execute(conn, _SCHEMA_VERSIONS)
        for migration in pending:
            for _, statement in migration.steps:
                database.execute(conn, statement)
        database.execute(
            conn,
            "INSERT INTO schema_versions (component, version) VALUES (%s, %s)"
            " ON CONFLICT (component) DO UPDATE SET version = excluded.version",
            (component, migrations[-1].number),
        )
        return steps


def installed_version(
    database: PostgreSQLDatabase, conn: Connection[Any], component: str
) -> int | None:
    """The schema version recorded for ``component``, or None."""
    row = database.execute(conn, "SELECT to_regclass('schema_versions') IS NOT NULL").fetchone()
    if not (row and row[0]):
        return None
    row = database.execute(
        conn, "SELECT version FROM schema_versions WHERE component = %s", (component,)
    ).fetchone()
    return None if row is None else int(row[0])
