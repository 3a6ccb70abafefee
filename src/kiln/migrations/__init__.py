"""Numbered schema migrations of the SQL backends, as SQL files: one mechanism
for SQLite and PostgreSQL.

``<engine>/<component>/NNNN_<name>.sql`` (``engine``: ``sqlite`` or
``postgresql``; ``component``: ``storage``, ``permission``, ``cache``):
each file is one schema version of ``component``, numbered from ``0001``
without gaps. In a file, each statement follows a ``-- step:
<description>`` line (what ``kiln migrate --dry-run`` prints) and ends with
``;`` at the end of a line; comments and blank lines around statements are
ignored. Never edit a released file: a schema change is the next number,
for both engines.

The version installed is recorded per component in the database's
``schema_versions(component, version)`` table. Each engine's
``install_schema`` (:meth:`kiln._postgresql.PostgreSQLDatabase.install_schema`,
:meth:`kiln._sqlite.SQLiteDatabase.install_schema`; run by ``kiln
migrate``) applies, in one transaction, the migrations numbered above the
recorded version, then records the last number; an up-to-date component is
left alone, and a database recorded at a version newer than the files this
kiln ships is refused (:func:`plan`): an older kiln never runs against a
schema it does not know.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from importlib.resources.abc import Traversable
from typing import NamedTuple

from kiln.exceptions import StartupError

__all__ = ["Migration", "folder", "load_migrations", "parse_migration", "plan", "shipped"]


class Migration(NamedTuple):
    """One schema version of a component: its ``number`` and its
    ``(description, SQL)`` steps."""

    number: int
    steps: tuple[tuple[str, str], ...]


_MIGRATION_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def folder(engine: str, component: str) -> Traversable:
    """The folder of ``component``'s migrations for ``engine``, in the package."""
    return resources.files(__name__).joinpath(engine, component)


@functools.cache
def shipped(engine: str, component: str) -> tuple[Migration, ...]:
    """The migrations of ``component`` for ``engine`` that ship with kiln."""
    return load_migrations(folder(engine, component))


def load_migrations(
    directory: Traversable, prelude: Mapping[int, Sequence[tuple[str, str]]] | None = None
) -> tuple[Migration, ...]:
    """The numbered migrations of ``directory`` (``0001_name.sql``, ...), each
    preceded by its ``prelude`` steps.

    :raises StartupError: a file is misnamed, numbers leave a gap, or a file
        is not a sequence of ``-- step:`` statements.
    """
    files = sorted(
        (entry for entry in directory.iterdir() if entry.name.endswith(".sql")),
        key=lambda entry: entry.name,
    )
    migrations = []
    for number, entry in enumerate(files, start=1):
        match = _MIGRATION_FILE.match(entry.name)
        if match is None or int(match.group(1)) != number:
            raise StartupError(
                f"Migration file {entry.name!r}: name migrations 0001_name.sql, "
                "0002_name.sql, ... numbered from 1 without gaps."
            )
        steps = parse_migration(entry.read_text(encoding="utf-8"), entry.name)
        migrations.append(Migration(number, (*(prelude or {}).get(number, ()), *steps)))
    return tuple(migrations)


def parse_migration(text: str, name: str) -> tuple[tuple[str, str], ...]:
    """The ``(description, SQL)`` steps of a migration file's ``text``."""
    steps: list[tuple[str, str]] = []
    description: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("-- step:"):
            if description is not None:
                raise StartupError(
                    f"Migration file {name!r}: the step {description!r} has no statement "
                    "ending with ';' before the next step."
                )
            description = stripped.removeprefix("-- step:").strip()
            continue
        if not lines and (not stripped or stripped.startswith("--")):
            continue
        if description is None:
            raise StartupError(
                f"Migration file {name!r}: put a '-- step: <description>' line before "
                f"each statement (found {stripped[:40]!r})."
            )
        lines.append(line)
        if stripped.endswith(";"):
            steps.append((description, "\n".join(lines).strip().removesuffix(";")))
            description, lines = None, []
    if description is not None or not steps:
        raise StartupError(
            f"Migration file {name!r}: it must hold statements, each ending with ';'."
        )
    return tuple(steps)


def plan(
    component: str, migrations: Sequence[Migration], installed: int | None, database: str
) -> tuple[list[str], list[Migration]]:
    """What bringing ``component`` from its ``installed`` version (None: never
    installed) to the last of ``migrations`` takes: the descriptions of the
    steps, and the migrations to apply (both empty when it is up to date).

    :raises StartupError: ``installed`` is newer than ``migrations`` know (an
        older kiln against a database a newer one migrated); ``database``
        names it in the message.
    """
    latest = migrations[-1].number
    if installed is not None and installed > latest:
        raise StartupError(
            f"The {component} schema of {database} is version {installed}, newer than "
            f"this kiln knows ({latest}): upgrade kiln."
        )
    pending = [m for m in migrations if m.number > (installed or 0)]
    if not pending:
        return [], []
    steps = ["create table schema_versions"] if installed is None else []
    steps += [description for m in pending for description, _ in m.steps]
    steps.append(f"record {component} schema version {latest}")
    return steps, pending
