"""Cache in Redis: one string key per entry, expiring natively.

A cache key ``k`` is the Redis key ``kiln:cache:<prefix>k`` (``cache.prefix``
as given, so services sharing a database keep apart), holding the value's
JSON. TTLs are Redis's own (``SET … PX``, ``PEXPIRE``, ``PTTL``, in
milliseconds): expired keys vanish without any sweeping by kiln.
``delete`` is ``GETDEL`` (Redis 6.2 or later).
"""

from __future__ import annotations

from typing import Any

import orjson

from kiln._redis import RedisBackend, RedisConnection, connection_from_config
from kiln.cache import CacheBase

__all__ = ["RedisCache", "load"]

NAMESPACE = "kiln:cache:"


def _milliseconds(ttl: float) -> int:
    return round(ttl * 1000)


class RedisCache(RedisBackend, CacheBase):
    """A cache in a Redis database.

    Settings (read by :func:`load`): ``cache.url`` (default: ``storage.url``;
    a Redis URL), ``cache.prefix``, and ``redis.connect_timeout_seconds``,
    ``redis.timeout_seconds``, ``redis.max_connections``.

    :param connection: a :class:`~kiln._redis.RedisConnection`, or a URL
        (then the process's shared connection to it); released by
        :meth:`close`.
    """

    def __init__(
        self,
        connection: RedisConnection | str = "redis://localhost:6379/0",
        prefix: str = "",
        *,
        namespace: str = NAMESPACE,
    ) -> None:
        RedisBackend.__init__(self, connection, namespace)
        CacheBase.__init__(self, prefix)

    def _key(self, key: str) -> str:
        return self.namespace + self.prefix + key

    def flush(self) -> None:
        self.connection.delete_matching(self._key(""))

    def heartbeat(self) -> bool:
        return CacheBase.heartbeat(self)  # the cache's round trip, not RedisBackend's PING

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        encoded = orjson.dumps(value)
        with self.connection.errors():
            if ttl is None:
                self.connection.client.set(self._key(key), encoded)
            elif _milliseconds(ttl) > 0:
                self.connection.client.set(self._key(key), encoded, px=_milliseconds(ttl))
            else:
                # Already expired: what a zero or negative TTL means.
                self.connection.client.delete(self._key(key))

    def get(self, key: str) -> Any:
        with self.connection.errors():
            value = self.connection.client.get(self._key(key))
        return None if value is None else orjson.loads(value)

    def delete(self, key: str) -> Any:
        with self.connection.errors():
            value = self.connection.client.getdel(self._key(key))
        return None if value is None else orjson.loads(value)

    def expire(self, key: str, ttl: float) -> None:
        # A TTL of zero or less deletes the key, as it would expire at once.
        with self.connection.errors():
            self.connection.client.pexpire(self._key(key), _milliseconds(ttl))

    def ttl(self, key: str) -> float:
        with self.connection.errors():
            milliseconds = int(self.connection.client.pttl(self._key(key)))
        # -2: no such key; -1: no TTL.
        return -1.0 if milliseconds < 0 else milliseconds / 1000


def load(config: Any) -> RedisCache:
    """The backend of ``cache.backend = "redis"``: ``cache.url`` (default:
    ``storage.url``, which must then be a Redis URL), ``cache.prefix`` and the
    ``redis.*`` settings.

    :raises kiln.exceptions.ConfigError: the driver is missing, or the URL
        is not a Redis URL.
    """
    return RedisCache(
        connection_from_config(config, "cache"), prefix=config.setting("cache.prefix")
    )
