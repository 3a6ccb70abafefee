"""What kiln keeps on each app: one typed registry (ARCHITECTURE D15).

:class:`KilnState` holds everything a built app needs at request time: its
configuration, the storage, permission and cache backends, the
authentication policies, the mounted resources, the heartbeat checks,
the hello view's capabilities and public settings. It lives on the Flask
app as ``app.extensions["kiln"]`` (Flask's place for an extension's
state) and nowhere else: no other ``app.extensions`` key is kiln's.

This module is a leaf. It imports no other kiln module at run time, so
every component can read the registry without importing
:mod:`kiln.application`, which builds apps and sits above everything
(as Flask keeps ``current_app`` in ``flask.globals``). Components receive
what they need when :func:`kiln.create_app` installs them, or read it
here with :func:`state_of` / :func:`current_state`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from flask import Flask, current_app, has_app_context

from kiln.exceptions import StartupError

if TYPE_CHECKING:
    from kiln.auth import AuthenticationPolicy
    from kiln.auth.web import Authenticator
    from kiln.cache import CacheBase
    from kiln.config import Configuration
    from kiln.database import Database
    from kiln.metrics import Metrics
    from kiln.permission import PermissionBase
    from kiln.resource import Registration
    from kiln.resource.dispatch import ResourceRouter
    from kiln.resource.endpoints import Authorizer
    from kiln.resource.events import Subscription
    from kiln.storage import StorageBase

__all__ = [
    "HeartbeatCheck",
    "KilnState",
    "add_api_capability",
    "add_public_setting",
    "api_major",
    "api_version",
    "current_state",
    "kiln_hook",
    "register_heartbeat",
    "state_of",
]

F = TypeVar("F", bound=Callable[..., Any])

#: A ``/__heartbeat__`` check: ``True`` healthy, ``False`` failing, ``None`` unknown.
HeartbeatCheck = Callable[[], "bool | None"]


class NotAKilnApp(RuntimeError):
    """The Flask app was not built by :func:`kiln.create_app`."""


@dataclass(eq=False)
class KilnState:
    """Everything kiln keeps on one app, as ``app.extensions["kiln"]``.

    ``storage``, ``permission`` and ``cache`` are built once, by
    :func:`kiln.create_app`, when something the app serves needs them
    (a mounted resource, the accounts policy, per-record permissions).
    """

    config: Configuration
    #: The version prefix of every protocol route, like ``/v1``.
    api_prefix: str
    heartbeats: dict[str, HeartbeatCheck] = field(default_factory=dict)
    capabilities: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Settings the hello view shows: the configuration key of each, by the
    #: name it is published under (:func:`add_public_setting`).
    public_settings: dict[str, str] = field(default_factory=lambda: {"readonly": "readonly"})
    storage: StorageBase | None = None
    permission: PermissionBase | None = None
    cache: CacheBase | None = None
    auth_policies: tuple[AuthenticationPolicy, ...] = ()
    #: What authenticates requests, when ``auth.policies`` is set.
    authenticator: Authenticator | None = None
    #: The resource authorization hook (:func:`kiln.resource.views.set_authorizer`).
    authorizer: Authorizer | None = None
    #: Mounted resources, by name.
    resources: dict[str, Registration] = field(default_factory=dict)
    #: The routes of the mounted resources and of the batch endpoint.
    router: ResourceRouter | None = None
    #: Listeners of resource events (:func:`kiln.resource.events.subscribe`).
    subscriptions: list[Subscription] = field(default_factory=list)
    #: Routes below a resource's records (:func:`kiln.resource.views.record_subroute`):
    #: ``(resource name, route name, view, methods)``, mounted with the resources.
    record_subroutes: list[tuple[str, str, Callable[..., Any], tuple[str, ...]]] = field(
        default_factory=list
    )
    #: Listeners called inside the unit of work, before its commit.
    before_commit: list[Subscription] = field(default_factory=list)
    #: Clay's database of this app (:func:`kiln.database.init_app`), when listed in ``views``.
    database: Database | None = None
    #: What :mod:`kiln.docs` caches (the OpenAPI document), once installed.
    docs: Any = None
    #: The app's :class:`kiln.metrics.Metrics`; ``None`` when metrics are off.
    metrics: Metrics | None = None
    #: The app's OpenTelemetry tracer (:mod:`kiln.tracing`); ``None`` when tracing is off.
    tracer: Any = None

    def close(self) -> None:
        """Release the backends' connections and files and the policies' resources."""
        for name in ("cache", "permission", "storage"):
            backend = getattr(self, name)
            if backend is not None:
                setattr(self, name, None)
                backend.close()
        policies, self.auth_policies = self.auth_policies, ()
        for policy in policies:
            policy.close()
        metrics, self.metrics = self.metrics, None
        if metrics is not None:
            metrics.close(self.config)


def kiln_hook(function: F) -> F:
    """Mark ``function`` as a Flask hook or error handler kiln installs itself:
    the resource fast path (:mod:`kiln.resource.dispatch`) does its work, so
    only hooks *not* marked send resource requests through Flask."""
    function._kiln_hook = True  # type: ignore[attr-defined]
    return function


def state_of(app: Flask) -> KilnState:
    """The :class:`KilnState` of an app built by :func:`kiln.create_app`.

    :raises NotAKilnApp: ``app`` is a plain Flask app.
    """
    state = app.extensions.get("kiln")
    if state is None:
        raise NotAKilnApp(f"The Flask app {app.name!r} was not built by kiln.create_app().")
    return cast(KilnState, state)


def current_state() -> KilnState:
    """The :class:`KilnState` of the app handling the current request or app context."""
    return state_of(current_app)


def current_config_or_none() -> Configuration | None:
    """The configuration of the current kiln app, or ``None`` outside of one."""
    if has_app_context():
        state = current_app.extensions.get("kiln")
        if state is not None:
            return cast(KilnState, state).config
    return None


def register_heartbeat(app: Flask, name: str, check: HeartbeatCheck) -> None:
    """Add a check to ``/__heartbeat__``.

    ``check()`` returns ``True`` (healthy), ``False`` (failing: the heartbeat
    answers 503) or ``None`` (unknown; does not fail the heartbeat). A check
    that raises or outlasts ``heartbeat.timeout_seconds`` counts as ``False``.
    """
    state_of(app).heartbeats[name] = check


def add_api_capability(
    app: Flask, identifier: str, description: str = "", url: str = "", **extra: Any
) -> None:
    """Announce a capability in the hello view.

    :raises ValueError: ``identifier`` is already registered.
    """
    capabilities = state_of(app).capabilities
    if identifier in capabilities:
        raise ValueError(f"The capability {identifier!r} is already registered.")
    capabilities[identifier] = {"description": description, "url": url, **extra}


def add_public_setting(app: Flask, key: str, name: str | None = None) -> None:
    """Show the setting ``key`` under ``settings`` in the hello view, as ``name``.

    ``name`` defaults to ``key``. kiln's own settings are published under
    Cliquet and Kinto's names (``batch.max_requests`` as
    ``batch_max_requests``), which clients read; an app publishes its own
    keys, registered settings or not (``add_public_setting(app,
    "attachment.base_url")``). Publishing a name again points it at ``key``.
    Never publish a secret: every client reads the hello view.

    .. versionadded:: 0.1
    """
    state_of(app).public_settings[name if name is not None else key] = key


def api_version(config: Configuration) -> str:
    """``http_api_version``, else the first two parts of ``project.version``."""
    explicit = config.setting("http_api_version")
    if explicit:
        return str(explicit)
    return ".".join(str(config.setting("project.version")).split(".")[:2])


def api_major(config: Configuration) -> str:
    """The major number of the HTTP API version (the ``N`` of ``/vN``).

    :raises StartupError: the version does not start with a number.
    """
    version = api_version(config)
    major = version.split(".")[0]
    if not major.isdigit():
        raise StartupError(f"http_api_version {version!r} must start with a number, like '1.0'.")
    return major
