"""The ``kiln`` command line.

::

    kiln serve                 development server on 127.0.0.1:8888 (threaded, reloader)
    kiln devserver             Clay's development server: refuses to run unless debug.enabled
    kiln init DIR              scaffold a runnable service with generated secrets
    kiln check [--strict]      check the config, build the app, open its backends
    kiln migrate [--dry-run]   create or upgrade the storage, permission and cache schemas
    kiln settings              list every known config key
    kiln --version

Production runs under gunicorn (``gunicorn kiln.wsgi:application``), not
under these development servers.

``--config FILE`` (repeatable) names the config files; without it
``KILN_CONFIG`` (or ``CLAY_CONFIG``) does. Errors print one sentence and
exit non-zero; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import secrets
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import click

from kiln.__about__ import __version__
from kiln.exceptions import KilnError

__all__ = [
    "CONFIG_POLL_SECONDS",
    "RESTART_FILE_VARIABLE",
    "ConfigWatcher",
    "check",
    "devserver",
    "init",
    "main",
    "migrate",
    "serve",
    "settings",
]

F = TypeVar("F", bound=Callable[..., Any])

DEVSERVER_REFUSAL = (
    "This server must be run in development mode, set debug.enabled in your config and try again"
)


def _fail(exc: BaseException) -> None:
    if click.get_current_context().find_root().params.get("debug"):
        traceback.print_exception(exc)
    click.echo(f"kiln: error: {exc}", err=True)
    raise SystemExit(1)


def _guarded(func: F) -> F:
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except KilnError as exc:
            _fail(exc)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="kiln")
@click.option(
    "--config",
    "-c",
    "configs",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Config file (repeat to layer several). Default: $KILN_CONFIG.",
)
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
def main(configs: tuple[str, ...], debug: bool) -> None:
    """kiln: RESTful backend services in minutes."""
    if configs:
        # Through the environment, so the reloader's child process sees it too.
        os.environ["KILN_CONFIG"] = ":".join(os.path.abspath(path) for path in configs)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


#: How often the development server looks at its config files, in seconds.
CONFIG_POLL_SECONDS = 0.25


class ConfigWatcher:
    """The development server's config reloads: a broken file never stops it.

    The serving process reloads its config when a file changes (:meth:`watch`)
    or on ``SIGHUP``. A file that does not load is refused: the last good
    config keeps serving, with one ERROR line (:meth:`Configuration.load`).
    A change the running app can follow applies in place. A change that
    needs a restart (``views``...) is tried first in a throwaway child that
    builds the app, as under gunicorn (:func:`kiln.gunicorn.build_problem`);
    only when it builds is ``restart`` called. Without a reloader
    (``restart`` is ``None``) such a change is refused.
    """

    def __init__(self, restart: Callable[[], None] | None) -> None:
        self.restart = restart
        self._lock = threading.RLock()
        self._seen = _config_stamps()

    def poll(self) -> bool:
        """Reload when a config file changed since the last look; ``True`` if one did."""
        stamps = _config_stamps()
        if stamps == self._seen:
            return False
        self._seen = stamps
        self.reload()
        return True

    def watch(self) -> None:
        """Poll the config files for ever (a daemon thread's target)."""
        while True:
            time.sleep(CONFIG_POLL_SECONDS)
            self.poll()

    def reload(self, signum: int | None = None, frame: FrameType | None = None) -> bool:
        """Reload the config (a ``SIGHUP`` handler too); ``False`` when refused."""
        from kiln.config import CONFIG, needs_restart
        from kiln.gunicorn import build_problem

        with self._lock:
            previous = CONFIG.config
            changed: list[str] = []

            def check(tree: dict[str, Any]) -> str | None:
                changed[:] = needs_restart(previous, tree)
                if not changed:
                    return None
                if self.restart is None:
                    return (
                        f"Changing {', '.join(changed)} needs a restart, and this server "
                        "runs without its reloader (--no-reload): restart it."
                    )
                return build_problem(tree)

            loaded = CONFIG.load(check=check)
            if loaded and changed and self.restart is not None:
                # Beside werkzeug's own " * Detected change ..." line, at any log level.
                click.echo(f" * kiln: {', '.join(changed)} changed; restarting", err=True)
                self.restart()
            return loaded


def _config_stamps() -> list[tuple[int, int] | None]:
    """What the config files look like now: each one's modification time and
    size (``None`` when it cannot be read)."""
    from kiln.config import CONFIG

    stamps: list[tuple[int, int] | None] = []
    for path in CONFIG.paths():
        try:
            stat = os.stat(path)
        except OSError:
            stamps.append(None)
        else:
            stamps.append((stat.st_mtime_ns, stat.st_size))
    return stamps


def _build_or_wait() -> None:
    """In the reloader's child, build the app, waiting for the config files to
    change while it cannot: the reloader started this process again (a code
    change, or a restart) while a config file was broken, and a development
    server must not stop on that. Elsewhere a broken config stops at once, as
    does an app that does not build (a views module that fails to import)."""
    from werkzeug.serving import is_running_from_reloader

    from kiln.application import get_app
    from kiln.config import CONFIG
    from kiln.exceptions import ConfigError

    if not is_running_from_reloader():
        return
    while True:
        seen = _config_stamps()
        try:
            CONFIG.load(strict=True)
            get_app()
            return
        except ConfigError as exc:
            click.echo(
                f"kiln: cannot start, waiting for the config files to change: {exc}", err=True
            )
        while _config_stamps() == seen:
            time.sleep(CONFIG_POLL_SECONDS)


#: The environment variable naming the file that restarts the server when
#: touched: created by the reloader's process, which outlives its children.
RESTART_FILE_VARIABLE = "_KILN_SERVE_RESTART_FILE"


def _restart_file() -> None:
    """Create the restart file of the reloader's children (removed at exit)."""
    fd, path = tempfile.mkstemp(prefix="kiln-serve-", suffix=".restart")
    os.close(fd)
    atexit.register(_remove, path)
    os.environ[RESTART_FILE_VARIABLE] = path


def _restart_trigger(options: dict[str, Any]) -> Callable[[], None]:
    """Have werkzeug's reloader watch the restart file (added to ``options``):
    the returned function touches it, so the reloader restarts the server."""
    path = os.environ[RESTART_FILE_VARIABLE]
    options["extra_files"] = [*options.get("extra_files", ()), path]

    def restart() -> None:
        later = os.stat(path).st_mtime + 1
        os.utime(path, (later, later))

    return restart


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def _run(host: str, port: int, options: dict[str, Any]) -> None:
    from werkzeug.serving import is_running_from_reloader, run_simple

    from kiln.application import get_app
    from kiln.config import install_reload_signal

    application = get_app()
    reloader = bool(options.get("use_reloader"))
    if reloader and not is_running_from_reloader():
        # The reloader's own process: it only starts the serving one, again
        # after each code change (or a restart the config watcher asks for).
        install_reload_signal()
        _restart_file()
    else:
        # Config files are not werkzeug's to watch: a broken one would restart
        # the server into an error. The serving process watches them itself.
        watcher = ConfigWatcher(_restart_trigger(options) if reloader else None)
        signal.signal(signal.SIGHUP, watcher.reload)
        if reloader:
            threading.Thread(target=watcher.watch, name="kiln-config", daemon=True).start()
    # Werkzeug's debugger stays off unless debug.werkzeug turns it on: every
    # error is a JSON response, so it would never show anything.
    if options.get("use_debugger") and not _is_loopback(host):
        click.echo(
            f"kiln: the interactive debugger stays off on {host}: it would let anyone "
            "who reaches the port run code. Serve on 127.0.0.1 to use it.",
            err=True,
        )
        options["use_debugger"] = options["use_evalex"] = False
    click.echo(f" * kiln {__version__} serving on http://{host}:{port}/", err=True)
    run_simple(host, port, application, **options)


@main.command(short_help="Run the development server (kiln's own).")
@click.option("--host", "-H", default=None, help="Address to bind [debug.server.host].")
@click.option("--port", "-p", type=int, default=None, help="Port [debug.server.port].")
@click.option(
    "--reload/--no-reload",
    default=True,
    help="Restart when code changes; reload a config file when it changes.",
)
@_guarded
def serve(host: str | None, port: int | None, reload: bool) -> None:
    """Run the development server on 127.0.0.1:8888 (or -H/-p, or debug.server).

    Threaded, restarts when code changes, reloads the config when a file
    changes or on SIGHUP (a broken file is refused: the last good config
    keeps serving). For production use gunicorn (`gunicorn
    kiln.wsgi:application`). `devserver` is Clay's variant of this command.
    """
    from kiln.config import CONFIG

    _build_or_wait()
    if host is None:
        host = CONFIG.setting("debug.server.host")
    if port is None:
        port = CONFIG.setting("debug.server.port")
    options: dict[str, Any] = {"use_reloader": reload, "threaded": True}
    options.update(CONFIG.setting("debug.werkzeug"))
    _run(str(host), int(port), options)


@main.command(short_help="Run Clay's development server (for Clay projects).")
@_guarded
def devserver() -> None:
    """Run Clay's development server: `serve` as Clay's `clay-devserver` did.

    Refuses to run unless debug.enabled is true, takes no options (the
    address is debug.server.host and port) and serves one request at a
    time. New projects use `kiln serve`.
    """
    from kiln.config import CONFIG

    _build_or_wait()
    if not CONFIG.setting("debug.enabled"):
        click.echo(DEVSERVER_REFUSAL, err=True)
        raise SystemExit(255)
    options: dict[str, Any] = {"use_reloader": True, "threaded": False, "processes": 1}
    options.update(CONFIG.setting("debug.werkzeug"))
    _run(
        str(CONFIG.setting("debug.server.host")), int(CONFIG.setting("debug.server.port")), options
    )


@main.command(short_help="Check the config, the app and its backends.")
@click.option("--strict", is_flag=True, help="Fail on warnings (unknown keys) too.")
@_guarded
def check(strict: bool) -> None:
    """Check the config, build the app and open its backends; exit 1 when wrong.

    Validates every key kiln knows, warns about keys of kiln's sections it
    does not know (errors with --strict) and malformed feature flags,
    imports the views and middleware, then opens the storage, permission
    and cache backends and reads their schema versions. Writes nothing.
    """
    from kiln import _preflight
    from kiln.application import close_app, create_app
    from kiln.config import CONFIG, flag_warnings, unknown_keys, validate

    tree, origins = CONFIG.build()
    problems = validate(tree, origins)
    warnings = [*unknown_keys(tree, origins), *flag_warnings(tree)]
    for warning in warnings:
        click.echo(f"kiln: {'error' if strict else 'warning'}: {warning}", err=True)
    for problem in problems:
        click.echo(f"kiln: error: {problem}", err=True)
    if problems or (strict and warnings):
        raise SystemExit(1)
    CONFIG.load(strict=True, warn=False)
    schema_at_startup = bool(CONFIG.setting("storage.initialize_on_startup"))
    # Build the app as a server would, but write nothing (no schema, no file).
    CONFIG.set("storage.initialize_on_startup", False)
    app = create_app(CONFIG, configure_logging=False)
    try:
        state = app.extensions["kiln"]
        built = {
            kind: getattr(state, kind)
            for kind in _preflight.KINDS
            if getattr(state, kind) is not None
        }
        reports = _preflight.probe(built, CONFIG.config, schema_at_startup=schema_at_startup)
    finally:
        close_app(app)
    for report in reports:
        if report.ok:
            click.echo(str(report))
        else:
            click.echo(f"kiln: error: {report}", err=True)
    if not all(report.ok for report in reports):
        raise SystemExit(1)
    sources = ", ".join(CONFIG.sources) or "no file (defaults and environment only)"
    click.echo(f"OK: the config from {sources} is valid and the app builds.")


@main.command(short_help="Create or upgrade the backends' schemas.")
@click.option("--dry-run", is_flag=True, help="Print the steps without running any.")
@_guarded
def migrate(dry_run: bool) -> None:
    """Create or upgrade the schemas of the storage, permission and cache backends."""
    from kiln.cache import CacheBase, load_cache
    from kiln.config import CONFIG
    from kiln.permission import PermissionBase, load_permission
    from kiln.storage import StorageBase, load_storage

    if CONFIG.setting("readonly"):
        click.echo(
            "kiln: readonly is true: no schema was created or changed. Run `kiln migrate` "
            "with a config where readonly is false (the primary's).",
            err=True,
        )
        return
    backends: list[tuple[str, StorageBase | PermissionBase | CacheBase]] = []
    steps = 0
    try:
        # The indexes the app's resources declare are part of the storage schema.
        indexes = _declared_indexes()
        # Every backend is built before any is touched: a wrong config changes nothing.
        storage = load_storage(CONFIG)
        storage.declare_indexes(indexes)
        backends.append(("storage", storage))
        backends.append(("permission", load_permission(CONFIG)))
        backends.append(("cache", load_cache(CONFIG)))
        for kind, backend in backends:
            for step in backend.initialize_schema(dry_run=dry_run):
                click.echo(f"{kind}: {'would ' if dry_run else ''}{step}")
                steps += 1
    finally:
        for _, backend in backends:
            backend.close()
    if not steps:
        click.echo("Nothing to do: the storage, permission and cache schemas are up to date.")
    elif dry_run:
        click.echo("Dry run: nothing was written.")


def _declared_indexes() -> list[Any]:
    """The indexes the resources of the config's ``views`` modules declare."""
    from kiln.application import close_app, create_app
    from kiln.config import CONFIG

    CONFIG.set("storage.initialize_on_startup", False)
    app = create_app(CONFIG, configure_logging=False)
    try:
        state = app.extensions["kiln"]
        return [
            index for registration in state.resources.values() for index in registration.indexes
        ]
    finally:
        close_app(app)


@main.command(short_help="List every config key kiln knows.")
@click.option(
    "--format",
    "output",
    type=click.Choice(["markdown", "text"]),
    default="text",
    help="Output format.",
)
def settings(output: str) -> None:
    """List every config key kiln knows: its type, default, whether a reload
    applies it, and what it does.

    Text lines read `key = default  # type, reload|restart. Description`;
    markdown is the table of docs/settings.md.
    """
    import orjson

    from kiln.config import known_settings

    rows = list(known_settings())
    if output == "text":
        for setting in rows:
            default = orjson.dumps(setting.default).decode()
            reload = "reload" if setting.reload else "restart"
            click.echo(
                f"{setting.key} = {default}  # {setting._type_names()}, {reload}. {setting.doc}"
            )
        return
    click.echo("# Configuration reference\n")
    click.echo("Generated by `make docs` (`kiln settings --format markdown`): do not edit.\n")
    click.echo("| Key | Type | Default | Reload | Description |")
    click.echo("|---|---|---|---|---|")
    for setting in rows:
        default = orjson.dumps(setting.default).decode()
        types = setting._type_names()
        reload = "yes" if setting.reload else "restart"
        doc = setting.doc.replace("|", "\\|")
        if setting.choices:
            doc += " One of: " + ", ".join(f"`{choice}`" for choice in setting.choices) + "."
        click.echo(f"| `{setting.key}` | {types} | `{default}` | {reload} | {doc} |")


@main.command(short_help="Create a runnable service in a new directory.")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", default=None, help="Project name (default: the directory's name).")
@_guarded
def init(directory: Path, name: str | None) -> None:
    """Create a runnable service in DIRECTORY (new, or empty).

    Writes config.yaml (with fresh secrets), a package with a resource and a
    view, five passing tests, pyproject.toml (its `test` extra installs
    pytest), README.md and .gitignore.
    """
    from kiln import _scaffold

    written = _scaffold.write(directory, name or directory.resolve().name, secrets.token_hex)
    for path in written:
        click.echo(f"created {path}")
    click.echo(
        f"\nNext:\n  cd {directory}\n"
        "  pip install -e '.[test]'             # the service, and pytest for its tests\n"
        "  KILN_CONFIG=config.yaml kiln serve   # http://127.0.0.1:8888/v1/ (or -p PORT)\n"
        "  python -m pytest"
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
