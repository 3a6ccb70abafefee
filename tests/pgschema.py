"""Fresh PostgreSQL schemas for the tests of kiln's PostgreSQL backends.

Each test module works in a schema of its own (``search_path``), created
empty and dropped afterwards, so its tables never meet those of other
modules, other test runs or other users of the test database.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

#: A server that refuses connections at once (nothing listens on port 1).
CLOSED_PORT_URL = "postgresql://postgres@127.0.0.1:1/kiln_test"


@contextlib.contextmanager
def fresh_schema(url: str) -> Iterator[str]:
    """A connection string for ``url`` whose ``search_path`` is a new, empty schema."""
    name = f"kiln_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        # Durability is not under test: commits skip the disk flush.
        yield make_conninfo(url, options=f"-c search_path={name} -c synchronous_commit=off")
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))
