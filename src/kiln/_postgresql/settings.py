"""The ``storage.*`` settings of PostgreSQL's pools and read replicas, and the
databases they build.

Importing this module registers the settings (``kiln settings`` lists them
on machines without the driver); :func:`database_for` and
:func:`replicas_for` read them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kiln._postgresql.database import PostgreSQLDatabase

if TYPE_CHECKING:
    from kiln._postgresql.replicas import ReadReplicas

__all__ = ["database_for", "replicas_for"]


def _at_least(minimum: float) -> Any:
    def check(value: Any) -> str | None:
        return None if value >= minimum else f"must be at least {minimum}, got {value}"

    return check


def _urls(value: list[Any]) -> str | None:
    if all(isinstance(url, str) and url for url in value):
        return None
    return "must be a list of PostgreSQL URLs (non-empty strings)"


def _register_settings() -> None:
    from kiln.config import Setting, register_setting

    for setting in (
        Setting(
            "storage.pool_size",
            (int,),
            10,
            "Most connections each process opens to a PostgreSQL database (shared by the "
            "storage, permission and cache backends on one URL); give it at least the "
            "number of threads serving requests.",
            check_value=_at_least(1),
        ),
        Setting(
            "storage.pool_timeout_seconds",
            (int, float),
            5.0,
            "How long a request waits for a free PostgreSQL connection before failing (503); "
            "never longer than `storage.statement_timeout_ms` + 0.5 s.",
            check_value=_at_least(0.001),
        ),
        Setting(
            "storage.connect_timeout_seconds",
            (int, float),
            5.0,
            "How long opening a PostgreSQL connection may take (libpq counts at least 2).",
            check_value=_at_least(1),
        ),
        Setting(
            "storage.statement_timeout_ms",
            (int,),
            15_000,
            "Longest a PostgreSQL statement (lock waits included) may run before the server "
            "cancels it and the request fails (503); 0: no limit. `kiln migrate` has none. "
            "A round trip (one statement, or several pipelined) a server leaves unanswered "
            "0.5 s longer (hung) has its connection closed by kiln, and no request waits "
            "longer than that for a connection.",
            check_value=_at_least(0),
        ),
        Setting(
            "storage.read_urls",
            (list,),
            [],
            "PostgreSQL URLs of streaming replicas of `storage.url`: GET and HEAD requests "
            "read records from one of them (see docs/deployment.md, Read replicas); "
            "empty: none.",
            check_value=_urls,
        ),
        Setting(
            "storage.replica_max_lag_seconds",
            (int, float),
            2.0,
            "A read replica answers only while it holds every commit acknowledged more "
            "than this long ago; a replica further behind is bypassed.",
            check_value=_at_least(0.01),
        ),
        Setting(
            "storage.replica_check_seconds",
            (int, float),
            0.5,
            "How often each process measures its read replicas' lag (one query on the "
            "primary and one per replica).",
            check_value=_at_least(0.01),
        ),
        Setting(
            "storage.replica_retry_seconds",
            (int, float),
            5.0,
            "How long a read replica that failed is left alone before it is tried again "
            "(its reads go to the primary meanwhile).",
            check_value=_at_least(0.01),
        ),
        Setting(
            "storage.read_your_writes_seconds",
            (int, float),
            5.0,
            "After a caller writes, their reads go to the primary for this long (per "
            "process; keep it above `storage.replica_max_lag_seconds`); 0: never.",
            check_value=_at_least(0),
        ),
    ):
        register_setting(setting)


_register_settings()


def database_for(config: Any, url: str) -> PostgreSQLDatabase:
    """The shared database for ``url``, with the pool settings of ``config``."""
    return PostgreSQLDatabase.shared(
        url,
        pool_size=int(config.setting("storage.pool_size")),
        pool_timeout=float(config.setting("storage.pool_timeout_seconds")),
        connect_timeout=float(config.setting("storage.connect_timeout_seconds")),
        statement_timeout_ms=int(config.setting("storage.statement_timeout_ms")),
    )


def replicas_for(config: Any, database: PostgreSQLDatabase) -> ReadReplicas | None:
    """Give ``database`` the read replicas of ``storage.read_urls`` (None when empty)."""
    urls = config.setting("storage.read_urls")
    if not urls:
        return None
    return database.use_replicas(
        urls,
        max_lag=float(config.setting("storage.replica_max_lag_seconds")),
        check_interval=float(config.setting("storage.replica_check_seconds")),
        retry_interval=float(config.setting("storage.replica_retry_seconds")),
        read_your_writes=float(config.setting("storage.read_your_writes_seconds")),
    )
