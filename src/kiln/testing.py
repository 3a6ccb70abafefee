"""A pytest plugin for services built on kiln: Clay's testing patterns as fixtures.

Enabled by kiln's ``pytest11`` entry point (or ``-p kiln.testing``). It
provides:

=====================  =========================================================
``kiln_config``        :data:`kiln.config.CONFIG` patched with a deep copy of the
                       base tree for one test (restored afterwards); a test
                       class's ``test_config = {"dotted.key": value}`` and the
                       ``@pytest.mark.kiln_config({...})`` marker are applied
``set_config``         ``set_config("toast.one_sided", True)`` for one test
``app`` / ``client``   an app built by :func:`kiln.create_app` from that config,
                       and its Flask test client
``auth_headers``       ``Authorization`` headers for :data:`TEST_USER`
                       (see :func:`basic_auth_header`)
``kiln_database``      the :class:`~kiln.database.Database` under test
                       (default :data:`kiln.database.DATABASE`)
``db_transaction``     runs the test inside one transaction rolled back
                       afterwards; ``kiln.database.read``/``write`` inside the
                       test use its connection
``load_fixtures``      ``load_fixtures("toast", "bread")`` inserts named rows
                       from the YAML file at ``testing.fixture_filepath``
=====================  =========================================================

A test class's ``fixtures = ("toast", "bread")`` attribute (or the
``@pytest.mark.kiln_fixtures("toast")`` marker) loads those fixtures before
each of its tests, and sets each as an attribute of the test instance.

The base tree is read from the files of the ``kiln_config`` ini option
(paths relative to the ini file, environment overrides applied), else it is
the process-wide config (``KILN_CONFIG``).

Example::

    # pytest.ini:  kiln_config = config/test.yaml
    class TestToast:
        test_config = {"toast.one_sided": False}
        fixtures = ("toast",)

        def test_toast_is_listed(self, client, set_config):
            set_config("toast.one_sided", True)
            assert client.get("/toasts").status_code == 200
            assert self.toast[0]["name"] == "rye"
"""

from __future__ import annotations

import base64
import copy
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from kiln.application import create_app, reset_global_app
from kiln.config import CONFIG, Configuration, read_file, set_path
from kiln.database import DATABASE, Database
from kiln.exceptions import ConfigError

if TYPE_CHECKING:
    from flask import Flask
    from flask.testing import FlaskClient

__all__ = [
    "FIXTURE_LOADERS",
    "TEST_PASSWORD",
    "TEST_USER",
    "FixtureContext",
    "app",
    "auth_headers",
    "basic_auth_header",
    "client",
    "db_transaction",
    "insert_rows",
    "kiln_base_config",
    "kiln_config",
    "kiln_database",
    "load_fixtures",
    "read_fixture_file",
    "register_fixture_loader",
    "set_config",
    "set_key",
]

#: The user of the ``auth_headers`` fixture.
TEST_USER = "test-user"
#: The password of the ``auth_headers`` fixture.
TEST_PASSWORD = "test-password"  # noqa: S105 -- a test credential, documented as such

# ``testing.fixture_filepath`` is registered with kiln's core settings
# (kiln.config), so `kiln settings` lists it without importing pytest.


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def basic_auth_header(user: str, password: str) -> dict[str, str]:
    """``{"Authorization": "Basic ..."}`` for ``user`` and ``password``."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


#: Set dotted ``key`` of a config tree in place (re-exported from kiln.config).
set_key = set_path


@dataclass(frozen=True)
class FixtureContext:
    """What a fixture loader gets besides the fixture's own mapping."""

    name: str
    connection: Any
    paramstyle: str
    request: pytest.FixtureRequest


FixtureLoader = Callable[[Mapping[str, Any], FixtureContext], Any]

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


def insert_rows(connection: Any, table: str, rows: list[dict[str, Any]], paramstyle: str) -> None:
    """``INSERT`` each row (a column -> value mapping) into ``table``.

    Placeholders follow the driver's DB-API ``paramstyle``. Table and column
    names must be plain identifiers (they cannot be passed as parameters).

    :raises ValueError: a name is not an identifier, or the paramstyle is unknown.
    """
    if not _TABLE.match(table):
        raise ValueError(f"Fixture table {table!r} must be a plain SQL name like 'users'.")
    cursor = connection.cursor()
    try:
        for row in rows:
            columns = list(row)
            for column in columns:
                if not _IDENTIFIER.match(column):
                    raise ValueError(
                        f"Fixture column {column!r} of table {table!r} must be a plain SQL name."
                    )
            params: Any = tuple(row.values())
            if paramstyle == "qmark":
                marks = ["?"] * len(columns)
            elif paramstyle in ("format", "pyformat"):
                marks = ["%s"] * len(columns)
            elif paramstyle == "numeric":
                marks = [f":{i}" for i in range(1, len(columns) + 1)]
            elif paramstyle == "named":
                marks = [f":{column}" for column in columns]
                params = dict(row)
            else:
                raise ValueError(f"The DB-API paramstyle {paramstyle!r} is not supported.")
            cursor.execute(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(marks)})",  # noqa: S608 -- names checked above
                params,
            )
    finally:
        cursor.close()


def _load_table(spec: Mapping[str, Any], context: FixtureContext) -> list[dict[str, Any]]:
    rows = spec.get("rows", [])
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise ConfigError(f"Fixture {context.name!r}: 'rows' must be a list of mappings.")
    insert_rows(context.connection, str(spec["table"]), rows, context.paramstyle)
    return rows


#: Fixture loaders by the key that selects them in a fixture's mapping. A
#: fixture ``{table: users, rows: [...]}`` goes to the ``table`` loader;
#: the resource toolkit adds ``resource``.
FIXTURE_LOADERS: dict[str, FixtureLoader] = {"table": _load_table}


def register_fixture_loader(key: str, loader: FixtureLoader) -> None:
    """Load fixtures whose mapping has ``key`` with ``loader(spec, context)``.

    The loader's return value is what the test sees for that fixture.
    """
    FIXTURE_LOADERS[key] = loader


_fixture_files: dict[tuple[str, int], dict[str, Any]] = {}


def read_fixture_file(path: str) -> dict[str, Any]:
    """The named fixtures of a YAML (or JSON, TOML) file, cached until it changes.

    :raises ConfigFileError: the file is missing or does not parse.
    """
    try:
        stamp = os.stat(path).st_mtime_ns
    except OSError:
        stamp = -1  # read_file says what is wrong
    key = (path, stamp)
    if key not in _fixture_files:
        _fixture_files[key] = read_file(path)
    return _fixture_files[key]


def _fixture_file(pytest_config: pytest.Config) -> str:
    setting = CONFIG.get("testing.fixture_filepath")
    if not setting:
        raise ConfigError(
            "testing.fixture_filepath is not set: point it at the YAML file holding "
            "your fixtures (relative to the pytest rootdir)."
        )
    return os.path.join(str(pytest_config.rootpath), str(setting))


def _declared_fixtures(request: pytest.FixtureRequest) -> list[str]:
    names = list(getattr(request.cls, "fixtures", None) or ())
    for marker in reversed(list(request.node.iter_markers("kiln_fixtures"))):
        names.extend(marker.args)
    return names


def _declared_config(request: pytest.FixtureRequest) -> dict[str, Any]:
    values = dict(getattr(request.cls, "test_config", None) or {})
    # iter_markers yields the closest marker first; apply it last so it wins.
    for marker in reversed(list(request.node.iter_markers("kiln_config"))):
        for mapping in marker.args:
            values.update(mapping)
        values.update(marker.kwargs)
    return values


# --------------------------------------------------------------------------
# pytest hooks
# --------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "kiln_config",
        "kiln config files tests start from (relative to the ini file).",
        type="paths",
        default=[],
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "kiln_config(mapping): dotted config keys set for this test (kiln.testing)"
    )
    config.addinivalue_line(
        "markers", "kiln_fixtures(*names): fixtures loaded from testing.fixture_filepath"
    )


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kiln_base_config(pytestconfig: pytest.Config) -> dict[str, Any]:
    """The config tree every test starts from (do not mutate it)."""
    paths = pytestconfig.getini("kiln_config")
    if paths:
        tree: dict[str, Any] = Configuration([str(path) for path in paths]).config
        return tree
    return copy.deepcopy(CONFIG.config)


@pytest.fixture
def kiln_config(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    kiln_base_config: dict[str, Any],
) -> Iterator[dict[str, Any]]:
    """The process-wide config tree for this test: a deep copy, restored afterwards."""
    tree = copy.deepcopy(kiln_base_config)
    for key, value in _declared_config(request).items():
        set_key(tree, key, value)
    monkeypatch.setattr(CONFIG, "config", tree)
    yield tree
    # The lazy global app (``from kiln import app``) was built from this test's config.
    reset_global_app()


@pytest.fixture
def set_config(kiln_config: dict[str, Any]) -> Callable[[str, Any], None]:
    """``set_config(dotted_key, value)``: change the config for this test only."""

    def set_config(key: str, value: Any) -> None:
        set_key(CONFIG.config, key, value)

    return set_config


@pytest.fixture
def app(kiln_config: dict[str, Any]) -> Flask:
    """An app built from this test's config (logging left as pytest set it)."""
    return create_app(CONFIG, configure_logging=False)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """The Flask test client of ``app``."""
    return app.test_client()


@pytest.fixture
def auth_headers() -> dict[str, str]:
    """Basic ``Authorization`` headers for :data:`TEST_USER` / :data:`TEST_PASSWORD`."""
    return basic_auth_header(TEST_USER, TEST_PASSWORD)


@pytest.fixture
def kiln_database() -> Database:
    """The database the test transaction wraps; override to test another one."""
    return DATABASE


@pytest.fixture
def db_transaction(kiln_config: dict[str, Any], kiln_database: Database) -> Iterator[Any]:
    """Run the test in one transaction of ``kiln_database``, rolled back afterwards.

    Yields the connection. ``read``/``write`` contexts entered by the test's
    thread (Flask's test client included) use it; do not commit it.
    """
    with kiln_database.pinned_transaction() as connection:
        yield connection


@pytest.fixture
def load_fixtures(
    request: pytest.FixtureRequest, db_transaction: Any, kiln_database: Database
) -> Callable[..., dict[str, Any]]:
    """``load_fixtures(*names)``: insert named fixtures inside the test transaction.

    Returns ``{name: loaded}`` (for a table fixture, its rows).
    """

    def load_fixtures(*names: str) -> dict[str, Any]:
        path = _fixture_file(request.config)
        catalogue = read_fixture_file(path)
        paramstyle = str(getattr(kiln_database.module, "paramstyle", "qmark"))
        loaded: dict[str, Any] = {}
        with kiln_database.write as connection:
            for name in names:
                spec = catalogue.get(name)
                if not isinstance(spec, Mapping):
                    raise ConfigError(
                        f"Fixture {name!r} is not defined in {path}: add a mapping like "
                        f"`{name}: {{table: users, rows: [...]}}`."
                    )
                kinds = [key for key in FIXTURE_LOADERS if key in spec]
                if not kinds:
                    raise ConfigError(
                        f"Fixture {name!r} in {path} must have one of the keys "
                        f"{', '.join(sorted(FIXTURE_LOADERS))}."
                    )
                context = FixtureContext(name, connection, paramstyle, request)
                loaded[name] = FIXTURE_LOADERS[kinds[0]](spec, context)
        return loaded

    return load_fixtures


@pytest.fixture(autouse=True)
def _kiln_declarations(request: pytest.FixtureRequest) -> None:
    # Clay's ``_pre_setup``: class-level ``test_config`` and ``fixtures``.
    if _declared_config(request) or request.config.getini("kiln_config"):
        request.getfixturevalue("kiln_config")
    names = _declared_fixtures(request)
    if not names:
        return
    loaded = request.getfixturevalue("load_fixtures")(*names)
    instance = request.instance
    if instance is not None:
        for name, value in loaded.items():
            if name.isidentifier() and not hasattr(instance, name):
                setattr(instance, name, value)
