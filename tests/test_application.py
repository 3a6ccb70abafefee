from __future__ import annotations

import http.client
import os
import sys
import threading
import time
import uuid

import flask
import pytest
from werkzeug.serving import make_server

import kiln
from kiln import application
from kiln import config as kiln_config
from kiln._state import api_version
from kiln.application import (
    add_api_capability,
    add_public_setting,
    create_app,
    get_app,
    register_heartbeat,
)
from kiln.application import (
    kiln_config as app_config,
)
from kiln.config import CONFIG, Configuration
from kiln.exceptions import ConfigError, StartupError


@pytest.fixture
def views_dir(tmp_path, monkeypatch):
    """A directory on sys.path where tests write throwaway views modules."""
    monkeypatch.syspath_prepend(str(tmp_path))
    written = []

    def module(source: str) -> str:
        name = f"views_{uuid.uuid4().hex}"
        (tmp_path / f"{name}.py").write_text(source, encoding="utf-8")
        written.append(name)
        return name

    yield module
    for name in written:
        sys.modules.pop(name, None)


CLAY_VIEWS = """
from kiln import app

@app.route("/hello", methods=["GET"])
def hello():
    return "Hello World!"
"""


def build(tree=None):
    return create_app(Configuration.from_mapping(tree or {}), configure_logging=False)


# -- create_app ---------------------------------------------------------------


def test_create_app_uses_flask_init_and_flask_config():
    app = build(
        {
            "flask": {"init": {"import_name": "myservice"}, "config": {"SECRET_KEY": "s"}},
            "debug": {"enabled": True},
        }
    )
    assert app.name == "myservice"
    assert app.config["SECRET_KEY"] == "s"
    assert app.debug is True


def test_the_default_import_name_is_kilnapp():
    assert build().name == "kilnapp"


def test_route_json_is_compact_like_resource_json_even_in_debug_mode(views_dir):
    name = views_dir(
        """
from kiln import app

@app.route("/v1/pair", methods=["GET"])
def pair():
    return {"a": [1, 2], "b": {"c": None}}
"""
    )
    app = build({"views": [name], "debug": {"enabled": True}})
    body = app.test_client().get("/v1/pair").get_data(as_text=True)
    assert body == '{"a":[1,2],"b":{"c":null}}\n'


def test_flask_init_with_an_unknown_argument_fails_startup():
    with pytest.raises(StartupError, match=r"flask.init has an argument Flask\(\) does not take"):
        build({"flask": {"init": {"import_name": "x", "bogus": 1}}})


def test_create_app_accepts_a_mapping_and_validates_it():
    app = create_app({"project": {"name": "direct"}}, configure_logging=False)
    assert app_config(app).get("project.name") == "direct"
    with pytest.raises(ConfigError, match=r"'views' \(set in the config given in code\) must be a"):
        create_app({"views": "x"}, configure_logging=False)


def test_create_app_without_config_uses_the_process_config(monkeypatch):
    monkeypatch.setattr(CONFIG, "config", {"project": {"name": "global"}})
    app = create_app(configure_logging=False)
    assert app_config(app) is CONFIG


def test_a_bad_api_version_fails_startup():
    with pytest.raises(StartupError, match="must start with a number"):
        build({"http_api_version": "beta"})


@pytest.mark.parametrize(
    ("tree", "expected"),
    [({}, "1.0"), ({"project": {"version": "2.5.1"}}, "2.5"), ({"http_api_version": "3.1"}, "3.1")],
)
def test_api_version_derives_from_the_project_version(tree, expected):
    assert api_version(Configuration.from_mapping(tree)) == expected


def test_the_version_prefix_follows_the_api_version():
    client = build({"project": {"version": "3.0.0"}}).test_client()
    assert client.get("/v3/").status_code == 200
    assert client.get("/v1/").json["errno"] == 116


# -- views --------------------------------------------------------------------


def test_clay_style_views_register_on_the_app_being_built(views_dir):
    name = views_dir(CLAY_VIEWS)
    response = build({"views": [name]}).test_client().get("/hello")
    assert response.status_code == 200
    assert response.get_data(as_text=True) == "Hello World!"


def test_a_views_module_serves_every_app_that_lists_it(views_dir):
    name = views_dir(CLAY_VIEWS)
    first, second = build({"views": [name]}), build({"views": [name]})
    assert first is not second
    for app in (first, second):
        assert app.test_client().get("/hello").status_code == 200


def test_a_views_module_with_init_app_is_called_for_every_app(views_dir):
    name = views_dir(
        """
calls = []

def init_app(app):
    calls.append(app)
    app.add_url_rule("/ext", "ext", lambda: "ext")
"""
    )
    first, second = build({"views": [name]}), build({"views": [name]})
    assert sys.modules[name].calls == [first, second]
    assert second.test_client().get("/ext").get_data(as_text=True) == "ext"


def test_a_views_module_that_fails_to_import_fails_startup_in_one_sentence(views_dir):
    name = views_dir("raise RuntimeError('broken on purpose')\n")
    with pytest.raises(StartupError) as info:
        build({"views": [name]})
    message = str(info.value)
    assert f"views module {name!r} failed to import: RuntimeError: broken on purpose." in message
    assert "\n" not in message


def test_a_kiln_error_raised_by_a_views_module_keeps_its_own_sentence(views_dir):
    name = views_dir(
        "from kiln.exceptions import StartupError\n"
        "raise StartupError(\"Resource 'x': its schema is wrong.\")\n"
    )
    with pytest.raises(StartupError) as info:
        build({"views": [name]})
    assert str(info.value) == "Resource 'x': its schema is wrong."


def test_a_missing_views_module_fails_startup():
    with pytest.raises(StartupError, match="No module named 'no_such_views_module'"):
        build({"views": ["no_such_views_module"]})


@pytest.mark.parametrize("entry", ["", 3, None])
def test_a_views_entry_that_is_not_a_module_name_fails_startup(entry):
    with pytest.raises(StartupError, match="views entries must be module names"):
        build({"views": [entry]})


def test_views_modules_beside_the_working_directory_import(tmp_path, monkeypatch):
    name = f"cwd_views_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text(CLAY_VIEWS, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    try:
        assert build({"views": [name]}).test_client().get("/hello").status_code == 200
    finally:
        sys.modules.pop(name, None)


# -- middleware ---------------------------------------------------------------


class Tag:
    """A WSGI middleware adding a response header."""

    def __init__(self, app, name="X-Tag", value="1"):
        self.app, self.name, self.value = app, name, value

    def __call__(self, environ, start_response):
        def start(status, headers, exc_info=None):
            return start_response(status, [*headers, (self.name, self.value)], exc_info)

        return self.app(environ, start)


def not_callable():
    pass


NOT_CALLABLE = 3


def failing_middleware(app):
    raise ValueError("cannot wrap")


def misconfigured_middleware(app):
    raise ConfigError("Config key 'tag.value' must be a string.")


def test_middleware_given_as_a_mapping_wraps_the_app():
    spec = {f"{__name__}.Tag": {"value": "a"}}
    response = build({"middleware": spec}).test_client().get("/__lbheartbeat__")
    assert response.headers.getlist("X-Tag") == ["a"]


def test_middleware_given_as_a_list_of_names_takes_no_arguments():
    spec = [f"{__name__}.Tag", {f"{__name__}.Tag": None}]
    response = build({"middleware": spec}).test_client().get("/__lbheartbeat__")
    assert response.headers.getlist("X-Tag") == ["1", "1"]


def test_middleware_entries_apply_in_list_order():
    spec = [
        {f"{__name__}.Tag": {"name": "X-Order", "value": "inner"}},
        {f"{__name__}.Tag": {"name": "X-Order", "value": "outer"}},
    ]
    response = build({"middleware": spec}).test_client().get("/__lbheartbeat__")
    assert response.headers.getlist("X-Order") == ["inner", "outer"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"nodots": {}}, "must be a dotted path"),
        ({"no_such_pkg.Thing": {}}, "module 'no_such_pkg' cannot be imported"),
        ({f"{__name__}.Missing": {}}, "no callable named 'Missing'"),
        ({f"{__name__}.NOT_CALLABLE": {}}, "no callable named 'NOT_CALLABLE'"),
        ({f"{__name__}.Tag": [1]}, "takes a mapping of keyword arguments"),
        ({f"{__name__}.Tag": {"bogus": 1}}, "failed to start: TypeError"),
        ({f"{__name__}.failing_middleware": {}}, "failed to start: ValueError: cannot wrap"),
        (
            {f"{__name__}.misconfigured_middleware": {}},
            "failed to start: Config key 'tag.value' must be a string..$",
        ),
        ([3], "must be a dotted path"),
    ],
)
def test_a_bad_middleware_entry_fails_startup_with_a_sentence(spec, message):
    with pytest.raises(StartupError, match=message.replace("(", "\\(").replace(")", "\\)")):
        build({"middleware": spec})


# -- the process-wide app -----------------------------------------------------


def test_from_kiln_import_app_gives_the_process_wide_flask_app(monkeypatch):
    monkeypatch.setattr(CONFIG, "config", {"project": {"name": "lazy"}})
    from kiln import app

    assert isinstance(app, flask.Flask)
    assert app is kiln.app is get_app()
    assert app.test_client().get("/v1/").json["project_name"] == "lazy"


class _CountingLock:
    """A lock that counts the threads that have asked for it."""

    def __init__(self):
        self.lock = threading.Lock()
        self.waiting = 0

    def __enter__(self):
        self.waiting += 1  # under the GIL; read only after the threads start
        self.lock.acquire()

    def __exit__(self, *exc_info):
        self.lock.release()


def test_the_process_wide_app_is_built_once_under_concurrent_first_use(monkeypatch):
    monkeypatch.setattr(CONFIG, "config", {})
    built = []
    real_create_app = application.create_app
    monkeypatch.setattr(
        application, "create_app", lambda config: built.append(1) or real_create_app(config)
    )
    lock = _CountingLock()
    monkeypatch.setattr(application, "_global_lock", lock)
    apps = []
    threads = [threading.Thread(target=lambda: apps.append(get_app())) for _ in range(8)]
    # Every thread passes the unlocked check and queues on the lock before
    # any of them may build: the race the second check exists for.
    lock.lock.acquire()
    for thread in threads:
        thread.start()
    for _ in range(1000):
        if lock.waiting == len(threads):
            break
        time.sleep(0.005)
    assert lock.waiting == len(threads)
    lock.lock.release()
    for thread in threads:
        thread.join()
    assert len(built) == 1
    assert len({id(app) for app in apps}) == 1


def test_kiln_has_no_other_lazy_attributes():
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        kiln.nothing  # noqa: B018


def test_importing_kiln_builds_no_app():
    import subprocess

    code = "import kiln, kiln.application as a; print(a._global_app is None)"
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "True"


# -- hello, heartbeats, version -----------------------------------------------


def test_hello_describes_the_service():
    app = build(
        {
            "project": {"name": "demo", "version": "1.4.2", "docs": "https://docs.example"},
            "readonly": True,
        }
    )
    body = app.test_client().get("/v1/").json
    assert body == {
        "project_name": "demo",
        "project_version": "1.4.2",
        "http_api_version": "1.4",
        "project_docs": "https://docs.example",
        "protocol_version": "2",
        "kiln_version": kiln.__version__,
        "url": "/v1/",  # no http_host nor trusted_hosts: relative
        "settings": {"readonly": True, "batch_max_requests": 25},
        "capabilities": {},
    }


def test_hello_url_honours_http_scheme_and_host():
    app = build({"http_scheme": "https", "http_host": "api.example.com"})
    assert app.test_client().get("/v1/").json["url"] == "https://api.example.com/v1/"


def test_public_settings_can_name_unregistered_keys_under_any_name():
    app = build({"my": {"flag": 3}, "attachment": {"base_url": "https://files/"}})
    add_public_setting(app, "my.flag", "my_flag")
    add_public_setting(app, "attachment.base_url")
    assert app.test_client().get("/v1/").json["settings"] == {
        "readonly": False,
        "batch_max_requests": 25,
        "my_flag": 3,
        "attachment.base_url": "https://files/",
    }


def test_capabilities_are_announced_once():
    app = build()
    add_api_capability(app, "history", "Track changes", "https://docs/history", version="1.0")
    with pytest.raises(ValueError, match="already registered"):
        add_api_capability(app, "history")
    assert app.test_client().get("/v1/").json["capabilities"] == {
        "history": {"description": "Track changes", "url": "https://docs/history", "version": "1.0"}
    }


@pytest.mark.parametrize("path", ["/__heartbeat__", "/v1/__heartbeat__"])
def test_heartbeat_reports_every_check(path):
    app = build()
    register_heartbeat(app, "storage", lambda: True)
    register_heartbeat(app, "cache", lambda: None)
    response = app.test_client().get(path)
    assert response.status_code == 200
    assert response.json == {"storage": True, "cache": None}


def test_a_failing_check_makes_the_heartbeat_503(caplog):
    def explode():
        raise OSError("disk on fire")

    app = build()
    register_heartbeat(app, "ok", lambda: 1)
    register_heartbeat(app, "down", lambda: False)
    register_heartbeat(app, "raises", explode)
    response = app.test_client().get("/__heartbeat__")
    assert response.status_code == 503
    assert response.json == {"ok": True, "down": False, "raises": False}
    assert "disk on fire" in caplog.text


def test_a_check_that_outlasts_the_timeout_counts_as_failed(caplog):
    release = threading.Event()
    app = build({"heartbeat": {"timeout_seconds": 0.2}})
    register_heartbeat(app, "slow", lambda: release.wait(5))
    try:
        response = app.test_client().get("/__heartbeat__")
    finally:
        release.set()
    assert response.status_code == 503
    assert response.json == {"slow": False}
    assert "did not answer within 0.2s" in caplog.text


@pytest.mark.parametrize("path", ["/__lbheartbeat__", "/v1/__lbheartbeat__"])
def test_lbheartbeat_always_answers(path):
    response = build().test_client().get(path)
    assert response.status_code == 200
    assert response.json == {}


def test_version_serves_version_json(tmp_path):
    path = tmp_path / "version.json"
    path.write_text('{"version": "1.2.3", "commit": "abc"}')
    client = build({"version_json_path": str(path)}).test_client()
    for url in ("/__version__", "/v1/__version__"):
        assert client.get(url).json == {"version": "1.2.3", "commit": "abc"}


def test_config_endpoint_says_which_generation_serves_and_whether_a_reload_failed(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"owner": "ada"}')
    configuration = Configuration(paths=[str(path)], environ={})
    client = create_app(configuration, configure_logging=False).test_client()
    answer = client.get("/__config__").json
    assert answer["generation"] == 1
    assert (answer["last_reload_failed"], answer["failed_at"]) == (False, None)
    assert answer["loaded_at"].endswith("+00:00")
    assert answer["pid"] == os.getpid()
    path.write_text('{"owner": "secret-in-a-broken-file"')
    assert configuration.load() is False
    for url in ("/__config__", "/v1/__config__"):
        answer = client.get(url).json
        assert (answer["generation"], answer["last_reload_failed"]) == (1, True)
        assert answer["failed_at"].endswith("+00:00")
        assert "secret" not in str(answer)  # the reason is logged, never served


def test_version_is_404_without_version_json(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    response = build().test_client().get("/__version__")
    assert response.status_code == 404
    assert response.json["message"] == "This service has no version.json."


def test_an_unreadable_version_json_is_404_and_logged(tmp_path, caplog):
    path = tmp_path / "version.json"
    path.write_text("{nope")
    response = build({"version_json_path": str(path)}).test_client().get("/__version__")
    assert response.status_code == 404
    assert "cannot be read" in response.json["message"]
    assert str(path) in caplog.text


# -- redirects ----------------------------------------------------------------


@pytest.fixture
def redirect_client(views_dir):
    name = views_dir(
        """
from kiln import app

@app.route("/v1/things", methods=["GET", "POST"])
def things():
    return "things"

@app.route("/v1/only-get", methods=["GET"])
def only_get():
    return "got"

@app.route("/plain", methods=["GET"])
def plain():
    return "plain"
"""
    )
    return build({"views": [name]}).test_client()


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/things", "/v1/things"),
        ("/things?a=1&b=%20x", "/v1/things?a=1&b=%20x"),
        ("/things/", "/v1/things"),
        ("/v1/things/", "/v1/things"),
        ("/v1/things///", "/v1/things"),
        ("/v1", "/v1/"),
        ("/", "/v1/"),
        ("/plain/", "/plain"),
        ("/__heartbeat__/", "/__heartbeat__"),
        ("/v1//things", "/v1/things"),
        ("/th%C3%A9/", None),
    ],
)
def test_redirects_are_307_to_same_origin_paths(redirect_client, path, location):
    response = redirect_client.get(path)
    if location is None:
        assert response.status_code == 404
        return
    assert response.status_code == 307
    assert response.headers["Location"] == location


def test_a_redirect_keeps_the_method_and_reaches_405_when_the_method_is_wrong(redirect_client):
    assert redirect_client.post("/things").headers["Location"] == "/v1/things"
    response = redirect_client.post("/only-get")
    assert response.status_code == 307
    assert redirect_client.post(response.headers["Location"]).status_code == 405


def test_redirected_unicode_paths_are_percent_encoded(views_dir):
    name = views_dir(
        """
from kiln import app

@app.route("/v1/caf\\u00e9", methods=["GET"])
def cafe():
    return "ok"
"""
    )
    response = build({"views": [name]}).test_client().get("/caf%C3%A9/")
    assert response.headers["Location"] == "/v1/caf%C3%A9"


@pytest.mark.parametrize(
    "raw_path",
    ["//evil.example/", "/\\evil.example/", "//evil.example//", "///evil.example/"],
)
def test_a_redirect_never_leaves_the_origin(redirect_client, raw_path):
    response = redirect_client.get("/", environ_overrides={"PATH_INFO": raw_path})
    location = response.headers.get("Location", "")
    assert not location.startswith(("//", "/\\", "http")), location
    assert response.status_code in (307, 400, 404)
    if response.status_code != 307:
        assert "errno" in response.json


@pytest.mark.parametrize(
    "raw_path", ["/things\r\nSet-Cookie: x=1/", "/v1/\x00/", "/things\x7f/", "/a\tb/"]
)
def test_control_characters_in_paths_are_400(redirect_client, raw_path):
    response = redirect_client.get("/", environ_overrides={"PATH_INFO": raw_path})
    assert response.status_code == 400
    assert response.json["errno"] == 107
    assert "Set-Cookie" not in response.headers


def test_control_characters_in_the_query_string_are_400(redirect_client):
    response = redirect_client.get(
        "/things", environ_overrides={"QUERY_STRING": "a=1\r\nSet-Cookie: x"}
    )
    assert response.status_code == 400


def test_redirects_can_be_turned_off(views_dir):
    name = views_dir(CLAY_VIEWS.replace("/hello", "/v1/hello"))
    client = build(
        {
            "views": [name],
            "version_prefix_redirect_enabled": False,
            "trailing_slash_redirect_enabled": False,
        }
    ).test_client()
    assert client.get("/hello").status_code == 404
    assert client.get("/v1/hello/").status_code == 404
    assert client.get("/v1/hello").status_code == 200


def test_a_path_under_another_version_is_errno_116(redirect_client):
    for path in ("/v2/things", "/v9", "/v10/"):
        response = redirect_client.get(path)
        assert response.status_code == 404
        assert response.json["errno"] == 116


def test_unknown_paths_under_the_prefix_are_errno_111(redirect_client):
    response = redirect_client.get("/v1/nothing")
    assert response.status_code == 404
    assert response.json["errno"] == 111


def test_redirects_over_a_real_socket_keep_raw_paths_on_origin(redirect_client):
    app = redirect_client.application
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        for raw, expected_status in (("//evil.example/", None), ("/things/", 307)):
            conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=5)
            conn.putrequest("GET", raw, skip_host=True)
            conn.putheader("Host", "127.0.0.1")
            conn.endheaders()
            response = conn.getresponse()
            location = response.getheader("Location") or ""
            response.read()
            conn.close()
            assert not location.startswith(("//", "http")), location
            if expected_status:
                assert response.status == expected_status
                assert location == "/v1/things"
    finally:
        server.shutdown()
        thread.join()


# -- common headers -----------------------------------------------------------


def test_backoff_is_sent_on_every_response_when_set(redirect_client):
    client = build({"backoff": 30}).test_client()
    for path in ("/v1/", "/v1/missing"):
        assert client.get(path).headers["Backoff"] == "30"
    assert "Backoff" not in redirect_client.get("/v1/").headers


def test_module_config_follows_the_app_in_views(views_dir):
    name = views_dir(
        """
from kiln import app, config

@app.route("/v1/who", methods=["GET"])
def who():
    return {"who": config.get("who")}
"""
    )
    first = build({"views": [name], "who": "first"})
    second = build({"views": [name], "who": "second"})
    assert first.test_client().get("/v1/who").json == {"who": "first"}
    assert second.test_client().get("/v1/who").json == {"who": "second"}
    assert kiln_config.get("who") is None


def test_a_heartbeat_without_checks_is_empty_and_healthy():
    response = build().test_client().get("/__heartbeat__")
    assert (response.status_code, response.json) == (200, {})


@pytest.mark.parametrize("target", ["//evil.example", "/\\evil.example", "evil.example"])
def test_the_redirect_guard_refuses_off_origin_targets_whatever_calls_it(target):
    from kiln.application import _redirect_to
    from kiln.errors import HTTPError

    app = build()
    with app.test_request_context("/"), pytest.raises(HTTPError) as info:
        _redirect_to(target)
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("current", "expected"),
    [
        (None, "Authorization, Origin"),
        ("Accept-Encoding", "Accept-Encoding, Authorization, Origin"),
        ("origin, Accept", "origin, Accept, Authorization"),
        ("Authorization, Origin", "Authorization, Origin"),
    ],
)
def test_vary_always_names_authorization_and_origin_once(current, expected):
    from kiln._headers import vary

    assert vary(current) == expected


def test_a_view_setting_its_own_vary_and_cache_control_keeps_them(views_dir):
    name = views_dir(
        """
from kiln import app

@app.route("/v1/custom", methods=["GET"])
def custom():
    return "x", 200, {"Vary": "Accept-Encoding", "Cache-Control": "max-age=60"}
"""
    )
    response = build({"views": [name]}).test_client().get("/v1/custom")
    assert response.headers["Vary"] == "Accept-Encoding, Authorization, Origin"
    assert response.headers["Cache-Control"] == "max-age=60"


def test_close_app_releases_the_backends_and_policies(tmp_path):
    from kiln.application import close_app
    from kiln.exceptions import BackendError

    app = create_app(
        {
            "views": ["tests.resource.auth_resources"],
            "storage": {"backend": "sqlite", "url": str(tmp_path / "c.sqlite")},
            "auth": {"policies": ["basicauth"], "userid_hmac_secret": "c" * 40},
        },
        configure_logging=False,
    )
    storage = app.extensions["kiln"].storage
    permission = app.extensions["kiln"].permission
    close_app(app)
    assert not {"kiln.storage", "kiln.permission", "kiln.cache", "kiln.auth_policies"} & set(
        app.extensions
    )
    with pytest.raises(BackendError, match="closed"):
        storage.collection_timestamp("toadstool", "")
    with pytest.raises(BackendError, match="closed"):
        permission.user_principals("u")
    close_app(app)  # twice is harmless
