"""DB-API connections with read/write splitting, pooling and failover.

``kiln.database.read`` and ``kiln.database.write`` are context managers that
hand out a DB-API (PEP 249) connection of the configured ``database.module``
(``sqlite3``, ``psycopg``, ``psycopg2``, ``pymysql``, ``MySQLdb`` or any other
module with a ``connect()``), to one of the servers listed under
``database.read`` or ``database.write``:

- nothing happens at import (D12): the module is imported and the pools are
  built at first use, from :data:`kiln.config.CONFIG`;
- a random server is chosen on every entry; a server whose connection fails
  is marked down for ``database.retry_after_seconds`` and the next one is
  tried (servers marked down are tried last). When every server fails,
  :class:`~kiln.exceptions.BackendError` is raised;
- each server has a small, thread-safe pool of idle connections
  (``database.pool_size``); a pooled connection that the server closed is
  detected at checkout and replaced;
- ``write`` commits when the block succeeds and rolls back when it raises;
  ``read`` always rolls back, so no transaction stays open;
- contexts are re-entrant within a thread: a nested ``with write`` reuses the
  connection of the outer one, and only the outermost exit commits or rolls
  back. A ``read`` nested in a ``write`` uses the write connection, so it sees
  the block's own uncommitted writes;
- errors raised by the block itself (the caller's SQL) propagate unchanged;
- a config reload that changes ``database.*`` swaps in fresh pools and closes
  the idle connections of the old ones.

Example (sqlite3 uses ``?`` placeholders; psycopg and pymysql use ``%s``;
parameters are always a tuple)::

    from kiln import database

    with database.write as db:
        cur = db.cursor()
        cur.execute("INSERT INTO users(email) VALUES (?)", ("a@example.com",))
        cur.close()

    with database.read as db:
        cur = db.cursor()
        cur.execute("SELECT email FROM users WHERE id = ?", (1,))
        email = cur.fetchone()

:class:`Database` builds the same pair of contexts from an explicit
configuration, for code (such as SQL storage backends) that must not depend
on the process-wide one.
"""

from __future__ import annotations

import copy
import difflib
import importlib
import itertools
import logging
import random
import re
import selectors
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any

import orjson

from kiln._state import register_heartbeat, state_of
from kiln.config import CONFIG, Configuration, Setting, register_setting
from kiln.exceptions import BackendError, ConfigError

if TYPE_CHECKING:
    from flask import Flask

__all__ = [
    "DATABASE",
    "Database",
    "DatabaseContext",
    "ServerPool",
    "database_for",
    "describe_entry",
    "heartbeat",
    "init_app",
    "is_alive",
    "load_driver",
    "read",
    "write",
]

logger = logging.getLogger("kiln.database")

ROLES = ("read", "write")

#: How to install the drivers kiln knows, for the error raised when one is missing.
INSTALL_HINTS = {
    "sqlite3": "it ships with Python; rebuild Python with SQLite support",
    "psycopg": "install it with `pip install 'kiln-framework[postgresql]'`",
    "psycopg2": "install it with `pip install psycopg2-binary`",
    "pymysql": "install it with `pip install 'kiln-framework[mysql]'`",
    "MySQLdb": "install it with `pip install mysqlclient`",
}

#: Drivers whose ``connect()`` takes ``connect_timeout`` (seconds).
_TIMEOUT_DRIVERS = frozenset({"psycopg", "psycopg2", "pymysql", "MySQLdb"})

_NUMBER = (int, float)

for _setting in (
    Setting(
        "database.module",
        (str, None),
        None,
        "DB-API module used by `kiln.database`: `sqlite3`, `psycopg`, `psycopg2`, "
        "`pymysql`, `MySQLdb` or any module with a `connect()`.",
        True,
    ),
    Setting(
        "database.write",
        (list, None),
        None,
        "Write servers: `connect(**entry)` mappings, or strings passed as the first "
        "argument of `connect()` (a DSN, a URL, an SQLite path).",
        True,
    ),
    Setting(
        "database.read",
        (list, None),
        None,
        "Read servers, like `database.write`. Default: the write servers.",
        True,
    ),
    Setting("database.pool_size", (int,), 5, "Idle connections kept per server.", True),
    Setting(
        "database.connect_timeout",
        (int,),
        5,
        "Seconds allowed to open a connection (network drivers; an entry's own "
        "`connect_timeout` wins).",
        True,
    ),
    Setting(
        "database.retry_after_seconds",
        _NUMBER,
        5,
        "How long a server whose connection failed is tried only after the others.",
        True,
    ),
):
    register_setting(_setting)


# --------------------------------------------------------------------------
# Connection helpers
# --------------------------------------------------------------------------


def _fileno(connection: Any) -> int | None:
    fileno = getattr(connection, "fileno", None)
    if callable(fileno):
        return int(fileno())
    # PyMySQL has no fileno(); its socket is private but stable across versions.
    sock = getattr(connection, "_sock", None)
    if sock is not None:
        return int(sock.fileno())
    return None


def is_alive(connection: Any) -> bool:
    """Whether an idle connection looks usable, without a round trip.

    Reads the driver's own state (``closed``, ``broken``, ``open``) and, for
    network drivers, polls the socket: an idle connection has nothing to
    read, so a readable socket means the server closed it or sent an error
    (a terminated backend, a killed thread, a restart).
    """
    try:
        if getattr(connection, "closed", False) or getattr(connection, "broken", False):
            return False
        if not getattr(connection, "open", True):
            return False
        # sqlite3 raises ProgrammingError on any use of a closed connection.
        getattr(connection, "in_transaction", None)
        fd = _fileno(connection)
    except Exception:
        return False
    if fd is None:
        return True
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        return not selector.select(0)


def _close_quietly(connection: Any) -> None:
    try:
        connection.close()
    except Exception:
        logger.debug("Closing a database connection failed", exc_info=True)


def _rollback_quietly(connection: Any) -> bool:
    """Roll back; ``False`` when the connection could not (it is then unusable)."""
    try:
        connection.rollback()
    except Exception:
        logger.warning("Rolling back a database connection failed; discarding it", exc_info=True)
        return False
    return True


def _execute(connection: Any, sql: str) -> None:
    cursor = connection.cursor()
    try:
        cursor.execute(sql)
    finally:
        cursor.close()


_URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")
_KV_PASSWORD = re.compile(r"(password\s*=\s*)\S+", re.IGNORECASE)


def describe_entry(entry: str | Mapping[str, Any]) -> str:
    """A server entry for logs and errors, without its password."""
    if isinstance(entry, str):
        return _KV_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", entry))
    return ", ".join(
        f"{key}={value}" for key, value in entry.items() if key not in ("password", "passwd")
    )


# --------------------------------------------------------------------------
# Pools
# --------------------------------------------------------------------------


def _close_all(connections: list[Any]) -> None:
    for connection in connections:
        _close_quietly(connection)


class ServerPool:
    """Idle connections to one server, and when that server was last seen down.

    Thread-safe. At most ``size`` idle connections are kept; a busy moment
    opens more, and they are closed when given back. A closed pool (after a
    config reload) closes every connection given back to it.
    """

    def __init__(
        self,
        module: ModuleType,
        entry: str | Mapping[str, Any],
        *,
        size: int,
        connect_timeout: int,
    ) -> None:
        self.module = module
        self.entry = entry
        self.size = size
        self.label = describe_entry(entry)
        self.down_until = 0.0
        self.closed = False
        self._idle: list[Any] = []
        # Closed explicitly when the pool is collected (with a Database nobody
        # uses): Python 3.13 warns about a sqlite3 connection left to the GC.
        weakref.finalize(self, _close_all, self._idle)
        self._lock = threading.Lock()
        self._extra: dict[str, Any] = {}
        name = module.__name__
        if name == "sqlite3":
            # A pooled connection moves between threads; kiln never shares one at once.
            self._extra["check_same_thread"] = False
        elif name in _TIMEOUT_DRIVERS and not (
            isinstance(entry, str) and "connect_timeout" in entry
        ):
            self._extra["connect_timeout"] = connect_timeout

    def __repr__(self) -> str:
        return f"<ServerPool {self.module.__name__} {self.label!r} idle={len(self._idle)}>"

    def connect(self) -> Any:
        """Open a new connection (the driver's exceptions propagate)."""
        if isinstance(self.entry, str):
            return self.module.connect(self.entry, **self._extra)
        return self.module.connect(**{**self._extra, **self.entry})

    def checkout(self) -> Any:
        """A live idle connection, else a new one."""
        while True:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            if connection is None:
                break
            if is_alive(connection):
                return connection
            logger.info("Discarding a broken pooled connection to %s", self.label)
            _close_quietly(connection)
        connection = self.connect()
        self.down_until = 0.0
        return connection

    def checkin(self, connection: Any, *, reusable: bool = True) -> None:
        """Give a connection back: kept when reusable and there is room, else closed."""
        with self._lock:
            if reusable and not self.closed and len(self._idle) < self.size:
                self._idle.append(connection)
                return
        _close_quietly(connection)

    def close(self) -> None:
        """Close the idle connections; connections in use are closed when given back."""
        with self._lock:
            self.closed = True
            idle = list(self._idle)
            self._idle.clear()
        _close_all(idle)


def load_driver(name: Any) -> ModuleType:
    """Import the DB-API module named by ``database.module``.

    :raises ConfigError: it is not set, cannot be imported, or has no ``connect()``.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(
            "database.module is not set: name a DB-API module such as 'sqlite3', "
            "'psycopg' or 'pymysql'."
        )
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        hint = INSTALL_HINTS.get(name)
        if hint is None:
            close = difflib.get_close_matches(name, INSTALL_HINTS, n=1)
            guess = f"Did you mean {close[0]!r}? " if close else ""
            hint = f"{guess}Install it with `pip install {name}`"
        raise ConfigError(f"database.module {name!r} cannot be imported ({exc}): {hint}.") from exc
    if not callable(getattr(module, "connect", None)):
        raise ConfigError(
            f"database.module {name!r} is not a DB-API module (it has no connect()); "
            "name one such as 'sqlite3', 'psycopg' or 'pymysql'."
        )
    return module


@dataclass
class _Snapshot:
    """The pools built from one value of the ``database`` config section."""

    section: Any
    module: ModuleType
    roles: dict[str, list[ServerPool]]
    retry_after: float

    @classmethod
    def build(cls, section: Any) -> _Snapshot:
        if not isinstance(section, Mapping):
            raise ConfigError(
                "database is not configured: set database.module and database.write "
                "(see docs/database.md)."
            )
        values = {}
        for key in ("pool_size", "connect_timeout", "retry_after_seconds"):
            setting = _settings()[key]
            value = section.get(key, setting.default)
            problem = setting.check(value)
            if problem:
                raise ConfigError(f"Config key {setting.key!r} {problem}.")
            values[key] = value
        module = load_driver(section.get("module"))
        by_key: dict[bytes, ServerPool] = {}
        roles: dict[str, list[ServerPool]] = {}
        for role in ("write", "read"):
            entries = section.get(role)
            if entries is None and role == "read":
                entries = section.get("write")
            if not isinstance(entries, list) or not entries:
                raise ConfigError(
                    f"database.{role} must list at least one server: a mapping of "
                    "connect() arguments or a DSN string."
                )
            pools = []
            for entry in entries:
                if not isinstance(entry, (str, Mapping)):
                    raise ConfigError(
                        f"database.{role} entries must be mappings of connect() arguments "
                        f"or DSN strings, got {entry!r}."
                    )
                # Read and write entries naming the same server share one pool.
                server = orjson.dumps(entry, option=orjson.OPT_SORT_KEYS, default=str)
                if server not in by_key:
                    by_key[server] = ServerPool(
                        module,
                        entry,
                        size=values["pool_size"],
                        connect_timeout=values["connect_timeout"],
                    )
                pools.append(by_key[server])
            roles[role] = pools
        return cls(copy.deepcopy(section), module, roles, float(values["retry_after_seconds"]))

    def checkout(self, role: str) -> tuple[Any, ServerPool]:
        """A connection from a random server of ``role``, failing over to the others."""
        pools = self.roles[role]
        start = random.randrange(len(pools))
        now = time.monotonic()
        # Stable sort: the random rotation is kept, servers marked down go last.
        candidates = sorted(pools[start:] + pools[:start], key=lambda p: p.down_until > now)
        errors = (getattr(self.module, "Error", OSError), OSError)
        failure: BaseException | None = None
        for pool in candidates:
            try:
                return pool.checkout(), pool
            except errors as exc:
                pool.down_until = time.monotonic() + self.retry_after
                logger.warning("Database %s server %s is down: %s", role, pool.label, exc)
                failure = exc
            except TypeError as exc:
                raise ConfigError(
                    f"database.{role} entry {pool.label!r}: {self.module.__name__}.connect() "
                    f"refused its arguments ({exc}). Check the keys of the entry."
                ) from exc
        raise BackendError(
            f"No database {role} server could be reached ({len(candidates)} tried; "
            f"last error: {failure}). Check that the servers in database.{role} are up.",
            original=failure,
        ) from failure

    def close(self) -> None:
        for pool in {id(p): p for pools in self.roles.values() for p in pools}.values():
            pool.close()


def _settings() -> dict[str, Setting]:
    from kiln.config import SETTINGS

    return {key.split(".", 1)[1]: SETTINGS[key] for key in SETTINGS if key.startswith("database.")}


# --------------------------------------------------------------------------
# Per-thread state
# --------------------------------------------------------------------------


@dataclass
class _Held:
    """A connection a thread holds for one role, and how deep it is nested."""

    connection: Any
    raw: Any
    pool: ServerPool | None = None
    depth: int = 1
    savepoint: str | None = None
    borrowed: bool = False


class _Pin:
    """The one connection every context of a thread uses, in a test transaction."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self._counter = itertools.count(1)

    def next_savepoint(self) -> str:
        return f"kiln_savepoint_{next(self._counter)}"


class _PinnedConnection:
    """The connection of a pinned context: ``commit`` and ``rollback`` act on a savepoint.

    Everything else is the real connection's.
    """

    def __init__(self, raw: Any, savepoint: str) -> None:
        self._raw = raw
        self._savepoint = savepoint

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)

    def __repr__(self) -> str:
        return f"<pinned {self._raw!r} at {self._savepoint}>"

    def commit(self) -> None:
        _execute(self._raw, f"RELEASE SAVEPOINT {self._savepoint}")
        _execute(self._raw, f"SAVEPOINT {self._savepoint}")

    def rollback(self) -> None:
        _execute(self._raw, f"ROLLBACK TO SAVEPOINT {self._savepoint}")

    def close(self) -> None:
        """Do nothing: the test transaction owns the connection."""


# --------------------------------------------------------------------------
# Database and its contexts
# --------------------------------------------------------------------------


class Database:
    """The ``read`` and ``write`` contexts of one configuration, and their pools.

    :param config: a :class:`~kiln.config.Configuration`, a whole config tree
        as a mapping, or ``None`` for the process-wide
        :data:`~kiln.config.CONFIG`. Only its ``database`` section is read,
        at first use and again whenever it changes.

    Reads the settings ``database.module``, ``database.write``,
    ``database.read``, ``database.pool_size``, ``database.connect_timeout``
    and ``database.retry_after_seconds``.
    """

    def __init__(self, config: Configuration | Mapping[str, Any] | None = None) -> None:
        if config is None:
            self.config = CONFIG
        elif isinstance(config, Configuration):
            self.config = config
        else:
            self.config = Configuration.from_mapping(config)
        self.read = DatabaseContext(self, "read")
        self.write = DatabaseContext(self, "write")
        self._snapshot: _Snapshot | None = None
        self._lock = threading.Lock()
        self._local = threading.local()
        self._listening = False

    def __repr__(self) -> str:
        snapshot = self._snapshot
        if snapshot is None:
            return "<Database (not used yet)>"
        servers = " ".join(
            f"{role}=[{', '.join(repr(pool.label) for pool in pools)}]"
            for role, pools in snapshot.roles.items()
        )
        return f"<Database {snapshot.module.__name__} {servers}>"

    @property
    def module(self) -> ModuleType:
        """The DB-API module of ``database.module`` (imported at first use).

        :raises ConfigError: the ``database`` section is wrong.
        """
        return self._current().module

    def configured(self) -> bool:
        """Whether the configuration has a ``database`` section."""
        return self.config.get("database") is not None

    def check(self) -> None:
        """Import the driver and validate the server lists, without connecting.

        :raises ConfigError: the ``database`` section is wrong.
        """
        self._current()

    def _current(self) -> _Snapshot:
        section = self.config.get("database")
        snapshot = self._snapshot
        if snapshot is not None and snapshot.section == section:
            return snapshot
        with self._lock:
            old = self._snapshot
            if old is not None and old.section == section:
                return old
            snapshot = _Snapshot.build(section)
            self._snapshot = snapshot
            if not self._listening:
                self._listening = True
                self.config.add_listener(_reload_listener(self))
        if old is not None:
            logger.info("database settings changed: new connection pools")
            old.close()
        return snapshot

    def close(self) -> None:
        """Close every idle connection; the next use builds fresh pools."""
        with self._lock:
            snapshot, self._snapshot = self._snapshot, None
        if snapshot is not None:
            snapshot.close()

    # -- entering and leaving ---------------------------------------------

    def _enter(self, role: str) -> Any:
        local = self._local
        held: _Held | None = getattr(local, role, None)
        if held is not None:
            held.depth += 1
            return held.connection
        writing: _Held | None = getattr(local, "write", None)
        if role == "read" and writing is not None:
            held = _Held(writing.connection, writing.raw, borrowed=True)
        elif (pin := getattr(local, "pin", None)) is not None:
            savepoint = pin.next_savepoint()
            _execute(pin.raw, f"SAVEPOINT {savepoint}")
            held = _Held(_PinnedConnection(pin.raw, savepoint), pin.raw, savepoint=savepoint)
        else:
            connection, pool = self._current().checkout(role)
            held = _Held(connection, connection, pool)
        setattr(local, role, held)
        return held.connection

    def _exit(self, role: str, failed: bool) -> None:
        held: _Held = getattr(self._local, role)
        held.depth -= 1
        if held.depth:
            return
        setattr(self._local, role, None)
        if held.borrowed:
            return
        if held.savepoint is not None:
            if failed or role == "read":
                _execute(held.raw, f"ROLLBACK TO SAVEPOINT {held.savepoint}")
            _execute(held.raw, f"RELEASE SAVEPOINT {held.savepoint}")
            return
        pool = held.pool
        assert pool is not None
        connection = held.raw
        if role == "write" and not failed:
            try:
                connection.commit()
            except Exception as exc:
                usable = _rollback_quietly(connection) and is_alive(connection)
                pool.checkin(connection, reusable=usable)
                if usable:
                    raise  # the transaction's own failure (a constraint, a conflict)
                raise BackendError(
                    f"The database connection to {pool.label} was lost while committing: "
                    f"{exc}. The transaction may not have been applied.",
                    original=exc,
                ) from exc
            pool.checkin(connection)
            return
        pool.checkin(connection, reusable=_rollback_quietly(connection))

    @contextmanager
    def pinned_transaction(self) -> Iterator[Any]:
        """Run every context of this thread in one transaction, rolled back at the end.

        Meant for tests (:mod:`kiln.testing`'s ``db_transaction``). Inside,
        ``read`` and ``write`` hand out the same connection; each outermost
        context is a savepoint that its exit releases (success) or rolls back
        to (error, or a ``read``), and the connection's ``commit()`` and
        ``rollback()`` act on that savepoint. Yields the real connection:
        do not commit it. Other threads are not affected.

        MySQL and MariaDB commit implicitly on DDL (``CREATE TABLE``): create
        tables before entering.

        :raises RuntimeError: this thread is already inside a context of this database.
        """
        local = self._local
        if any(getattr(local, name, None) is not None for name in (*ROLES, "pin")):
            raise RuntimeError(
                "pinned_transaction() must be entered outside any read, write or "
                "pinned_transaction context of the same database."
            )
        connection, pool = self._current().checkout("write")
        try:
            # sqlite3 opens transactions lazily; a SAVEPOINT outside one would commit on release.
            if getattr(connection, "in_transaction", None) is False:
                _execute(connection, "BEGIN")
            local.pin = _Pin(connection)
            yield connection
        finally:
            local.pin = None
            pool.checkin(connection, reusable=_rollback_quietly(connection))

    # -- health -----------------------------------------------------------

    def heartbeat(self) -> dict[str, bool]:
        """``{"read": bool, "write": bool}``: whether each role runs ``SELECT 1``."""
        results = {}
        for role in ROLES:
            try:
                with getattr(self, role) as connection:
                    _execute(connection, "SELECT 1")
            except Exception:
                logger.exception("Database %s heartbeat failed", role)
                results[role] = False
            else:
                results[role] = True
        return results


def _reload_listener(database: Database) -> Any:
    # A weak reference: a Database nobody uses any more must not be kept alive by CONFIG.
    ref = weakref.ref(database)

    def on_reload(configuration: Configuration) -> None:
        target = ref()
        if target is None:
            configuration.remove_listener(on_reload)
            return
        if not target.configured():
            # The section is gone: drop the pools; a later use says what is missing.
            target.close()
            return
        target._current()

    return on_reload


class DatabaseContext:
    """``with context as connection:`` -- one role (``read`` or ``write``) of a :class:`Database`.

    The value bound by ``as`` is a DB-API connection of ``database.module``.
    See the module documentation for the transaction rules.
    """

    def __init__(self, database: Database, role: str) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be 'read' or 'write', not {role!r}.")
        self.database = database
        self.role = role

    @classmethod
    def from_config(
        cls, config: Configuration | Mapping[str, Any] | None, role: str
    ) -> DatabaseContext:
        """The ``role`` context of a new :class:`Database` for ``config``."""
        context: DatabaseContext = getattr(Database(config), role)
        return context

    def __repr__(self) -> str:
        return f"<DatabaseContext {self.role} of {self.database!r}>"

    def __enter__(self) -> Any:
        """Check a connection out (or reuse this thread's).

        :raises ConfigError: the ``database`` section is wrong.
        :raises BackendError: no server of this role could be reached.
        """
        return self.database._enter(self.role)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.database._exit(self.role, exc_type is not None)


#: The process-wide database, configured by :data:`kiln.config.CONFIG`.
DATABASE = Database(CONFIG)
#: Clay's ``database.read``: a read connection of the process-wide database.
read = DATABASE.read
#: Clay's ``database.write``: a write connection of the process-wide database.
write = DATABASE.write


def heartbeat() -> dict[str, bool]:
    """Whether each role of the process-wide database answers; see :meth:`Database.heartbeat`."""
    return DATABASE.heartbeat()


def database_for(app: Flask) -> Database:
    """The :class:`Database` of ``app`` (set by :func:`init_app`), else :data:`DATABASE`."""
    database = state_of(app).database
    return database if database is not None else DATABASE


def init_app(app: Flask) -> None:
    """Check the ``database`` section at startup and add a ``database`` heartbeat.

    Called by :func:`kiln.create_app` when ``kiln.database`` is listed in
    ``views``. An app built from the process-wide config uses
    :data:`DATABASE`; one built from another config gets its own
    :class:`Database` (see :func:`database_for`). Without a ``database``
    section, nothing is registered.

    :raises ConfigError: the ``database`` section is wrong (unknown module, no servers).
    """
    state = state_of(app)
    database = DATABASE if state.config is CONFIG else Database(state.config)
    state.database = database
    if not database.configured():
        return
    database.check()

    def check() -> bool:
        return all(database.heartbeat().values())

    register_heartbeat(app, "database", check)
