"""kiln's one exception tree.

Every error kiln raises on purpose is a :class:`KilnError`. Drivers' and
libraries' exceptions are translated where they enter kiln (``raise
BackendError(...) from exc``), and views turn these into the JSON error
envelope of :mod:`kiln.errors`; no traceback ever reaches a client.

::

    KilnError
     ├── ConfigError                 a config file or key is wrong
     │    └── ConfigFileError        a file is missing, unreadable or does not parse
     ├── StartupError                the app cannot be built (views, middleware, backends)
     ├── BackendError                a storage/cache/permission/database backend failed
     │    └── TransientBackendError  the engine aborted a transaction that conflicted
     │                               with another (serialization failure, deadlock)
     ├── HTTPError  (kiln.errors)    an error response, carrying status, errno and message
     └── HTTPError  (kiln.http)      an outbound request got no response (connect, TLS, timeout...)
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "ConfigError",
    "ConfigFileError",
    "KilnError",
    "StartupError",
    "TransientBackendError",
]


class KilnError(Exception):
    """Base class of every exception kiln raises on purpose."""


class ConfigError(KilnError):
    """A configuration value is wrong.

    The message is one sentence naming the file or key and what to do.
    """


class ConfigFileError(ConfigError):
    """A configuration file is missing, unreadable, or does not parse."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"Config file {path!r} {problem}")


class StartupError(KilnError):
    """The application cannot be built from its configuration.

    Raised for a ``views`` module that fails to import, an unknown or broken
    ``middleware`` entry, or a backend that cannot be set up.
    """


class BackendError(KilnError):
    """A backend (storage, cache, permission, database) failed.

    Views answer ``503`` with errno 201 and a ``Retry-After`` header.
    """

    def __init__(self, message: str = "Backend failure", *, original: BaseException | None = None):
        self.original = original
        super().__init__(message)


class TransientBackendError(BackendError):
    """The engine aborted a unit of work because it conflicted with another
    one (PostgreSQL's serialization failures and deadlocks). Nothing of it
    was committed, so running the whole unit of work again may succeed:
    kiln retries a request (or a batch) a few times
    (``storage.transaction_retries``) before answering 503.
    """
