from __future__ import annotations

import pytest
from flask import Flask

from kiln._state import KilnState, NotAKilnApp, current_state, state_of


def test_state_of_a_kiln_app_is_its_registry(make_app):
    app = make_app()
    state = state_of(app)
    assert isinstance(state, KilnState)
    assert state is app.extensions["kiln"]
    with app.app_context():
        assert current_state() is state


def test_state_of_a_plain_flask_app_says_it_was_not_built_by_kiln():
    with pytest.raises(NotAKilnApp, match=r"'plain' was not built by kiln.create_app\(\)"):
        state_of(Flask("plain"))


def test_closing_the_state_releases_and_forgets_its_backends(make_app, tmp_path):
    app = make_app(
        {
            "storage": {"url": str(tmp_path / "k.sqlite")},
            "views": ["tests.resource.sample_resources"],
        }
    )
    state = state_of(app)
    storage = state.storage
    assert storage is not None
    assert state.cache is not None
    state.close()
    assert (state.storage, state.permission, state.cache, state.auth_policies) == (
        None,
        None,
        None,
        (),
    )
    assert not storage.heartbeat()
