"""Layered configuration: files, environment overrides, feature flags, live reload.

kiln reads one configuration tree (ARCHITECTURE D11). Its sources, in order:

1. the files listed in ``KILN_CONFIG`` (or ``CLAY_CONFIG`` when ``KILN_CONFIG``
   is unset), separated by ``:``, ``$VARS`` expanded, relative to the working
   directory. The format is chosen by extension: ``.json``, ``.yaml``/``.yml``
   (safe loader), ``.toml``; any other extension (Clay's ``.conf``) is parsed
   as JSON. Files are merged **deeply**: mappings merge key by key, lists and
   scalars are replaced. Empty files are fine.
2. environment overrides ``KILN_<SECTION>__<KEY>=<value>``: ``__`` nests,
   names are lower-cased, and the value is JSON-decoded when it parses as
   JSON, else kept as a string (``KILN_DEBUG__ENABLED=true`` sets
   ``debug.enabled`` to ``True``).

The module-level functions (:func:`get`, :func:`feature_flag`,
:func:`get_logger`, :func:`debug`) read the configuration in effect
(:func:`current`): that of the kiln app serving the current request, else the
process-wide :data:`CONFIG`, which loads itself on first use; :func:`load`
reloads :data:`CONFIG`. A reload builds the new tree
completely, then swaps it in one assignment: readers see the old tree or the
new one, never a mixture, and a broken file keeps the last good tree.

Example::

    from kiln import config

    config.get("users.admins")                  # ["synack", "bigo"]
    config.get("dogs", default=True)            # True
    config.feature_flag("new_scary_thing", key=user_id)
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import importlib
import logging
import os
import random
import signal
import threading
import time
import tomllib
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

import orjson
import yaml

from kiln._state import current_config_or_none
from kiln.exceptions import ConfigError, ConfigFileError

__all__ = [
    "CONFIG",
    "SETTINGS",
    "Configuration",
    "Setting",
    "check_positive",
    "current",
    "debug",
    "deep_merge",
    "env_overrides",
    "feature_flag",
    "file_list",
    "flag_warnings",
    "get",
    "get_logger",
    "install_reload_signal",
    "known_settings",
    "load",
    "lookup",
    "needs_restart",
    "read_file",
    "register_check",
    "register_setting",
    "set_path",
    "unknown_keys",
    "validate",
]

logger = logging.getLogger("kiln.config")

ENV_PREFIX = "KILN_"
#: Environment variables that name config files rather than override keys.
FILE_LIST_VARS = ("KILN_CONFIG", "CLAY_CONFIG")

_MISSING = object()

Listener = Callable[["Configuration"], None]


def _notify(listeners: list[Listener], configuration: Configuration) -> None:
    """Call each of ``listeners``; one that raises is logged and the others run."""
    for listener in listeners:
        try:
            listener(configuration)
        except Exception:
            logger.exception("Config reload listener %r failed", listener)


# --------------------------------------------------------------------------
# Parsing and merging
# --------------------------------------------------------------------------


def _parse_json(text: str) -> Any:
    return orjson.loads(text)


def _parse_yaml(text: str) -> Any:
    return yaml.safe_load(text)


def _parse_toml(text: str) -> Any:
    return tomllib.loads(text)


#: Format names and parsers by lower-cased file extension. Anything else is
#: parsed as JSON, as Clay did.
PARSERS: dict[str, tuple[str, Callable[[str], Any]]] = {
    ".json": ("JSON", _parse_json),
    ".yaml": ("YAML", _parse_yaml),
    ".yml": ("YAML", _parse_yaml),
    ".toml": ("TOML", _parse_toml),
}


def _parse_problem(exc: Exception) -> str:
    """What a parser says is wrong, without quoting the file: PyYAML's message
    shows the offending line, which may hold a secret."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem} at line {mark.line + 1}, column {mark.column + 1}"
    return str(exc)


def read_file(path: str) -> dict[str, Any]:
    """Read one config file and return its mapping.

    An empty file gives ``{}``.

    :raises ConfigFileError: the file is missing, unreadable, does not parse,
        or its top level is not a mapping.
    """
    if os.path.isdir(path):
        raise ConfigFileError(path, "is a directory, not a config file.")
    try:
        with open(path, encoding="utf-8") as fp:
            text = fp.read()
    except FileNotFoundError:
        raise ConfigFileError(path, "does not exist. Check KILN_CONFIG.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(path, f"cannot be read ({exc}).") from None
    if not text.strip():
        return {}
    extension = os.path.splitext(path)[1].lower()
    kind, parser = PARSERS.get(extension, ("JSON", _parse_json))
    try:
        tree = parser(text)
    except (ValueError, yaml.YAMLError) as exc:
        hint = ""
        if extension not in PARSERS:
            hint = f" (files ending in {extension or 'nothing'!r} are parsed as JSON)"
        detail = " ".join(_parse_problem(exc).split())
        raise ConfigFileError(path, f"is not valid {kind}{hint}: {detail}") from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigFileError(
            path, f"must hold a mapping at its top level, not a {type(tree).__name__}."
        )
    return tree


def deep_merge(
    base: dict[str, Any],
    overlay: Mapping[str, Any],
    *,
    origins: dict[str, str] | None = None,
    source: str = "",
    prefix: str = "",
) -> dict[str, Any]:
    """Merge ``overlay`` into ``base`` in place and return ``base``.

    Mappings merge recursively; any other value (lists included) replaces
    what was there. When ``origins`` is given, it records ``source`` for every
    dotted key that ``overlay`` sets, so errors can name the file.
    """
    for key, value in overlay.items():
        key = str(key)
        dotted = f"{prefix}{key}"
        current = base.get(key, _MISSING)
        if isinstance(value, Mapping) and isinstance(current, dict):
            deep_merge(current, value, origins=origins, source=source, prefix=f"{dotted}.")
        else:
            base[key] = copy.deepcopy(dict(value)) if isinstance(value, Mapping) else value
            if origins is not None:
                _record_origins(origins, dotted, value, source)
    return base


def _record_origins(origins: dict[str, str], dotted: str, value: Any, source: str) -> None:
    for key in [k for k in origins if k == dotted or k.startswith(f"{dotted}.")]:
        del origins[key]
    origins[dotted] = source
    if isinstance(value, Mapping):
        for key, child in value.items():
            _record_origins(origins, f"{dotted}.{key}", child, source)


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Build the override tree from ``KILN_<SECTION>__<KEY>`` variables.

    Variables are applied in sorted order, so a deeper key always lands on
    top of a shallower one (``KILN_DEBUG__ENABLED`` after ``KILN_DEBUG``).
    """
    tree: dict[str, Any] = {}
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in FILE_LIST_VARS:
            continue
        parts = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        if not all(parts):
            logger.warning("Ignoring environment variable %s: empty key part.", name)
            continue
        raw = environ[name]
        try:
            value: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            value = raw
        set_path(tree, ".".join(parts), value)
    return tree


def file_list(environ: Mapping[str, str]) -> list[str]:
    """The config files named by ``KILN_CONFIG`` (else ``CLAY_CONFIG``), made absolute."""
    raw = environ.get("KILN_CONFIG")
    if raw is None:
        raw = environ.get("CLAY_CONFIG", "")
    paths = []
    for entry in raw.split(":"):
        entry = entry.strip()
        if entry:
            paths.append(os.path.abspath(os.path.expandvars(os.path.expanduser(entry))))
    return paths


def set_path(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set dotted ``key`` of ``tree`` in place, creating (or replacing) mappings on the way."""
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def lookup(tree: Any, key: str, default: Any = None) -> Any:
    """Dotted lookup that never raises: ``lookup(t, "users.admins.0")``.

    Integer parts index lists; a missing key, an out-of-range index or a step
    through a scalar gives ``default``. The empty key gives ``default``.
    """
    if not key:
        return default
    node = tree
    for part in key.split("."):
        if isinstance(node, Mapping):
            node = node.get(part, _MISSING)
        elif isinstance(node, list):
            try:
                node = node[int(part)]
            except (ValueError, IndexError):
                return default
        else:
            return default
        if node is _MISSING:
            return default
    return node


# --------------------------------------------------------------------------
# Known settings
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """A configuration key kiln knows: its type, default and documentation.

    ``types`` lists the accepted Python types (``bool`` is never accepted as
    an ``int``); ``None`` in ``types`` allows null. ``reload`` tells whether a
    running service picks a change up on reload or needs a restart.
    """

    key: str
    types: tuple[type | None, ...]
    default: Any
    doc: str
    reload: bool = False
    choices: tuple[Any, ...] = ()
    #: Further check of a well-typed value: returns what is wrong, or None.
    check_value: Callable[[Any], str | None] | None = None

    def check(self, value: Any) -> str | None:
        """Return a sentence describing what is wrong with ``value``, or None."""
        if value is None:
            return None if None in self.types else f"must not be null; use {self._type_names()}"
        accepted = [t for t in self.types if t is not None]
        ok = any(
            isinstance(value, t) and not (isinstance(value, bool) and t in (int, float))
            for t in accepted
        )
        if not ok:
            shown = orjson.dumps(value, default=str).decode()
            return f"must be {self._type_names()}, got {shown} ({type(value).__name__})"
        if self.choices and value not in self.choices:
            return f"must be one of {', '.join(map(repr, self.choices))}, got {value!r}"
        if self.check_value is not None:
            return self.check_value(value)
        return None

    def _type_names(self) -> str:
        names: dict[type | None, str] = {
            bool: "a boolean",
            int: "an integer",
            float: "a number",
            str: "a string",
            list: "a list",
            dict: "a mapping",
            None: "null",
        }
        return " or ".join(names.get(t) or str(getattr(t, "__name__", t)) for t in self.types)


def check_positive(value: Any) -> str | None:
    """A :attr:`Setting.check_value` for numbers that must be greater than 0."""
    return None if value > 0 else f"must be greater than 0, got {value}"


#: Every known key, by dotted name. Components add theirs with :func:`register_setting`.
SETTINGS: dict[str, Setting] = {}

#: A check of keys that depend on one another: ``check(tree, origins)`` returns
#: one sentence per problem.
TreeCheck = Callable[[Mapping[str, Any], Mapping[str, str]], list[str]]

#: Checks run by :func:`validate` after every key's own; components add theirs
#: with :func:`register_check`.
CHECKS: list[TreeCheck] = []

#: kiln's sections that also hold their users' keys: authentication policies
#: read ``auth.<policy>.*``, and Clay's manual puts a test suite's own
#: settings under ``testing`` (``testing.database``). In them only near
#: misses of kiln's keys are reported (``auth.userid_hmac_secrt``).
SHARED_SECTIONS = frozenset({"auth", "testing"})

#: kiln modules that register settings or checks when imported; loaded before
#: settings are validated or listed, so every key is checked at startup.
SETTING_MODULES = [
    "kiln._postgresql",
    "kiln._preflight",
    "kiln._redis",
    "kiln.auth",
    "kiln.cache",
    "kiln.cors",
    "kiln.database",
    "kiln.docs",
    "kiln.eos",
    "kiln.http",
    "kiln.mail",
    "kiln.permission",
    "kiln.resource.batch",
    "kiln.resource.views",
    "kiln.stats",
    "kiln.storage",
]


def _register_all() -> None:
    for name in SETTING_MODULES:
        importlib.import_module(name)


def register_setting(setting: Setting) -> Setting:
    """Declare a known key so that startup and ``kiln check`` validate it."""
    SETTINGS[setting.key] = setting
    return setting


def register_check(check: TreeCheck) -> TreeCheck:
    """Run ``check(tree, origins)`` in :func:`validate`, after every key's own check.

    For rules that involve several keys (a URL whose form depends on the
    backend). ``check`` must accept values of any type: keys of the wrong
    type are reported by their own check first. Returns ``check``, so it can
    be used as a decorator.
    """
    if check not in CHECKS:
        CHECKS.append(check)
    return check


_NUMBER = (int, float)

for _setting in (
    Setting("project.name", (str,), "kiln", "Name shown by the hello view and logs.", True),
    Setting("project.version", (str,), "1.0.0", "Version of the service (semver).", True),
    Setting("project.docs", (str,), "", "URL of the service's documentation.", True),
    Setting(
        "http_api_version",
        (str, None),
        None,
        "HTTP API version; its major number is the URL prefix (`/v1`). "
        "Default: the first two parts of `project.version`.",
    ),
    Setting("debug.enabled", (bool,), False, "Development mode (required by `devserver`)."),
    Setting("debug.logging", (bool,), False, "Lower kiln loggers to DEBUG.", True),
    Setting("debug.server.host", (str,), "127.0.0.1", "Dev server address."),
    Setting("debug.server.port", (int,), 8888, "Dev server port."),
    Setting("debug.werkzeug", (dict,), {}, "Overrides for werkzeug's `run_simple` arguments."),
    Setting("flask.init", (dict,), {"import_name": "kilnapp"}, "Arguments of `Flask(...)`."),
    Setting("flask.config", (dict,), {}, "Flask config values (`SECRET_KEY`, ...)."),
    Setting(
        "middleware",
        (dict, list),
        {},
        "WSGI middleware: a mapping `dotted.Callable: {kwargs}` or a list of names/mappings, "
        "applied in order.",
    ),
    Setting("views", (list,), [], "Modules imported at startup to register routes/resources."),
    Setting("logging", (dict, None), None, "A `logging.config.dictConfig` mapping.", True),
    Setting(
        "logging_format",
        (str,),
        "text",
        "Default log format when `logging` is unset.",
        True,
        ("text", "json"),
    ),
    Setting("features", (dict,), {}, "Feature flags, see `feature_flag`.", True),
    Setting(
        "attachments.resources",
        (list,),
        [],
        "Resources whose records take a file at `<record>/attachment` "
        "(with `kiln.attachments` in `views`).",
    ),
    Setting(
        "attachments.backend",
        (str,),
        "local",
        "Where attached files go: `local` (`attachments.base_path`) or the dotted path "
        "of an `AttachmentStorage` subclass.",
    ),
    Setting(
        "attachments.base_path",
        (str,),
        "attachments",
        "Directory of the `local` attachment storage.",
    ),
    Setting(
        "attachments.base_url",
        (str,),
        "",
        "Prefix of an attachment's `location` (the URL its directory is served at).",
    ),
    Setting(
        "attachments.max_bytes",
        (int,),
        10 * 1024 * 1024,
        "Largest attached file (413 above).",
        True,
    ),
    Setting(
        "attachments.keep_old_files",
        (bool,),
        False,
        "Keep the files no record names any longer (replaced, detached, deleted).",
    ),
    Setting(
        "flush_endpoint.enabled",
        (bool,),
        False,
        "Serve `POST /__flush__`, which empties storage, permissions and cache: "
        "for test deployments only (Kinto's `flush_endpoint_enabled`).",
    ),
    Setting(
        "permissions_endpoint.enabled",
        (bool,),
        False,
        "Serve `GET /v<N>/permissions`, every object the caller holds a permission on "
        "(Kinto's `experimental_permissions_endpoint`).",
    ),
    Setting(
        "version_prefix_redirect_enabled",
        (bool,),
        True,
        "Redirect unprefixed paths to `/v<N>`.",
        True,
    ),
    Setting(
        "trailing_slash_redirect_enabled",
        (bool,),
        True,
        "Redirect `/path/` to `/path`.",
        True,
    ),
    Setting(
        "http_scheme",
        (str, None),
        None,
        "Scheme of absolute URLs (`https` behind a TLS proxy); default: the request's.",
        True,
    ),
    Setting(
        "http_host",
        (str, None),
        None,
        "Public host (and port) of absolute URLs (`Next-Page`, hello `url`). "
        "Unset: the request's `Host` when `trusted_hosts` vouches for it, "
        "else URLs are relative (`/v1/...`).",
        True,
    ),
    Setting(
        "trusted_hosts",
        (list, None),
        None,
        "Hosts the service answers for (`api.example.org`; `.example.org` for its "
        "subdomains): another `Host` answers 400, and absolute URLs use the checked one.",
        True,
    ),
    Setting(
        "error_info_link",
        (str, None),
        None,
        "`info` link of 500 errors (where your users report a problem). "
        "Default: `project.docs`; no link when both are unset.",
        True,
    ),
    Setting("retry_after_seconds", (int,), 3, "`Retry-After` on 503 responses.", True),
    Setting("backoff", (int, None), None, "`Backoff` header sent on every response.", True),
    Setting(
        "heartbeat.timeout_seconds",
        _NUMBER,
        10.0,
        "Time allowed to each heartbeat check before it counts as failed.",
        True,
    ),
    Setting(
        "request.max_body_bytes",
        (int,),
        1024 * 1024,
        "Largest request body accepted (413 above).",
        True,
    ),
    Setting(
        "request.max_url_bytes",
        (int,),
        6144,
        "Longest request target (path and query string, in bytes) accepted (414 above). "
        "`kiln.gunicorn` lets gunicorn read request lines up to 8190 bytes.",
        True,
        check_value=lambda value: None if value > 0 else "must be positive",
    ),
    Setting(
        "request.max_headers",
        (int,),
        100,
        "Most header fields a request may have (431 above). `kiln.gunicorn` lets "
        "gunicorn read 150.",
        True,
        check_value=lambda value: None if value > 0 else "must be positive",
    ),
    Setting(
        "request.max_header_bytes",
        (int,),
        8190,
        "Longest header field (`Name: value`, in bytes) accepted (431 above). "
        "`kiln.gunicorn` lets gunicorn read 12288.",
        True,
        check_value=lambda value: None if value > 0 else "must be positive",
    ),
    Setting("request.summary", (bool,), True, "Log one `request.summary` line per request.", True),
    Setting(
        "readonly",
        (bool,),
        False,
        "Read-only service: resource writes answer 405 (public in the hello view).",
        True,
    ),
    Setting(
        "testing.fixture_filepath",
        (str, None),
        None,
        "YAML file of named fixtures for `kiln.testing` (relative to the pytest rootdir).",
        True,
    ),
    Setting(
        "version_json_path",
        (str,),
        "version.json",
        "File served by `/__version__` (relative to the working directory).",
        True,
    ),
):
    register_setting(_setting)


# --------------------------------------------------------------------------
# The configuration object
# --------------------------------------------------------------------------


class Configuration:
    """A configuration tree, loaded from files and the environment.

    ``config`` is the plain dict (Clay's ``CONFIG.config``; tests may patch
    it). It is loaded on first access and replaced, never mutated, by
    :meth:`load`.

    :param paths: files to read; ``None`` reads ``KILN_CONFIG``/``CLAY_CONFIG``
        from ``environ`` at every load.
    :param environ: the environment to read (default ``os.environ``).
    :param overrides: a tree merged last, over files and environment (used by
        :meth:`from_mapping` and by tests).
    """

    config: dict[str, Any]

    def __init__(
        self,
        paths: Sequence[str] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self._paths = list(paths) if paths is not None else None
        self._environ = environ
        self._overrides = copy.deepcopy(dict(overrides or {}))
        self._lock = threading.RLock()
        self._listeners: list[Listener] = []
        self._failure_listeners: list[Listener] = []
        self._flag_warnings: set[tuple[str, str]] = set()
        self._loggers: set[str] = set()
        self.origins: dict[str, str] = {}
        self.sources: list[str] = []
        self.last_updated: float | None = None
        self.last_error: str | None = None
        #: How many loads succeeded (``0`` before the first): the generation of
        #: the tree in effect. A forked process continues its parent's count.
        self.generation = 0
        #: When the last load failed, or None when the last load succeeded.
        self.last_failed: float | None = None
        #: The settings read from one tree: ``(tree, {key: value})``.
        self._settings: tuple[Any, dict[str, Any]] = (None, {})

    @classmethod
    def from_mapping(cls, tree: Mapping[str, Any]) -> Configuration:
        """A configuration holding exactly ``tree`` (no files, no environment)."""
        return cls(paths=[], environ={}, overrides=tree)

    def __getattr__(self, name: str) -> Any:
        # Only reached while ``config`` has never been set: load lazily, so that
        # importing kiln does no I/O (D12) yet Clay's ``CONFIG.config`` works.
        if name == "config":
            with self._lock:
                if "config" not in self.__dict__:
                    self.load(strict=True)
                return self.__dict__["config"]
        raise AttributeError(name)

    # -- loading ---------------------------------------------------------

    @property
    def environ(self) -> Mapping[str, str]:
        return os.environ if self._environ is None else self._environ

    def paths(self) -> list[str]:
        """The files this configuration reads, in merge order."""
        return list(self._paths) if self._paths is not None else file_list(self.environ)

    def build(self) -> tuple[dict[str, Any], dict[str, str]]:
        """Read every source and return ``(tree, origins)`` without installing it.

        :raises ConfigError: a file is wrong (see :func:`read_file`).
        """
        tree: dict[str, Any] = {}
        origins: dict[str, str] = {}
        for path in self.paths():
            deep_merge(tree, read_file(path), origins=origins, source=path)
        deep_merge(tree, env_overrides(self.environ), origins=origins, source="environment")
        deep_merge(tree, self._overrides, origins=origins, source="the config given in code")
        return tree, origins

    def load(
        self,
        signum: int | None = None,
        frame: FrameType | None = None,
        *,
        strict: bool = False,
        warn: bool = True,
        check: Callable[[dict[str, Any]], str | None] | None = None,
    ) -> bool:
        """(Re)load every source and swap the new tree in atomically.

        The signature accepts ``(signum, frame)`` so it can be a signal
        handler, as in Clay. On error the last good tree stays in place, the
        error is logged and kept in :attr:`last_error`, and ``False`` is
        returned. The first load of a process (or ``strict=True``) raises
        instead: a service must not start on a broken config. A key of
        kiln's own sections that kiln does not know (:func:`unknown_keys`)
        is logged as a warning, unless ``warn`` is false (``kiln check``
        prints them itself). ``check(tree)``, when given, is asked last about
        a valid new tree: a sentence it returns fails the load like a broken
        file (servers use it for what the tree cannot say alone).

        :raises ConfigError: on a first or strict load whose sources are wrong.
        """
        failed: list[Listener] | None = None
        with self._lock:
            first = "config" not in self.__dict__
            try:
                tree, origins = self.build()
                problems = validate(tree, origins)
                if not problems and check is not None:
                    problems = [p for p in [check(tree)] if p]
                if problems:
                    raise ConfigError(problems[0])
            except ConfigError as exc:
                self.last_error = str(exc)
                self.last_failed = time.time()
                if first or strict:
                    raise
                logger.error(
                    "Config reload failed, keeping the previous config (generation %d, "
                    "process %d): %s",
                    self.generation,
                    os.getpid(),
                    exc,
                )
                failed = list(self._failure_listeners)
            else:
                self.config = tree
                self.origins = origins
                self.sources = self.paths()
                self.last_updated = time.time()
                self.last_error = None
                self.last_failed = None
                self.generation += 1
                self._flag_warnings.clear()
                listeners = list(self._listeners)
        if failed is not None:
            _notify(failed, self)
            return False
        if warn:
            for warning in unknown_keys(tree, origins):
                logger.warning("%s", warning)
        if not first:
            logger.info(
                "Config generation %d (process %d) loaded from %s",
                self.generation,
                os.getpid(),
                ", ".join(self.sources) or "no file",
            )
        _notify(listeners, self)
        return True

    reload = load

    def add_listener(self, listener: Listener, *, failures: bool = False) -> Listener:
        """Call ``listener(configuration)`` after every successful load; with
        ``failures``, after every failed reload instead (:attr:`last_error`
        says why; a failed first load raises and calls no one).

        Returns ``listener``, so it can be used as a decorator. Listeners run
        in registration order; one that raises is logged and the others run.
        """
        with self._lock:
            (self._failure_listeners if failures else self._listeners).append(listener)
        return listener

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener`` (after loads and failures); a listener
        that was never added is ignored."""
        with self._lock:
            for listeners in (self._listeners, self._failure_listeners):
                if listener in listeners:
                    listeners.remove(listener)

    # -- reading ---------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        """Return the value at dotted ``key``, or ``default``; never raises.

        Integer parts index lists (``get("views.0")``). The value is the live
        object of the current tree: treat it as read-only.
        """
        return lookup(self.config, key, default)

    def setting(self, key: str) -> Any:
        """The value of a known key, falling back to its registered default.

        Values are remembered per config tree (a reload or :meth:`set` makes a
        new tree), so reading a setting on every request costs a dict lookup.
        """
        tree = self.config
        tree_of, values = self._settings
        if tree_of is not tree:
            values = {}
            self._settings = (tree, values)
        else:
            value = values.get(key, _MISSING)
            if value is not _MISSING:
                return value
        value = lookup(tree, key, _MISSING)
        if value is _MISSING:
            default = SETTINGS[key].default
            # Callers may mutate what they get: copy mutable defaults, never keep them.
            if isinstance(default, dict | list):
                return copy.deepcopy(default)
            value = default
        values[key] = value
        return value

    def origin(self, key: str) -> str | None:
        """The source that set dotted ``key``: a file path, ``environment``, or code."""
        return _origin_of(self.origins, key)

    def set(self, key: str, value: Any) -> None:
        """Set dotted ``key`` to ``value`` (creating mappings on the way).

        Copy-on-write: readers keep the tree they hold; the change is not
        written to any file and is lost on the next reload unless made through
        ``overrides``. Meant for tests and for tools.
        """
        with self._lock:
            tree = copy.deepcopy(self.config)
            set_path(tree, key, value)
            self.config = tree

    def feature_flag(self, name: str, key: object = None) -> bool:
        """Whether feature ``name`` (``features.<name>``) is on.

        A flag is a mapping ``{"enabled": bool, "percent": 0..100}``.
        ``enabled`` gates ``percent``: ``enabled: false`` is always off (Clay
        let ``percent`` override it). Without ``enabled``, a flag with a
        ``percent`` is enabled and one without is off. With ``percent``, each
        call without ``key`` draws afresh (Clay's behaviour); with ``key`` (a
        user id, say) the answer is sticky for that key: the same key always
        gets the same answer, and ``percent`` of the keys get ``True``. A
        malformed flag is off and logged once.
        """
        flag = lookup(self.config, f"features.{name}")
        if not flag:
            return False
        problem = _flag_problem(flag)
        if problem:
            marker = (name, repr(flag))
            if marker not in self._flag_warnings:
                self._flag_warnings.add(marker)
                logger.error("Feature flag features.%s is off: %s", name, problem)
            return False
        percent = flag.get("percent")
        if not flag.get("enabled", percent is not None):
            return False
        if percent is None:
            return True
        if key is None:
            return random.random() * 100 < float(percent)
        digest = hashlib.blake2b(f"{name}\0{key}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64 * 100 < float(percent)

    def get_logger(self, name: str) -> logging.Logger:
        """``logging.getLogger(name)`` at DEBUG when ``debug.logging``, else INFO.

        Loggers handed out are re-levelled on every reload.
        """
        log = logging.getLogger(name)
        log.setLevel(logging.DEBUG if self.get("debug.logging") else logging.INFO)
        with self._lock:
            if not self._loggers:
                self.add_listener(self._relevel_loggers)
            self._loggers.add(name)
        return log

    def _relevel_loggers(self, _config: Configuration) -> None:
        level = logging.DEBUG if self.get("debug.logging") else logging.INFO
        for name in list(self._loggers):
            logging.getLogger(name).setLevel(level)


def _flag_problem(flag: Any) -> str | None:
    if not isinstance(flag, Mapping):
        return f"a flag must be a mapping like {{'enabled': true}}, got {flag!r}"
    enabled = flag.get("enabled", True)
    if not isinstance(enabled, bool):
        return f"'enabled' must be true or false, got {enabled!r}"
    percent = flag.get("percent")
    if percent is None:
        return None
    if isinstance(percent, bool) or not isinstance(percent, (int, float)):
        return f"'percent' must be a number from 0 to 100, got {percent!r}"
    if not 0 <= percent <= 100:
        return f"'percent' must be from 0 to 100, got {percent!r}"
    return None


def validate(tree: Mapping[str, Any], origins: Mapping[str, str] | None = None) -> list[str]:
    """Check the known keys of ``tree``; return one sentence per problem.

    Each key's own check comes first (type, choices), then the registered
    checks of keys that depend on one another (:func:`register_check`).
    Unknown keys are allowed (applications add their own; see
    :func:`unknown_keys` for those in kiln's sections).
    """
    _register_all()
    origins = origins or {}
    problems = []
    for section, names in sorted(_sections().items()):
        node = lookup(tree, section, None)
        if node is not None and not isinstance(node, Mapping) and not _shared(section):
            problems.append(
                f"Config key {section!r}{_set_in(origins, section)} must be a mapping of "
                f"settings ('{section}.{min(names)}', ...), not the "
                f"{type(node).__name__} {node!r}."
            )
    for key, setting in SETTINGS.items():
        value = lookup(tree, key, _MISSING)
        if value is _MISSING:
            continue
        problem = setting.check(value)
        if problem:
            problems.append(f"Config key {key!r}{_set_in(origins, key)} {problem}.")
    if not problems:
        for check in CHECKS:
            problems.extend(check(tree, origins))
    return problems


def unknown_keys(tree: Mapping[str, Any], origins: Mapping[str, str] | None = None) -> list[str]:
    """Describe each key inside kiln's own sections that kiln does not know.

    A section is kiln's when a known key lives in it (``storage``,
    ``debug.server``). Such a key does nothing, so it is most likely a typo:
    the sentence names the closest known key. Top-level keys (applications'
    own sections), the inside of mapping-valued settings (``flask.config``,
    ``features``) and the users' keys of :data:`SHARED_SECTIONS` are free.
    """
    _register_all()
    origins = origins or {}
    found = []
    for section, known in sorted(_sections().items()):
        node = lookup(tree, section, None)
        if not isinstance(node, Mapping):
            continue
        shared = _shared(section)
        for name in map(str, node):
            if name in known:
                continue
            guesses = difflib.get_close_matches(name, known, 1, 0.8 if shared else 0.6)
            key = f"{section}.{name}"
            where = _set_in(origins, key)
            if guesses:
                found.append(
                    f"Config key {key!r}{where} is not a kiln setting: "
                    f"did you mean '{section}.{guesses[0]}'?"
                )
            elif not shared:
                found.append(
                    f"Config key {key!r}{where} is not a kiln setting and does nothing: "
                    f"`kiln settings` lists the keys of {section!r}."
                )
    return found


def _sections() -> dict[str, set[str]]:
    """kiln's sections (every proper prefix of a known key) and the names each holds."""
    sections: dict[str, set[str]] = {}
    for key in SETTINGS:
        parts = key.split(".")
        for end in range(1, len(parts)):
            sections.setdefault(".".join(parts[:end]), set()).add(parts[end])
    return sections


def _shared(section: str) -> bool:
    return section.split(".", 1)[0] in SHARED_SECTIONS


def _set_in(origins: Mapping[str, str], key: str) -> str:
    where = _origin_of(origins, key)
    return f" (set in {where})" if where else ""


def flag_warnings(tree: Mapping[str, Any]) -> list[str]:
    """Describe every malformed feature flag of ``tree`` (they read as off).

    A mapping with neither ``enabled`` nor ``percent`` is a namespace of
    nested flags (``features.example.user_prejudice``) and is searched.
    """
    warnings_: list[str] = []

    def visit(node: Any, path: str) -> None:
        if isinstance(node, Mapping) and "enabled" not in node and "percent" not in node:
            for name, child in node.items():
                visit(child, f"{path}.{name}")
            return
        problem = _flag_problem(node)
        if problem:
            warnings_.append(f"Feature flag {path!r} is malformed and reads as off: {problem}.")

    features = lookup(tree, "features", {})
    if isinstance(features, Mapping):
        for name, flag in features.items():
            visit(flag, f"features.{name}")
    return warnings_


def _origin_of(origins: Mapping[str, str], key: str) -> str | None:
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        found = origins.get(".".join(parts[:end]))
        if found is not None:
            return found
    return None


# --------------------------------------------------------------------------
# The process-wide configuration and Clay's module API
# --------------------------------------------------------------------------

#: The process-wide configuration, read from ``KILN_CONFIG``/``CLAY_CONFIG``.
CONFIG = Configuration()


def current() -> Configuration:
    """The configuration in effect: the current kiln app's, else :data:`CONFIG`.

    Inside a request (or app context) of an app built by
    :func:`kiln.create_app`, that app's configuration; so views that call
    :func:`get` read the config of the app serving them, also in tests that
    build apps from explicit configs.
    """
    config = current_config_or_none()
    return config if config is not None else CONFIG


def get(key: str, default: Any = None) -> Any:
    """Dotted lookup in the current config; see :meth:`Configuration.get`."""
    return current().get(key, default)


def feature_flag(name: str, key: object = None) -> bool:
    """Whether a feature is on; see :meth:`Configuration.feature_flag`."""
    return current().feature_flag(name, key)


def get_logger(name: str) -> logging.Logger:
    """A logger levelled by ``debug.logging``; see :meth:`Configuration.get_logger`."""
    return current().get_logger(name)


def load(signum: int | None = None, frame: FrameType | None = None) -> bool:
    """Reload the process-wide config; a bad file keeps the last good one."""
    return CONFIG.load(signum, frame)


def debug() -> bool:
    """Deprecated: use ``get("debug.enabled", False)``.

    .. deprecated:: 0.1
       Kept for Clay compatibility.
    """
    warnings.warn(
        "kiln.config.debug() is deprecated; use kiln.config.get('debug.enabled', False).",
        DeprecationWarning,
        stacklevel=2,
    )
    return bool(current().get("debug.enabled", False))


def install_reload_signal(configuration: Configuration | None = None) -> bool:
    """Reload ``configuration`` (default :data:`CONFIG`) on SIGHUP.

    Only server entry points call this (D12). Returns ``False`` where it
    cannot be installed (no SIGHUP on the platform, or not the main thread).
    """
    target = configuration or CONFIG
    sighup = getattr(signal, "SIGHUP", None)
    if sighup is None or threading.current_thread() is not threading.main_thread():
        return False

    def _on_sighup(signum: int, frame: FrameType | None) -> None:
        target.load(signum, frame)

    signal.signal(sighup, _on_sighup)
    return True


def needs_restart(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The known keys whose change from ``old`` to ``new`` a running app cannot
    follow (their *Reload* is ``restart``), sorted. Applications' own keys are
    read per call, so they never need one."""
    return [
        setting.key
        for setting in known_settings()
        if not setting.reload
        and lookup(old, setting.key, _MISSING) != lookup(new, setting.key, _MISSING)
    ]


def known_settings() -> Iterable[Setting]:
    """Every registered setting, sorted by key (used by the docs and ``kiln check``)."""
    _register_all()
    return (SETTINGS[key] for key in sorted(SETTINGS))
