"""The ``kiln`` command line.

::

    kiln serve                 dev server on 127.0.0.1:8888 (reloader, loopback debugger)
    kiln devserver             Clay's dev server: refuses to run unless debug.enabled
    kiln init DIR              scaffold a runnable service with generated secrets
    kiln check                 validate a config (and build the app); exit 1 when wrong
    kiln migrate [--dry-run]   create or upgrade the storage, permission and cache schemas
    kiln settings              list every known config key
    kiln --version

``--config FILE`` (repeatable) names the config files; without it
``KILN_CONFIG`` (or ``CLAY_CONFIG``) does. Errors print one sentence and
exit non-zero; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from kiln.__about__ import __version__
from kiln.exceptions import KilnError

__all__ = ["main"]

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


def _run(host: str, port: int, options: dict[str, Any]) -> None:
    from werkzeug.serving import run_simple

    from kiln.application import get_app
    from kiln.config import CONFIG, install_reload_signal

    application = get_app()
    install_reload_signal()
    if options.get("use_reloader"):
        # Editing a config file restarts the server, as editing code does.
        options.setdefault("extra_files", list(CONFIG.sources))
    if options.get("use_debugger") and not _is_loopback(host):
        click.echo(
            f"kiln: the interactive debugger stays off on {host}: it would let anyone "
            "who reaches the port run code. Serve on 127.0.0.1 to use it.",
            err=True,
        )
        options["use_debugger"] = options["use_evalex"] = False
    click.echo(f" * kiln {__version__} serving on http://{host}:{port}/", err=True)
    run_simple(host, port, application, **options)


@main.command()
@click.option("--host", "-H", default=None, help="Address to bind [debug.server.host].")
@click.option("--port", "-p", type=int, default=None, help="Port [debug.server.port].")
@click.option("--reload/--no-reload", default=True, help="Restart when code changes.")
@_guarded
def serve(host: str | None, port: int | None, reload: bool) -> None:
    """Serve the app with the development server (default 127.0.0.1:8888)."""
    from kiln.config import CONFIG

    if host is None:
        host = CONFIG.setting("debug.server.host")
    if port is None:
        port = CONFIG.setting("debug.server.port")
    debug = bool(CONFIG.setting("debug.enabled"))
    options: dict[str, Any] = {
        "use_reloader": reload,
        "use_debugger": debug,
        "use_evalex": debug,
        "threaded": True,
    }
    options.update(CONFIG.setting("debug.werkzeug"))
    _run(str(host), int(port), options)


@main.command()
@_guarded
def devserver() -> None:
    """Clay's dev server: runs only when debug.enabled is true."""
    from kiln.config import CONFIG

    if not CONFIG.setting("debug.enabled"):
        click.echo(DEVSERVER_REFUSAL, err=True)
        raise SystemExit(255)
    options: dict[str, Any] = {
        "use_reloader": True,
        "use_debugger": True,
        "use_evalex": True,
        "threaded": False,
        "processes": 1,
    }
    options.update(CONFIG.setting("debug.werkzeug"))
    _run(
        str(CONFIG.setting("debug.server.host")), int(CONFIG.setting("debug.server.port")), options
    )


@main.command()
@_guarded
def check() -> None:
    """Validate the config, import its views and middleware; exit 1 when wrong."""
    from kiln.application import create_app
    from kiln.config import CONFIG, flag_warnings, validate

    tree, origins = CONFIG.build()
    problems = validate(tree, origins)
    for warning in flag_warnings(tree):
        click.echo(f"kiln: warning: {warning}", err=True)
    if problems:
        for problem in problems:
            click.echo(f"kiln: error: {problem}", err=True)
        raise SystemExit(1)
    # Build the app as a server would, but write nothing (no schema, no file).
    CONFIG.set("storage.initialize_on_startup", False)
    create_app(CONFIG, configure_logging=False)
    sources = ", ".join(CONFIG.sources) or "no file (defaults and environment only)"
    click.echo(f"OK: the config from {sources} is valid and the app builds.")


@main.command()
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
        # Every backend is built before any is touched: a wrong config changes nothing.
        backends.append(("storage", load_storage(CONFIG)))
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


@main.command()
@click.option(
    "--format",
    "output",
    type=click.Choice(["markdown", "text"]),
    default="text",
    help="Output format.",
)
def settings(output: str) -> None:
    """List every config key kiln knows, with its type and default."""
    import orjson

    from kiln.config import known_settings

    rows = list(known_settings())
    if output == "text":
        for setting in rows:
            default = orjson.dumps(setting.default).decode()
            click.echo(f"{setting.key} = {default}  # {setting.doc}")
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


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", default=None, help="Project name (default: the directory's name).")
@_guarded
def init(directory: Path, name: str | None) -> None:
    """Create a runnable service in DIRECTORY (config, views, a test)."""
    from kiln import _scaffold

    written = _scaffold.write(directory, name or directory.resolve().name, secrets.token_hex)
    for path in written:
        click.echo(f"created {path}")
    click.echo(
        f"\nNext:\n  cd {directory}\n  KILN_CONFIG=config.yaml kiln serve\n  python -m pytest"
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
