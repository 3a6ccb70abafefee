"""One PostgreSQL database shared by the storage, permission and cache backends.

The backends configured on one URL share one :class:`PostgreSQLDatabase`:
its connection pool and its units of work, so that one request is **one**
transaction across storage, permissions and cache (D10). By concept:

- :mod:`~kiln._postgresql.database`: the database object -- one per URL,
  its pool (opened lazily; a server that refuses the URL for good fails at
  once, in one sentence), units of work, pipelining, and driver errors as
  :class:`~kiln.exceptions.BackendError`;
- :mod:`~kiln._postgresql.health`: dead pooled connections, statements that
  hang, and the monitor thread;
- :mod:`~kiln._postgresql.replicas`: read replicas, their freshness and the
  routing of read requests;
- :mod:`~kiln._postgresql.migrations`: installing :mod:`kiln.migrations`'
  numbered files (``kiln migrate``);
- :mod:`~kiln._postgresql.settings`: the ``storage.*`` pool and replica
  settings, and the databases they build (:func:`database_for`,
  :func:`replicas_for`).

This package imports psycopg lazily: importing it registers the
``storage.*`` settings, and ``kiln settings`` imports it on machines without
the driver. Choosing a PostgreSQL backend without the driver fails at startup.
"""

from __future__ import annotations

from kiln._postgresql.database import Params, PostgreSQLDatabase, describe, refusal
from kiln._postgresql.health import cut
from kiln._postgresql.migrations import SCHEMA_LOCK
from kiln._postgresql.replicas import ReadReplicas, ReplicaUnavailable, parse_lsn
from kiln._postgresql.settings import database_for, replicas_for

__all__ = [
    "SCHEMA_LOCK",
    "Params",
    "PostgreSQLDatabase",
    "ReadReplicas",
    "ReplicaUnavailable",
    "cut",
    "database_for",
    "describe",
    "parse_lsn",
    "refusal",
    "replicas_for",
]
