"""kiln's utility endpoints: hello, heartbeats and version.

=====================  ================================================
``GET /v<N>/``         hello: project, API version, public settings
``GET /__heartbeat__``  every registered check; 503 when one fails
``GET /__lbheartbeat__`` always 200 ``{}`` (the process answers)
``GET /__version__``    ``version.json`` when present, else 404
``GET /__config__``     this process's config generation, and whether its
                       last reload failed
=====================  ================================================

The heartbeat endpoints, ``__version__`` and ``__config__`` answer both at the root (for
load balancers) and under the version prefix (as Cliquet did).
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
from datetime import UTC, datetime
from typing import Any

import orjson
from flask import Flask, Response, current_app, request
from werkzeug.exceptions import SecurityError
from werkzeug.wsgi import get_host

from kiln.__about__ import __version__
from kiln._state import HeartbeatCheck, KilnState, api_version, current_state
from kiln.auth.web import current_identity, current_principals
from kiln.config import SETTINGS, Configuration
from kiln.eos import eos_info
from kiln.errors import ERRORS, HTTPError, json_response, werkzeug_error
from kiln.views.flush import install_flush
from kiln.views.permissions import install_permissions

__all__ = [
    "absolute_url",
    "config_generation",
    "heartbeat",
    "hello",
    "install_utility_views",
    "lbheartbeat",
    "run_checks",
    "url_root",
    "version",
]

logger = logging.getLogger("kiln.heartbeat")


def install_utility_views(app: Flask, state: KilnState) -> None:
    """Register the utility endpoints on ``app``."""
    prefix = state.api_prefix
    app.add_url_rule(f"{prefix}/", "kiln.hello", hello, methods=["GET"])
    for base in ("", prefix):
        app.add_url_rule(f"{base}/__heartbeat__", f"kiln.heartbeat{base}", heartbeat)
        app.add_url_rule(f"{base}/__lbheartbeat__", f"kiln.lbheartbeat{base}", lbheartbeat)
        app.add_url_rule(f"{base}/__version__", f"kiln.version{base}", version)
        app.add_url_rule(f"{base}/__config__", f"kiln.config{base}", config_generation)
    install_flush(app, state)
    install_permissions(app, state)


def absolute_url(path: str) -> str:
    """``path`` as a URL of the service: see :func:`url_root`."""
    trusted = current_app.config.get("TRUSTED_HOSTS")
    return url_root(request.environ, current_state().config, trusted) + path


def url_root(
    environ: dict[str, Any], config: Configuration, trusted_hosts: list[str] | None = None
) -> str:
    """``scheme://host[/script]``: where the service's URLs start.

    The host is ``http_host`` when set (the public URL), else the request's
    ``Host`` (after any ``ProxyFix``) when ``trusted_hosts`` (the setting, or
    Flask's ``TRUSTED_HOSTS``) lists it; a ``Host`` it does not list is a
    400. With neither, a ``Host`` is anyone's to send, so none is used: the
    root is just the script's path, and URLs are relative (``/v1/...``).
    """
    raw: str = environ.get("SCRIPT_NAME", "")
    script = raw.encode("latin-1").decode(errors="replace").rstrip("/")
    scheme = config.setting("http_scheme") or environ.get("wsgi.url_scheme", "http")
    host = config.setting("http_host")
    if host:
        return f"{scheme}://{host}{script}"
    trusted = config.setting("trusted_hosts") or trusted_hosts
    if not trusted:
        return script
    try:
        host = get_host(environ, trusted)
    except SecurityError as exc:
        raise werkzeug_error(exc) from None  # as Flask answers for its TRUSTED_HOSTS
    return f"{scheme}://{host}{script}"


def hello() -> Response:
    """Describe the service: name, versions, public settings and capabilities."""
    state = current_state()
    config = state.config
    body: dict[str, Any] = {
        "project_name": config.setting("project.name"),
        "project_version": config.setting("project.version"),
        "http_api_version": api_version(config),
        "project_docs": config.setting("project.docs"),
        "protocol_version": "2",
        "kiln_version": __version__,
        "url": absolute_url(f"{state.api_prefix}/"),
        "settings": {name: _public(config, key) for name, key in state.public_settings.items()},
        "capabilities": state.capabilities,
    }
    eos = eos_info(config)
    if eos is not None:
        body["eos"] = eos
    identity = current_identity()
    if identity is not None:
        body["user"] = {"id": identity.prefixed_id, "principals": list(current_principals())}
    return json_response(body)


def _public(config: Configuration, key: str) -> Any:
    if key in SETTINGS:
        return config.setting(key)
    return config.get(key)


def heartbeat() -> Response:
    """Run every registered check, each within ``heartbeat.timeout_seconds``.

    Answers ``{name: true|false|null}``; 503 when any check is ``false``.
    """
    state = current_state()
    timeout = float(state.config.setting("heartbeat.timeout_seconds"))
    results = run_checks(state.heartbeats, timeout)
    status = 503 if any(value is False for value in results.values()) else 200
    return json_response(results, status)


def run_checks(checks: dict[str, HeartbeatCheck], timeout: float) -> dict[str, bool | None]:
    """Run ``checks`` concurrently; a check that raises or times out gives ``False``."""
    if not checks:
        return {}
    pool = concurrent.futures.ThreadPoolExecutor(
        max_workers=len(checks), thread_name_prefix="kiln-heartbeat"
    )
    try:
        futures = {name: pool.submit(check) for name, check in checks.items()}
        done, _ = concurrent.futures.wait(futures.values(), timeout=timeout)
        results: dict[str, bool | None] = {}
        for name, future in futures.items():
            if future not in done:
                logger.error("Heartbeat check %r did not answer within %ss", name, timeout)
                results[name] = False
            elif future.exception() is not None:
                logger.error("Heartbeat check %r failed", name, exc_info=future.exception())
                results[name] = False
            else:
                value = future.result()
                results[name] = None if value is None else bool(value)
        return results
    finally:
        # Never wait for a hung check: its thread finishes (or not) on its own.
        pool.shutdown(wait=False, cancel_futures=True)


def lbheartbeat() -> Response:
    """Answer 200 ``{}`` as long as the process serves requests."""
    return json_response({})


def version() -> Response:
    """Serve ``version.json`` (path: setting ``version_json_path``) or 404."""
    path = current_state().config.get("version_json_path", "version.json")
    try:
        with open(os.path.abspath(path), "rb") as fp:
            body = orjson.loads(fp.read())
    except FileNotFoundError:
        raise HTTPError(404, ERRORS.MISSING_RESOURCE, "This service has no version.json.") from None
    except (OSError, orjson.JSONDecodeError) as exc:
        logger.error("Cannot serve %s: %s", path, exc)
        raise HTTPError(
            404, ERRORS.MISSING_RESOURCE, "This service's version.json cannot be read."
        ) from None
    return json_response(body)


def _instant(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def config_generation() -> Response:
    """Which config this process serves: its generation (how many loads
    succeeded), when it was loaded, and whether the last reload failed (the
    reason is in the ERROR log line, never here: it may quote a secret)."""
    config = current_state().config
    config.config  # noqa: B018 -- loaded, as the app was built from it
    return json_response(
        {
            "generation": config.generation,
            "loaded_at": _instant(config.last_updated),
            "last_reload_failed": config.last_failed is not None,
            "failed_at": _instant(config.last_failed),
            "pid": os.getpid(),
        }
    )
