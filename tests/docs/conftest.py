from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import kiln

ROOT = Path(__file__).resolve().parents[2]
SECRET = "docs-tests-secret-" + "d" * 32
SAMPLE_VIEWS = ["tests.docs.sample_views", "tests.docs.sample_resources", "kiln.docs"]


def example_config(tmp_path: Path, **overrides) -> dict:
    """The example service's config, with its storage in ``tmp_path``."""
    tree = yaml.safe_load((ROOT / "examples" / "mushrooms" / "config.yaml").read_text())
    tree["storage"] = {"backend": "sqlite", "url": str(tmp_path / "mushrooms.sqlite")}
    tree["debug"]["enabled"] = False
    tree.update(overrides)
    return tree


@pytest.fixture
def example_app(tmp_path):
    return kiln.create_app(example_config(tmp_path), configure_logging=False)


@pytest.fixture
def make_docs_app():
    def build(**tree):
        config = {"views": SAMPLE_VIEWS, "storage": {"backend": "memory"}}
        config.update(tree)
        return kiln.create_app(config, configure_logging=False)

    return build


@pytest.fixture
def sample_app(make_docs_app):
    return make_docs_app(auth={"policies": ["basicauth"], "userid_hmac_secret": SECRET})


def get_json(app, path, **kwargs):
    response = app.test_client().get(path, **kwargs)
    assert response.status_code == 200, response.data
    return response.json
