"""Templates of ``kiln init``: a small runnable service whose tests pass."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import click

CONFIG = """\
# {name}: kiln configuration. `kiln settings` lists every key kiln reads.
project:
  name: {name}
  version: "1.0.0"

debug:
  enabled: true          # development mode; turn off in production configs
  server:
    host: 127.0.0.1
    port: 8888

flask:
  config:
    SECRET_KEY: "{flask_secret}"

auth:
  # Derives user ids from credentials; keep it secret, keep it stable.
  userid_hmac_secret: "{hmac_secret}"

storage:
  backend: sqlite        # the embedded default; one file, nothing to start
  url: {module}.sqlite

views:
  - {module}.views
"""

PACKAGE_INIT = '''"""The {name} service."""
'''

VIEWS = '''"""{name}: HTTP views.

Routes registered on ``kiln.app`` are served by ``kiln serve`` and by
``gunicorn kiln.wsgi:application``.
"""

from __future__ import annotations

from kiln import app, config, resource


@resource.register()
class Note(resource.Resource):
    """Notes: a complete REST API at /v1/notes (filters, sorting, paging, sync)."""

    schema = {{
        "type": "object",
        "properties": {{
            "title": {{"type": "string", "minLength": 1}},
            "done": {{"type": "boolean"}},
        }},
        "required": ["title"],
        "additionalProperties": False,
    }}


@app.route("/v1/greetings/<name>", methods=["GET"])
def greet(name: str) -> dict[str, str]:
    """Greet someone by name.

    :path name: Who to greet.
    :status 200: The greeting.
    """
    return {{"greeting": f"Hello, {{name}}!", "service": config.get("project.name")}}
'''

TEST = """from __future__ import annotations

from pathlib import Path

import pytest

from kiln import create_app
from kiln.config import Configuration

HERE = Path(__file__).resolve().parent.parent


@pytest.fixture
def client(tmp_path):
    storage = {{"KILN_STORAGE__URL": str(tmp_path / "test.sqlite")}}
    app = create_app(Configuration(paths=[str(HERE / "config.yaml")], environ=storage))
    return app.test_client()


def test_notes_are_created_listed_and_protected_against_lost_updates(client):
    created = client.post("/v1/notes", json={{"data": {{"title": "Write tests"}}}})
    assert created.status_code == 201
    note = created.json["data"]
    assert client.get("/v1/notes?done=false").json["data"] == []
    assert client.get("/v1/notes").json["data"] == [note]
    stale = {{"If-Match": '"1"'}}
    url = f"/v1/notes/{{note['id']}}"
    response = client.patch(url, json={{"data": {{"done": True}}}}, headers=stale)
    assert response.status_code == 412


def test_notes_refuse_fields_the_schema_does_not_declare(client):
    response = client.post("/v1/notes", json={{"data": {{"title": "x", "colour": "red"}}}})
    assert response.status_code == 400
    assert response.json["details"][0]["name"] == "data.colour"


def test_hello_view_names_the_service(client):
    response = client.get("/v1/")
    assert response.status_code == 200
    assert response.json["project_name"] == "{name}"


def test_greeting_uses_the_name_from_the_path(client):
    response = client.get("/v1/greetings/Ada")
    assert response.status_code == 200
    assert response.json["greeting"] == "Hello, Ada!"


def test_unknown_url_answers_the_json_error_envelope(client):
    response = client.get("/v1/nowhere")
    assert response.status_code == 404
    assert response.json["errno"] == 111
"""

README = """# {name}

A service built with kiln.

    pip install -e '.[test]'               # the service, and pytest
    KILN_CONFIG=config.yaml kiln serve     # http://127.0.0.1:8888/v1/
    python -m pytest                       # the tests
    kiln -c config.yaml check              # the config, the app and its backends
    KILN_CONFIG=config.yaml gunicorn -c python:kiln.gunicorn kiln.wsgi:application  # production
"""

PYPROJECT = """\
[build-system]
requires = ["hatchling>=1.24"]
build-backend = "hatchling.build"

[project]
name = "{module}"
version = "1.0.0"
requires-python = ">=3.11"
dependencies = ["kiln-framework"]

[project.optional-dependencies]
# `pip install -e '.[test]'`: the service, and what its tests need.
test = ["pytest>=8"]

[tool.hatch.build.targets.wheel]
packages = ["{module}"]

[tool.pytest.ini_options]
testpaths = ["tests"]
filterwarnings = ["error"]
"""

GITIGNORE = """__pycache__/
*.pyc
*.sqlite*
.venv/
"""


def module_name(name: str) -> str:
    """A Python module name made from a project name (``My Service`` -> ``my_service``)."""
    module = re.sub(r"\W+", "_", name.strip().lower()).strip("_")
    if not module:
        return "service"
    return f"service_{module}" if module[0].isdigit() else module


def write(directory: Path, name: str, token: Callable[[int], str]) -> list[Path]:
    """Write the scaffold into ``directory`` (new or empty); return the files written."""
    if directory.exists() and any(directory.iterdir()):
        raise click.ClickException(
            f"{directory} is not empty; choose a new directory so nothing is overwritten."
        )
    module = module_name(name)
    values = {
        "name": name,
        "module": module,
        "flask_secret": token(32),
        "hmac_secret": token(32),
    }
    files = {
        "config.yaml": CONFIG,
        f"{module}/__init__.py": PACKAGE_INIT,
        f"{module}/views.py": VIEWS,
        "tests/test_service.py": TEST,
        "pyproject.toml": PYPROJECT,
        "README.md": README,
        ".gitignore": GITIGNORE,
    }
    written = []
    for relative, template in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(**values), encoding="utf-8")
        written.append(path)
    return written
