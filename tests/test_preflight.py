"""Each mistake a user can make in kiln's settings, through `kiln check` and gunicorn startup."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner

from kiln import _preflight
from kiln.cli import main
from kiln.config import validate
from kiln.storage.postgresql import PostgreSQLStorage
from tests.pgschema import fresh_schema
from tests.test_cli import clean_env, free_port, isolated_global_config, running, write
from tests.test_wsgi import gunicorn_args, start_gunicorn

VIEWS = """\
from kiln import resource


@resource.register()
class Mushroom(resource.Resource):
    schema = {"type": "object", "properties": {"name": {"type": "string"}}}


@resource.register()
class Basket(resource.ShareableResource):
    schema = {"type": "object", "properties": {"title": {"type": "string"}}}
"""

BAD_SCHEMA = """\
from kiln import resource


@resource.register()
class Mushroom(resource.Resource):
    schema = {
        "type": "object",
        "properties": {"name": {"type": "strin"}, "cap_cm": {"minimum": "none"}},
        "required": "name",
    }
"""


@pytest.fixture
def cli(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with isolated_global_config(monkeypatch):
        yield lambda *args: CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def views(tmp_path, monkeypatch):
    """Write a views module under a fresh name into the working directory; return its name."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))

    def make(source: str = VIEWS) -> str:
        name = f"preflight_views_{uuid.uuid4().hex[:12]}"
        write(tmp_path / f"{name}.py", source)
        return name

    return make


def missing_database_url(postgresql_url: str) -> tuple[str, str]:
    name = f"kiln_missing_{uuid.uuid4().hex[:8]}"
    return urlsplit(postgresql_url)._replace(path=f"/{name}").geturl(), name


def first_error(cli, config: Path) -> str:
    result = cli("-c", str(config), "check")
    assert result.exit_code == 1
    return result.stderr.splitlines()[0]


def migrated_then_checked(cli, config: Path) -> list[str]:
    assert cli("-c", str(config), "migrate").exit_code == 0
    result = cli("-c", str(config), "check")
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


# --------------------------------------------------------------------------
# Mistakes that stop both `kiln check` and the server, with the same sentence
# --------------------------------------------------------------------------

SQLALCHEMY_URL = (
    "storage: {url: 'sqlite:///data/file.db'}\n",
    "Config key 'storage.url' (set in {config}) is a SQLAlchemy URL ('sqlite:///data/file.db'), "
    "but kiln's SQLite backend takes a file path: write `storage.url: data/file.db`.",
)
SERVER_URL_WITHOUT_ITS_BACKEND = (
    "storage: {url: 'postgresql://kiln:secret@db.example/kiln'}\n",
    "Config key 'storage.url' (set in {config}) is a postgresql:// URL, but the storage "
    "backend is 'sqlite': set `storage.backend: postgresql`.",
)
SQLITE_FILE_IN_A_MISSING_DIRECTORY = (
    "cache: {backend: sqlite, url: 'no/such/dir/cache.db'}\n",
    "Config key 'cache.url' (set in {config}) names the SQLite file 'no/such/dir/cache.db' in "
    "'{tmp_path}/no/such/dir', a directory that does not exist: create it, or choose another "
    "path.",
)
SECTION_THAT_IS_NOT_A_MAPPING = (
    "storage: postgresql\n",
    "Config key 'storage' (set in {config}) must be a mapping of settings "
    "('storage.backend', ...), not the str 'postgresql'.",
)
STOPPING = [
    SQLALCHEMY_URL,
    SERVER_URL_WITHOUT_ITS_BACKEND,
    SQLITE_FILE_IN_A_MISSING_DIRECTORY,
    SECTION_THAT_IS_NOT_A_MAPPING,
]


@pytest.mark.parametrize(("text", "message"), STOPPING)
def test_kiln_check_refuses_the_mistake_in_one_sentence(cli, views, tmp_path, text, message):
    config = write(tmp_path / "service.yaml", f"views: [{views()}]\n{text}")
    result = cli("-c", str(config), "check")
    assert result.exit_code == 1
    assert result.stderr == f"kiln: error: {message.format(config=config, tmp_path=tmp_path)}\n"


@pytest.mark.parametrize(("text", "message"), STOPPING)
def test_gunicorn_refuses_to_start_with_the_same_sentence(views, tmp_path, text, message):
    config = write(tmp_path / "service.yaml", f"views: [{views()}]\n{text}")
    process = start_gunicorn(tmp_path, config)
    assert process.returncode == 3
    expected = message.format(config=config, tmp_path=tmp_path)
    assert f"kiln: cannot start: {expected}\n" in process.stderr
    assert "Traceback" not in process.stderr


def test_an_invalid_schema_names_the_resource_and_every_error_at_check(cli, views, tmp_path):
    config = write(tmp_path / "service.yaml", f"views: [{views(BAD_SCHEMA)}]\n")
    result = cli("-c", str(config), "check")
    assert result.exit_code == 1
    assert result.stderr == (
        "kiln: error: Resource 'mushroom': its schema is not valid JSON Schema: "
        '#/properties/name/type: "strin" is not a type (did you mean "string"?); '
        '#/properties/cap_cm/minimum: "none" is not of type "number"; '
        '#/required: "name" is not of type "array".\n'
    )


def test_an_invalid_schema_stops_gunicorn_with_the_same_sentence(views, tmp_path):
    config = write(tmp_path / "service.yaml", f"views: [{views(BAD_SCHEMA)}]\n")
    process = start_gunicorn(tmp_path, config)
    assert process.returncode == 3
    line = next(line for line in process.stderr.splitlines() if line.startswith("kiln:"))
    assert line.startswith("kiln: cannot start: Resource 'mushroom': its schema is not valid")
    assert '#/properties/name/type: "strin" is not a type (did you mean "string"?)' in line
    assert "StartupError" not in process.stderr
    assert "importable" not in process.stderr


# --------------------------------------------------------------------------
# Unknown keys: a warning (an error under --strict); users' sections stay free
# --------------------------------------------------------------------------

TYPOS = """\
storage: {backnd: memory, colour: red}
debug: {sever: {port: 9000}}
auth: {userid_hmac_secrt: x, bearer: {tokens: {}}}
testing: {database: {url: sqlite://}}
bakery: {flavour: rye}
"""


def test_kiln_check_warns_about_each_unknown_key_of_kilns_sections(cli, tmp_path):
    config = write(tmp_path / "service.yaml", TYPOS)
    result = cli("-c", str(config), "check")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        f"kiln: warning: Config key 'auth.userid_hmac_secrt' (set in {config}) is not a kiln "
        "setting: did you mean 'auth.userid_hmac_secret'?",
        f"kiln: warning: Config key 'debug.sever' (set in {config}) is not a kiln setting: "
        "did you mean 'debug.server'?",
        f"kiln: warning: Config key 'storage.backnd' (set in {config}) is not a kiln setting: "
        "did you mean 'storage.backend'?",
        f"kiln: warning: Config key 'storage.colour' (set in {config}) is not a kiln setting "
        "and does nothing: `kiln settings` lists the keys of 'storage'.",
    ]
    assert result.stdout.endswith("is valid and the app builds.\n")


def test_kiln_check_strict_fails_on_an_unknown_key(cli, tmp_path):
    config = write(tmp_path / "service.yaml", "storage: {backnd: memory}\n")
    result = cli("-c", str(config), "check", "--strict")
    assert result.exit_code == 1
    assert result.stderr == (
        f"kiln: error: Config key 'storage.backnd' (set in {config}) is not a kiln setting: "
        "did you mean 'storage.backend'?\n"
    )
    assert result.stdout == ""


def test_an_unknown_key_set_in_the_environment_is_named_so(cli, monkeypatch):
    monkeypatch.setenv("KILN_STORAGE__BACKND", "memory")
    result = cli("check", "--strict")
    assert result.exit_code == 1
    assert "Config key 'storage.backnd' (set in environment) is not a kiln setting" in (
        result.stderr
    )


def test_gunicorn_starts_and_warns_about_an_unknown_key(views, tmp_path):
    config = write(tmp_path / "service.yaml", f"views: [{views()}]\nstorage: {{backnd: x}}\n")
    port = free_port()
    log = tmp_path / "gunicorn.log"
    args = gunicorn_args("kiln.wsgi:application", port)
    env = clean_env(KILN_CONFIG=str(config))
    url = f"http://127.0.0.1:{port}/__lbheartbeat__"
    with running(args, cwd=tmp_path, env=env, log=log, url=url):
        pass
    assert (
        f"Config key 'storage.backnd' (set in {config}) is not a kiln setting: "
        "did you mean 'storage.backend'?" in log.read_text()
    )


# --------------------------------------------------------------------------
# kiln check opens the backends
# --------------------------------------------------------------------------


def test_kiln_check_says_a_new_sqlite_file_will_be_created_and_writes_nothing(cli, views, tmp_path):
    config = write(tmp_path / "service.yaml", f"views: [{views()}]\nstorage: {{url: a.db}}\n")
    result = cli("-c", str(config), "check")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[:3] == [
        "storage (sqlite): the file 'a.db' will be created at startup.",
        "permission (sqlite): the file 'a.db' will be created at startup.",
        "cache (sqlite): the file 'a.db' will be created at startup.",
    ]
    assert not (tmp_path / "a.db").exists()


def test_kiln_check_wants_a_migrated_sqlite_file_when_startup_creates_nothing(cli, views, tmp_path):
    text = f"views: [{views()}]\nstorage: {{url: a.db, initialize_on_startup: false}}\n"
    config = write(tmp_path / "service.yaml", text)
    assert first_error(cli, config) == (
        "kiln: error: storage (sqlite): the file 'a.db' does not exist and "
        "storage.initialize_on_startup is false: create it with `kiln migrate`."
    )
    (tmp_path / "a.db").touch()
    assert first_error(cli, config) == (
        "kiln: error: storage (sqlite): answers, but its schema is not up to date "
        "(5 steps missing, from 'create table schema_versions'): run `kiln migrate`."
    )
    assert migrated_then_checked(cli, config)[:3] == [
        "storage (sqlite): ready.",
        "permission (sqlite): ready.",
        "cache (sqlite): ready.",
    ]


def test_kiln_check_says_memory_backends_have_nothing_to_open(cli, views, tmp_path):
    config = write(tmp_path / "c.yaml", f"views: [{views()}]\nstorage: {{backend: memory}}\n")
    result = cli("-c", str(config), "check")
    assert result.exit_code == 0, result.output
    assert (
        result.stdout.splitlines()[0]
        == "storage (memory): in this process's memory, nothing to open."
    )


def test_kiln_check_reports_a_postgresql_schema_to_migrate(cli, views, tmp_path, postgresql_url):
    with fresh_schema(postgresql_url) as url:
        storage = {"backend": "postgresql", "url": url}
        config = write(tmp_path / "c.yaml", json.dumps({"views": [views()], "storage": storage}))
        result = cli("-c", str(config), "check")
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines()[0] == (
            "storage (postgresql): answers; its schema will be created at startup."
        )
        storage["initialize_on_startup"] = False
        write(config, json.dumps({"views": [views()], "storage": storage}))
        storage_backend = PostgreSQLStorage(url)
        try:
            steps = storage_backend.initialize_schema(dry_run=True)
        finally:
            storage_backend.close()
        assert first_error(cli, config) == (
            "kiln: error: storage (postgresql): answers, but its schema is not up to date "
            f"({len(steps)} steps missing, from 'create table schema_versions'): run "
            "`kiln migrate`."
        )
        assert "storage (postgresql): ready." in migrated_then_checked(cli, config)


def test_a_postgresql_database_that_does_not_exist_is_named(cli, views, tmp_path, postgresql_url):
    url, name = missing_database_url(postgresql_url)
    storage = {"backend": "postgresql", "url": url, "pool_timeout_seconds": 1}
    config = write(tmp_path / "c.yaml", json.dumps({"views": [views()], "storage": storage}))
    result = cli("-c", str(config), "check")
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("kiln: error:")]
    assert errors[0].startswith("kiln: error: storage (postgresql): ")
    assert name in errors[0]
    process = start_gunicorn(tmp_path, config)
    assert process.returncode == 3
    assert any(
        line.startswith("kiln: cannot start: ") and name in line
        for line in process.stderr.splitlines()
    )


REDIS_DOWN = "redis://127.0.0.1:1/0"


def test_a_redis_server_that_does_not_answer_is_named(cli, views, tmp_path):
    text = (
        f"views: [{views()}]\nstorage: {{backend: memory}}\n"
        f"cache: {{backend: redis, url: '{REDIS_DOWN}'}}\n"
        "redis: {connect_timeout_seconds: 1}\n"
    )
    config = write(tmp_path / "c.yaml", text)
    result = cli("-c", str(config), "check")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"kiln: error: cache (redis): Redis at {REDIS_DOWN} failed: ")
    assert result.stderr.rstrip().endswith("Check that the server is running and reachable.")
    process = start_gunicorn(tmp_path, config)
    assert process.returncode == 3
    assert f"kiln: cannot start: Redis at {REDIS_DOWN} failed: " in process.stderr


# --------------------------------------------------------------------------
# The rules themselves
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///file.db", "file.db"),
        ("sqlite:////srv/data/file.db", "/srv/data/file.db"),
        ("sqlite://", ":memory:"),
        ("sqlite:///:memory:", ":memory:"),
        ("sqlite:file.db?mode=ro", "file.db"),
        ("sqlite+pysqlite:///file.db", "file.db"),
    ],
)
def test_a_sqlalchemy_url_is_refused_with_its_file_path(url, path):
    problems = validate({"storage": {"url": url}})
    assert problems == [
        f"Config key 'storage.url' is a SQLAlchemy URL ({url!r}), but kiln's SQLite backend "
        f"takes a file path: write `storage.url: {path}`."
    ]


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        (
            {"permission": {"url": "rediss://cache.example:6380/0"}},
            "Config key 'permission.url' is a rediss:// URL, but the permission backend is "
            "'sqlite': set `storage.backend: redis`.",
        ),
        (
            {"cache": {"backend": "sqlite", "url": "mysql://root@db/kiln"}},
            "Config key 'cache.url' is a mysql:// URL, but the cache backend is 'sqlite': "
            "give it a file path.",
        ),
    ],
)
def test_a_server_url_given_to_a_sqlite_backend_is_refused(tree, message):
    assert validate(tree) == [message]


def test_a_sqlite_url_shared_by_several_backends_is_reported_once():
    assert len(validate({"storage": {"url": "sqlite:///a.db"}})) == 1


@pytest.mark.parametrize(
    "url",
    [":memory:", "kiln.sqlite", "data:file.db", "file:/no/such/k.db?mode=ro", "file:///a.db"],
)
def test_sqlite_paths_in_existing_directories_and_sqlite_uris_pass(url):
    assert validate({"storage": {"url": url}}) == []


def test_other_backends_urls_are_left_to_them():
    tree = {"storage": {"backend": "postgresql", "url": "sqlite:///a.db"}}
    assert _preflight.sqlite_url_problems(tree, {}) == []


def test_cache_and_permission_take_the_storages_backend_and_url_by_default():
    chosen = _preflight.backends({"storage": {"backend": "redis", "url": "redis://r/1"}})
    assert chosen["cache"] == _preflight.Backend(
        "cache", "redis", "redis://r/1", "storage.backend", "storage.url"
    )
    chosen = _preflight.backends({"permission": {"backend": "memory", "url": "x"}})
    assert chosen["permission"] == _preflight.Backend(
        "permission", "memory", "x", "permission.backend", "permission.url"
    )
    assert chosen["storage"].url == "kiln.sqlite"
