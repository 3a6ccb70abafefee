"""One Redis client per URL, shared by the Redis storage, cache and permission backends.

The driver (redis-py, with the hiredis parser) is imported here and only
here, lazily: importing this module registers the ``redis.*`` settings
without needing the driver, and choosing a Redis backend without it fails
at startup (:class:`~kiln.exceptions.ConfigError`: "Install it with
``pip install 'kiln-framework[redis]'``").

:func:`acquire` returns the process's :class:`RedisConnection` for a URL
(and client options), counting its users; :meth:`RedisConnection.release`
gives it back and the last user disconnects the pool. :class:`RedisBackend`
is what the three Redis backends share: their connection, their lifecycle
methods, and no transactions. Each client has a
blocking pool of at most ``redis.max_connections`` connections (a thread
waits up to ``redis.timeout_seconds`` for one), connect and read timeouts
(``redis.connect_timeout_seconds``, ``redis.timeout_seconds``) and **no
automatic retry**: a command whose reply was lost may have run, and
re-sending a conditional write could turn its own success into a conflict.

Every driver error leaves through :meth:`RedisConnection.errors` as
:class:`~kiln.exceptions.BackendError` (views answer 503), with the URL's
password removed from the message.

Keys hold user-supplied names (resource names, parent ids, object ids,
principals): :func:`encode_key_part` percent-encodes them so that ``:``
(the separator), glob characters and any Unicode can neither collide nor
act as a pattern; :data:`LUA_ENCODE_KEY_PART` is the same function for
scripts that build keys server-side.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any, NamedTuple
from urllib.parse import quote, urlsplit, urlunsplit

from kiln.exceptions import BackendError, ConfigError

__all__ = [
    "LUA_ENCODE_KEY_PART",
    "RedisBackend",
    "RedisConnection",
    "acquire",
    "connection_from_config",
    "encode_key_part",
    "glob_escape",
    "import_driver",
    "redact_url",
]

#: URL schemes redis-py accepts.
URL_SCHEMES = ("redis", "rediss", "unix")

#: Keys deleted per command by :meth:`RedisConnection.delete_matching`.
DELETE_BATCH = 500


def encode_key_part(value: str) -> str:
    """``value`` made safe for a key: every byte of its UTF-8 form except
    ``A-Z a-z 0-9 _ . - ~`` becomes ``%XX``; injective, never contains
    ``:``, ``*``, ``?``, ``[``, ``{`` or ``}``."""
    return quote(value, safe="")


#: :func:`encode_key_part` in Lua (byte-wise; Redis runs Lua in the C locale,
#: where ``%w`` is ASCII letters and digits).
LUA_ENCODE_KEY_PART = """
local function encode_key_part(value)
  return (string.gsub(value, '[^%w_%.~%-]', function(c)
    return string.format('%%%02X', string.byte(c))
  end))
end
"""


def glob_escape(text: str) -> str:
    """``text`` as a literal in a ``SCAN MATCH`` pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def redact_url(url: str) -> str:
    """``url`` without its password (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + host))


def import_driver(setting: str = "storage.backend") -> Any:
    """The ``redis`` module.

    :raises ConfigError: redis-py is not installed.
    """
    try:
        import redis
    except ImportError as exc:
        raise ConfigError(
            f"{setting} 'redis' needs the redis-py driver, which is not installed. "
            "Install it with `pip install 'kiln-framework[redis]'`."
        ) from exc
    return redis


class Options(NamedTuple):
    """Client options; one client is shared per ``(url, options)``."""

    connect_timeout: float = 5.0
    timeout: float = 5.0
    max_connections: int = 50


class RedisConnection:
    """A shared redis-py client for one URL.

    ``client`` is a ``redis.Redis`` (typed ``Any``: redis-py annotates
    command results as ``Awaitable | Any``). Replies are bytes.
    """

    def __init__(self, url: str, options: Options) -> None:
        redis = import_driver()
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.url = url
        self.options = options
        self.users = 0
        self._error_class: type[Exception] = redis.RedisError
        try:
            pool = redis.BlockingConnectionPool.from_url(
                url,
                max_connections=options.max_connections,
                timeout=options.timeout,
                socket_connect_timeout=options.connect_timeout,
                socket_timeout=options.timeout,
                retry=Retry(NoBackoff(), 0),
            )
        except ValueError as exc:
            raise ConfigError(f"{redact_url(url)!r} is not a Redis URL: {exc}") from exc
        self.client: Any = redis.Redis(connection_pool=pool)

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """Turn the driver's errors raised in the block into :class:`BackendError`."""
        try:
            yield
        except self._error_class as exc:
            raise BackendError(
                f"Redis at {redact_url(self.url)} failed: {exc} "
                "Check that the server is running and reachable.",
                original=exc,
            ) from exc

    def register_script(self, source: str) -> Any:
        """A ``redis.commands.core.Script`` (run with EVALSHA, loaded on demand)."""
        return self.client.register_script(source)

    def ping(self) -> bool:
        """Whether the server answers; never raises."""
        try:
            with self.errors():
                return bool(self.client.ping())
        except BackendError:
            return False

    def delete_matching(self, prefix: str) -> None:
        """Delete every key starting with ``prefix`` (``SCAN`` + ``UNLINK``)."""
        with self.errors():
            batch: list[bytes] = []
            for key in self.client.scan_iter(match=glob_escape(prefix) + "*", count=1000):
                batch.append(key)
                if len(batch) >= DELETE_BATCH:
                    self.client.unlink(*batch)
                    batch = []
            if batch:
                self.client.unlink(*batch)

    def release(self) -> None:
        """Give the connection back; the last user disconnects its pool."""
        with _registry_lock:
            self.users -= 1
            if self.users > 0:
                return
            del _registry[(self.url, self.options)]
        self.client.close()
        self.client.connection_pool.disconnect()


_registry: dict[tuple[str, Options], RedisConnection] = {}
_registry_lock = threading.Lock()


DEFAULT_OPTIONS = Options()


def acquire(url: str, options: Options = DEFAULT_OPTIONS) -> RedisConnection:
    """The process's connection to ``url`` (created on first use); call
    :meth:`RedisConnection.release` when done with it.

    :raises ConfigError: redis-py is missing, or ``url`` is not a Redis URL.
    """
    with _registry_lock:
        connection = _registry.get((url, options))
        if connection is None:
            connection = RedisConnection(url, options)
            _registry[(url, options)] = connection
        connection.users += 1
        return connection


class RedisBackend:
    """The lifecycle of a Redis storage, permission or cache backend (a mixin,
    listed before the backend kind's base class): keys under ``namespace``,
    nothing to migrate, no transactions.

    :param connection: a :class:`RedisConnection`, or a URL (then the
        process's shared connection to it, :func:`acquire`); released once by
        :meth:`close`.
    :param namespace: prefix of every key of the backend.
    """

    def __init__(self, connection: RedisConnection | str, namespace: str) -> None:
        if isinstance(connection, str):
            connection = acquire(connection)
        self.connection = connection
        self.namespace = namespace
        self._closed = False

    def initialize_schema(self, dry_run: bool = False) -> list[str]:
        """Nothing to create; checks that the server answers."""
        with self.connection.errors():
            self.connection.client.ping()
        return []

    def flush(self) -> None:
        """Delete every key of the namespace."""
        self.connection.delete_matching(self.namespace)

    def heartbeat(self) -> bool:
        """Whether the server answers ``PING``; never raises."""
        return self.connection.ping()

    def close(self) -> None:
        """Release the connection (once, however often it is called)."""
        if not self._closed:
            self._closed = True
            self.connection.release()

    def transaction(self) -> AbstractContextManager[None]:
        """Groups nothing: each operation is its own unit of work."""
        return contextlib.nullcontext()


def connection_from_config(config: Any, kind: str) -> RedisConnection:
    """The connection of the ``kind`` backend (``storage``, ``cache``,
    ``permission``): ``<kind>.url``, falling back to ``storage.url``, and the
    ``redis.*`` settings.

    :raises ConfigError: the URL is not a Redis URL, or the driver is missing.
    """
    import_driver(f"{kind}.backend")
    url = config.setting(f"{kind}.url") if kind != "storage" else None
    url = url or config.setting("storage.url")
    if not isinstance(url, str) or urlsplit(url).scheme not in URL_SCHEMES:
        raise ConfigError(
            f"{kind}.backend is 'redis' but {kind}.url is {redact_url(str(url))!r}. "
            f"Set {kind}.url to a Redis URL, like 'redis://localhost:6379/0'."
        )
    options = Options(
        connect_timeout=float(config.setting("redis.connect_timeout_seconds")),
        timeout=float(config.setting("redis.timeout_seconds")),
        max_connections=int(config.setting("redis.max_connections")),
    )
    return acquire(url, options)


def _register_settings() -> None:
    from kiln.config import Setting, check_positive, register_setting

    for setting in (
        Setting(
            "redis.connect_timeout_seconds",
            (int, float),
            5.0,
            "How long opening a connection to Redis may take before the backend fails (503).",
            check_value=check_positive,
        ),
        Setting(
            "redis.timeout_seconds",
            (int, float),
            5.0,
            "How long a Redis command, or a wait for a free pooled connection, may take "
            "before the backend fails (503).",
            check_value=check_positive,
        ),
        Setting(
            "redis.max_connections",
            (int,),
            50,
            "Most connections to one Redis URL per process, shared by the Redis backends.",
            check_value=check_positive,
        ),
    ):
        register_setting(setting)


_register_settings()
