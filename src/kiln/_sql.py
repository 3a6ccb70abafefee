"""What the SQL backends share, on SQLite and PostgreSQL alike.

:class:`SQLBackend` is the lifecycle of a storage, permission or cache
backend whose tables live in a :class:`~kiln._sqlite.SQLiteDatabase` or a
:class:`~kiln._postgresql.PostgreSQLDatabase` (its ``database``): its
schema is the numbered migrations of its ``component`` for the database's
engine (:mod:`kiln.migrations`), its heartbeat reads one of its tables, its
units of work are the database's, and closing it closes the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from kiln.migrations import Migration, shipped

__all__ = ["SQLBackend", "SQLDatabase", "like_pattern"]


def like_pattern(pattern: str) -> str:
    """``pattern`` (``*`` wildcards, else a substring) as a SQL ``LIKE`` pattern
    whose escape character is ``\\`` (SQL wildcards ``%`` and ``_`` are literal)."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    escaped = escaped.replace("*", "%")
    return escaped if "*" in pattern else f"%{escaped}%"


class SQLDatabase(Protocol):
    """What :class:`SQLBackend` uses of a database object."""

    @property
    def engine(self) -> str: ...

    def transaction(self) -> AbstractContextManager[Any]: ...

    def execute(self, conn: Any, query: str, /) -> Any: ...

    def install_schema(
        self, component: str, migrations: Sequence[Migration], *, dry_run: bool = ...
    ) -> list[str]: ...

    def close(self) -> None: ...


D = TypeVar("D", bound=SQLDatabase)


class SQLBackend(Generic[D]):
    """The lifecycle methods of a backend on a SQL ``database`` (a mixin,
    listed before the backend kind's base class)."""

    #: The component whose schema the backend owns: ``storage``, ``permission``, ``cache``.
    component: ClassVar[str]
    #: The table :meth:`heartbeat` reads.
    heartbeat_table: ClassVar[str]

    database: D

    def initialize_schema(self, dry_run: bool = False) -> list[str]:
        """Apply the component's migrations above the database's recorded version."""
        database = self.database
        migrations = shipped(database.engine, self.component)
        return database.install_schema(self.component, migrations, dry_run=dry_run)

    def heartbeat(self) -> bool:
        """Whether the backend's table answers a read; never raises."""
        database = self.database
        try:
            with database.transaction() as conn:
                database.execute(conn, f"SELECT 1 FROM {self.heartbeat_table} LIMIT 1").fetchall()  # noqa: S608
        except Exception:
            return False
        return True

    def close(self) -> None:
        """Close the database (shared: every backend on it is closed too)."""
        self.database.close()

    def transaction(self) -> Any:
        """The database's unit of work, shared by every backend on it."""
        return self.database.transaction()
