"""Cache backends: small JSON values with time-to-live.

One abstract base class, :class:`CacheBase`, whose docstrings are the
contract (its :meth:`~CacheBase.heartbeat`, a set/get/delete round trip,
serves every backend); implementations :mod:`kiln.cache.memory`,
:mod:`kiln.cache.sqlite`, :mod:`kiln.cache.postgresql` and
:mod:`kiln.cache.redis`; and the contract suite :mod:`kiln.cache.testing`.

Every key is stored under the backend's ``prefix`` (``cache.prefix``), so
several services can share one database. Values are anything
:mod:`orjson` encodes; they come back decoded. A key past its TTL is
absent: ``get`` gives ``None`` and ``ttl`` a negative number.
"""

from __future__ import annotations

import abc
from typing import Any

from kiln.exceptions import BackendError

__all__ = ["BackendError", "CacheBase", "load_cache"]


class CacheBase(abc.ABC):
    """The cache contract. Every method may raise :class:`BackendError`."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    @abc.abstractmethod
    def initialize_schema(self, dry_run: bool = False) -> list[str]:
        """Create what the backend needs; idempotent; returns the steps."""

    @abc.abstractmethod
    def flush(self) -> None:
        """Remove every key of this prefix."""

    def heartbeat(self) -> bool:
        """Whether a set/get/delete round trip works; never raises."""
        try:
            self.set("__heartbeat__", True, 60)
            ok = self.get("__heartbeat__") is True
            self.delete("__heartbeat__")
        except Exception:
            return False
        return ok

    def close(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Release connections and files. The default does nothing."""

    @abc.abstractmethod
    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` under ``key``, expiring after ``ttl`` seconds (never if None)."""

    @abc.abstractmethod
    def get(self, key: str) -> Any:
        """The value under ``key``, or ``None`` when absent or expired."""

    @abc.abstractmethod
    def delete(self, key: str) -> Any:
        """Remove ``key``; return the value it held, or ``None``."""

    @abc.abstractmethod
    def expire(self, key: str, ttl: float) -> None:
        """Make an existing ``key`` expire after ``ttl`` seconds (no-op when absent)."""

    @abc.abstractmethod
    def ttl(self, key: str) -> float:
        """Seconds left before ``key`` expires; negative when absent or without TTL."""


def _register_settings() -> None:
    from kiln.config import Setting, register_setting

    for setting in (
        Setting(
            "cache.backend",
            (str, None),
            None,
            "Cache backend: `sqlite` (a table in a local file), `redis` (a Redis server) "
            "or `memory` (per process); default: the storage backend.",
        ),
        Setting(
            "cache.url",
            (str, None),
            None,
            "SQLite database file, or Redis URL, of the cache; default: `storage.url`.",
        ),
        Setting(
            "cache.prefix", (str,), "", "Prefix of every cache key (services sharing a cache)."
        ),
    ):
        register_setting(setting)


_register_settings()


def load_cache(config: Any) -> CacheBase:
    """Build the cache backend configured in ``config`` (a
    :class:`kiln.config.Configuration`).

    The SQLite cache shares the storage's file (and connections) unless
    ``cache.url`` names another. Call :meth:`CacheBase.initialize_schema`
    once (``kiln migrate``).

    :raises kiln.exceptions.ConfigError: ``cache.backend`` is unknown.
    """
    from kiln.storage import load_backend

    name = config.setting("cache.backend") or config.setting("storage.backend")
    backend: CacheBase = load_backend("cache", name, config)
    return backend
